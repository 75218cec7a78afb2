"""One exception hierarchy for the SDK, mapped from gRPC status codes (message kept)."""
from __future__ import annotations

from typing import Optional

import grpc


class Error(Exception):
    """Base class of every error the corral SDK raises.

    ``code`` is the gRPC status code name the daemon answered with (``"NOT_FOUND"``, ...), or
    None when the error arose in the SDK itself.
    """

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidError(Error):
    """A request was malformed or asked for something corral does not support."""


class UnimplementedError(InvalidError):
    """The daemon does not (yet) serve this call or feature."""


class NotFoundError(Error):
    """No sandbox, exec, image or file by that name or id."""


class AlreadyExistsError(Error):
    """The name is already in use (e.g. a running sandbox's name)."""


class TimeoutError(Error):  # noqa: A001 - Modal's name; corral.TimeoutError
    """A deadline passed (an RPC deadline, a sandbox or exec timeout)."""


class SandboxTimeoutError(TimeoutError):
    """The sandbox ended because its timeout or idle timeout passed."""


class ExecTimeoutError(TimeoutError):
    """The process ended because its timeout passed."""


class SandboxTerminatedError(Error):
    """The sandbox has finished (terminated, timed out, or its entrypoint exited)."""


class ResourceExhaustedError(Error):
    """A limit was reached: sandboxes, execs, memory, message size, ..."""


class FailedPreconditionError(Error):
    """The object is not in a state that allows the call (e.g. stdin already closed)."""


class OutOfRangeError(Error):
    """An offset outside what the daemon retains (output already dropped, stdin gap)."""


class AuthError(Error):
    """The daemon refused the credentials (``CORRAL_TOKEN``)."""


class ConnectionError(Error):  # noqa: A001
    """The daemon could not be reached, even after retrying."""


class RemoteError(Error):
    """Any other error the daemon reported."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimeoutError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.UNAVAILABLE: ConnectionError,
}


def from_rpc_error(e: grpc.RpcError, what: str = "") -> Error:
    """Turn a grpc error into the matching corral.Error, keeping the daemon's message."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else None
    msg = str(details or e)
    if what:
        msg = f"{what}: {msg}"
    cls = _BY_CODE.get(code, RemoteError)
    if code == grpc.StatusCode.FAILED_PRECONDITION and "sandbox" in msg and "finished" in msg:
        cls = SandboxTerminatedError
    return cls(msg, code.name if code is not None else None)
