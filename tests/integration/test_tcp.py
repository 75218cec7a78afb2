"""The optional TCP listener: every call needs the bearer token from --token-file."""
import os
import socket
import tempfile

import grpc
import pytest

import harness
from harness import spb, spb_grpc

TOKEN = "t0ken-for-the-tcp-test-%d" % os.getpid()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = _free_port()
_token_dir = tempfile.mkdtemp(prefix="corral-token-")
TOKEN_FILE = os.path.join(_token_dir, "token")
with open(TOKEN_FILE, "w") as f:
    f.write(TOKEN + "\n")
os.chmod(TOKEN_FILE, 0o600)
DAEMON_ARGS = ["--listen", f"127.0.0.1:{PORT}", "--token-file", TOKEN_FILE]


def teardown_module():
    os.unlink(TOKEN_FILE)
    os.rmdir(_token_dir)


def _info(metadata=None):
    with grpc.insecure_channel(f"127.0.0.1:{PORT}") as ch:
        return spb_grpc.SystemServiceStub(ch).GetInfo(spb.GetInfoRequest(), metadata=metadata, timeout=10)


def test_tcp_without_token_is_unauthenticated(daemon):
    with pytest.raises(grpc.RpcError) as e:
        _info()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tcp_with_wrong_token_is_unauthenticated(daemon):
    with pytest.raises(grpc.RpcError) as e:
        _info([("authorization", "Bearer " + TOKEN[:-1] + "x")])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tcp_with_token_works_and_runs_a_sandbox(daemon):
    info = _info([("authorization", "Bearer " + TOKEN)])
    assert info.version
    with grpc.insecure_channel(f"127.0.0.1:{PORT}") as ch:
        stub = harness.pb_grpc.SandboxServiceStub(ch)
        md = [("authorization", "Bearer " + TOKEN)]
        sb = stub.CreateSandbox(harness.pb.CreateSandboxRequest(image="busybox"), metadata=md, timeout=30).sandbox
        try:
            assert sb.sandbox_id
        finally:
            stub.TerminateSandbox(harness.pb.TerminateSandboxRequest(sandbox_id=sb.sandbox_id), metadata=md, timeout=30)


def test_listen_without_token_file_is_refused():
    d = harness.Daemon(extra_args=["--listen", f"127.0.0.1:{_free_port()}"])
    try:
        with pytest.raises(RuntimeError) as e:
            d.start(ready_timeout=5)
        assert "token" in str(e.value)
    finally:
        d.shutdown_and_check()
