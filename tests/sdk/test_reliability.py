"""Reliability: dropped connections and daemon restarts mid-stream lose and duplicate nothing."""
import threading
import time

import grpc
import pytest

import corral
from corral import _sandbox

COUNT = 300
COUNTER = f"i=0; while [ $i -lt {COUNT} ]; do echo $i; i=$((i+1)); usleep 10000; done"
EXPECT = [f"{i}\n" for i in range(COUNT)]


def _collect(p, into, started):
    for line in p.stdout:
        into.append(line)
        if len(into) == 20:
            started.set()
    started.set()


def test_output_resumes_after_daemon_sigkill(client, restart_daemon):
    sb = corral.Sandbox.create(image="busybox", client=client)
    p = sb.exec("sh", "-c", COUNTER)
    got, started = [], threading.Event()
    reader = threading.Thread(target=_collect, args=(p, got, started), daemon=True)
    reader.start()
    assert started.wait(20), "no output before the restart"
    seen = len(got)
    restart_daemon()  # SIGKILL mid-stream; the new daemon adopts the sandbox
    reader.join(60)
    assert not reader.is_alive(), "the reader never finished after the restart"
    assert seen < COUNT, "the exec finished before the restart: the test proved nothing"
    assert got == EXPECT, "bytes lost or duplicated across the restart"
    assert p.wait() == 0
    sb.terminate()


def test_output_resumes_after_the_connection_drops(client):
    sb = corral.Sandbox.create(image="busybox", client=client)
    try:
        p = sb.exec("sh", "-c", COUNTER, text=False)
        got = bytearray()
        drops = 0
        for chunk in p.stdout.chunks():
            got += chunk
            if drops < 5 and got.count(b"\n") > 30 * (drops + 1):
                client.reconnect()  # tear the channel down under the open stream
                drops += 1
        assert drops == 5
        assert got.decode().splitlines(keepends=True) == EXPECT
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_stdin_is_idempotent_by_offset(client):
    sb = corral.Sandbox.create(image="busybox", client=client)
    try:
        p = sb.exec("cat")
        p.stdin.write(b"abc")
        p.stdin.drain()
        # Replay the same bytes at the same offset, as a retry after a lost reply would.
        st = p._ex.stdin
        st.acked = 0
        st.pending[:0] = b"abc"
        p.stdin.write(b"def")
        p.stdin.drain()
        client.reconnect()
        p.stdin.write(b"ghi")
        p.stdin.write_eof()
        p.stdin.drain()
        assert p.stdout.read() == "abcdefghi"
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_calls_retry_across_a_restart(client, restart_daemon, daemon):
    sb = corral.Sandbox.create(image="busybox", client=client)
    daemon.kill()
    t = threading.Timer(1.0, daemon.start)  # the daemon comes back while the call retries
    t.start()
    try:
        p = sb.exec("echo", "after-restart")
        assert p.stdout.read() == "after-restart\n"
        assert p.wait() == 0
    finally:
        t.join()
    sb.terminate()


def test_create_is_not_doubled_by_a_lost_reply(client, monkeypatch):
    """CreateSandbox succeeded but the reply was lost: the retry finds it by its token."""
    real = client._rpc
    calls = []

    class Lost(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "connection reset (simulated)"

    def flaky(service, name):
        fn = real(service, name)
        if name != "CreateSandbox":
            return fn

        async def once(req, **kw):
            calls.append(req)
            await fn(req, **kw)
            if len(calls) == 1:
                raise Lost()
            raise AssertionError("CreateSandbox was sent twice")
        return once

    monkeypatch.setattr(client, "_rpc", flaky)
    sb = corral.Sandbox.create(image="busybox", tags={"lost": "reply"}, client=client)
    monkeypatch.undo()
    try:
        assert len(calls) == 1
        same = corral.Sandbox.list(tags={"lost": "reply"}, client=client)
        assert [s.object_id for s in same] == [sb.object_id]
        assert sb.get_tags() == {"lost": "reply"}
        assert _sandbox.CREATE_TAG in sb._proto.tags  # internal, hidden from get_tags
    finally:
        sb.terminate()


def test_reserved_tags_refused(client):
    with pytest.raises(corral.InvalidError, match="reserved"):
        corral.Sandbox.create(image="busybox", tags={_sandbox.CREATE_TAG: "x"}, client=client)
