"""The pool: sandboxes started ahead of demand and handed out by CreateSandbox."""
import os
import time

import grpc
import pytest

import harness
from harness import RPC_TIMEOUT, pb, run_exec

POOL_SIZE = 2
DAEMON_ARGS = ["--pool-size", str(POOL_SIZE)]


def cgroup_sandboxes(daemon):
    """Sandbox ids that have a cgroup (running, pooled or not yet removed)."""
    ids = set()
    for d in harness.cgroup_dirs(daemon.cgroup_parent):
        name = os.path.basename(d)
        if name.startswith("sb-"):
            ids.add(name)
    return ids


def listed(stub):
    resp = stub.ListSandboxes(pb.ListSandboxesRequest(include_finished=True), timeout=RPC_TIMEOUT)
    return {s.sandbox_id for s in resp.sandboxes}


def first_line(stub, sandbox_id, exec_id):
    buf = b""
    req = pb.ReadExecOutputRequest(sandbox_id=sandbox_id, exec_id=exec_id, stream=pb.EXEC_STREAM_STDOUT)
    for msg in stub.ReadExecOutput(req, timeout=10):
        buf += msg.data
        if b"\n" in buf or msg.eof:
            break
    return buf


def wait_pool_full(daemon, visible):
    deadline = time.monotonic() + 10
    while len(cgroup_sandboxes(daemon) - visible) < POOL_SIZE:
        assert time.monotonic() < deadline, "the pool did not fill"
        time.sleep(0.05)
    return cgroup_sandboxes(daemon) - visible


def test_pooled_sandboxes_are_invisible_and_handed_out(daemon, stub):
    first = harness.create_sandbox(stub)  # demand for busybox: the pool fills behind it
    try:
        pooled = wait_pool_full(daemon, {first.sandbox_id})
        assert listed(stub) == {first.sandbox_id}, "pooled sandboxes must not be listed"
        for pid in pooled:
            with pytest.raises(grpc.RpcError) as e:
                stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=pid), timeout=RPC_TIMEOUT)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND

        # A compatible request gets one of them, with everything the request asked for.
        sb = harness.create_sandbox(stub, command=["sh", "-c", "echo $GREETING $(pwd) $(hostname); sleep 30"],
                                    env={"GREETING": "hello"}, workdir="/tmp", tags={"who": "pool-test"},
                                    timeout_ms=20000)
        assert sb.sandbox_id in pooled, "a compatible request should be served from the pool"
        assert dict(sb.tags) == {"who": "pool-test"} and sb.timeout_ms == 20000
        out = first_line(stub, sb.sandbox_id, "entrypoint")
        assert out == f"hello /tmp {sb.sandbox_id}\n".encode(), out
        assert time.time() * 1000 - sb.created_at_ms < 5000, "created_at is the hand-out time"
        assert listed(stub) == {first.sandbox_id, sb.sandbox_id}

        # Limits the pool does not have: created the usual way.
        limited = harness.create_sandbox(stub, resources=pb.Resources(memory_mib=128))
        assert limited.sandbox_id not in pooled
        out, _, _ = run_exec(stub, limited.sandbox_id, ["echo", "ok"])
        assert out == b"ok\n"
        for s in (sb, limited):
            harness.terminate(stub, s.sandbox_id)
    finally:
        harness.terminate(stub, first.sandbox_id)


def test_reserved_pool_tag_is_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateSandbox(pb.CreateSandboxRequest(image="busybox", tags={"corral.internal/pool": "1"}),
                           timeout=RPC_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reserved" in e.value.details()


def test_pooled_sandboxes_of_an_earlier_daemon_are_removed(daemon, restart_daemon):
    stub = daemon.sb
    keep = harness.create_sandbox(stub)
    pooled = wait_pool_full(daemon, {keep.sandbox_id})
    d = restart_daemon()  # SIGKILL: the pool's sandboxes survive the daemon, like every sandbox
    deadline = time.monotonic() + 10
    while cgroup_sandboxes(d) & pooled:
        assert time.monotonic() < deadline, f"pooled sandboxes of the killed daemon left: {cgroup_sandboxes(d) & pooled}"
        time.sleep(0.05)
    out, _, _ = run_exec(d.sb, keep.sandbox_id, ["echo", "still here"])
    assert out == b"still here\n"
    harness.terminate(d.sb, keep.sandbox_id)


def test_concurrent_creates_with_one_name_start_one_sandbox(stub):
    # Creates outside the pool run on a worker thread; the name is held from the call on, so two
    # calls racing for it cannot both win.
    req = pb.CreateSandboxRequest(image="busybox", name="only-one", resources=pb.Resources(pids=100))
    futures = [stub.CreateSandbox.future(req, timeout=RPC_TIMEOUT) for _ in range(4)]
    won, lost = [], []
    for f in futures:
        try:
            won.append(f.result().sandbox.sandbox_id)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e
            lost.append(e)
    try:
        assert len(won) == 1 and len(lost) == 3, (won, lost)
    finally:
        for sid in won:
            harness.terminate(stub, sid)

