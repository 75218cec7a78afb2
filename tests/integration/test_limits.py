"""Resource limits end to end: cpu, memory (OOM reporting), pids, the writable layer's size (disk),
the defaults for requests that set none, and what a daemon restart does to them."""
import os
import signal
import time

import grpc
import pytest

import harness
from harness import RPC_TIMEOUT, cpb, pb, run_exec

DEFAULT_DISK_MIB = 24
DEFAULT_PIDS = 200
DAEMON_ARGS = ["--default-disk-mib", str(DEFAULT_DISK_MIB), "--default-pids", str(DEFAULT_PIDS)]
MiB = 1024 * 1024


def sh(stub, sandbox_id, script, **kw):
    out, err, st = run_exec(stub, sandbox_id, ["sh", "-c", script], **kw)
    return out.decode(errors="replace"), err.decode(errors="replace"), st


def controller_dir(daemon, sandbox_id, controller):
    """The sandbox's cgroup dir that holds controller: the v1 one where it is mounted, else v2."""
    v1 = os.path.join(harness.CGROUP_ROOT, controller, daemon.cgroup_parent, sandbox_id)
    if os.path.isdir(v1):
        return v1, 1
    for root in (os.path.join(harness.CGROUP_ROOT, "unified"), harness.CGROUP_ROOT):
        v2 = os.path.join(root, daemon.cgroup_parent, sandbox_id)
        if os.path.exists(os.path.join(v2, "cgroup.procs")):
            return v2, 2
    raise AssertionError(f"no cgroup of {sandbox_id} holds {controller}")


def read(path):
    with open(path) as f:
        return f.read().strip()


def rw_mount_line(daemon, sandbox_id):
    want = os.path.join(daemon.state_dir, "sandboxes", sandbox_id) + " "
    lines = [m for m in harness.state_mounts(daemon.state_dir) if want in m]
    return lines[0] if lines else None


def df_root_kib(stub, sandbox_id):
    out, _, _ = sh(stub, sandbox_id, "df -k / | tail -1")
    return int(out.split()[1])


# --- disk ------------------------------------------------------------------------------------

def test_disk_limit_gives_enospc_and_host_sees_the_layer(daemon, stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(disk_mib=8))
    sid = sb.sandbox_id
    try:
        assert df_root_kib(stub, sid) == 8 * 1024
        out, err, st = sh(stub, sid, "dd if=/dev/zero of=/fill bs=1M count=64; echo rc=$?; sync")
        assert "No space left on device" in err, err
        assert "rc=1" in out, out
        # The layer is a tmpfs on the host at <state>/sandboxes/<id>: nosuid, nodev, noexec there,
        # readable by the host (snapshots), owned by the sandbox's unprivileged uid range.
        line = rw_mount_line(daemon, sid)
        assert line and " - tmpfs " in line, line
        opts = line.split()[5].split(",")
        assert {"nosuid", "nodev", "noexec"} <= set(opts), line
        assert "size=8192k" in line, line
        fill = os.path.join(daemon.state_dir, "sandboxes", sid, "upper", "fill")
        st_fill = os.stat(fill)
        assert 7 * MiB <= st_fill.st_size <= 8 * MiB, st_fill.st_size
        assert st_fill.st_uid >= 65536, st_fill.st_uid
        # Deleting makes room again (a whiteout-free delete of an upper file).
        out, _, st = sh(stub, sid, "rm /fill && dd if=/dev/zero of=/again bs=1M count=2 2>/dev/null; echo rc=$?")
        assert "rc=0" in out, out
        # /tmp and /dev/shm are memory-backed scratch space: capped (each) at the same size, so
        # they are no way around the limit.
        for scratch in ("/tmp", "/dev/shm"):
            out, err, st = sh(stub, sid, f"dd if=/dev/zero of={scratch}/fill bs=1M count=64; echo rc=$?; "
                                         f"du -k {scratch}/fill; rm -f {scratch}/fill")
            assert "No space left on device" in err and "rc=1" in out, (scratch, out, err)
            assert int(out.split("\n")[1].split()[0]) <= 8 * 1024, (scratch, out)
    finally:
        harness.terminate(stub, sid)
    harness.wait_sandbox(stub, sid, 10)
    assert harness.wait_clean(lambda: [rw_mount_line(daemon, sid)] if rw_mount_line(daemon, sid) else []) == []
    assert not os.path.exists(os.path.join(daemon.state_dir, "sandboxes", sid))


def test_defaults_apply_when_unset(daemon, stub):
    sb = harness.create_sandbox(stub)
    sid = sb.sandbox_id
    try:
        assert df_root_kib(stub, sid) == DEFAULT_DISK_MIB * 1024
        d, _ = controller_dir(daemon, sid, "pids")
        assert read(os.path.join(d, "pids.max")) == str(DEFAULT_PIDS)
    finally:
        harness.terminate(stub, sid)


def test_disk_and_other_limits_are_validated(stub):
    for res, what in [(pb.Resources(disk_mib=1 << 40), "disk_mib"), (pb.Resources(memory_mib=4), "memory_mib"),
                      (pb.Resources(cpu=-1), "cpu"), (pb.Resources(pids=1 << 30), "pids")]:
        with pytest.raises(grpc.RpcError) as ei:
            harness.create_sandbox(stub, resources=res)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, ei.value)
        assert what in ei.value.details(), ei.value.details()


# --- memory, pids, cpu -----------------------------------------------------------------------

def test_memory_pids_cpu_reach_the_cgroups(daemon, stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(memory_mib=96, pids=77, cpu=0.25))
    sid = sb.sandbox_id
    try:
        d, ver = controller_dir(daemon, sid, "memory")
        if ver == 1:
            assert int(read(os.path.join(d, "memory.limit_in_bytes"))) == 96 * MiB
            memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                assert int(read(memsw)) == 96 * MiB
            else:
                assert read(os.path.join(d, "memory.swappiness")) == "0"
        else:
            assert int(read(os.path.join(d, "memory.max"))) == 96 * MiB
        d, _ = controller_dir(daemon, sid, "pids")
        assert read(os.path.join(d, "pids.max")) == "77"
        d, ver = controller_dir(daemon, sid, "cpu")
        if ver == 1:
            assert read(os.path.join(d, "cpu.cfs_quota_us")) == "25000"
            assert read(os.path.join(d, "cpu.cfs_period_us")) == "100000"
        else:
            assert read(os.path.join(d, "cpu.max")) == "25000 100000"
    finally:
        harness.terminate(stub, sid)


def test_cpu_limit_throttles(daemon, stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(cpu=0.2))
    sid = sb.sandbox_id
    try:
        d, ver = controller_dir(daemon, sid, "cpu")
        acct = os.path.join(harness.CGROUP_ROOT, "cpuacct", daemon.cgroup_parent, sid, "cpuacct.usage")
        t0 = time.monotonic()
        _, _, st = sh(stub, sid, "while :; do :; done", timeout_ms=1500)
        wall = time.monotonic() - t0
        assert harness.reason_name(st) == "EXIT_REASON_TIMEOUT", st
        stat = read(os.path.join(d, "cpu.stat"))
        throttled = int(dict(line.split() for line in stat.splitlines())["nr_throttled"])
        assert throttled > 0, stat
        if ver == 1 and os.path.exists(acct):
            used = int(read(acct)) / 1e9
            assert used < 0.2 * wall + 0.25, f"{used:.2f}s of CPU in {wall:.2f}s at 0.2 cores"
    finally:
        harness.terminate(stub, sid)


def test_entrypoint_oom_ends_sandbox_as_oom_killed(stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(memory_mib=32),
                                command=["sh", "-c", "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done"])
    done = harness.wait_sandbox(stub, sb.sandbox_id, 30)
    assert harness.reason_name(done.exit_status) == "EXIT_REASON_OOM_KILLED", done.exit_status
    ex = stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=sb.sandbox_id), timeout=RPC_TIMEOUT)
    assert ex.sandbox.exit_status.reason == cpb.EXIT_REASON_OOM_KILLED


def test_exec_oom_is_reported_and_sandbox_survives(stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(memory_mib=32))
    sid = sb.sandbox_id
    try:
        _, _, st = sh(stub, sid, "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done")
        assert harness.reason_name(st) == "EXIT_REASON_OOM_KILLED", st
        assert st.signal == signal.SIGKILL
        # A later SIGKILL that is not the OOM killer's is not called OOM.
        _, _, st = sh(stub, sid, "kill -9 $$")
        assert harness.reason_name(st) == "EXIT_REASON_SIGNALED", st
        out, _, st = sh(stub, sid, "echo alive")
        assert out == "alive\n" and harness.reason_name(st) == "EXIT_REASON_EXITED"
    finally:
        harness.terminate(stub, sid)


# --- restart ----------------------------------------------------------------------------------

def test_restart_keeps_the_layer_then_cleans_it(daemon, restart_daemon):
    stub = daemon.sb
    sb = harness.create_sandbox(stub, resources=pb.Resources(disk_mib=8))
    sid = sb.sandbox_id
    sh(stub, sid, "echo kept > /kept")
    # A directory (with a mounted layer) that no record names, as a daemon killed between mkdir
    # and the database insert would leave: the next start removes it.
    stray = os.path.join(daemon.state_dir, "sandboxes", "sb-stray0000000000")
    daemon.kill()
    os.mkdir(stray, 0o711)
    assert os.system(f"mount -t tmpfs -o size=1m corral-rw {stray}") == 0
    try:
        stub = restart_daemon().sb
    finally:
        if os.path.ismount(stray):  # the daemon failed to sweep it: do not leave it behind
            os.system(f"umount -l {stray}")
    assert not os.path.exists(stray), "stray sandbox dir not swept at start"
    out, _, _ = sh(stub, sid, "cat /kept; df -k / | tail -1")
    assert out.startswith("kept\n") and out.split()[2] == str(8 * 1024), out
    assert rw_mount_line(daemon, sid)
    harness.terminate(stub, sid)
    harness.wait_sandbox(stub, sid, 10)
    assert harness.wait_clean(lambda: [rw_mount_line(daemon, sid)] if rw_mount_line(daemon, sid) else []) == []
