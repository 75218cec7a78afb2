"""The spine: create a sandbox, exec in it, stream its I/O, and every bad input's clear error."""
import hashlib
import re
import threading
import time
import uuid

import grpc
import pytest

import harness
import rawh2
from harness import RPC_TIMEOUT, cpb, pb, run_exec, start_exec, read_output, wait_exec

# Keep a whole 10 MiB exec output re-readable from offset 0 whatever the default window is.
DAEMON_ARGS = ["--output-buffer", str(64 << 20)]

STDOUT, STDERR = pb.EXEC_STREAM_STDOUT, pb.EXEC_STREAM_STDERR
R = cpb  # ExitReason values: R.EXIT_REASON_EXITED, ...


@pytest.fixture(scope="module")
def box(daemon):
    """One idle busybox sandbox shared by the exec tests of this module."""
    sb = harness.create_sandbox(daemon.sb, tags={"suite": "spine"})
    yield sb
    try:
        harness.terminate(daemon.sb, sb.sandbox_id)
    except grpc.RpcError:
        pass  # already gone; the daemon fixture's teardown checks what is left


def expect_error(code, words, call, *args, **kw):
    """call(*args) must fail with `code` and a details message containing one of `words`."""
    with pytest.raises(grpc.RpcError) as ei:
        result = call(*args, **kw)
        if hasattr(result, "__next__"):
            list(result)  # a server stream reports its error while iterating
    err = ei.value
    details = err.details() or ""
    assert err.code() == code, f"got {err.code()} ({details!r}), want {code}"
    assert details.strip(), f"{code} without a details message"
    assert any(w.lower() in details.lower() for w in words), \
        f"details {details!r} mention none of {words}"
    return err


def exited(status, code):
    return status.reason == R.EXIT_REASON_EXITED and status.exit_code == code


# --- basics ---------------------------------------------------------------------------------

def test_get_info(daemon):
    info = daemon.sys.GetInfo(harness.spb.GetInfoRequest(), timeout=RPC_TIMEOUT)
    assert info.version
    assert "busybox" in info.images
    assert info.cgroup_mode in ("v2", "hybrid", "v1")


def test_create_sandbox(box):
    assert box.sandbox_id
    assert box.state == pb.SANDBOX_STATE_RUNNING
    assert box.image == "busybox"
    assert box.created_at_ms > 0
    assert dict(box.tags) == {"suite": "spine"}


def test_exec_stdio_and_exit_code(stub, box):
    out, err, st = run_exec(stub, box.sandbox_id,
                            ["sh", "-c", "echo out; echo err >&2; read x; echo got $x; exit 3"],
                            stdin=b"hi\n")
    assert out == b"out\ngot hi\n"
    assert err == b"err\n"
    assert exited(st, 3), st


def test_exec_env_and_workdir(stub, box):
    out, err, st = run_exec(stub, box.sandbox_id, ["sh", "-c", "echo $FOO; pwd"],
                            env={"FOO": "bar"}, workdir="/tmp")
    assert (out, err) == (b"bar\n/tmp\n", b"")
    assert exited(st, 0), st


def test_server_generated_exec_id(stub, box):
    ex = start_exec(stub, box.sandbox_id, ["true"]).exec
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", ex.exec_id), ex.exec_id
    assert ex.sandbox_id == box.sandbox_id
    assert list(ex.argv) == ["true"]
    assert exited(wait_exec(stub, box.sandbox_id, ex.exec_id).exit_status, 0)


def test_entrypoint_and_wait_sandbox(stub):
    sb = harness.create_sandbox(stub, command=["sh", "-c", "echo from-entrypoint; echo oops >&2; exit 7"])
    assert list(sb.command) == ["sh", "-c", "echo from-entrypoint; echo oops >&2; exit 7"]
    assert read_output(stub, sb.sandbox_id, "entrypoint", STDOUT) == b"from-entrypoint\n"
    assert read_output(stub, sb.sandbox_id, "entrypoint", STDERR) == b"oops\n"
    done = harness.wait_sandbox(stub, sb.sandbox_id, 30)
    assert exited(done.exit_status, 7), done.exit_status
    assert done.finished_at_ms >= done.created_at_ms > 0
    ex = wait_exec(stub, sb.sandbox_id, "entrypoint")
    assert exited(ex.exit_status, 7), ex.exit_status
    # Finished and retained: output is still readable.
    assert read_output(stub, sb.sandbox_id, "entrypoint", STDOUT) == b"from-entrypoint\n"


def test_wait_sandbox_times_out_while_running(stub):
    sb = harness.create_sandbox(stub, command=["sleep", "30"])
    try:
        t0 = time.monotonic()
        r = stub.WaitSandbox(pb.WaitSandboxRequest(sandbox_id=sb.sandbox_id, timeout_ms=300),
                             timeout=RPC_TIMEOUT)
        elapsed = time.monotonic() - t0
        assert not r.finished
        assert r.sandbox.state == pb.SANDBOX_STATE_RUNNING
        assert 0.25 <= elapsed < 3, elapsed
        r = stub.WaitSandbox(pb.WaitSandboxRequest(sandbox_id=sb.sandbox_id, timeout_ms=0),
                             timeout=RPC_TIMEOUT)
        assert not r.finished
    finally:
        harness.terminate(stub, sb.sandbox_id)


def test_exec_timeout(stub, box):
    t0 = time.monotonic()
    out, err, st = run_exec(stub, box.sandbox_id, ["sleep", "30"], timeout_ms=500)
    assert st.reason == R.EXIT_REASON_TIMEOUT, st
    assert time.monotonic() - t0 < 10


def test_terminate_sandbox(stub):
    sb = harness.create_sandbox(stub)
    ex = start_exec(stub, sb.sandbox_id, ["sleep", "30"]).exec
    harness.terminate(stub, sb.sandbox_id)
    done = harness.wait_sandbox(stub, sb.sandbox_id, 10)
    assert done.exit_status.reason == R.EXIT_REASON_TERMINATED, done.exit_status
    got = stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=sb.sandbox_id), timeout=RPC_TIMEOUT).sandbox
    assert got.state == pb.SANDBOX_STATE_FINISHED
    # The exec ended with its sandbox.
    assert wait_exec(stub, sb.sandbox_id, ex.exec_id, 10).exit_status.reason != R.EXIT_REASON_UNSPECIFIED


# --- output streams -------------------------------------------------------------------------

def test_ten_mib_binary_output_intact_and_rereadable(daemon, stub, box):
    size = 10 * 1024 * 1024
    script = (f"head -c {size} /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 "
              "&& cat /tmp/big && rm /tmp/big")
    out, err, st = run_exec(stub, box.sandbox_id, ["sh", "-c", script], exec_id="big-output")
    assert exited(st, 0), (st, err)
    assert len(out) == size
    assert hashlib.sha256(out).hexdigest() == err.split()[0].decode(), "stdout differs from what was written"

    ch, stub2 = daemon.new_channel()  # a second client connection
    try:
        assert read_output(stub2, box.sandbox_id, "big-output", STDOUT, 0) == out
        mid = 5_000_001
        assert read_output(stub2, box.sandbox_id, "big-output", STDOUT, mid) == out[mid:]
        assert read_output(stub2, box.sandbox_id, "big-output", STDOUT, size) == b""
    finally:
        ch.close()


def test_read_from_middle_offset(stub, box):
    out, _, _ = run_exec(stub, box.sandbox_id, ["sh", "-c", "echo 0123456789"], exec_id="mid-offset")
    assert out == b"0123456789\n"
    assert read_output(stub, box.sandbox_id, "mid-offset", STDOUT, 4) == b"456789\n"


def test_cancelled_read_does_not_break_later_reads(daemon, stub, box):
    n = 100
    script = f"i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); sleep 0.01; done"
    ex = start_exec(stub, box.sandbox_id, ["sh", "-c", script], exec_id="cancel-me").exec
    req = pb.ReadExecOutputRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, stream=STDOUT)
    for _ in range(3):
        stream = stub.ReadExecOutput(req, timeout=RPC_TIMEOUT)
        first = next(stream)  # live data, before the exec ends
        assert first.offset == 0 and first.data.startswith(b"line 0\n")
        stream.cancel()
    # A cancelled stream on another connection too, dropped mid-flight.
    ch, stub2 = daemon.new_channel()
    next(stub2.ReadExecOutput(req, timeout=RPC_TIMEOUT))
    ch.close()
    assert exited(wait_exec(stub, box.sandbox_id, ex.exec_id).exit_status, 0)
    want = b"".join(b"line %d\n" % i for i in range(n))
    assert read_output(stub, box.sandbox_id, ex.exec_id, STDOUT, 0) == want


# --- idempotency ----------------------------------------------------------------------------

def test_repeated_start_exec_runs_once(stub, box):
    argv = ["sh", "-c", "echo x >> /tmp/count-once"]
    first = start_exec(stub, box.sandbox_id, argv, exec_id="count-once")
    assert first.created and first.exec.exec_id == "count-once"
    wait_exec(stub, box.sandbox_id, "count-once")
    again = start_exec(stub, box.sandbox_id, argv, exec_id="count-once")
    assert not again.created
    assert again.exec.exec_id == "count-once"
    out, _, st = run_exec(stub, box.sandbox_id, ["sh", "-c", "wc -l < /tmp/count-once"])
    assert out.strip() == b"1"


def test_stdin_write_idempotent_by_offset(stub, box):
    ex = start_exec(stub, box.sandbox_id, ["cat"], exec_id="stdin-idem").exec

    def write(offset, data, eof=False):
        return stub.WriteExecStdin(pb.WriteExecStdinRequest(
            sandbox_id=box.sandbox_id, exec_id=ex.exec_id, offset=offset, data=data, eof=eof),
            timeout=RPC_TIMEOUT).next_offset

    assert write(0, b"abc") == 3
    assert write(0, b"abc") == 3           # a retried write is a no-op
    assert write(2, b"cdef") == 6          # the overlap "c" is skipped, "def" applied
    expect_error(grpc.StatusCode.OUT_OF_RANGE, ["offset"], write, 10, b"gap")
    assert write(6, b"gh", eof=True) == 8  # the refused gap left nothing behind
    assert wait_exec(stub, box.sandbox_id, ex.exec_id).exit_status.exit_code == 0
    assert read_output(stub, box.sandbox_id, ex.exec_id, STDOUT) == b"abcdefgh"


# --- bad input ------------------------------------------------------------------------------

BIG = "x" * (65 * 1024)
NOSUCH = "nosuch-" + uuid.uuid4().hex[:12]


def _bad_cases():
    """(name, call(ctx) -> RPC result, code, words). ctx has .stub .box .exec_id .finished."""
    IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

    def create(**kw):
        return lambda c: c.stub.CreateSandbox(pb.CreateSandboxRequest(**{"image": "busybox", **kw}),
                                              timeout=RPC_TIMEOUT)

    def execute(**kw):
        def call(c):
            req = {"sandbox_id": c.box, "argv": ["true"], **kw}
            return c.stub.StartExec(pb.StartExecRequest(**req), timeout=RPC_TIMEOUT)
        return call

    S = pb  # short names for requests below
    return [
        ("create-unknown-image", create(image=NOSUCH), NF, [NOSUCH]),
        ("create-relative-workdir", create(workdir="tmp/x"), IA, ["workdir"]),
        ("create-negative-timeout", create(timeout_ms=-1), IA, ["timeout"]),
        ("create-negative-idle-timeout", create(idle_timeout_ms=-1), IA, ["timeout"]),
        ("create-command-over-64k", create(command=["echo", BIG]), IA, ["argv", "command"]),
        ("create-env-over-64k", create(env={"BIG": BIG}), IA, ["env"]),
        ("exec-empty-argv", execute(argv=[]), IA, ["argv"]),
        ("exec-argv-over-64k", execute(argv=["echo", BIG]), IA, ["argv"]),
        ("exec-many-args-over-64k", execute(argv=["true"] + ["a" * 99] * 700), IA, ["argv"]),
        ("exec-env-over-64k", execute(env={"BIG": BIG}), IA, ["env"]),
        ("exec-relative-workdir", execute(workdir="tmp"), IA, ["workdir"]),
        ("exec-negative-timeout", execute(timeout_ms=-5), IA, ["timeout"]),
        ("exec-bad-exec-id", execute(exec_id="bad id!"), IA, ["exec_id", "exec id"]),
        ("exec-exec-id-too-long", execute(exec_id="a" * 65), IA, ["exec_id", "exec id"]),
        ("exec-unknown-sandbox", execute(sandbox_id=NOSUCH), NF, [NOSUCH]),
        ("exec-finished-sandbox", lambda c: execute(sandbox_id=c.finished)(c),
         grpc.StatusCode.FAILED_PRECONDITION, ["finished", "running", "terminated"]),
        ("get-unknown", lambda c: c.stub.GetSandbox(S.GetSandboxRequest(sandbox_id=NOSUCH),
                                                    timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("wait-unknown", lambda c: c.stub.WaitSandbox(S.WaitSandboxRequest(sandbox_id=NOSUCH),
                                                      timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("wait-negative-timeout", lambda c: c.stub.WaitSandbox(
            S.WaitSandboxRequest(sandbox_id=c.box, timeout_ms=-1), timeout=RPC_TIMEOUT), IA, ["timeout"]),
        ("terminate-unknown", lambda c: c.stub.TerminateSandbox(
            S.TerminateSandboxRequest(sandbox_id=NOSUCH), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("set-tags-unknown", lambda c: c.stub.SetSandboxTags(
            S.SetSandboxTagsRequest(sandbox_id=NOSUCH, tags={"a": "b"}), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("read-unknown-exec", lambda c: c.stub.ReadExecOutput(S.ReadExecOutputRequest(
            sandbox_id=c.box, exec_id=NOSUCH, stream=STDOUT), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("read-unknown-sandbox", lambda c: c.stub.ReadExecOutput(S.ReadExecOutputRequest(
            sandbox_id=NOSUCH, exec_id="entrypoint", stream=STDOUT), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("write-unknown-exec", lambda c: c.stub.WriteExecStdin(S.WriteExecStdinRequest(
            sandbox_id=c.box, exec_id=NOSUCH, data=b"x"), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("wait-exec-unknown", lambda c: c.stub.WaitExec(S.WaitExecRequest(
            sandbox_id=c.box, exec_id=NOSUCH), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("wait-exec-negative-timeout", lambda c: c.stub.WaitExec(S.WaitExecRequest(
            sandbox_id=c.box, exec_id=c.exec_id, timeout_ms=-1), timeout=RPC_TIMEOUT), IA, ["timeout"]),
        ("signal-unknown-exec", lambda c: c.stub.SignalExec(S.SignalExecRequest(
            sandbox_id=c.box, exec_id=NOSUCH, signal=15), timeout=RPC_TIMEOUT), NF, [NOSUCH]),
        ("resize-unknown-exec", lambda c: c.stub.ResizeExecPty(S.ResizeExecPtyRequest(
            sandbox_id=c.box, exec_id=NOSUCH, size=S.PtySize(rows=10, cols=10)), timeout=RPC_TIMEOUT),
         NF, [NOSUCH]),
    ]


class _Ctx:
    pass


@pytest.fixture(scope="module")
def bad_ctx(daemon, box):
    c = _Ctx()
    c.stub, c.box = daemon.sb, box.sandbox_id
    c.exec_id = start_exec(daemon.sb, box.sandbox_id, ["true"], exec_id="bad-input-ref").exec.exec_id
    fin = harness.create_sandbox(daemon.sb)
    harness.terminate(daemon.sb, fin.sandbox_id)
    harness.wait_sandbox(daemon.sb, fin.sandbox_id, 10)
    c.finished = fin.sandbox_id
    return c


@pytest.mark.parametrize("name,call,code,words", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input(daemon, bad_ctx, name, call, code, words):
    expect_error(code, words, call, bad_ctx)


def test_bad_input_created_nothing(daemon, bad_ctx):
    """After all the refused CreateSandbox calls: only sandboxes this module made exist."""
    listed = daemon.sb.ListSandboxes(pb.ListSandboxesRequest(include_finished=True), timeout=RPC_TIMEOUT)
    images = {s.image for s in listed.sandboxes}
    assert NOSUCH not in images
    assert not any(s.workdir == "tmp/x" or len(s.command) > 1 and s.command[1] == BIG
                   for s in listed.sandboxes)


@pytest.mark.parametrize("garbage", [b"\x0a\x64abc", b"\xff" * 16], ids=["truncated", "bad-varint"])
@pytest.mark.parametrize("method", ["CreateSandbox", "StartExec"])
def test_malformed_protobuf(daemon, method, garbage):
    raw = daemon.channel.unary_unary(f"/corral.v1.SandboxService/{method}",
                                     request_serializer=None, response_deserializer=None)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 ["malformed", "parse", "decode", "unpack", "protobuf", "invalid"], raw, garbage, timeout=RPC_TIMEOUT)


def test_oversized_message(stub, box):
    ex = start_exec(stub, box.sandbox_id, ["cat"], exec_id="oversized-stdin").exec
    req = pb.WriteExecStdinRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, offset=0,
                                   data=b"\0" * (5 << 20))
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, ["size", "large", "limit", "bytes", "exceed", "max"],
                 stub.WriteExecStdin, req, timeout=RPC_TIMEOUT)
    # Nothing of the refused message was applied; the daemon and the exec are fine.
    r = stub.WriteExecStdin(pb.WriteExecStdinRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id,
                                                     offset=0, data=b"x", eof=True), timeout=RPC_TIMEOUT)
    assert r.next_offset == 1
    wait_exec(stub, box.sandbox_id, ex.exec_id)
    assert read_output(stub, box.sandbox_id, ex.exec_id) == b"x"


# --- get, list, tags ------------------------------------------------------------------------

def test_get_list_tags(stub):
    suite = "tags-" + uuid.uuid4().hex[:8]
    a = harness.create_sandbox(stub, tags={"suite": suite, "role": "a"})
    b = harness.create_sandbox(stub, tags={"suite": suite, "role": "b"})
    try:
        def listed(tags, include_finished=False):
            r = stub.ListSandboxes(pb.ListSandboxesRequest(tags=tags, include_finished=include_finished),
                                   timeout=RPC_TIMEOUT)
            return {s.sandbox_id: s for s in r.sandboxes}

        assert set(listed({"suite": suite})) == {a.sandbox_id, b.sandbox_id}
        assert set(listed({"suite": suite, "role": "a"})) == {a.sandbox_id}
        assert set(listed({"suite": suite, "role": "zzz"})) == set()
        got = stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=a.sandbox_id), timeout=RPC_TIMEOUT).sandbox
        assert got.sandbox_id == a.sandbox_id and got.state == pb.SANDBOX_STATE_RUNNING
        assert dict(got.tags) == {"suite": suite, "role": "a"}

        harness.terminate(stub, a.sandbox_id)
        harness.wait_sandbox(stub, a.sandbox_id, 10)
        assert set(listed({"suite": suite})) == {b.sandbox_id}
        both = listed({"suite": suite}, include_finished=True)
        assert set(both) == {a.sandbox_id, b.sandbox_id}
        assert both[a.sandbox_id].state == pb.SANDBOX_STATE_FINISHED
        assert both[a.sandbox_id].exit_status.reason == R.EXIT_REASON_TERMINATED

        # SetSandboxTags replaces the whole map.
        r = stub.SetSandboxTags(pb.SetSandboxTagsRequest(sandbox_id=b.sandbox_id,
                                                         tags={"suite": suite, "color": "red"}),
                                timeout=RPC_TIMEOUT)
        assert dict(r.sandbox.tags) == {"suite": suite, "color": "red"}
        assert set(listed({"suite": suite, "role": "b"})) == set()
        assert set(listed({"color": "red", "suite": suite})) == {b.sandbox_id}
        got = stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=b.sandbox_id), timeout=RPC_TIMEOUT).sandbox
        assert dict(got.tags) == {"suite": suite, "color": "red"}
    finally:
        harness.terminate(stub, b.sandbox_id)


# --- signals, pty ---------------------------------------------------------------------------

def test_signal_exec(stub, box):
    ex = start_exec(stub, box.sandbox_id, ["sleep", "30"]).exec
    r = stub.WaitExec(pb.WaitExecRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, timeout_ms=200),
                      timeout=RPC_TIMEOUT)
    assert not r.finished and r.exec.state == pb.EXEC_STATE_RUNNING
    stub.SignalExec(pb.SignalExecRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, signal=15),
                    timeout=RPC_TIMEOUT)
    st = wait_exec(stub, box.sandbox_id, ex.exec_id, 10).exit_status
    assert st.reason == R.EXIT_REASON_SIGNALED and st.signal == 15, st


def test_pty_tty(stub, box):
    # With a pty, stdout and stderr are one terminal: read stdout only.
    ex = start_exec(stub, box.sandbox_id, ["tty"], pty=True, pty_size=pb.PtySize(rows=24, cols=80)).exec
    out = read_output(stub, box.sandbox_id, ex.exec_id, STDOUT)
    assert re.fullmatch(rb"/dev/pts/\d+\r?\n", out), out
    assert exited(wait_exec(stub, box.sandbox_id, ex.exec_id).exit_status, 0)


def test_pty_resize(stub, box):
    ex = start_exec(stub, box.sandbox_id, ["sh", "-c", "stty size; read x; stty size"], pty=True,
                    pty_size=pb.PtySize(rows=24, cols=80)).exec
    assert ex.pty
    buf = b""
    resized = False
    for msg in stub.ReadExecOutput(pb.ReadExecOutputRequest(sandbox_id=box.sandbox_id,
                                                            exec_id=ex.exec_id, stream=STDOUT),
                                   timeout=RPC_TIMEOUT):
        buf += msg.data
        if not resized and b"24 80" in buf:
            stub.ResizeExecPty(pb.ResizeExecPtyRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id,
                                                       size=pb.PtySize(rows=50, cols=132)),
                               timeout=RPC_TIMEOUT)
            stub.WriteExecStdin(pb.WriteExecStdinRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id,
                                                         offset=0, data=b"\n"), timeout=RPC_TIMEOUT)
            resized = True
        if msg.eof:
            break
    assert resized, f"never saw the initial size: {buf!r}"
    assert b"50 132" in buf.split(b"24 80", 1)[1], buf
    assert exited(wait_exec(stub, box.sandbox_id, ex.exec_id).exit_status, 0)


# --- timeouts -------------------------------------------------------------------------------

def test_idle_timeout(stub):
    t0 = time.monotonic()
    sb = harness.create_sandbox(stub, idle_timeout_ms=1000)
    done = harness.wait_sandbox(stub, sb.sandbox_id, 15)
    elapsed = time.monotonic() - t0
    assert done.exit_status.reason == R.EXIT_REASON_IDLE_TIMEOUT, done.exit_status
    assert 0.9 <= elapsed < 6, elapsed


def test_idle_timeout_not_while_exec_runs(stub):
    sb = harness.create_sandbox(stub, idle_timeout_ms=1000)
    start_exec(stub, sb.sandbox_id, ["sleep", "3"])
    t0 = time.monotonic()
    done = harness.wait_sandbox(stub, sb.sandbox_id, 15)
    assert done.exit_status.reason == R.EXIT_REASON_IDLE_TIMEOUT, done.exit_status
    assert time.monotonic() - t0 >= 2.5, "went idle while an exec was running"


def test_lifetime_timeout(stub):
    t0 = time.monotonic()
    sb = harness.create_sandbox(stub, command=["sleep", "30"], timeout_ms=1000)
    assert sb.timeout_ms == 1000
    done = harness.wait_sandbox(stub, sb.sandbox_id, 15)
    assert done.exit_status.reason == R.EXIT_REASON_TIMEOUT, done.exit_status
    assert 0.9 <= time.monotonic() - t0 < 6


# --- identity and confinement ---------------------------------------------------------------

def test_hostname_is_sandbox_id(stub, box):
    out, _, st = run_exec(stub, box.sandbox_id, ["hostname"])
    assert out == box.sandbox_id.encode() + b"\n"


def test_root_inside_unprivileged_outside(daemon, stub):
    sb = harness.create_sandbox(stub)
    try:
        out, _, _ = run_exec(stub, sb.sandbox_id, ["id", "-u"])
        assert out == b"0\n"
        ipid = harness.init_pid(daemon.cgroup_parent, sb.sandbox_id)
        assert 0 not in harness.proc_uids(ipid), f"corral-init {ipid} has host uids {harness.proc_uids(ipid)}"
        ex = start_exec(stub, sb.sandbox_id, ["sleep", "30"]).exec
        deadline = time.monotonic() + 5
        while not (sleepers := harness.sandbox_pids(daemon.cgroup_parent, sb.sandbox_id, comm="sleep")):
            assert time.monotonic() < deadline, "exec'd sleep not found in the sandbox's cgroup"
            time.sleep(0.05)
        for pid in sleepers:
            assert 0 not in harness.proc_uids(pid), f"exec {pid} has host uids {harness.proc_uids(pid)}"
        stub.SignalExec(pb.SignalExecRequest(sandbox_id=sb.sandbox_id, exec_id=ex.exec_id, signal=9),
                        timeout=RPC_TIMEOUT)
    finally:
        harness.terminate(stub, sb.sandbox_id)


# --- deadlines ------------------------------------------------------------------------------

def test_grpc_deadline_honoured(daemon, stub, box):
    ex = start_exec(stub, box.sandbox_id, ["sleep", "30"]).exec
    req = pb.WaitExecRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, timeout_ms=30000)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        stub.WaitExec(req, timeout=0.5)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2

    # grpcio enforces deadlines client-side too; check the server ends the call by itself.
    elapsed, how = rawh2.unary_call(daemon.socket, "/corral.v1.SandboxService/WaitExec",
                                    req.SerializeToString(), [("grpc-timeout", "500m")], wait_s=10)
    assert how in ("end_stream", "rst_stream"), how
    assert elapsed < 3, f"server ended the 500 ms call after {elapsed:.1f}s"

    # The abandoned waits did not disturb the exec or the daemon.
    r = stub.WaitExec(pb.WaitExecRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id), timeout=RPC_TIMEOUT)
    assert not r.finished
    stub.SignalExec(pb.SignalExecRequest(sandbox_id=box.sandbox_id, exec_id=ex.exec_id, signal=9),
                    timeout=RPC_TIMEOUT)
    assert wait_exec(stub, box.sandbox_id, ex.exec_id, 10).exit_status.signal == 9


def test_many_concurrent_waits(stub, box):
    """Long-polls are not threads in the daemon: 50 parallel WaitExec all return on exit."""
    ex = start_exec(stub, box.sandbox_id, ["sleep", "1"]).exec
    results = []

    def waiter():
        results.append(wait_exec(stub, box.sandbox_id, ex.exec_id, 20))

    threads = [threading.Thread(target=waiter) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 50 and all(exited(r.exit_status, 0) for r in results)
