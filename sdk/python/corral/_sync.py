"""Sync and asyncio from one implementation.

Every SDK method is written once, as a coroutine, and runs on the SDK's own event loop in a
background thread (where the gRPC channel lives). The public object exposes it twice:
``obj.method(...)`` blocks the calling thread until the coroutine finishes, and
``await obj.method.aio(...)`` awaits it from any asyncio loop without blocking that loop. So
objects may be shared between threads and loops, and an asyncio agent never stalls on SDK I/O.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import threading
from typing import (Any, AsyncIterator, Awaitable, Callable, Concatenate, Coroutine, Generic, Iterator,
                    List, Optional, ParamSpec, Type, TypeVar, overload)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

_loop: Optional[asyncio.AbstractEventLoop] = None
_thread: Optional[threading.Thread] = None
_lock = threading.Lock()
_at_exit: List[Callable[[], Coroutine[Any, Any, None]]] = []


def loop() -> asyncio.AbstractEventLoop:
    """The SDK's event loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            new = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(started.set)
                new.run_forever()

            _thread = threading.Thread(target=run, name="corral-sdk-loop", daemon=True)
            _thread.start()
            started.wait()
            _loop = new
        return _loop


def on_exit(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run fn() on the SDK loop at interpreter exit (closes channels cleanly)."""
    _at_exit.append(fn)


@atexit.register
def _shutdown() -> None:
    if _loop is None or _thread is None or not _thread.is_alive():
        return

    async def close_all() -> None:
        for fn in _at_exit:
            try:
                await asyncio.wait_for(fn(), 2)
            except Exception:
                pass

    try:
        asyncio.run_coroutine_threadsafe(close_all(), _loop).result(5)
    except Exception:
        pass
    _loop.call_soon_threadsafe(_loop.stop)
    _thread.join(2)


def in_sdk_loop() -> bool:
    """True when called from the SDK loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run coro on the SDK loop and block until it finishes (Ctrl-C cancels it)."""
    if in_sdk_loop():
        coro.close()
        raise RuntimeError("a blocking corral call was made on the SDK's own loop; use .aio")
    fut = asyncio.run_coroutine_threadsafe(coro, loop())
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, R]) -> R:
    """Await coro, run on the SDK loop, from whatever loop the caller is on."""
    try:
        current: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    sdk = loop()
    if current is sdk:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, sdk))


class Bound(Generic[P, R]):
    """A method bound to its object: call it to block, or ``await m.aio(...)``."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], doc_from: Any) -> None:
        self._fn = fn
        functools.update_wrapper(self, doc_from)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return run_sync(self._fn(*args, **kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """The same call, as an awaitable for asyncio code."""
        return run_async(self._fn(*args, **kwargs))


class method(Generic[S, P, R]):  # noqa: N801 - used as a decorator
    """Decorator: an ``async def`` method becomes a sync method with an ``.aio`` variant."""

    def __init__(self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)

    @overload
    def __get__(self, obj: None, owner: Any) -> "method[S, P, R]": ...

    @overload
    def __get__(self, obj: S, owner: Any) -> Bound[P, R]: ...

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return self
        return Bound(functools.partial(self._fn, obj), self._fn)


class static(Generic[P, R]):  # noqa: N801 - used as a decorator over @staticmethod
    """Decorator for class-level constructors (``Sandbox.create``): sync call plus ``.aio``."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> None:
        self._bound: Bound[P, R] = Bound(fn, fn)

    def __get__(self, obj: Any, owner: Any) -> Bound[P, R]:
        return self._bound


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """A blocking iterator over an async iterator that runs on the SDK loop."""
    while True:
        try:
            yield run_sync(_next(agen))
        except StopAsyncIteration:
            return


async def aiterate(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """An async iterator for the caller's loop over one that runs on the SDK loop."""
    while True:
        try:
            item = await run_async(_next(agen))
        except StopAsyncIteration:
            return
        yield item


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def classname(cls: Type[Any]) -> str:
    return f"corral.{cls.__name__}"
