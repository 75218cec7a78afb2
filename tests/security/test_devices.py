"""Device nodes: a sandbox can open only the standard nodes and mknod none. The layers are the user
namespace (no CAP_MKNOD that counts), the cgroup_dev BPF program on the sandbox's v2 cgroup, and
the v1 devices controller where it is mounted, kept to the same list. Needs root and bpftool."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import harness
from harness import run_exec

STANDARD_V1 = ["c 1:3 rw", "c 1:5 rw", "c 1:7 rw", "c 1:8 rw", "c 1:9 rw", "c 5:0 rw", "c 5:2 rw", "c 136:* rw"]


def sh(stub, sandbox_id, script, **kw):
    out, err, st = run_exec(stub, sandbox_id, ["sh", "-c", script], **kw)
    return out.decode(errors="replace"), err.decode(errors="replace"), st


def bpftool(*args):
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is not installed (scripts/deps.sh installs it)")
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]")


def v2_dir(daemon, sandbox_id):
    for root in (os.path.join(harness.CGROUP_ROOT, "unified"), harness.CGROUP_ROOT):
        d = os.path.join(root, daemon.cgroup_parent, sandbox_id)
        if os.path.exists(os.path.join(d, "cgroup.procs")):
            return d
    raise AssertionError(f"no v2 cgroup for {sandbox_id}")


def daemon_prog_id(daemon):
    """The id of the daemon's cgroup_dev program, from its start-up log line."""
    with open(daemon.log_path) as f:
        ids = re.findall(r"device policy: cgroup_dev program (\d+)", f.read())
    if not ids:
        pytest.fail("corrald did not report an active device policy:\n" + daemon.log_tail())
    return int(ids[-1])


def attached_ids(daemon, sandbox_id):
    progs = bpftool("cgroup", "list", v2_dir(daemon, sandbox_id))
    return [p["id"] for p in progs if p.get("attach_type") == "cgroup_device"]


def try_open_in_cgroup(cgroup_dirs, path, flags=os.O_RDONLY):
    """Fork a host-root child, move it into the given cgroup dirs, open path there: 0 or errno.
    Host root has every capability, so only the cgroup's device checks can refuse it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for d in cgroup_dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            try:
                os.close(os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY))
                code = 0
            except OSError as e:
                code = e.errno
            os.write(w, str(code).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert data, "child failed before trying the open"
    return int(data)


def test_standard_nodes_work(stub, sandbox):
    out, err, st = sh(stub, sandbox.sandbox_id,
                      "echo x > /dev/null && echo null; head -c 3 /dev/zero | wc -c; "
                      "head -c 5 /dev/urandom | wc -c; head -c 5 /dev/random | wc -c; "
                      "echo x > /dev/full; echo full=$?")
    assert out.split() == ["null", "3", "5", "5", "full=1"], (out, err)
    assert "No space left on device" in err, err
    # A pty exec opens /dev/pts/ptmx and /dev/pts/N inside the sandbox.
    out, _, st = run_exec(stub, sandbox.sandbox_id, ["tty"], pty=True)
    assert st.exit_code == 0 and out.strip().startswith(b"/dev/pts/"), out


def test_mknod_fails_and_leaves_nothing(daemon, stub, sandbox):
    out, err, _ = sh(stub, sandbox.sandbox_id,
                     "for n in 'c 1 3' 'c 1 1' 'c 1 11' 'c 10 237' 'b 7 0' 'b 8 0' 'c 4 1'; do "
                     "set -- $n; mknod /dev/shm/n$1$2$3 $1 $2 $3 2>/dev/null && echo MADE $n; "
                     "mknod /n$1$2$3 $1 $2 $3 2>/dev/null && echo MADE $n; done; "
                     "mkfifo /fifo && echo fifo-ok; true")
    assert "MADE" not in out, out
    assert "fifo-ok" in out  # a fifo is not a device: still allowed
    upper = os.path.join(daemon.state_dir, "sandboxes", sandbox.sandbox_id, "upper")
    assert sorted(n for n in os.listdir(upper) if n.startswith("n")) == [], os.listdir(upper)


def test_deleting_image_files_still_works(stub, sandbox):
    # overlayfs records a deletion as a whiteout, a char 0:0 node: the kernel exempts it from the
    # device checks, and the policy must not break it.
    out, err, st = sh(stub, sandbox.sandbox_id, "rm /bin/ls && test ! -e /bin/ls && echo deleted")
    assert out == "deleted\n", (out, err)


def test_program_is_attached_and_v1_matches(daemon, stub, sandbox):
    pid = daemon_prog_id(daemon)
    assert attached_ids(daemon, sandbox.sandbox_id) == [pid]
    dev = os.path.join(harness.CGROUP_ROOT, "devices", daemon.cgroup_parent, sandbox.sandbox_id)
    if os.path.isdir(os.path.join(harness.CGROUP_ROOT, "devices")):
        with open(os.path.join(dev, "devices.list")) as f:
            assert f.read().split("\n")[:-1] == STANDARD_V1
        # The sandbox's init sits in that devices cgroup too.
        init = harness.init_pid(daemon.cgroup_parent, sandbox.sandbox_id)
        with open(f"/proc/{init}/cgroup") as f:
            assert f":devices:/{daemon.cgroup_parent}/{sandbox.sandbox_id}\n" in f.read()


def test_bpf_program_alone_denies_other_devices(daemon, sandbox):
    """A node not on the list, opened from the sandbox's v2 cgroup only (v1 devices left at the
    host's root, which allows everything): the BPF program alone must refuse it. /dev/kmsg is
    harmless to open read-only."""
    v2 = v2_dir(daemon, sandbox.sandbox_id)
    assert try_open_in_cgroup([v2], "/dev/null", os.O_WRONLY) == 0
    assert try_open_in_cgroup([v2], "/dev/kmsg") == 1  # EPERM
    if os.path.exists("/dev/loop-control"):
        assert try_open_in_cgroup([v2], "/dev/loop-control") == 1


def test_v1_devices_controller_alone_denies_other_devices(daemon, sandbox):
    dev = os.path.join(harness.CGROUP_ROOT, "devices", daemon.cgroup_parent, sandbox.sandbox_id)
    if not os.path.isdir(dev):
        pytest.skip("no v1 devices controller on this host (pure cgroup v2: the BPF program is the layer)")
    assert try_open_in_cgroup([dev], "/dev/zero") == 0
    assert try_open_in_cgroup([dev], "/dev/kmsg") == 1


def test_attachment_survives_restart_and_nothing_is_left(daemon, restart_daemon):
    old_id = daemon_prog_id(daemon)
    links_before = len(bpftool("link", "show"))
    sids = [harness.create_sandbox(daemon.sb).sandbox_id for _ in range(3)]
    for sid in sids:
        assert attached_ids(daemon, sid) == [old_id]
    assert len(bpftool("link", "show")) == links_before, "device policy attachments must not be bpf_links"
    stub = restart_daemon().sb
    new_id = daemon_prog_id(daemon)
    assert new_id != old_id
    for sid in sids:  # adopted sandboxes keep the program they started with
        assert attached_ids(daemon, sid) == [old_id]
        out, _, _ = sh(stub, sid, "mknod /x c 1 11 2>/dev/null && echo MADE; echo ok")
        assert out == "ok\n"
    for sid in sids:
        harness.terminate(stub, sid)
    for sid in sids:
        harness.wait_sandbox(stub, sid, 10)
    # Removing the last cgroup that holds the old program frees it (after an RCU grace period).
    deadline = time.monotonic() + 10
    while any(p["id"] == old_id for p in bpftool("prog", "show")):
        assert time.monotonic() < deadline, f"program {old_id} still loaded after its sandboxes ended"
        time.sleep(0.1)
    assert any(p["id"] == new_id for p in bpftool("prog", "show"))  # the live daemon's own
