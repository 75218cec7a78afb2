"""The connection to corrald: address parsing, the gRPC channel, retries with backoff."""
from __future__ import annotations

import asyncio
import os
import random
from typing import Any, AsyncIterator, Callable, Dict, Optional, Sequence, Tuple, TypeVar

import grpc
import grpc.aio

from . import _sync
from ._errors import ConnectionError, Error, InvalidError, UnimplementedError, from_rpc_error

try:
    from .v1 import image_pb2_grpc, sandbox_pb2_grpc, system_pb2_grpc
except ImportError as e:  # pragma: no cover - a source checkout without `make`
    raise ImportError(f"corral's generated gRPC stubs are missing ({e}): run `make` (or "
                      "`make sdk-stubs`) in the corral repository first") from e

DEFAULT_ADDR = "unix:///run/corral/corral.sock"
DEFAULT_TIMEOUT = 30.0         # seconds, per unary call
DEFAULT_RETRY_TIMEOUT = 30.0   # seconds of retrying transient failures before giving up
MAX_LONG_POLL_MS = 60000       # the daemon caps WaitSandbox/WaitExec at 60 s

M = TypeVar("M")

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 4 << 20),
    # A restarted daemon should be found again within a fraction of a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Our own retry loop knows which calls are idempotent; grpc's must not replay others.
    ("grpc.enable_retries", 0),
]


def parse_address(address: str) -> Tuple[str, bool]:
    """Map a corral address to a grpc target; returns (target, is_tcp).

    ``unix:///path``, ``unix:/path`` or a bare absolute path name a unix socket;
    ``tcp://host:port`` (or ``host:port``) a TCP address.
    """
    a = address.strip()
    if not a:
        raise InvalidError("empty corral address")
    if a.startswith("unix://"):
        path = a[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidError(f"corral address {address!r}: a unix socket path must be absolute")
        return "unix://" + path, False
    if a.startswith("unix:"):
        return "unix:" + a[len("unix:"):], False
    if a.startswith("/"):
        return "unix://" + a, False
    if a.startswith("tcp://"):
        a = a[len("tcp://"):]
    if "://" in a or ":" not in a:
        raise InvalidError(f"corral address {address!r}: want unix:///path or tcp://host:port")
    return a, True


class Client:
    """A connection to a corrald.

    Most programs never make one: the SDK connects to ``CORRAL_ADDR`` (default
    ``unix:///run/corral/corral.sock``) with ``CORRAL_TOKEN`` as bearer token for TCP. Pass
    ``client=corral.Client(address=...)`` to ``Sandbox.create`` and friends to use another daemon.

    Transient failures (daemon restarting, connection dropped) are retried with exponential
    backoff for up to ``retry_timeout`` seconds, for calls that are safe to repeat.
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retry_timeout: float = DEFAULT_RETRY_TIMEOUT) -> None:
        self.address = address or os.environ.get("CORRAL_ADDR") or DEFAULT_ADDR
        self._target, tcp = parse_address(self.address)
        if token is None:
            token = os.environ.get("CORRAL_TOKEN") or None
        self._metadata: Sequence[Tuple[str, str]] = (("authorization", f"Bearer {token}"),) if token else ()
        if token and not tcp:
            self._metadata = ()  # the unix socket is guarded by file permissions, not a token
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self._channel: Optional[grpc.aio.Channel] = None
        self._generation = 0
        self._sandbox: Any = None
        self._image: Any = None
        self._system: Any = None
        _sync.on_exit(self._close)

    def __repr__(self) -> str:
        return f"corral.Client(address={self.address!r})"

    # --- channel (only ever touched on the SDK loop) --------------------------------------
    def _ensure(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
            self._sandbox = sandbox_pb2_grpc.SandboxServiceStub(self._channel)  # type: ignore[no-untyped-call]
            self._image = image_pb2_grpc.ImageServiceStub(self._channel)  # type: ignore[no-untyped-call]
            self._system = system_pb2_grpc.SystemServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def _close(self) -> None:
        ch, self._channel = self._channel, None
        # Drop every reference now: a channel freed during interpreter teardown (after grpc's
        # own shutdown) makes grpcio print tracebacks.
        self._sandbox = self._image = self._system = None
        self._generation += 1
        if ch is not None:
            await ch.close()

    @_sync.method
    async def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        await self._close()

    @_sync.method
    async def reconnect(self) -> None:
        """Drop the connection now (calls in flight fail over to a new one and resume)."""
        await self._close()
        self._ensure()

    @_sync.method
    async def info(self) -> Dict[str, Any]:
        """What the daemon reports about itself: version, kernel, features, capacity, images."""
        from google.protobuf.json_format import MessageToDict

        from .v1 import system_pb2
        resp = await self.call("system", "GetInfo", system_pb2.GetInfoRequest())
        out: Dict[str, Any] = MessageToDict(resp, preserving_proto_field_name=True)
        return out

    @_sync.method
    async def has_feature(self, service: str, method: str, request: Any) -> bool:
        """Whether the daemon serves an RPC (False when it answers UNIMPLEMENTED)."""
        try:
            await self.call(service, method, request)
        except UnimplementedError:
            return False
        except Error:
            return True
        return True

    def _rpc(self, service: str, name: str) -> Callable[..., Any]:
        self._ensure()
        fn: Callable[..., Any] = getattr({"sandbox": self._sandbox, "image": self._image,
                                          "system": self._system}[service], name)
        return fn

    @property
    def metadata(self) -> Sequence[Tuple[str, str]]:
        """The gRPC metadata sent with every call (the bearer token on TCP)."""
        return self._metadata

    def transient(self, e: grpc.RpcError, generation: int, streaming: bool = False) -> bool:
        """Whether a failed call may be repeated (the connection, not the request, failed)."""
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return True
        if generation != self._generation:  # we replaced the channel under the call
            return True
        # A connection torn mid-stream can surface as these; stream reads are idempotent.
        return streaming and code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)

    # --- calls -----------------------------------------------------------------------------
    async def call(self, service: str, name: str, request: Any, *, timeout: Optional[float] = None,
                   idempotent: bool = True, what: str = "") -> Any:
        """One unary call with a deadline; transient failures retried while idempotent."""
        backoff = Backoff(self.retry_timeout)
        while True:
            gen = self._generation
            try:
                return await self._rpc(service, name)(request, timeout=timeout or self.timeout,
                                                      metadata=self._metadata)
            except grpc.RpcError as e:
                if idempotent and self.transient(e, gen) and await backoff.sleep():
                    continue
                raise self.error(e, what or name) from None

    async def call_stream(self, service: str, name: str, request: Any, *,
                          timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """A server-streaming call (no retry: callers resume from their own offsets)."""
        call = self._rpc(service, name)(request, timeout=timeout, metadata=self._metadata)
        try:
            async for msg in call:
                yield msg
        finally:
            call.cancel()

    async def call_client_stream(self, service: str, name: str, make_requests: Callable[[], Any], *,
                                 timeout: Optional[float] = None, what: str = "") -> Any:
        """A client-streaming call; make_requests() builds a fresh request iterator per try
        (the calls we stream, WriteFile and ImportImage, replace their result atomically)."""
        backoff = Backoff(self.retry_timeout)
        while True:
            gen = self._generation
            try:
                return await self._rpc(service, name)(make_requests(), timeout=timeout,
                                                      metadata=self._metadata)
            except grpc.RpcError as e:
                if self.transient(e, gen) and await backoff.sleep():
                    continue
                raise self.error(e, what or name) from None

    def error(self, e: grpc.RpcError, what: str) -> Exception:
        """The corral.Error for a failed call (with where to look when unreachable)."""
        err = from_rpc_error(e, what)
        if isinstance(err, ConnectionError):
            err.message = f"{err.message} (corrald at {self.address}; is it running? set CORRAL_ADDR)"
            err.args = (err.message,)
        return err

    @property
    def generation(self) -> int:
        """Bumped whenever the connection is replaced (calls in flight then retry)."""
        return self._generation


class Backoff:
    """Exponential backoff with jitter, bounded by a total time budget."""

    def __init__(self, budget: float, first: float = 0.05, cap: float = 1.0) -> None:
        self._budget = budget
        self._first = first
        self._cap = cap
        self.reset()

    def reset(self) -> None:
        """Progress was made: the next failure starts a fresh budget."""
        self._deadline = asyncio.get_running_loop().time() + self._budget
        self._delay = self._first

    async def sleep(self) -> bool:
        """Sleep before the next try; False when the budget is spent."""
        now = asyncio.get_running_loop().time()
        if now >= self._deadline:
            return False
        await asyncio.sleep(min(self._delay * (0.5 + random.random()), self._deadline - now))
        self._delay = min(self._delay * 2, self._cap)
        return True


_default: Optional[Client] = None


def default_client() -> Client:
    """The process-wide client built from CORRAL_ADDR / CORRAL_TOKEN."""
    global _default
    if _default is None:
        _default = Client()
    return _default


def resolve(client: Optional[Client]) -> Client:
    return client if client is not None else default_client()
