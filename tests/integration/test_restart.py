"""The daemon can die; sandboxes and their output cannot. A restarted daemon adopts them."""
import os
import signal
import time

import harness
from harness import RPC_TIMEOUT, cpb, pb, run_exec, start_exec, wait_exec

COUNTER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"


def read_lines(stub, sandbox_id, exec_id, min_lines, timeout_s=20):
    """Stream stdout from offset 0 until at least min_lines complete lines, then cancel."""
    req = pb.ReadExecOutputRequest(sandbox_id=sandbox_id, exec_id=exec_id, stream=pb.EXEC_STREAM_STDOUT)
    stream = stub.ReadExecOutput(req, timeout=timeout_s)
    buf = b""
    try:
        for msg in stream:
            assert msg.offset == len(buf), f"chunk at {msg.offset}, expected {len(buf)}"
            buf += msg.data
            if buf.count(b"\n") >= min_lines or msg.eof:
                break
    finally:
        stream.cancel()
    return buf


def assert_counting(buf):
    """buf is "0\\n1\\n2\\n..." with no gap and no duplicate (a partial last line is allowed)."""
    lines = buf.split(b"\n")[:-1]
    want = [str(i).encode() for i in range(len(lines))]
    assert lines == want, f"output not consecutive: first difference at line " \
                          f"{next(i for i, (a, b) in enumerate(zip(lines, want)) if a != b)}"


def wait_gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while harness.alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.05)


def test_sandboxes_survive_sigkill_and_are_adopted(daemon):
    stub = daemon.sb
    busy = harness.create_sandbox(stub, tags={"role": "busy"})
    idle = harness.create_sandbox(stub, tags={"role": "idle"})
    victim = harness.create_sandbox(stub, tags={"role": "victim"})
    start_exec(stub, busy.sandbox_id, ["sh", "-c", COUNTER], exec_id="counter")
    before = read_lines(stub, busy.sandbox_id, "counter", 10)
    assert_counting(before)

    inits = {s.sandbox_id: harness.init_pid(daemon.cgroup_parent, s.sandbox_id) for s in (busy, idle, victim)}
    counter_pids = harness.sandbox_pids(daemon.cgroup_parent, busy.sandbox_id, comm="sh")
    assert counter_pids, "the counter's sh is not in the busy sandbox's cgroup"

    daemon.kill()
    time.sleep(0.5)
    for sid, pid in inits.items():
        assert harness.alive(pid), f"corral-init of {sid} (pid {pid}) died with the daemon"
    assert all(harness.alive(p) for p in counter_pids), "the running exec died with the daemon"

    # While the daemon is down, the victim's init dies.
    os.kill(inits[victim.sandbox_id], signal.SIGKILL)
    wait_gone(inits[victim.sandbox_id])
    time.sleep(1)  # the counter keeps writing into its pipe meanwhile

    daemon.start()
    stub = daemon.sb

    for s in (busy, idle):
        got = stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=s.sandbox_id), timeout=RPC_TIMEOUT).sandbox
        assert got.state == pb.SANDBOX_STATE_RUNNING, got
        assert dict(got.tags) == dict(s.tags)
    out, err, st = run_exec(stub, idle.sandbox_id, ["sh", "-c", "echo adopted; hostname"])
    assert out == b"adopted\n" + idle.sandbox_id.encode() + b"\n", (out, err)
    out, _, st = run_exec(stub, busy.sandbox_id, ["echo", "busy-too"])
    assert out == b"busy-too\n" and st.reason == cpb.EXIT_REASON_EXITED

    # The running exec's output continues, and offset 0 still gives one consistent stream.
    after = read_lines(stub, busy.sandbox_id, "counter", before.count(b"\n") + 40)
    assert after.startswith(before), "bytes read before the restart changed"
    assert_counting(after)
    ex = stub.WaitExec(pb.WaitExecRequest(sandbox_id=busy.sandbox_id, exec_id="counter"),
                       timeout=RPC_TIMEOUT)
    assert not ex.finished

    # The sandbox whose init died while the daemon was away is finished and cleaned up.
    done = harness.wait_sandbox(stub, victim.sandbox_id, 15)
    assert done.exit_status.reason != cpb.EXIT_REASON_UNSPECIFIED, done.exit_status
    problems = harness.wait_clean(lambda: harness.cgroup_dirs(daemon.cgroup_parent, victim.sandbox_id)
                                  + [p for p in [os.path.join(daemon.state_dir, "sandboxes", victim.sandbox_id)]
                                     if os.path.exists(p)])
    assert not problems, problems

    # Terminate works on adopted sandboxes, and ends their execs.
    harness.terminate(stub, busy.sandbox_id)
    done = harness.wait_sandbox(stub, busy.sandbox_id, 10)
    assert done.exit_status.reason == cpb.EXIT_REASON_TERMINATED, done.exit_status
    assert wait_exec(stub, busy.sandbox_id, "counter", 10).state == pb.EXEC_STATE_FINISHED
    wait_gone(inits[busy.sandbox_id])
    harness.terminate(stub, idle.sandbox_id)
    harness.wait_sandbox(stub, idle.sandbox_id, 10)
    wait_gone(inits[idle.sandbox_id])


def test_sandbox_survives_clean_stop(daemon, restart_daemon):
    sb = harness.create_sandbox(daemon.sb)
    ipid = harness.init_pid(daemon.cgroup_parent, sb.sandbox_id)
    restart_daemon(signal.SIGTERM)
    assert harness.alive(ipid), "SIGTERM to corrald killed a sandbox"
    out, _, st = run_exec(daemon.sb, sb.sandbox_id, ["echo", "still-here"])
    assert out == b"still-here\n"
    harness.terminate(daemon.sb, sb.sandbox_id)
    harness.wait_sandbox(daemon.sb, sb.sandbox_id, 10)


def test_restart_with_nothing_running(daemon, restart_daemon):
    """Back-to-back kills and starts on the same state dir keep the daemon serving."""
    for how in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
        restart_daemon(how)
        info = daemon.sys.GetInfo(harness.spb.GetInfoRequest(), timeout=RPC_TIMEOUT)
        assert info.version
    sb = harness.create_sandbox(daemon.sb)
    assert run_exec(daemon.sb, sb.sandbox_id, ["true"])[2].reason == cpb.EXIT_REASON_EXITED
    harness.terminate(daemon.sb, sb.sandbox_id)
