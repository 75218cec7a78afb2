"""corral: run untrusted code in self-hosted sandboxes, with Modal's Python API.

    import corral
    with corral.Sandbox.create(image="python") as sb:
        p = sb.exec("python3", "-c", "print(6 * 7)")
        print(p.stdout.read(), p.wait())

Every call blocks; each also has an asyncio form: ``await corral.Sandbox.create.aio(...)``,
``await sb.exec.aio(...)``, ``await p.wait.aio()``, ``async for line in p.stdout``.
The daemon is found at ``CORRAL_ADDR`` (default ``unix:///run/corral/corral.sock``;
``tcp://host:port`` with ``CORRAL_TOKEN``), or pass ``client=corral.Client(...)``.
"""
from ._app import App, Secret
from ._client import Client, default_client
from ._errors import (AlreadyExistsError, AuthError, ConnectionError, Error, ExecTimeoutError,
                      FailedPreconditionError, InvalidError, NotFoundError, OutOfRangeError,
                      RemoteError, ResourceExhaustedError, SandboxTerminatedError,
                      SandboxTimeoutError, TimeoutError, UnimplementedError)
from ._filesystem import FileEntry, FileSystem, FileType
from ._image import Image, enable_output
from ._process import (DEVNULL, PIPE, STDOUT, ContainerProcess, ExitReason, StreamReader,
                       StreamType, StreamWriter)
from ._sandbox import Sandbox, Tunnel

__version__ = "0.1.0"

# Modal keeps these in submodules; `import corral as modal` code may reach for them there.
from . import _errors as exception  # noqa: E402
from . import _process as stream_type  # noqa: E402

__all__ = [
    "App", "Secret", "Client", "default_client", "Error", "AlreadyExistsError", "AuthError",
    "ConnectionError", "ExecTimeoutError", "FailedPreconditionError", "InvalidError",
    "NotFoundError", "OutOfRangeError", "RemoteError", "ResourceExhaustedError",
    "SandboxTerminatedError", "SandboxTimeoutError", "TimeoutError", "UnimplementedError",
    "FileEntry", "FileSystem", "FileType", "Image", "enable_output", "DEVNULL", "PIPE", "STDOUT",
    "ContainerProcess", "ExitReason", "StreamReader", "StreamType", "StreamWriter", "Sandbox",
    "Tunnel", "exception", "stream_type", "__version__",
]
