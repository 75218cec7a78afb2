"""Escape attempts that the spine's namespaces, user-namespace mapping and init design stop.

Each test runs an attack as root inside a sandbox, asserts it fails, and asserts the host is
unchanged. (Layers added later — seccomp, capabilities, Landlock, BPF — get their own files.)
"""
import hashlib
import os
import subprocess
import time

import harness
from harness import run_exec

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def sh(stub, sandbox_id, script):
    out, err, status = run_exec(stub, sandbox_id, ["sh", "-c", script])
    return out.decode(errors="replace"), err.decode(errors="replace"), status


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_host_filesystem_is_invisible(stub, sandbox):
    marker = os.path.join(REPO, "build", "host-marker-%d" % os.getpid())
    with open(marker, "w") as f:
        f.write("host secret\n")
    try:
        out, _, _ = sh(stub, sandbox.sandbox_id,
                       "ls /; test -e /work && echo SEE-WORK; test -e %s && echo SEE-MARKER; "
                       "cat /proc/1/root/work/main/README.md 2>/dev/null && echo SEE-VIA-PROC; true" % marker)
        assert "SEE-" not in out, out
    finally:
        os.unlink(marker)


def test_root_inside_writes_as_unprivileged_uid(daemon, stub, sandbox):
    _, _, status = sh(stub, sandbox.sandbox_id, "echo x > /owned-by-whom")
    assert status.exit_code == 0
    upper = os.path.join(daemon.state_dir, "sandboxes", sandbox.sandbox_id, "upper", "owned-by-whom")
    st = os.stat(upper)
    assert st.st_uid >= 65536 and st.st_gid >= 65536, (st.st_uid, st.st_gid)


def test_init_binary_cannot_be_overwritten(stub, sandbox):
    host_init = os.path.join(REPO, "build", "corral-init")
    before = sha256(host_init)
    out, _, _ = sh(stub, sandbox.sandbox_id,
                   "echo pwned > /proc/1/exe && echo WROTE-EXE; "
                   "echo pwned >> /proc/self/exe 2>/dev/null && echo WROTE-SELF; true")
    assert "WROTE" not in out, out
    assert sha256(host_init) == before


def test_proc_sys_and_sysrq_are_not_writable_from_inside(stub, sandbox):
    core_pattern = open("/proc/sys/kernel/core_pattern").read()
    hostname = open("/proc/sys/kernel/hostname").read()
    out, _, _ = sh(stub, sandbox.sandbox_id,
                   "echo '|/tmp/x' > /proc/sys/kernel/core_pattern && echo WROTE-CORE; "
                   "echo b > /proc/sysrq-trigger && echo WROTE-SYSRQ; "
                   "echo 1 > /proc/sys/vm/drop_caches && echo WROTE-VM; true")
    assert "WROTE" not in out, out
    assert open("/proc/sys/kernel/core_pattern").read() == core_pattern
    assert open("/proc/sys/kernel/hostname").read() == hostname


def test_hostname_change_stays_inside(stub, sandbox):
    host = open("/proc/sys/kernel/hostname").read()
    sh(stub, sandbox.sandbox_id, "hostname evil-name")
    assert open("/proc/sys/kernel/hostname").read() == host


def test_kill_all_reaches_only_the_sandbox(daemon, stub):
    victim = subprocess.Popen(["sleep", "60"])
    a = harness.create_sandbox(stub)
    b = harness.create_sandbox(stub)
    try:
        harness.start_exec(stub, b.sandbox_id, ["sleep", "60"], exec_id="bystander")
        sh(stub, a.sandbox_id, "kill -9 -1; true")
        time.sleep(0.3)
        assert victim.poll() is None, "a host process was killed from inside a sandbox"
        assert daemon.running()
        out, _, status = sh(stub, b.sandbox_id, "echo alive")
        assert out == "alive\n"
        ex = stub.WaitExec(harness.pb.WaitExecRequest(sandbox_id=b.sandbox_id, exec_id="bystander", timeout_ms=0))
        assert not ex.finished, "a process in another sandbox was killed"
    finally:
        victim.kill()
        victim.wait()
        harness.terminate(stub, a.sandbox_id)
        harness.terminate(stub, b.sandbox_id)


def test_no_host_block_devices_and_mknod_fails(stub, sandbox):
    out, _, _ = sh(stub, sandbox.sandbox_id,
                   "ls /dev; mknod /tmp/sda b 8 0 && echo MKNOD-OK; "
                   "mknod /tmp/mem c 1 1 && cat /tmp/mem >/dev/null && echo MEM-READ; true")
    assert "MKNOD-OK" not in out and "MEM-READ" not in out, out
    assert "sda" not in out.split("\n")[0:40]


def test_pid_namespace_hides_host_processes(stub, sandbox):
    out, _, _ = sh(stub, sandbox.sandbox_id, "ls /proc | grep -c '^[0-9]'")
    assert int(out.strip()) < 10, out
