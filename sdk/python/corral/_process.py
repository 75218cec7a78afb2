"""Processes in a sandbox: ContainerProcess, its output readers and its stdin writer.

Output is read with ReadExecOutput from a byte offset. The SDK remembers the offset of the next
byte it needs, so after a dropped connection (or a daemon restart) it asks again from there: the
bytes arrive exactly once, in order. Stdin writes carry their offset too, so a retried write is
never applied twice.
"""
from __future__ import annotations

import asyncio
import codecs
import enum
import sys
import threading
import uuid
from typing import Any, AsyncIterator, Generic, Iterator, Optional, TypeVar

import grpc

from . import _sync
from ._client import MAX_LONG_POLL_MS, Backoff, Client
from ._errors import Error, FailedPreconditionError, InvalidError, NotFoundError, OutOfRangeError
from .v1 import common_pb2, sandbox_pb2 as pb

T = TypeVar("T", str, bytes)

STDIN_CHUNK = 1 << 20      # bytes per WriteExecStdin (the daemon takes 4 MiB messages)
HIGH_WATER = 8 << 20       # read-ahead per stream while nobody consumes (unless wait() ran)


class StreamType(enum.Enum):
    """Where a process's stdout or stderr goes (Modal's ``modal.stream_type.StreamType``)."""

    PIPE = "pipe"        #: kept for reading through ``p.stdout`` / ``p.stderr``
    DEVNULL = "devnull"  #: discarded in the sandbox
    STDOUT = "stdout"    #: printed to this program's own stdout as it arrives


PIPE = StreamType.PIPE
DEVNULL = StreamType.DEVNULL
STDOUT = StreamType.STDOUT


class ExitReason(str, enum.Enum):
    """Why a sandbox or process ended (the API's ``EXIT_REASON_*``)."""

    UNSPECIFIED = "UNSPECIFIED"
    EXITED = "EXITED"
    SIGNALED = "SIGNALED"
    TIMEOUT = "TIMEOUT"
    IDLE_TIMEOUT = "IDLE_TIMEOUT"
    OOM_KILLED = "OOM_KILLED"
    TERMINATED = "TERMINATED"
    FAILED_TO_START = "FAILED_TO_START"

    @classmethod
    def from_proto(cls, value: int) -> "ExitReason":
        name = common_pb2.ExitReason.Name(value) if value in common_pb2.ExitReason.values() else ""
        return cls(name[len("EXIT_REASON_"):]) if name else cls.UNSPECIFIED


def returncode_of(status: common_pb2.ExitStatus) -> int:
    """subprocess-style return code: the exit code, or -signal; 127 if it never started."""
    if status.reason == common_pb2.EXIT_REASON_EXITED:
        return status.exit_code
    if status.signal:
        return -status.signal
    if status.reason == common_pb2.EXIT_REASON_FAILED_TO_START:
        return 127
    return -1


def new_exec_id() -> str:
    """A client-chosen exec id, so a retried StartExec finds the exec instead of starting two."""
    return "x" + uuid.uuid4().hex


class _Changed:
    """A level-triggered 'something changed' signal for tasks on the SDK loop."""

    def __init__(self) -> None:
        self._ev: Optional[asyncio.Event] = None

    def notify(self) -> None:
        ev, self._ev = self._ev, None
        if ev is not None:
            ev.set()

    async def wait(self) -> None:
        if self._ev is None:
            self._ev = asyncio.Event()
        await self._ev.wait()


class _Output:
    """One output stream of an exec, pumped from the daemon into memory on the SDK loop."""

    def __init__(self, client: Client, sandbox_id: str, exec_id: str, stream: int, piped: bool) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.exec_id = exec_id
        self.stream = stream
        self.buf = bytearray()
        self.pos = 0           # stream offset of the next byte to fetch
        self.eof = not piped   # a DEVNULL stream is empty
        self.error: Optional[Exception] = None
        self.unbounded = False
        self._task: Optional[asyncio.Task[None]] = None
        self._changed = _Changed()

    @property
    def name(self) -> str:
        return "stdout" if self.stream == pb.EXEC_STREAM_STDOUT else "stderr"

    def start(self) -> None:
        if self._task is None and not self.eof:
            self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        backoff = Backoff(self.client.retry_timeout)
        what = f"reading {self.name} of {self.sandbox_id}/{self.exec_id}"
        while not self.eof:
            gen = self.client.generation
            req = pb.ReadExecOutputRequest(sandbox_id=self.sandbox_id, exec_id=self.exec_id,
                                           stream=self.stream, offset=self.pos)  # type: ignore[arg-type]
            try:
                async for msg in self.client.call_stream("sandbox", "ReadExecOutput", req):
                    backoff.reset()
                    data = msg.data
                    if data:
                        if msg.offset > self.pos:
                            raise OutOfRangeError(f"{what}: the daemon skipped bytes {self.pos}..{msg.offset}")
                        skip = self.pos - msg.offset  # overlap after a resume: already have it
                        if skip < len(data):
                            self.buf += data[skip:]
                            self.pos = msg.offset + len(data)
                            self._changed.notify()
                    if msg.eof:
                        self.eof = True
                        break
                    while len(self.buf) >= HIGH_WATER and not self.unbounded:
                        await self._changed.wait()  # backpressure: wait for the consumer
                if self.eof:
                    break
                # Ended without eof: the connection went away cleanly. Resume.
                if not await backoff.sleep():
                    raise Error(f"{what}: the stream kept ending before end of file")
            except grpc.RpcError as e:
                if self.client.transient(e, gen, streaming=True) and await backoff.sleep():
                    continue
                self.error = self.client.error(e, what)
                break
            except Error as e:
                self.error = e
                break
        self._changed.notify()

    async def _until(self, ready: Any) -> None:
        self.start()
        while not ready() and not self.eof and self.error is None:
            await self._changed.wait()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    async def take_all(self) -> bytes:
        self.unbounded = True  # nobody consumes until EOF
        await self._until(lambda: False)
        data = bytes(self.buf)
        self.buf.clear()
        self._changed.notify()
        if not data:
            self._raise()
        return data

    async def take_line(self) -> Optional[bytes]:
        await self._until(lambda: b"\n" in self.buf)
        i = self.buf.find(b"\n")
        if i < 0:
            i = len(self.buf) - 1
        if i < 0:
            self._raise()
            return None
        line = bytes(self.buf[:i + 1])
        del self.buf[:i + 1]
        self._changed.notify()
        return line

    async def take_chunk(self) -> Optional[bytes]:
        await self._until(lambda: len(self.buf) > 0)
        if not self.buf:
            self._raise()
            return None
        data = bytes(self.buf)
        self.buf.clear()
        self._changed.notify()
        return data

    async def forward(self, sink: Any) -> None:
        """Copy the stream to a local binary file as it arrives (StreamType.STDOUT)."""
        while (chunk := await self.take_chunk()) is not None:
            sink.write(chunk)
            sink.flush()


class StreamReader(Generic[T]):
    """The stdout or stderr of a process: ``read()`` to EOF, or iterate by line.

    With ``text=True`` (the default) it yields str, decoding UTF-8 incrementally, so a character
    split across two chunks of output is decoded whole; invalid bytes become U+FFFD.
    """

    def __init__(self, out: _Output, text: bool) -> None:
        self._out = out
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _decode(self, data: bytes, final: bool) -> Any:
        return self._decoder.decode(data, final) if self._text else data

    @_sync.method
    async def read(self) -> T:
        """Read everything up to end of file (blocks until the process closes the stream)."""
        return self._decode(await self._out.take_all(), True)  # type: ignore[no-any-return]

    async def _lines(self) -> AsyncIterator[T]:
        while (line := await self._out.take_line()) is not None:
            yield self._decode(line, self._out.eof and not self._out.buf)
        if self._text:
            tail = self._decoder.decode(b"", True)
            if tail:
                yield tail  # type: ignore[misc]

    async def _chunks(self) -> AsyncIterator[T]:
        while (chunk := await self._out.take_chunk()) is not None:
            yield self._decode(chunk, False)
        if self._text:
            tail = self._decoder.decode(b"", True)
            if tail:
                yield tail  # type: ignore[misc]

    def __iter__(self) -> Iterator[T]:
        """Lines (with their newline) as they arrive."""
        return _sync.iterate(self._lines())

    def __aiter__(self) -> AsyncIterator[T]:
        """Lines (with their newline) as they arrive, for ``async for``."""
        return _sync.aiterate(self._lines())

    def chunks(self) -> Iterator[T]:
        """Output as it arrives, in whatever pieces it comes (not split by line)."""
        return _sync.iterate(self._chunks())

    def chunks_aio(self) -> AsyncIterator[T]:
        """``chunks()`` for ``async for``."""
        return _sync.aiterate(self._chunks())


class _Stdin:
    def __init__(self, client: Client, sandbox_id: str, exec_id: str) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.exec_id = exec_id
        self.pending = bytearray()
        self.acked = 0              # stream offset of pending[0]
        self.eof_requested = False
        self.eof_sent = False
        self.tlock = threading.Lock()   # write() may run on any thread
        self.lock: Optional[asyncio.Lock] = None

    def write(self, data: bytes) -> None:
        with self.tlock:
            if self.eof_requested:
                raise InvalidError(f"stdin of {self.exec_id} was closed with write_eof()")
            self.pending += data

    def write_eof(self) -> None:
        with self.tlock:
            self.eof_requested = True

    def has_work(self) -> bool:
        with self.tlock:
            return bool(self.pending) or (self.eof_requested and not self.eof_sent)

    async def drain(self) -> None:
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            starting = Backoff(10.0, first=0.005, cap=0.1)
            while self.has_work():
                with self.tlock:
                    chunk = bytes(self.pending[:STDIN_CHUNK])
                    offset = self.acked
                    eof = self.eof_requested and len(self.pending) <= STDIN_CHUNK
                req = pb.WriteExecStdinRequest(sandbox_id=self.sandbox_id, exec_id=self.exec_id,
                                               offset=offset, data=chunk, eof=eof)
                # Idempotent by offset: a retry after a dropped connection applies nothing twice.
                try:
                    resp = await self.client.call("sandbox", "WriteExecStdin", req, timeout=None,
                                                  what=f"writing stdin of {self.exec_id}")
                except FailedPreconditionError as e:
                    if "not started yet" in e.message and await starting.sleep():
                        continue  # an entrypoint just created: its process is on its way
                    if chunk or not eof:
                        raise
                    self.eof_sent = True  # closing the stdin of a finished process: done
                    return
                with self.tlock:
                    done = min(max(0, resp.next_offset - self.acked), len(self.pending))
                    del self.pending[:done]
                    self.acked += done
                    if eof and not self.pending:
                        self.eof_sent = True


class StreamWriter:
    """The stdin of a process: ``write()`` buffers, ``drain()`` sends, ``write_eof()`` closes."""

    def __init__(self, stdin: _Stdin) -> None:
        self._stdin = stdin

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        """Buffer data (str is encoded as UTF-8); call ``drain()`` to send it."""
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin.write() wants bytes or str, not {type(data).__name__}")
        self._stdin.write(bytes(data))

    def write_eof(self) -> None:
        """Close stdin once the buffered data is sent (by the next ``drain()``)."""
        self._stdin.write_eof()

    @_sync.method
    async def drain(self) -> None:
        """Send everything buffered (and the EOF, if requested); returns when it is applied."""
        await self._stdin.drain()


class _Exec:
    """The state of one exec, shared by its public wrapper; lives on the SDK loop."""

    def __init__(self, client: Client, sandbox_id: str, exec_id: str,
                 stdout_piped: bool = True, stderr_piped: bool = True) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.exec_id = exec_id
        self.stdout = _Output(client, sandbox_id, exec_id, pb.EXEC_STREAM_STDOUT, stdout_piped)
        self.stderr = _Output(client, sandbox_id, exec_id, pb.EXEC_STREAM_STDERR, stderr_piped)
        self.stdin = _Stdin(client, sandbox_id, exec_id)
        self.proto: Optional[pb.Exec] = None
        self.forwarders: list[asyncio.Task[None]] = []

    @property
    def finished(self) -> bool:
        return self.proto is not None and self.proto.state == pb.EXEC_STATE_FINISHED

    async def wait_once(self, timeout_ms: int) -> bool:
        r = await self.client.call(
            "sandbox", "WaitExec",
            pb.WaitExecRequest(sandbox_id=self.sandbox_id, exec_id=self.exec_id, timeout_ms=timeout_ms),
            timeout=timeout_ms / 1000 + self.client.timeout, what=f"waiting for {self.exec_id}")
        if r.finished:
            self.proto = r.exec
        return bool(r.finished)

    async def wait(self) -> None:
        if self.finished:
            return
        if self.stdin.has_work():
            # A write_eof() without drain(): send it rather than leave the process waiting.
            task = asyncio.ensure_future(self.stdin.drain())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        # Most processes finish soon; only if not, drain their output so a full output buffer
        # (nobody called read()) cannot block the process and with it this wait.
        if await self.wait_once(1000):
            return
        for o in (self.stdout, self.stderr):
            o.unbounded = True
            o.start()
        while not await self.wait_once(MAX_LONG_POLL_MS):
            pass


class ContainerProcess(Generic[T]):
    """A process started with ``Sandbox.exec`` (Modal's ``ContainerProcess``).

    ``stdout`` / ``stderr`` are :class:`StreamReader`, ``stdin`` a :class:`StreamWriter`;
    ``wait()`` returns the exit code, ``poll()`` returns it or None while running.
    """

    def __init__(self, ex: _Exec, text: bool) -> None:
        self._ex = ex
        self._stdout: StreamReader[T] = StreamReader(ex.stdout, text)
        self._stderr: StreamReader[T] = StreamReader(ex.stderr, text)
        self._stdin = StreamWriter(ex.stdin)

    def __repr__(self) -> str:
        return f"corral.ContainerProcess({self._ex.sandbox_id}/{self._ex.exec_id})"

    @property
    def object_id(self) -> str:
        """The exec id."""
        return self._ex.exec_id

    @property
    def sandbox_id(self) -> str:
        """The id of the sandbox it runs in."""
        return self._ex.sandbox_id

    @property
    def stdout(self) -> StreamReader[T]:
        """The process's standard output."""
        return self._stdout

    @property
    def stderr(self) -> StreamReader[T]:
        """The process's standard error (empty for a pty process: it shares stdout)."""
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        """The process's standard input."""
        return self._stdin

    @property
    def returncode(self) -> Optional[int]:
        """The exit code (or -signal), None while it runs or before wait()/poll() saw the end."""
        return returncode_of(self._ex.proto.exit_status) if self._ex.finished and self._ex.proto else None

    @property
    def exit_reason(self) -> Optional[ExitReason]:
        """Why it ended (EXITED, SIGNALED, TIMEOUT, ...), None while it runs."""
        if not self._ex.finished or self._ex.proto is None:
            return None
        return ExitReason.from_proto(self._ex.proto.exit_status.reason)

    @property
    def exit_message(self) -> str:
        """The daemon's detail on the end, e.g. why it failed to start."""
        return self._ex.proto.exit_status.message if self._ex.proto else ""

    @_sync.method
    async def wait(self) -> int:
        """Wait until the process ends; returns its exit code (-signal if killed)."""
        await self._ex.wait()
        for t in self._ex.forwarders:
            await t
        assert self._ex.proto is not None
        return returncode_of(self._ex.proto.exit_status)

    @_sync.method
    async def poll(self) -> Optional[int]:
        """The exit code if the process has ended, else None (does not wait)."""
        if not self._ex.finished:
            await self._ex.wait_once(0)
        return self.returncode

    @_sync.method
    async def signal(self, signum: int) -> None:
        """Send a signal to the process's process group."""
        await self._ex.client.call("sandbox", "SignalExec", pb.SignalExecRequest(
            sandbox_id=self._ex.sandbox_id, exec_id=self._ex.exec_id, signal=int(signum)))

    @_sync.method
    async def kill(self) -> None:
        """SIGKILL the process."""
        await self.signal.aio(9)

    @_sync.method
    async def resize(self, rows: int, cols: int) -> None:
        """Resize the pty of a process started with ``pty=True``."""
        if not (0 < rows <= 0xFFFF and 0 < cols <= 0xFFFF):
            raise InvalidError(f"pty size {rows}x{cols} out of range")
        await self._ex.client.call("sandbox", "ResizeExecPty", pb.ResizeExecPtyRequest(
            sandbox_id=self._ex.sandbox_id, exec_id=self._ex.exec_id,
            size=pb.PtySize(rows=rows, cols=cols)))


def stream_mode(t: StreamType, name: str) -> int:
    if not isinstance(t, StreamType):
        raise InvalidError(f"{name}= must be corral.PIPE, corral.DEVNULL or corral.STDOUT, not {t!r}")
    return pb.STREAM_MODE_DEVNULL if t == StreamType.DEVNULL else pb.STREAM_MODE_PIPE


def start_forwarders(ex: _Exec, stdout: StreamType, stderr: StreamType) -> None:
    """StreamType.STDOUT: copy the stream to this process's stdout as it arrives."""
    for out, t in ((ex.stdout, stdout), (ex.stderr, stderr)):
        if t == StreamType.STDOUT:
            out.unbounded = True
            ex.forwarders.append(asyncio.ensure_future(out.forward(sys.stdout.buffer)))


__all__ = ["ContainerProcess", "StreamReader", "StreamWriter", "StreamType", "PIPE", "DEVNULL",
           "STDOUT", "ExitReason", "NotFoundError", "FailedPreconditionError"]
