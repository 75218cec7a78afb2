"""Helpers shared by the integration tests and tests/bench/startup.

Start and stop a real corrald on temporary socket/state directories, talk to it through the
generated Python stubs (build/py, from `make py-stubs`), run execs, and inspect the host for
what a daemon leaves behind (cgroups, corral-init processes, mounts, files).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "build", "py"))

import grpc  # noqa: E402

try:
    from corral.v1 import common_pb2 as cpb  # noqa: E402
    from corral.v1 import sandbox_pb2 as pb  # noqa: E402
    from corral.v1 import sandbox_pb2_grpc as pb_grpc  # noqa: E402
    from corral.v1 import system_pb2 as spb  # noqa: E402
    from corral.v1 import system_pb2_grpc as spb_grpc  # noqa: E402
except ImportError as e:  # pragma: no cover - reported clearly instead of a bare traceback
    raise ImportError(f"Python stubs missing ({e}): run `make py-stubs` in {REPO}") from e

CORRALD = os.environ.get("CORRALD", os.path.join(REPO, "build", "corrald"))
CGROUP_ROOT = "/sys/fs/cgroup"
RPC_TIMEOUT = 30  # seconds; every unary call carries a deadline so a hung daemon fails a test


class Daemon:
    """One corrald process on its own temp dirs. start() may be called again after kill()/stop()
    to restart it on the same state dir."""

    def __init__(self, extra_args=(), cgroup_parent=None, binary=CORRALD, log_level="debug"):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="corral-it-")
        self.socket = os.path.join(self.tmp, "corrald.sock")
        self.state_dir = os.path.join(self.tmp, "state")
        self.log_path = os.path.join(self.tmp, "corrald.log")
        self.cgroup_parent = cgroup_parent or f"corral-test-{os.getpid()}-{os.path.basename(self.tmp)[-6:]}"
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.proc = None
        self.channel = None
        self.sb = None   # SandboxService stub
        self.sys = None  # SystemService stub

    @property
    def pid(self):
        return self.proc.pid

    # Test daemons on the real host never get outbound networking: it would turn on forwarding
    # and NAT here. Network tests run their daemon in a namespace world of their own and set this.
    allow_network = False

    def argv(self):
        return [self.binary, "--socket", self.socket, "--state-dir", self.state_dir,
                "--cgroup-parent", self.cgroup_parent, "--log-level", self.log_level,
                *([] if self.allow_network else ["--no-network"]), *self.extra_args]

    def start(self, ready_timeout=30.0):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.binary} not built: run `make` first")
        self.close_channel()
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # a SIGKILLed daemon leaves its socket file behind
        log = open(self.log_path, "ab")
        log.write(f"==== start {time.strftime('%H:%M:%S')}: {' '.join(self.argv())}\n".encode())
        log.flush()
        # Own session: a Ctrl-C of the test run must not signal the daemon behind our back.
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corrald exited with {self.proc.returncode} during start\n"
                                   + self.log_tail())
            if os.path.exists(self.socket):
                self.open_channel()
                try:
                    self.sys.GetInfo(spb.GetInfoRequest(), timeout=1)
                    return self
                except grpc.RpcError:
                    self.close_channel()
            if time.monotonic() > deadline:
                raise RuntimeError(f"corrald did not answer GetInfo within {ready_timeout}s\n"
                                   + self.log_tail())
            time.sleep(0.02)

    def open_channel(self):
        self.channel = grpc.insecure_channel("unix:" + self.socket)
        self.sb = pb_grpc.SandboxServiceStub(self.channel)
        self.sys = spb_grpc.SystemServiceStub(self.channel)

    def new_channel(self):
        """A fresh, independent channel (a second client connection) and its SandboxService stub."""
        ch = grpc.insecure_channel("unix:" + self.socket)
        return ch, pb_grpc.SandboxServiceStub(ch)

    def close_channel(self):
        if self.channel is not None:
            self.channel.close()
        self.channel = self.sb = self.sys = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM (clean stop); returns the exit code. Sandboxes are not killed by design."""
        self.close_channel()
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"corrald ignored SIGTERM for {timeout}s\n" + self.log_tail())

    def kill(self):
        """SIGKILL, as a crash would."""
        self.close_channel()
        if self.running():
            self.proc.kill()
        self.proc.wait()

    def restart(self, how=signal.SIGKILL):
        if how == signal.SIGKILL:
            self.kill()
        else:
            self.stop()
        return self.start()

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "---- corrald log (tail) ----\n" + "\n".join(lines[-n:])

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def zombie_children(self):
        return [p for p in all_pids() if proc_ppid(p) == self.pid and proc_state(p) == "Z"]

    # --- teardown --------------------------------------------------------------------------
    def terminate_all(self):
        """Terminate every sandbox the daemon still runs. Returns the ids terminated."""
        ids = []
        resp = self.sb.ListSandboxes(pb.ListSandboxesRequest(), timeout=RPC_TIMEOUT)
        for s in resp.sandboxes:
            if s.state == pb.SANDBOX_STATE_FINISHED:
                continue
            try:
                self.sb.TerminateSandbox(pb.TerminateSandboxRequest(sandbox_id=s.sandbox_id),
                                         timeout=RPC_TIMEOUT)
                ids.append(s.sandbox_id)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        for sid in ids:
            wait_sandbox(self.sb, sid, 20)
        return ids

    def shutdown_and_check(self):
        """Terminate all sandboxes, SIGTERM the daemon, then return the list of leftovers
        (empty = clean). Removes the cgroup parent dirs and the temp dir when they are clean."""
        problems = []
        if self.running():
            if self.channel is None:
                self.open_channel()
            try:
                self.terminate_all()
            except Exception as e:  # keep going: stop the daemon and report
                problems.append(f"terminating sandboxes failed: {e!r}")
            # Its sandboxes' inits, wherever they sit (also one never put in a cgroup).
            inits = [p for p in descendants(self.pid) if proc_comm(p) == "corral-init"]
            rc = self.stop()
            if rc not in (0, -signal.SIGTERM):
                problems.append(f"corrald exited with {rc} on SIGTERM")
            problems += wait_clean(lambda: [f"corral-init left: pid {p}" for p in inits if alive(p)])
        problems += wait_clean(lambda: leftovers(self.cgroup_parent, self.state_dir))
        problems += remove_cgroup_parent(self.cgroup_parent)
        if problems:
            problems.append(f"(temp dirs kept for inspection: {self.tmp})")
            problems.append(self.log_tail())
        else:
            try:
                shutil.rmtree(self.tmp)
            except OSError as e:
                problems.append(f"cannot remove {self.tmp}: {e}")
        return problems


# --- host inspection ----------------------------------------------------------------------

def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def proc_state(pid):
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[0] if stat else None


def proc_ppid(pid):
    stat = _read(f"/proc/{pid}/stat")
    return int(stat.rsplit(")", 1)[1].split()[1]) if stat else None


def proc_comm(pid):
    comm = _read(f"/proc/{pid}/comm")
    return comm.strip() if comm else None


def proc_uids(pid):
    """(real, effective, saved, fs) uids of a host pid."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("Uid:"):
            return tuple(int(x) for x in line.split()[1:5])
    return None


def alive(pid):
    """True if pid exists and is not a zombie (a zombie counts as gone)."""
    st = proc_state(pid)
    return st is not None and st != "Z"


def cgroup_roots():
    """Hierarchy roots: /sys/fs/cgroup on a pure v2 host, else each mounted hierarchy under it."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.procs")):
        return [CGROUP_ROOT]
    roots = []
    for name in sorted(os.listdir(CGROUP_ROOT)):
        path = os.path.join(CGROUP_ROOT, name)
        if not os.path.islink(path) and os.path.exists(os.path.join(path, "cgroup.procs")):
            roots.append(path)
    return roots


def in_cgroup(pid, cgroup_parent, sandbox_id=None):
    """True if pid is in <parent>/ (or <parent>/<sandbox_id>) in some hierarchy."""
    text = _read(f"/proc/{pid}/cgroup") or ""
    want = f"/{cgroup_parent}/" + (f"{sandbox_id}/" if sandbox_id else "")
    for line in text.splitlines():
        path = line.split(":", 2)[-1] + "/"
        if want in path:
            return True
    return False


def _sandbox_cgroup(pid, cgroup_parent):
    """The name of the cgroup below <parent>/ that pid is in (the sandbox id), or "?"."""
    for line in (_read(f"/proc/{pid}/cgroup") or "").splitlines():
        parts = line.split(":", 2)[-1].split("/")
        if cgroup_parent in parts and parts.index(cgroup_parent) + 1 < len(parts):
            return parts[parts.index(cgroup_parent) + 1]
    return "?"


def sandbox_pids(cgroup_parent, sandbox_id=None, comm=None):
    """Live (non-zombie) host pids in the daemon's cgroups, optionally of one sandbox / comm."""
    out = []
    for pid in all_pids():
        if not alive(pid):
            continue
        if comm is not None and proc_comm(pid) != comm:
            continue
        if in_cgroup(pid, cgroup_parent, sandbox_id):
            out.append(pid)
    return out


def descendants(pid):
    """All live descendants of pid."""
    children = {}
    for p in all_pids():
        children.setdefault(proc_ppid(p), []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return [p for p in out if alive(p)]


def init_pid(cgroup_parent, sandbox_id):
    pids = sandbox_pids(cgroup_parent, sandbox_id, comm="corral-init")
    assert len(pids) == 1, f"expected one corral-init for sandbox {sandbox_id}, found {pids}"
    return pids[0]


def cgroup_dirs(cgroup_parent, sandbox_id=None):
    """Existing cgroup dirs of the daemon's sandboxes (or of one sandbox), over all hierarchies."""
    found = []
    for root in cgroup_roots():
        parent = os.path.join(root, cgroup_parent)
        if not os.path.isdir(parent):
            continue
        for name in os.listdir(parent):
            path = os.path.join(parent, name)
            if os.path.isdir(path) and (sandbox_id is None or name == sandbox_id):
                found.append(path)
    return found


def state_mounts(state_dir, pids=("self",)):
    """mountinfo lines that mention the state dir, as seen by the given processes."""
    lines = set()
    for pid in pids:
        for line in (_read(f"/proc/{pid}/mountinfo") or "").splitlines():
            if state_dir in line:
                lines.add(line)
    return sorted(lines)


def leftovers(cgroup_parent, state_dir):
    problems = []
    for d in cgroup_dirs(cgroup_parent):
        problems.append(f"cgroup dir left: {d}")
    for pid in sandbox_pids(cgroup_parent):
        problems.append(f"process left in {cgroup_parent}: pid {pid} ({proc_comm(pid)}) "
                        f"in {_sandbox_cgroup(pid, cgroup_parent)}")
    sdir = os.path.join(state_dir, "sandboxes")
    if os.path.isdir(sdir) and os.listdir(sdir):
        problems.append(f"sandbox dirs left in {sdir}: {sorted(os.listdir(sdir))[:10]}")
    for line in state_mounts(state_dir):
        problems.append(f"mount left: {line}")
    return problems


def wait_clean(check, timeout=5.0):
    """Cgroup removal and reaping can lag a little: retry check() until it reports nothing."""
    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.1)


def remove_cgroup_parent(cgroup_parent):
    problems = []
    for root in cgroup_roots():
        parent = os.path.join(root, cgroup_parent)
        if os.path.isdir(parent):
            try:
                os.rmdir(parent)
            except OSError as e:
                problems.append(f"cannot rmdir {parent}: {e}")
    return problems


# --- API helpers --------------------------------------------------------------------------

def create_sandbox(stub, **kw):
    kw.setdefault("image", "busybox")
    return stub.CreateSandbox(pb.CreateSandboxRequest(**kw), timeout=RPC_TIMEOUT).sandbox


def terminate(stub, sandbox_id):
    return stub.TerminateSandbox(pb.TerminateSandboxRequest(sandbox_id=sandbox_id),
                                 timeout=RPC_TIMEOUT).sandbox


def wait_sandbox(stub, sandbox_id, timeout_s=30.0):
    """Long-poll WaitSandbox until finished; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0, int((deadline - time.monotonic()) * 1000))
        r = stub.WaitSandbox(pb.WaitSandboxRequest(sandbox_id=sandbox_id, timeout_ms=min(left, 60000)),
                             timeout=min(left, 60000) / 1000 + RPC_TIMEOUT)
        if r.finished:
            assert r.sandbox.state == pb.SANDBOX_STATE_FINISHED, r
            return r.sandbox
        if time.monotonic() >= deadline:
            raise AssertionError(f"sandbox {sandbox_id} still running after {timeout_s}s")


def wait_exec(stub, sandbox_id, exec_id, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0, int((deadline - time.monotonic()) * 1000))
        r = stub.WaitExec(pb.WaitExecRequest(sandbox_id=sandbox_id, exec_id=exec_id,
                                             timeout_ms=min(left, 60000)),
                          timeout=min(left, 60000) / 1000 + RPC_TIMEOUT)
        if r.finished:
            assert r.exec.state == pb.EXEC_STATE_FINISHED, r
            return r.exec
        if time.monotonic() >= deadline:
            raise AssertionError(f"exec {sandbox_id}/{exec_id} still running after {timeout_s}s")


def read_output(stub, sandbox_id, exec_id, stream=pb.EXEC_STREAM_STDOUT, offset=0, timeout_s=60.0):
    """Read one output stream from offset to EOF, checking that chunks are contiguous."""
    req = pb.ReadExecOutputRequest(sandbox_id=sandbox_id, exec_id=exec_id, stream=stream,
                                   offset=offset)
    buf = bytearray()
    pos = offset
    for msg in stub.ReadExecOutput(req, timeout=timeout_s):
        if msg.data:
            assert msg.offset == pos, f"chunk at offset {msg.offset}, expected {pos}"
            buf += msg.data
            pos += len(msg.data)
        if msg.eof:
            return bytes(buf)
    raise AssertionError(f"ReadExecOutput {exec_id} ended without eof=true after {len(buf)} bytes")


def start_exec(stub, sandbox_id, argv, **kw):
    return stub.StartExec(pb.StartExecRequest(sandbox_id=sandbox_id, argv=argv, **kw),
                          timeout=RPC_TIMEOUT)


def run_exec(stub, sandbox_id, argv, stdin=None, timeout_s=60.0, **kw):
    """StartExec + ReadExecOutput(stdout, stderr) + WriteExecStdin + WaitExec.

    stdin: bytes written at offset 0 then closed (b"" just closes it); None leaves stdin alone.
    Extra keywords go to StartExecRequest (exec_id, env, workdir, timeout_ms, pty, ...).
    Returns (stdout, stderr, exit_status)."""
    ex = start_exec(stub, sandbox_id, argv, **kw).exec
    results = {}

    def reader(stream):
        try:
            results[stream] = read_output(stub, sandbox_id, ex.exec_id, stream, timeout_s=timeout_s)
        except BaseException as e:  # re-raised in the calling thread
            results[stream] = e

    threads = [threading.Thread(target=reader, args=(s,), daemon=True)
               for s in (pb.EXEC_STREAM_STDOUT, pb.EXEC_STREAM_STDERR)]
    for t in threads:
        t.start()
    if stdin is not None:
        r = stub.WriteExecStdin(pb.WriteExecStdinRequest(sandbox_id=sandbox_id, exec_id=ex.exec_id,
                                                         offset=0, data=stdin, eof=True),
                                timeout=RPC_TIMEOUT)
        assert r.next_offset == len(stdin), r
    done = wait_exec(stub, sandbox_id, ex.exec_id, timeout_s)
    for t in threads:
        t.join(timeout_s)
    out = []
    for s in (pb.EXEC_STREAM_STDOUT, pb.EXEC_STREAM_STDERR):
        if isinstance(results.get(s), BaseException):
            raise results[s]
        assert s in results, f"reader of stream {s} did not finish"
        out.append(results[s])
    return out[0], out[1], done.exit_status


def reason_name(status):
    return cpb.ExitReason.Name(status.reason)


def asan(pid):
    """True when the daemon runs under AddressSanitizer (make asan builds)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def vm_rss_kib(pid):
    """Resident memory of a process in KiB (0 if unknown)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
