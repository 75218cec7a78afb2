"""The blocking API, call by call, against the real daemon."""
import os
import signal
import threading
import time

import grpc
import pytest

import corral
from corral import _errors


def test_info_and_client(client):
    info = client.info()
    assert "busybox" in info["images"] and info["version"]
    assert "Client" in repr(client)


def test_exec_stdout_stderr_returncode(sb):
    p = sb.exec("sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.stdout.read() == "out\n"
    assert p.stderr.read() == "err\n"
    assert p.wait() == 3
    assert p.returncode == 3 and p.exit_reason == corral.ExitReason.EXITED
    assert p.poll() == 3
    assert p.object_id and p.sandbox_id == sb.object_id


def test_exec_bytes_and_lines(sb):
    p = sb.exec("sh", "-c", "printf 'a\\nb\\nc'", text=False)
    assert list(p.stdout) == [b"a\n", b"b\n", b"c"]
    p.wait()
    p = sb.exec("sh", "-c", "for i in 1 2 3; do echo line$i; done")
    assert [line for line in p.stdout] == ["line1\n", "line2\n", "line3\n"]
    assert p.wait() == 0


def test_split_utf8_across_chunks(sb):
    # "é" is \xc3\xa9: the two halves are written 0.3 s apart, so they arrive as two chunks.
    p = sb.exec("sh", "-c", "printf 'caf\\303'; sleep 0.3; printf '\\251!\\n'")
    chunks = list(p.stdout.chunks())
    assert "".join(chunks) == "café!\n", chunks
    assert len(chunks) >= 2, f"the bytes arrived in one chunk, the test proved nothing: {chunks}"
    assert "\ufffd" not in "".join(chunks)
    p.wait()
    p = sb.exec("sh", "-c", "printf 'caf\\303'; sleep 0.3; printf '\\251\\n'")
    assert p.stdout.read() == "café\n"
    p.wait()


def test_invalid_utf8_is_replaced(sb):
    p = sb.exec("sh", "-c", "printf 'a\\377b'")
    assert p.stdout.read() == "a\ufffdb"


def test_devnull_and_stdout_forwarding(sb, capfd):
    p = sb.exec("sh", "-c", "echo gone; echo kept >&2", stdout=corral.DEVNULL)
    assert p.stdout.read() == ""
    assert p.stderr.read() == "kept\n"
    p.wait()
    p = sb.exec("sh", "-c", "echo forwarded-here", stdout=corral.STDOUT)
    assert p.wait() == 0
    assert "forwarded-here" in capfd.readouterr().out
    with pytest.raises(corral.InvalidError):
        sb.exec("true", stdout="pipe")


def test_stdin_write_drain_eof(sb):
    p = sb.exec("cat")
    p.stdin.write(b"hello ")
    p.stdin.drain()
    p.stdin.write("wörld")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "hello wörld"
    assert p.wait() == 0
    with pytest.raises(corral.InvalidError):
        p.stdin.write(b"late")


def test_stdin_large_and_eof_without_drain(sb):
    data = os.urandom(3 << 20)  # several WriteExecStdin messages
    p = sb.exec("sh", "-c", "wc -c", text=True)
    p.stdin.write(data)
    p.stdin.drain()
    p.stdin.write_eof()          # no drain(): wait() sends the EOF rather than hang
    assert p.wait() == 0
    assert p.stdout.read().strip() == str(len(data))


def test_forgotten_read_does_not_deadlock_wait(sb):
    # 40 MB of output is more than the daemon buffers (16 MiB): with nobody reading, the
    # process would block forever on a full pipe unless wait() drains the output.
    n = 40_000_000
    p = sb.exec("sh", "-c", f"head -c {n} /dev/zero; echo done >&2", text=False)
    assert p.wait() == 0
    assert len(p.stdout.read()) == n
    assert p.stderr.read() == b"done\n"


def test_env_workdir_secrets_timeout(sb):
    p = sb.exec("sh", "-c", "echo $A $B $(pwd)", env={"A": "1"},
                secrets=[corral.Secret.from_dict({"B": "2", "C": None})], workdir="/tmp")
    assert p.stdout.read() == "1 2 /tmp\n"
    p.wait()
    t = time.monotonic()
    p = sb.exec("sleep", "30", timeout=0.5)
    assert p.wait() < 0
    assert p.exit_reason == corral.ExitReason.TIMEOUT and time.monotonic() - t < 10


def test_signal_kill_poll(sb):
    p = sb.exec("sleep", "30")
    assert p.poll() is None and p.returncode is None and p.exit_reason is None
    p.signal(signal.SIGTERM)
    assert p.wait() == -signal.SIGTERM and p.exit_reason == corral.ExitReason.SIGNALED
    p = sb.exec("sleep", "30")
    p.kill()
    assert p.wait() == -9


def test_pty_and_resize(sb):
    p = sb.exec("sh", "-c", "stty size; read x; stty size", pty=True, pty_size=(20, 70), text=False)
    first = b""
    for chunk in p.stdout.chunks():
        first += chunk
        if b"20 70" in first:
            break
    p.resize(33, 99)
    p.stdin.write(b"\n")
    p.stdin.drain()
    rest = p.stdout.read()
    assert b"33 99" in rest, rest
    assert p.wait() == 0
    assert p.stderr.read() == b""


def test_exec_id_is_idempotent(sb):
    a = sb.exec("sh", "-c", "echo once", exec_id="my-exec-1")
    b = sb.exec("sh", "-c", "echo once", exec_id="my-exec-1")  # a retry: the same process
    assert a.object_id == b.object_id == "my-exec-1"
    assert a.stdout.read() == "once\n" and b.stdout.read() == "once\n"
    a.wait()


def test_entrypoint_io_and_wait(client):
    sb = corral.Sandbox.create("sh", "-c", "read x; echo got $x; echo e >&2; exit 7",
                               image="busybox", client=client)
    assert sb.returncode is None and sb.exit_reason is None
    sb.stdin.write(b"42\n")
    sb.stdin.write_eof()
    sb.stdin.drain()
    assert sb.stdout.read() == "got 42\n"
    assert sb.stderr.read() == "e\n"
    sb.wait()
    assert sb.returncode == 7 and sb.exit_reason == corral.ExitReason.EXITED
    assert sb.poll() == 7


def test_wait_raise_on_termination_and_timeout(client):
    sb = corral.Sandbox.create(image="busybox", client=client)
    assert sb.poll() is None
    sb.terminate()
    with pytest.raises(corral.SandboxTerminatedError):
        sb.wait()
    sb.wait(raise_on_termination=False)
    assert sb.exit_reason == corral.ExitReason.TERMINATED and sb.returncode is not None
    sb.terminate()  # idempotent
    sb = corral.Sandbox.create(image="busybox", timeout=1, client=client)
    with pytest.raises(corral.SandboxTimeoutError):
        sb.wait()
    assert sb.exit_reason == corral.ExitReason.TIMEOUT


def test_with_terminates(client):
    with corral.Sandbox.create(image="busybox", client=client) as sb:
        assert sb.exec("true").wait() == 0
    assert sb.poll() is not None and sb.exit_reason == corral.ExitReason.TERMINATED
    with pytest.raises(ValueError):
        with corral.Sandbox.create(image="busybox", client=client) as sb2:
            raise ValueError("boom")
    assert sb2.poll() is not None


def test_entrypoint_forgotten_read(client):
    sb = corral.Sandbox.create("sh", "-c", "head -c 30000000 /dev/zero", image="busybox", client=client)
    sb.wait()
    assert sb.returncode == 0


def test_tags_from_id_list_from_name_app(client):
    app = corral.App.lookup("sdk-test-app", create_if_missing=True, client=client)
    with pytest.raises(corral.NotFoundError):
        corral.App.lookup("sdk-test-no-such-app", client=client)
    sb = corral.Sandbox.create(image="busybox", app=app, name="sdk-named", tags={"t": "1"}, client=client)
    try:
        assert sb.get_tags() == {"t": "1", "corral.app": "sdk-test-app"}
        sb.set_tags({"t": "2", "u": "x"})
        assert sb.get_tags() == {"t": "2", "u": "x", "corral.app": "sdk-test-app"}
        same = corral.Sandbox.from_id(sb.object_id, client=client)
        assert same.object_id == sb.object_id and same.name == "sdk-named" and same.image == "busybox"
        assert [s.object_id for s in corral.Sandbox.list(tags={"u": "x"}, client=client)] == [sb.object_id]
        assert [s.object_id for s in corral.Sandbox.list(app=app, client=client)] == [sb.object_id]
        assert sb.object_id in [s.object_id for s in corral.Sandbox.list(app_id=app.app_id, client=client)]
        assert corral.Sandbox.from_name("sdk-test-app", "sdk-named", client=client).object_id == sb.object_id
        assert corral.App.lookup("sdk-test-app", client=client).name == "sdk-test-app"
        with app.run():
            pass
    finally:
        sb.terminate()
    assert sb.object_id not in [s.object_id for s in corral.Sandbox.list(client=client)]
    assert sb.object_id in [s.object_id for s in corral.Sandbox.list(include_finished=True, client=client)]


def test_default_client_from_env(client, addr):
    assert os.environ["CORRAL_ADDR"] == addr
    with corral.Sandbox.create(image="busybox") as sb:
        assert sb.exec("true").wait() == 0


def test_threads_share_a_sandbox(sb):
    results = []

    def work(i):
        p = sb.exec("sh", "-c", f"echo {i}")
        results.append((p.stdout.read(), p.wait()))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == sorted((f"{i}\n", 0) for i in range(8))


# --- error mapping ----------------------------------------------------------------------------

def test_errors_from_the_daemon(client, sb):
    with pytest.raises(corral.NotFoundError, match="not found"):
        corral.Sandbox.from_id("sb-0000000000000000", client=client)
    with pytest.raises(corral.InvalidError) as e:
        sb.exec("true", workdir="relative/dir")
    assert e.value.code == "INVALID_ARGUMENT" and e.value.message
    with pytest.raises(corral.NotFoundError):
        corral.Sandbox.create(image="no-such-image", client=client)
    named = corral.Sandbox.create(image="busybox", name="sdk-dup", client=client)
    try:
        with pytest.raises(corral.AlreadyExistsError):
            corral.Sandbox.create(image="busybox", name="sdk-dup", client=client)
    finally:
        named.terminate()
    with pytest.raises(corral.SandboxTerminatedError):
        named.exec("true")
    with pytest.raises(corral.ResourceExhaustedError):
        sb.exec("echo", "x" * (5 << 20))


def test_errors_in_the_sdk(client):
    with pytest.raises(corral.InvalidError, match="gpu"):
        corral.Sandbox.create(image="busybox", gpu="A100", client=client)
    with pytest.raises(corral.InvalidError, match="volumes"):
        corral.Sandbox.create(image="busybox", volumes={"/data": object()}, client=client)
    with pytest.raises(TypeError):
        corral.Sandbox.create(image="busybox", no_such_option=1, client=client)
    with pytest.raises(corral.InvalidError, match="block_network"):
        corral.Sandbox.create(image="busybox", cidr_allowlist=["10.0.0.0/8"], client=client)
    with pytest.raises(corral.InvalidError):
        corral.Sandbox.create(image="busybox", cpu=-1, client=client)
    with pytest.raises(corral.InvalidError):
        corral.Image.debian_slim(python_version="3.12")
    with pytest.raises(corral.InvalidError, match="registries"):
        corral.Image.from_registry("python:3.12")
    with pytest.raises(corral.InvalidError):
        corral.Secret.from_name("x")
    with pytest.raises(corral.InvalidError, match="functions"):
        corral.App("a").function()
    with pytest.raises(corral.InvalidError):
        corral.Client("ftp://x")


def test_timeout_and_connection_errors(tmp_path, sb):
    from corral.v1 import sandbox_pb2 as pb
    slow = corral.Client(sb._client.address, timeout=0.3)
    p = corral.Sandbox.from_id(sb.object_id, client=slow).exec("sleep", "5")
    # A 3 s server-side wait under a 0.3 s deadline: DEADLINE_EXCEEDED -> corral.TimeoutError.
    with pytest.raises(corral.TimeoutError):
        corral._sync.run_sync(slow.call("sandbox", "WaitExec", pb.WaitExecRequest(
            sandbox_id=sb.object_id, exec_id=p.object_id, timeout_ms=3000)))
    gone = corral.Client("unix://" + str(tmp_path / "nothing.sock"), retry_timeout=0.5)
    t = time.monotonic()
    with pytest.raises(corral.ConnectionError, match="CORRAL_ADDR"):
        corral.Sandbox.list(client=gone)
    assert time.monotonic() - t < 10


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._c, self._d = code, details

    def code(self):
        return self._c

    def details(self):
        return self._d


@pytest.mark.parametrize("code,cls", [
    (grpc.StatusCode.INVALID_ARGUMENT, corral.InvalidError),
    (grpc.StatusCode.NOT_FOUND, corral.NotFoundError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, corral.TimeoutError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, corral.ResourceExhaustedError),
    (grpc.StatusCode.UNIMPLEMENTED, corral.UnimplementedError),
    (grpc.StatusCode.ALREADY_EXISTS, corral.AlreadyExistsError),
    (grpc.StatusCode.UNAUTHENTICATED, corral.AuthError),
    (grpc.StatusCode.OUT_OF_RANGE, corral.OutOfRangeError),
    (grpc.StatusCode.UNAVAILABLE, corral.ConnectionError),
    (grpc.StatusCode.DATA_LOSS, corral.RemoteError),
])
def test_status_mapping(code, cls):
    e = _errors.from_rpc_error(_FakeRpcError(code, "the message"), "doing it")
    assert type(e) is cls and isinstance(e, corral.Error)
    assert str(e) == "doing it: the message" and e.code == code.name
    assert issubclass(corral.UnimplementedError, corral.InvalidError)
    finished = _errors.from_rpc_error(_FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "sandbox sb-1 has finished"))
    assert isinstance(finished, corral.SandboxTerminatedError)
    other = _errors.from_rpc_error(_FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "stdin is closed"))
    assert type(other) is corral.FailedPreconditionError


def test_addresses():
    from corral._client import parse_address
    assert parse_address("unix:///run/x.sock") == ("unix:///run/x.sock", False)
    assert parse_address("/run/x.sock") == ("unix:///run/x.sock", False)
    assert parse_address("tcp://127.0.0.1:7000") == ("127.0.0.1:7000", True)
    c = corral.Client("tcp://127.0.0.1:1", token="tok")
    assert c.metadata == (("authorization", "Bearer tok"),)
    assert corral.Client("unix:///x", token="tok").metadata == ()
