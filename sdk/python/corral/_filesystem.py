"""``sb.filesystem``: files inside a running sandbox, as the sandbox itself sees them."""
from __future__ import annotations

import dataclasses
import enum
import os
import stat as stat_mod
from typing import TYPE_CHECKING, Iterator, List, Union

import grpc

from . import _sync
from ._client import Backoff
from ._errors import Error, InvalidError
from .v1 import sandbox_pb2 as pb

if TYPE_CHECKING:
    from ._sandbox import Sandbox

CHUNK = 1 << 20  # bytes per WriteFile message (the daemon takes 4 MiB messages)


class FileType(str, enum.Enum):
    """Type of a filesystem entry."""

    UNSPECIFIED = "UNSPECIFIED"
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"
    SYMLINK = "SYMLINK"
    OTHER = "OTHER"


_TYPES = {pb.FILE_TYPE_REGULAR: FileType.FILE, pb.FILE_TYPE_DIRECTORY: FileType.DIRECTORY,
          pb.FILE_TYPE_SYMLINK: FileType.SYMLINK, pb.FILE_TYPE_OTHER: FileType.OTHER}


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """Metadata of one file or directory in a sandbox."""

    path: str
    type: FileType
    size: int
    mode: int
    mtime: float
    uid: int
    gid: int
    symlink_target: str = ""

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return self.type == FileType.DIRECTORY

    @classmethod
    def from_proto(cls, info: pb.FileInfo, path: str) -> "FileEntry":
        return cls(path=path, type=_TYPES.get(info.type, FileType.UNSPECIFIED), size=info.size,
                   mode=info.mode, mtime=info.modified_at_ms / 1000.0, uid=info.uid, gid=info.gid,
                   symlink_target=info.symlink_target)


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidError(f"sandbox path must be absolute, got {path!r}")
    return path


class FileSystem:
    """Read and write files in a running sandbox (``sb.filesystem``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def _client_ids(self) -> tuple:  # type: ignore[type-arg]
        return self._sb._client, self._sb.object_id

    async def _read(self, path: str) -> bytes:
        client, sid = self._client_ids()
        _check_path(path)
        buf = bytearray()
        backoff = Backoff(client.retry_timeout)
        while True:
            gen = client.generation
            req = pb.ReadFileRequest(sandbox_id=sid, path=path, offset=len(buf))
            try:
                async for msg in client.call_stream("sandbox", "ReadFile", req):
                    backoff.reset()
                    if msg.data:
                        if msg.offset != len(buf):
                            raise Error(f"reading {path}: chunk at offset {msg.offset}, expected {len(buf)}")
                        buf += msg.data
                return bytes(buf)  # resumed from len(buf) after a dropped connection
            except grpc.RpcError as e:
                if client.transient(e, gen, streaming=True) and await backoff.sleep():
                    continue
                raise client.error(e, f"reading {path} in {sid}") from None

    @_sync.method
    async def read_bytes(self, path: str) -> bytes:
        """The contents of a file."""
        return await self._read(path)

    @_sync.method
    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The contents of a file, decoded."""
        return (await self._read(path)).decode(encoding)

    async def _write(self, path: str, data: bytes, mode: int, parents: bool) -> int:
        client, sid = self._client_ids()
        _check_path(path)

        def requests() -> Iterator[pb.WriteFileRequest]:
            yield pb.WriteFileRequest(sandbox_id=sid, path=path, mode=mode, make_parents=parents,
                                      data=data[:CHUNK])
            for i in range(CHUNK, len(data), CHUNK):
                yield pb.WriteFileRequest(data=data[i:i + CHUNK])

        resp = await client.call_client_stream("sandbox", "WriteFile", requests,
                                               what=f"writing {path} in {sid}")
        return int(resp.bytes_written)

    @_sync.method
    async def write_bytes(self, path: str, data: bytes, *, mode: int = 0o644, parents: bool = True) -> int:
        """Replace a file with data (atomically); creates parent directories. Returns bytes written."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_bytes() wants bytes, not {type(data).__name__}")
        return await self._write(path, bytes(data), mode, parents)

    @_sync.method
    async def write_text(self, path: str, text: str, *, encoding: str = "utf-8", mode: int = 0o644,
                         parents: bool = True) -> int:
        """Replace a file with text (atomically); creates parent directories."""
        return await self._write(path, text.encode(encoding), mode, parents)

    @_sync.method
    async def list_files(self, path: str = "/") -> List[FileEntry]:
        """The entries of a directory (``path`` of each is the full path)."""
        client, sid = self._client_ids()
        resp = await client.call("sandbox", "ListFiles", pb.ListFilesRequest(sandbox_id=sid, path=_check_path(path)),
                                 what=f"listing {path} in {sid}")
        base = path.rstrip("/")
        return [FileEntry.from_proto(e, f"{base}/{e.name}") for e in resp.entries]

    @_sync.method
    async def stat(self, path: str) -> FileEntry:
        """Metadata of one path (a final symlink is not followed)."""
        client, sid = self._client_ids()
        resp = await client.call("sandbox", "StatFile", pb.StatFileRequest(sandbox_id=sid, path=_check_path(path)),
                                 what=f"stat {path} in {sid}")
        return FileEntry.from_proto(resp.info, path)

    @_sync.method
    async def exists(self, path: str) -> bool:
        """Whether the path exists."""
        from ._errors import NotFoundError
        try:
            await self.stat.aio(path)
            return True
        except NotFoundError:
            return False

    @_sync.method
    async def make_directory(self, path: str, *, parents: bool = True, mode: int = 0o755) -> None:
        """Create a directory (and its parents, by default)."""
        client, sid = self._client_ids()
        await client.call("sandbox", "MakeDirectory", pb.MakeDirectoryRequest(
            sandbox_id=sid, path=_check_path(path), parents=parents, mode=mode), what=f"mkdir {path} in {sid}")

    @_sync.method
    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (its contents too when recursive)."""
        client, sid = self._client_ids()
        await client.call("sandbox", "RemovePath", pb.RemovePathRequest(
            sandbox_id=sid, path=_check_path(path), recursive=recursive), what=f"removing {path} in {sid}")

    @_sync.method
    async def copy_from_local(self, local_path: Union[str, "os.PathLike[str]"], remote_path: str) -> None:
        """Copy a local file or directory tree into the sandbox."""
        local = os.fspath(local_path)
        if os.path.isdir(local):
            for root, dirs, files in os.walk(local):
                rel = os.path.relpath(root, local)
                target = remote_path if rel == "." else f"{remote_path.rstrip('/')}/{rel}"
                await self.make_directory.aio(target, parents=True)
                for name in files:
                    src = os.path.join(root, name)
                    with open(src, "rb") as f:
                        data = f.read()
                    await self._write(f"{target.rstrip('/')}/{name}", data,
                                      stat_mod.S_IMODE(os.stat(src).st_mode), True)
        else:
            with open(local, "rb") as f:
                data = f.read()
            await self._write(remote_path, data, stat_mod.S_IMODE(os.stat(local).st_mode), True)

    @_sync.method
    async def copy_to_local(self, remote_path: str, local_path: Union[str, "os.PathLike[str]"]) -> None:
        """Copy a file or directory tree from the sandbox to the local machine."""
        local = os.fspath(local_path)
        info = await self.stat.aio(remote_path)
        if info.is_dir:
            os.makedirs(local, exist_ok=True)
            for e in await self.list_files.aio(remote_path):
                name = os.path.basename(e.path)
                if name in ("", ".", "..") or "/" in e.path[len(remote_path.rstrip("/")) + 1:]:
                    raise Error(f"copying {remote_path}: refusing the entry name {e.path!r}")
                if e.type in (FileType.FILE, FileType.DIRECTORY):
                    await self.copy_to_local.aio(e.path, os.path.join(local, os.path.basename(e.path)))
            return
        data = await self._read(remote_path)
        parent = os.path.dirname(local)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(local, "wb") as f:
            f.write(data)
