"""The daemon keeps a bounded window of each output stream: older bytes are OUT_OF_RANGE."""
import grpc
import pytest

from harness import cpb, read_output, start_exec, wait_exec

WINDOW = 64 * 1024
DAEMON_ARGS = ["--output-buffer", str(WINDOW)]


def test_dropped_offset_is_out_of_range(stub, sandbox):
    # 1 MiB in 32 KiB steps, slowly enough for a live reader to keep up with a 64 KiB window
    # (whether a full window blocks the writer or drops old bytes, this reader sees every byte).
    chunk, n = 32 * 1024, 32
    script = f"i=0; while [ $i -lt {n} ]; do head -c {chunk} /dev/zero; sleep 0.02; i=$((i+1)); done"
    ex = start_exec(stub, sandbox.sandbox_id, ["sh", "-c", script]).exec
    live = read_output(stub, sandbox.sandbox_id, ex.exec_id, offset=0, timeout_s=60)
    assert live == b"\0" * (chunk * n)
    st = wait_exec(stub, sandbox.sandbox_id, ex.exec_id, 30).exit_status
    assert st.reason == cpb.EXIT_REASON_EXITED and st.exit_code == 0, st

    # Offset 0 is far behind the 64 KiB window now.
    with pytest.raises(grpc.RpcError) as ei:
        read_output(stub, sandbox.sandbox_id, ex.exec_id, offset=0)
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE, ei.value
    assert "offset" in (ei.value.details() or "").lower(), ei.value.details()

    # The tail is still there, at its true offsets.
    size = chunk * n
    assert read_output(stub, sandbox.sandbox_id, ex.exec_id, offset=size - 1000) == b"\0" * 1000


def test_a_sandbox_keeps_a_bounded_total_of_finished_output(stub, sandbox):
    # Unread output of finished execs is kept until the sandbox is purged, but at most 16
    # buffers' worth per sandbox (1 MiB here): past that, the oldest finished execs' output goes.
    ids = []
    for i in range(24):
        ex = start_exec(stub, sandbox.sandbox_id, ["sh", "-c", "head -c 61440 /dev/zero"], exec_id=f"burst-{i}").exec
        st = wait_exec(stub, sandbox.sandbox_id, ex.exec_id, 30).exit_status
        assert st.reason == cpb.EXIT_REASON_EXITED, st
        ids.append(ex.exec_id)
    with pytest.raises(grpc.RpcError) as ei:
        read_output(stub, sandbox.sandbox_id, ids[0], offset=0)
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE, ei.value
    assert read_output(stub, sandbox.sandbox_id, ids[-1], offset=0) == b"\0" * 61440
