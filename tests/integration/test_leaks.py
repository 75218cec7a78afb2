"""Nothing leaks: after many create → exec → terminate cycles no trace of them is left."""
import os
import re
import sqlite3
import time

import grpc
import pytest

import harness
from harness import RPC_TIMEOUT, cpb, pb, run_exec

RETENTION_S = 1
POOL_SIZE = 2  # sandboxes the daemon keeps started ahead; they are not "left over"
DAEMON_ARGS = ["--retention", str(RETENTION_S), "--pool-size", str(POOL_SIZE)]
SANDBOX_ID = re.compile(r"sb-[0-9a-f]{16}")
CYCLES = int(os.environ.get("CORRAL_LEAK_CYCLES", "200"))


def db_rows(state_dir, ids):
    """Rows of these sandboxes in corral.db (opened read-only)."""
    db = sqlite3.connect(f"file:{os.path.join(state_dir, 'corral.db')}?mode=ro", uri=True, timeout=10)
    try:
        marks = ",".join("?" * len(ids))
        sandboxes = db.execute(f"SELECT count(*) FROM sandboxes WHERE id IN ({marks})", ids).fetchone()[0]
        execs = db.execute(f"SELECT count(*) FROM execs WHERE sandbox_id IN ({marks})", ids).fetchone()[0]
        return sandboxes, execs
    finally:
        db.close()


def purged(stub, sandbox_id):
    try:
        stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=sandbox_id), timeout=RPC_TIMEOUT)
        return False
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_create_exec_terminate_cycles_leave_nothing(daemon):
    stub = daemon.sb
    # Warm up (the first sandbox builds the busybox image), then take the baselines.
    sb = harness.create_sandbox(stub)
    run_exec(stub, sb.sandbox_id, ["true"])
    harness.terminate(stub, sb.sandbox_id)
    time.sleep(RETENTION_S + 1)
    fds_before = daemon.fd_count()
    mounts_before = harness.state_mounts(daemon.state_dir, ("self", daemon.pid))

    ids = []
    t0 = time.monotonic()
    for i in range(CYCLES):
        sb = harness.create_sandbox(stub, tags={"leak": "cycle"})
        ids.append(sb.sandbox_id)
        out, err, st = run_exec(stub, sb.sandbox_id, ["echo", "hi"])
        assert (out, st.reason, st.exit_code) == (b"hi\n", cpb.EXIT_REASON_EXITED, 0), (i, out, err, st)
        harness.terminate(stub, sb.sandbox_id)
    rate = CYCLES / (time.monotonic() - t0)
    print(f"\n{CYCLES} create→exec→terminate cycles, {rate:.1f}/s")
    assert len(set(ids)) == CYCLES, "sandbox ids were reused"

    # Retention (1 s) then purge: wait for the last one to disappear from the API.
    time.sleep(RETENTION_S + 1)
    deadline = time.monotonic() + 15
    while not purged(stub, ids[-1]):
        assert time.monotonic() < deadline, f"{ids[-1]} still visible {RETENTION_S}s after it finished"
        time.sleep(0.2)
    still = [i for i in ids if not purged(stub, i)]
    assert not still, f"{len(still)} sandboxes not purged, e.g. {still[:3]}"
    listed = stub.ListSandboxes(pb.ListSandboxesRequest(tags={"leak": "cycle"}, include_finished=True),
                                timeout=RPC_TIMEOUT)
    assert not listed.sandboxes

    def leftovers_of_cycles():
        # Traces of the cycled sandboxes, and anything that is not a sandbox at all; the pool's
        # own sandboxes (at most POOL_SIZE, never handed out) are checked when the daemon stops.
        found = harness.leftovers(daemon.cgroup_parent, daemon.state_dir)
        mine = [p for p in found if any(i in p for i in ids) or not SANDBOX_ID.search(p)]
        pooled = {m for p in found for m in SANDBOX_ID.findall(p)} - set(ids)
        if len(pooled) > POOL_SIZE:
            mine.append(f"{len(pooled)} sandboxes besides the cycled ones (pool size {POOL_SIZE}): {sorted(pooled)}")
        return mine

    problems = harness.wait_clean(leftovers_of_cycles)
    assert not problems, "\n".join(problems[:20])
    left = [i for i in ids if os.path.exists(os.path.join(daemon.state_dir, "sandboxes", i))]
    assert not left, f"sandbox dirs left: {left[:5]}"
    assert db_rows(daemon.state_dir, ids) == (0, 0), "DB rows (sandboxes, execs) left for purged sandboxes"

    mounts_after = harness.state_mounts(daemon.state_dir, ("self", daemon.pid))
    assert not [m for m in mounts_after if any(i in m for i in ids)], "mounts of finished sandboxes left"
    assert len(mounts_after) <= len(mounts_before) + POOL_SIZE, \
        "mounts under the state dir grew:\n" + "\n".join(sorted(set(mounts_after) - set(mounts_before)))

    fds_after = daemon.fd_count()
    assert fds_after <= fds_before + 5, f"daemon fds grew from {fds_before} to {fds_after}"
    assert not daemon.zombie_children(), f"unreaped children of corrald: {daemon.zombie_children()}"
