"""The asyncio API (`await x.aio(...)`, `async for`, `async with`), call by call."""
import asyncio

import pytest

import corral


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_async_sandbox_lifecycle(client):
    async def main():
        sb = await corral.Sandbox.create.aio(image="busybox", tags={"a": "1"}, client=client)
        assert sb.returncode is None
        p = await sb.exec.aio("sh", "-c", "echo one; echo two; echo err >&2; exit 2")
        lines = [line async for line in p.stdout]
        assert lines == ["one\n", "two\n"]
        assert await p.stderr.read.aio() == "err\n"
        assert await p.wait.aio() == 2
        assert await p.poll.aio() == 2
        await sb.set_tags.aio({"b": "2"})
        assert await sb.get_tags.aio() == {"b": "2"}
        same = await corral.Sandbox.from_id.aio(sb.object_id, client=client)
        listed = await corral.Sandbox.list.aio(tags={"b": "2"}, client=client)
        assert [s.object_id for s in listed] == [same.object_id]
        assert await sb.poll.aio() is None
        await sb.terminate.aio()
        await sb.wait.aio(raise_on_termination=False)
        assert sb.exit_reason == corral.ExitReason.TERMINATED
        with pytest.raises(corral.SandboxTerminatedError):
            await sb.wait.aio()
    run(main())


def test_async_stdin_signal_resize_chunks(client):
    async def main():
        async with await corral.Sandbox.create.aio(image="busybox", client=client) as sb:
            p = await sb.exec.aio("cat", text=False)
            p.stdin.write(b"abc")
            await p.stdin.drain.aio()
            p.stdin.write_eof()
            await p.stdin.drain.aio()
            assert await p.stdout.read.aio() == b"abc"
            assert await p.wait.aio() == 0
            p = await sb.exec.aio("sleep", "30")
            await p.signal.aio(15)
            assert await p.wait.aio() == -15
            p = await sb.exec.aio("sleep", "30")
            await p.kill.aio()
            assert await p.wait.aio() == -9
            p = await sb.exec.aio("sh", "-c", "read x; stty size", pty=True)
            await p.resize.aio(11, 22)
            p.stdin.write(b"\n")
            await p.stdin.drain.aio()
            out = "".join([c async for c in p.stdout.chunks_aio()])
            assert "11 22" in out
            await p.wait.aio()
        assert await sb.poll.aio() is not None
    run(main())


def test_async_concurrent_execs_do_not_block_the_loop(client):
    async def main():
        sb = await corral.Sandbox.create.aio(image="busybox", client=client)
        try:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.ensure_future(ticker())

            async def one(i):
                p = await sb.exec.aio("sh", "-c", f"sleep 0.5; echo {i}")
                return await p.stdout.read.aio(), await p.wait.aio()

            results = await asyncio.gather(*(one(i) for i in range(10)))
            t.cancel()
            assert sorted(results) == sorted((f"{i}\n", 0) for i in range(10))
            assert ticks > 20, "the caller's loop was blocked while the SDK worked"
        finally:
            await sb.terminate.aio()
    run(main())


def test_async_errors_and_app(client):
    async def main():
        with pytest.raises(corral.NotFoundError):
            await corral.Sandbox.from_id.aio("sb-0000000000000000", client=client)
        with pytest.raises(corral.InvalidError):
            await corral.Sandbox.create.aio(image="busybox", gpu="any", client=client)
        app = await corral.App.lookup.aio("sdk-async-app", create_if_missing=True, client=client)
        sb = await corral.Sandbox.create.aio("sh", "-c", "echo entry", image="busybox", app=app, client=client)
        assert await sb.stdout.read.aio() == "entry\n"
        await sb.wait.aio()
        assert sb.returncode == 0
        assert (await corral.App.lookup.aio("sdk-async-app", client=client)).name == "sdk-async-app"
        got = await corral.Sandbox.list.aio(app=app, include_finished=True, client=client)
        assert sb.object_id in [s.object_id for s in got]
        info = await client.info.aio()
        assert "busybox" in info["images"]
    run(main())


def test_async_cancellation_stops_waiting(client):
    async def main():
        sb = await corral.Sandbox.create.aio(image="busybox", client=client)
        try:
            p = await sb.exec.aio("sleep", "30")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(p.wait.aio(), 0.5)
            await p.kill.aio()
            assert await p.wait.aio() == -9
        finally:
            await sb.terminate.aio()
    run(main())


def test_async_filesystem(client, requires):
    requires("filesystem")

    async def main():
        async with await corral.Sandbox.create.aio(image="busybox", client=client) as sb:
            fs = sb.filesystem
            await fs.write_text.aio("/tmp/a/b.txt", "héllo")
            assert await fs.read_text.aio("/tmp/a/b.txt") == "héllo"
            await fs.write_bytes.aio("/tmp/a/c.bin", b"\x00\x01")
            assert await fs.read_bytes.aio("/tmp/a/c.bin") == b"\x00\x01"
            names = sorted(e.path for e in await fs.list_files.aio("/tmp/a"))
            assert names == ["/tmp/a/b.txt", "/tmp/a/c.bin"]
            assert (await fs.stat.aio("/tmp/a/b.txt")).size == len("héllo".encode())
            await fs.make_directory.aio("/tmp/x/y")
            assert (await fs.stat.aio("/tmp/x/y")).is_dir
            await fs.remove.aio("/tmp/x", recursive=True)
            assert not await fs.exists.aio("/tmp/x")
    run(main())


def test_async_snapshot(client, requires):
    requires("snapshot")

    async def main():
        async with await corral.Sandbox.create.aio(image="busybox", client=client) as sb:
            assert await (await sb.exec.aio("sh", "-c", "echo kept > /marker")).wait.aio() == 0
            img = await sb.snapshot_filesystem.aio()
        await sb.wait.aio(raise_on_termination=False)
        assert img.object_id
        async with await corral.Sandbox.create.aio(image=img, client=client) as fork:
            p = await fork.exec.aio("cat", "/marker")
            assert await p.stdout.read.aio() == "kept\n"
        await fork.wait.aio(raise_on_termination=False)
        await img.delete.aio(client=client)
    run(main())
