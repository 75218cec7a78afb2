"""Resource bombs: each runs in one sandbox with small limits while a second sandbox and the daemon
are checked for responsiveness; each asserts the limit held and the host is unaffected.
Kept fast: small limits, short timeouts (the whole file runs in well under a minute)."""
import os
import threading
import time

import pytest

import harness
from harness import RPC_TIMEOUT, pb, spb, run_exec, start_exec

MiB = 1024 * 1024
RESPONSIVE_S = 3.0  # a GetInfo and an exec in the bystander sandbox must each finish within this

# The daemon's own fd table is measured here: keep it free of sandboxes started ahead of demand.
DAEMON_ARGS = ["--pool-size", "0"]


def sh(stub, sandbox_id, script, **kw):
    out, err, st = run_exec(stub, sandbox_id, ["sh", "-c", script], **kw)
    return out.decode(errors="replace"), err.decode(errors="replace"), st


@pytest.fixture(scope="module")
def bystander(daemon):
    """The second sandbox, which must stay usable while the bombs go off."""
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(memory_mib=64, pids=64))
    yield sb.sandbox_id
    try:
        harness.terminate(daemon.sb, sb.sandbox_id)
    except Exception:
        pass


def assert_responsive(daemon, bystander_id):
    t0 = time.monotonic()
    daemon.sys.GetInfo(spb.GetInfoRequest(), timeout=RESPONSIVE_S)
    out, _, st = run_exec(daemon.sb, bystander_id, ["echo", "fine"], timeout_s=RESPONSIVE_S)
    took = time.monotonic() - t0
    assert out == b"fine\n" and st.exit_code == 0, (out, st)
    assert took < RESPONSIVE_S, f"daemon and bystander took {took:.2f}s to answer"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def is_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def cgroup_file(daemon, sandbox_id, controller, name):
    v1 = os.path.join(harness.CGROUP_ROOT, controller, daemon.cgroup_parent, sandbox_id, name)
    if os.path.exists(v1):
        return v1
    return os.path.join(harness.CGROUP_ROOT, "unified", daemon.cgroup_parent, sandbox_id, name)


def non_init_pids(daemon, sandbox_id):
    return [p for p in harness.sandbox_pids(daemon.cgroup_parent, sandbox_id) if harness.proc_comm(p) != "corral-init"]


def finish(daemon, sandbox_id):
    harness.terminate(daemon.sb, sandbox_id)
    harness.wait_sandbox(daemon.sb, sandbox_id, 15)
    left = harness.wait_clean(lambda: harness.cgroup_dirs(daemon.cgroup_parent, sandbox_id))
    assert not left, f"cgroups of {sandbox_id} left: {left}"


def test_fork_bomb_hits_the_pids_limit(daemon, bystander):
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(pids=48, cpu=0.5))
    sid = sb.sandbox_id
    host_procs = len(harness.all_pids())
    try:
        start_exec(daemon.sb, sid, ["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 60"])
        events = cgroup_file(daemon, sid, "pids", "pids.events")
        deadline = time.monotonic() + 10
        while not open(events).read().split()[1:2] or int(open(events).read().split()[1]) == 0:
            assert time.monotonic() < deadline, "the fork bomb never hit pids.max"
            time.sleep(0.05)
        assert_responsive(daemon, bystander)
        in_sandbox = len(harness.sandbox_pids(daemon.cgroup_parent, sid))
        assert in_sandbox <= 48, f"{in_sandbox} processes in a sandbox limited to 48"
        assert len(harness.all_pids()) < host_procs + 48 + 32, "host process count grew past the limit"
    finally:
        finish(daemon, sid)
    assert_responsive(daemon, bystander)


def test_memory_bomb_is_oom_killed(daemon, bystander):
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(memory_mib=48))
    sid = sb.sandbox_id
    try:
        done = {}

        def bomb():
            done["st"] = sh(daemon.sb, sid, "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done")[2]

        t = threading.Thread(target=bomb, daemon=True)
        t.start()
        assert_responsive(daemon, bystander)
        t.join(30)
        assert harness.reason_name(done["st"]) == "EXIT_REASON_OOM_KILLED", done
        oom = open(cgroup_file(daemon, sid, "memory", "memory.oom_control")).read() \
            if os.path.exists(cgroup_file(daemon, sid, "memory", "memory.oom_control")) \
            else open(cgroup_file(daemon, sid, "memory", "memory.events")).read()
        assert "oom_kill 0" not in oom, oom
        out, _, _ = sh(daemon.sb, sid, "echo still-here")  # the bomb died, not the sandbox
        assert out == "still-here\n"
        assert_responsive(daemon, bystander)
    finally:
        finish(daemon, sid)


def test_disk_fill_hits_the_writable_layer_limit(daemon, bystander):
    st_before = os.statvfs(daemon.state_dir)
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(disk_mib=32))
    sid = sb.sandbox_id
    try:
        out, err, _ = sh(daemon.sb, sid,
                         "dd if=/dev/zero of=/big bs=1M count=4096; echo rc=$?; "
                         "i=0; while echo x > /small$i; do i=$((i+1)); [ $i -gt 100 ] && break; done; "
                         "echo small=$i")
        assert "No space left on device" in err and "rc=1" in out, (out, err)
        assert "small=0" in out or "small=" in out
        assert_responsive(daemon, bystander)
        st_after = os.statvfs(daemon.state_dir)
        grown = (st_before.f_bfree - st_after.f_bfree) * st_before.f_frsize
        assert grown < 16 * MiB, f"host filesystem of the state dir lost {grown // MiB} MiB"
    finally:
        finish(daemon, sid)


def test_fd_exhaustion_stays_inside(daemon, bystander):
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(pids=64))
    sid = sb.sandbox_id
    daemon_fds = daemon.fd_count()
    try:
        # Each of four processes fills its whole fd table (RLIMIT_NOFILE), then checks one more is
        # refused. (A failed `exec N<file` makes ash exit, hence counting up to the limit.)
        script = ("n=$(ulimit -n); for k in 1 2 3 4; do (i=3; while [ $i -lt $n ]; do eval \"exec $i</dev/null\"; "
                  "i=$((i+1)); done; (eval \"exec $n</dev/null\") 2>/dev/null || echo opened=$i; sleep 30) & "
                  "done; wait")
        start_exec(daemon.sb, sid, ["sh", "-c", script], exec_id="fds")
        # Wait until all four have hit their limit (each prints when it gives up).
        out = b""
        stream = daemon.sb.ReadExecOutput(pb.ReadExecOutputRequest(sandbox_id=sid, exec_id="fds",
                                                                   stream=pb.EXEC_STREAM_STDOUT), timeout=20)
        try:
            for msg in stream:
                out += msg.data
                if out.count(b"opened=") >= 4:
                    break
        finally:
            stream.cancel()
        assert out.count(b"opened=") >= 4, out
        assert_responsive(daemon, bystander)
        # The daemon still accepts new connections and creates sandboxes.
        ch, stub2 = daemon.new_channel()
        try:
            other = harness.create_sandbox(stub2)
            harness.terminate(stub2, other.sandbox_id)
        finally:
            ch.close()
        assert daemon.fd_count() <= daemon_fds + 16, "the daemon's fd table grew with the sandbox's"
    finally:
        finish(daemon, sid)


def test_output_flood_is_backpressured(daemon, bystander):
    sb = harness.create_sandbox(daemon.sb)
    sid = sb.sandbox_id
    rss0 = rss_kib(daemon.pid)
    try:
        start_exec(daemon.sb, sid, ["head", "-c", str(1024 * MiB), "/dev/zero"], exec_id="flood")
        time.sleep(1.5)  # nobody reads: the daemon fills its 16 MiB buffer, then the pipe, then stops
        spools = [n for n in os.listdir(os.path.join(daemon.state_dir, "execs", sid)) if n.endswith(".out")]
        assert len(spools) == 1, spools
        spool = os.path.join(daemon.state_dir, "execs", sid, spools[0])
        size1 = os.path.getsize(spool)
        time.sleep(0.5)
        assert os.path.getsize(spool) == size1 <= 16 * MiB, (size1, os.path.getsize(spool))
        assert non_init_pids(daemon, sid), "head should still be running (blocked on its pipe)"
        assert_responsive(daemon, bystander)
        # A reader drains 48 MiB: the stream moves on, the buffer stays bounded.
        got = 0
        stream = daemon.sb.ReadExecOutput(pb.ReadExecOutputRequest(sandbox_id=sid, exec_id="flood",
                                                                   stream=pb.EXEC_STREAM_STDOUT), timeout=60)
        try:
            for msg in stream:
                assert msg.offset == got
                got += len(msg.data)
                if got >= 48 * MiB:
                    break
        finally:
            stream.cancel()
        assert got >= 48 * MiB
        rss1 = rss_kib(daemon.pid)
        # ASan keeps freed memory in a quarantine (256 MiB by default): allow for it there.
        bound = (64 + (256 if is_asan(daemon.pid) else 0)) * 1024
        assert rss1 - rss0 < bound, f"corrald RSS grew from {rss0} to {rss1} KiB"
        blocks = os.stat(spool).st_blocks * 512
        assert blocks <= 17 * MiB, f"spool holds {blocks // MiB} MiB on disk"
        assert_responsive(daemon, bystander)
    finally:
        finish(daemon, sid)
    print(f"\ncorrald VmRSS {rss0} KiB before, {rss1} KiB after draining 48 MiB of a 1 GiB flood")


def test_cpu_spinner_ignoring_sigterm_dies_at_timeout(daemon, bystander):
    spin = "trap '' TERM; (trap '' TERM; while :; do :; done) & while :; do :; done"
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(cpu=0.5))
    sid = sb.sandbox_id
    try:
        t0 = time.monotonic()
        _, _, st = sh(daemon.sb, sid, spin, timeout_ms=800)
        assert harness.reason_name(st) == "EXIT_REASON_TIMEOUT", st
        assert time.monotonic() - t0 < 5
        left = harness.wait_clean(lambda: non_init_pids(daemon, sid), timeout=3)
        assert not left, f"processes survived the exec timeout: {left}"
        assert_responsive(daemon, bystander)
    finally:
        finish(daemon, sid)
    # The sandbox's own lifetime: a spinner that even left the exec's session is killed with the
    # whole cgroup.
    sb = harness.create_sandbox(daemon.sb, resources=pb.Resources(cpu=0.5), timeout_ms=1000,
                                command=["sh", "-c", "trap '' TERM; setsid sh -c \"trap '' TERM; while :; do :; done\" & "
                                         "while :; do :; done"])
    done = harness.wait_sandbox(daemon.sb, sb.sandbox_id, 10)
    assert harness.reason_name(done.exit_status) == "EXIT_REASON_TIMEOUT", done.exit_status
    assert not harness.wait_clean(lambda: harness.sandbox_pids(daemon.cgroup_parent, sb.sandbox_id))
    assert not harness.wait_clean(lambda: harness.cgroup_dirs(daemon.cgroup_parent, sb.sandbox_id))
