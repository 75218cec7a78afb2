"""corral.Image: a built-in image, a base plus build steps, an imported archive, or a snapshot.

Images are lazy, as Modal's: ``Image.debian_slim().apt_install("jq")`` only records the steps;
they are built (each step cached by the daemon) when a sandbox is created from the image, or
by ``image.build()``.
"""
from __future__ import annotations

import io
import os
import sys
import tarfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _sync
from ._client import Backoff, Client, resolve
from ._errors import Error, FailedPreconditionError, InvalidError
from .v1 import image_pb2 as ipb

IMPORT_CHUNK = 1 << 20

ProgressFn = Callable[[ipb.BuildImageResponse], None]

_output_depth = 0


class enable_output:  # noqa: N801 - Modal's name
    """Show image build progress on stderr: ``with corral.enable_output(): ...``.

    Called without ``with``, it stays enabled for the rest of the program.
    """

    def __init__(self, show_progress: bool = True) -> None:
        global _output_depth
        self._on = show_progress
        if self._on:
            _output_depth += 1

    def __enter__(self) -> "enable_output":
        return self

    def __exit__(self, *exc: Any) -> None:
        global _output_depth
        if self._on:
            _output_depth -= 1
            self._on = False


def output_enabled() -> bool:
    """Whether ``enable_output()`` is in effect."""
    return _output_depth > 0


def print_progress(ev: ipb.BuildImageResponse) -> None:
    """The default progress display: build log lines and step results on stderr."""
    kind = ev.WhichOneof("event")
    if kind == "log":
        sys.stderr.write(f"  | {ev.log.rstrip()}\n")
    elif kind == "step_done":
        sd = ev.step_done
        sys.stderr.write(f"  step {sd.index + 1}: {'cached' if sd.cached else 'built'} "
                         f"(layer {sd.layer_id[:12]})\n")
    elif kind == "image":
        sys.stderr.write(f"  image {ev.image.image_id[:12]} ready"
                         f"{' as ' + ev.image.name if ev.image.name else ''}\n")
    sys.stderr.flush()


def _tar_of(local: str, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(local, arcname=arcname)
    return buf.getvalue()


class Image:
    """An image to create sandboxes from.

    Build one with ``Image.debian_slim()`` (the built-in ``python`` image: Debian with Python 3),
    ``Image.from_name("busybox")``, ``Image.from_oci_archive(path)`` or ``Image.from_id(id)``,
    then add steps: ``apt_install``, ``run_commands``, ``pip_install``, ``env``, ``workdir``,
    ``add_local_file``, ``add_local_dir``. ``sb.snapshot_filesystem()`` also returns one.
    """

    def __init__(self, *, _base: str = "", _steps: Tuple[ipb.BuildStep, ...] = (),
                 _archive: Optional[str] = None, _name: str = "", _allow_network: bool = False,
                 _force: bool = False, _proto: Optional[ipb.Image] = None,
                 _client: Optional[Client] = None) -> None:
        self._base = _base
        self._steps = _steps
        self._archive = _archive
        self._name = _name
        self._allow_network = _allow_network
        self._force = _force
        self._proto = _proto
        self._client = _client

    def __repr__(self) -> str:
        if self._proto is not None:
            return f"corral.Image({self._proto.image_id[:12]}{' ' + self._proto.name if self._proto.name else ''})"
        return f"corral.Image(base={self._base!r}, steps={len(self._steps)})"

    # --- constructors (lazy) --------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, *, client: Optional[Client] = None) -> "Image":
        """A built-in (``busybox``, ``debian``, ``python``) or named image."""
        if not name or not isinstance(name, str):
            raise InvalidError("Image.from_name: name must be a non-empty string")
        return cls(_base=name, _client=client)

    @classmethod
    def from_id(cls, image_id: str, *, client: Optional[Client] = None) -> "Image":
        """An existing image by id."""
        return cls.from_name(image_id, client=client)

    @classmethod
    def debian_slim(cls, python_version: Optional[str] = None) -> "Image":
        """The built-in ``python`` image (Debian + Python 3), as Modal's debian_slim is."""
        if python_version is not None:
            raise InvalidError("Image.debian_slim(python_version=...): corral's python image has one "
                               "Python (Debian's python3); choosing a version is not supported")
        return cls(_base="python")

    @classmethod
    def debian(cls) -> "Image":
        """The built-in ``debian`` image (minimal Debian, no Python)."""
        return cls(_base="debian")

    @classmethod
    def from_registry(cls, tag: str, **kwargs: Any) -> "Image":
        """Not supported: corral pulls nothing from registries. Use ``from_oci_archive``."""
        raise InvalidError(f"Image.from_registry({tag!r}): corral does not pull from registries; "
                           "`docker save` the image and use corral.Image.from_oci_archive(path)")

    @classmethod
    def from_oci_archive(cls, path: Union[str, "os.PathLike[str]"], *, name: str = "") -> "Image":
        """An image imported from a ``docker save`` or OCI layout tar archive."""
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise InvalidError(f"Image.from_oci_archive: {p} is not a file")
        return cls(_archive=p, _name=name)

    # --- steps (each returns a new Image) ---------------------------------------------------
    def _extend(self, step: ipb.BuildStep, allow_network: bool = False) -> "Image":
        if self._archive is not None and self._proto is None:
            raise InvalidError("add steps to an imported image after building it (image.build())")
        base = self._base or (self._proto.image_id if self._proto is not None else "")
        return Image(_base=base, _steps=self._steps + (step,), _name="",
                     _allow_network=self._allow_network or allow_network, _force=self._force,
                     _client=self._client)

    @staticmethod
    def _flatten(items: Sequence[Union[str, Sequence[str]]]) -> List[str]:
        out: List[str] = []
        for it in items:
            if isinstance(it, str):
                out.append(it)
            else:
                out.extend(it)
        return out

    def apt_install(self, *packages: Union[str, List[str]]) -> "Image":
        """Install Debian packages with apt-get."""
        return self._extend(ipb.BuildStep(apt_install=ipb.AptInstall(packages=self._flatten(packages))))

    def run_commands(self, *commands: Union[str, List[str]]) -> "Image":
        """Run shell commands (``sh -c``), in order."""
        return self._extend(ipb.BuildStep(run_commands=ipb.RunCommands(commands=self._flatten(commands))))

    def pip_install(self, *packages: Union[str, List[str]]) -> "Image":
        """``python3 -m pip install`` packages. The step needs network access, which build steps do
        not have yet: building such an image raises ``corral.UnimplementedError`` saying so (use
        ``apt_install`` with Debian's ``python3-*`` packages instead)."""
        pkgs = self._flatten(packages)
        if not pkgs:
            return self
        import shlex
        cmd = "python3 -m pip install --no-cache-dir --break-system-packages " + " ".join(shlex.quote(p) for p in pkgs)
        return self._extend(ipb.BuildStep(run_commands=ipb.RunCommands(commands=[cmd])), allow_network=True)

    def env(self, vars: Dict[str, str]) -> "Image":
        """Set environment variables for later steps and for sandboxes."""
        return self._extend(ipb.BuildStep(env=ipb.SetEnv(env=dict(vars))))

    def workdir(self, path: str) -> "Image":
        """Set the working directory."""
        return self._extend(ipb.BuildStep(workdir=ipb.SetWorkdir(workdir=path)))

    def add_local_file(self, local_path: Union[str, "os.PathLike[str]"], remote_path: str) -> "Image":
        """Copy a local file into the image at remote_path."""
        local = os.fspath(local_path)
        if not os.path.isfile(local):
            raise InvalidError(f"add_local_file: {local} is not a file")
        d, base = os.path.split(remote_path.rstrip("/"))
        return self._extend(ipb.BuildStep(copy=ipb.CopyFiles(tar=_tar_of(local, base), dest=d or "/")))

    def add_local_dir(self, local_path: Union[str, "os.PathLike[str]"], remote_path: str) -> "Image":
        """Copy a local directory tree into the image at remote_path."""
        local = os.fspath(local_path)
        if not os.path.isdir(local):
            raise InvalidError(f"add_local_dir: {local} is not a directory")
        return self._extend(ipb.BuildStep(copy=ipb.CopyFiles(tar=_tar_of(local, "."), dest=remote_path)))

    def force_build(self) -> "Image":
        """Rebuild every step even if cached."""
        return Image(_base=self._base, _steps=self._steps, _archive=self._archive, _name=self._name,
                     _allow_network=self._allow_network, _force=True, _client=self._client)

    # --- resolution ------------------------------------------------------------------------
    @property
    def object_id(self) -> Optional[str]:
        """The image id, once built or looked up (None for an unbuilt recipe)."""
        return self._proto.image_id if self._proto is not None else None

    @property
    def name(self) -> str:
        """The image's name ("" if unnamed)."""
        return self._proto.name if self._proto is not None else (self._name or self._base)

    @property
    def size_bytes(self) -> int:
        """Size of its layers (0 until built)."""
        return self._proto.size_bytes if self._proto is not None else 0

    @property
    def layer_ids(self) -> List[str]:
        """Its layers, bottom first."""
        return list(self._proto.layer_ids) if self._proto is not None else []

    def _needs_build(self) -> bool:
        return self._proto is None and (bool(self._steps) or self._archive is not None)

    async def _ref(self, client: Client, progress: Optional[ProgressFn] = None) -> str:
        """The image reference CreateSandbox takes: a name or id, building first if needed."""
        if self._proto is not None:
            return self._proto.image_id
        if not self._needs_build():
            return self._base
        await self._build(client, progress)
        assert self._proto is not None
        return self._proto.image_id

    async def _build(self, client: Client, progress: Optional[ProgressFn]) -> None:
        if progress is None and output_enabled():
            progress = print_progress
        if self._archive is not None:
            path, name = self._archive, self._name

            def chunks() -> Iterator[ipb.ImportImageRequest]:
                with open(path, "rb") as f:
                    first = True
                    while True:
                        data = f.read(IMPORT_CHUNK)
                        if not data and not first:
                            return
                        yield ipb.ImportImageRequest(name=name if first else "", data=data)
                        first = False

            resp = await client.call_client_stream("image", "ImportImage", chunks, what=f"importing {path}")
            self._proto = resp.image
            return
        req = ipb.BuildImageRequest(base_image=self._base, steps=list(self._steps), name=self._name,
                                    allow_network=self._allow_network, force=self._force)
        final: Optional[ipb.Image] = None
        import grpc
        try:
            async for ev in client.call_stream("image", "BuildImage", req):
                if progress is not None:
                    progress(ev)
                if ev.WhichOneof("event") == "image":
                    final = ev.image
        except grpc.RpcError as e:
            raise client.error(e, f"building image from {self._base}") from None
        if final is None:
            raise Error(f"building image from {self._base}: the build ended without an image")
        self._proto = final

    @_sync.method
    async def build(self, *, client: Optional[Client] = None, progress: Optional[ProgressFn] = None,
                    name: str = "") -> "Image":
        """Build (or import, or look up) the image now; returns it with ``object_id`` set."""
        c = resolve(client or self._client)
        if name:
            self._name = name
        if self._needs_build():
            await self._build(c, progress)
        elif self._proto is None:
            resp = await c.call("image", "GetImage", ipb.GetImageRequest(image=self._base),
                                what=f"image {self._base}")
            self._proto = resp.image
        return self

    @_sync.method
    async def delete(self, *, client: Optional[Client] = None) -> None:
        """Delete the image from the daemon (refused while a sandbox uses it)."""
        ref = self.object_id or self._base
        if not ref:
            raise InvalidError("this image was never built: nothing to delete")
        c = resolve(client or self._client)
        # A sandbox reported finished may release its hold on the image a moment later: give
        # a just-terminated sandbox that moment before calling the image in use.
        settle = Backoff(3.0, first=0.05, cap=0.5)
        while True:
            try:
                await c.call("image", "DeleteImage", ipb.DeleteImageRequest(image=ref), what=f"deleting image {ref}")
                return
            except FailedPreconditionError as e:
                if "used by" not in e.message or not await settle.sleep():
                    raise

    @_sync.static
    @staticmethod
    async def list(*, client: Optional[Client] = None) -> "List[Image]":
        """The images the daemon holds."""
        resp = await resolve(client).call("image", "ListImages", ipb.ListImagesRequest())
        return [Image(_proto=i, _client=client) for i in resp.images]

    @_sync.static
    @staticmethod
    async def lookup(name: str, *, client: Optional[Client] = None) -> "Image":
        """An existing image by name or id (NotFoundError if there is none)."""
        resp = await resolve(client).call("image", "GetImage", ipb.GetImageRequest(image=name),
                                          what=f"image {name}")
        return Image(_proto=resp.image, _client=client)
