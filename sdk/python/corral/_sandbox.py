"""corral.Sandbox: create, exec in, watch and terminate sandboxes (Modal's ``modal.Sandbox``)."""
from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from . import _sync
from ._app import APP_TAG, App, Secret, merge_env
from ._client import MAX_LONG_POLL_MS, Backoff, Client, resolve
from ._errors import (InvalidError, NotFoundError, SandboxTerminatedError, SandboxTimeoutError)
from ._filesystem import FileEntry, FileSystem
from ._image import Image, ProgressFn
from ._process import (PIPE, ContainerProcess, ExitReason, StreamReader, StreamType, StreamWriter, _Exec,
                       new_exec_id, returncode_of, start_forwarders, stream_mode)
from .v1 import sandbox_pb2 as pb

ENTRYPOINT = "entrypoint"
INTERNAL_TAG_PREFIX = "corral.sdk/"
CREATE_TAG = INTERNAL_TAG_PREFIX + "create-id"

# Modal arguments corral has no feature for: refused by name, never silently ignored.
_UNSUPPORTED = {
    "volumes": "volumes",
    "network_file_systems": "network file systems",
    "cloud": "choosing a cloud",
    "region": "choosing a region",
    "mounts": "mounts (use Image.add_local_dir or sb.filesystem.copy_from_local)",
    "encrypted_ports": "TLS tunnels (use ports= for plain TCP ports)",
    "h2_ports": "HTTP/2 tunnels (use ports=)",
    "proxy": "proxies",
    "pty_info": "pty_info (pass pty=True to Sandbox.exec)",
    "environment_name": "environments",
    "readiness_probe": "readiness probes",
    "experimental_options": "experimental options",
    "_experimental_scheduler_placement": "scheduler placement",
    "_experimental_enable_snapshot": "memory snapshots",
    "inject_sandbox_token": "sandbox tokens",
    "verbose": "verbose sandbox logs",
}


def _refuse(where: str, options: Dict[str, Any]) -> None:
    for key, value in options.items():
        if key in _UNSUPPORTED:
            if value in (None, False, (), [], {}):
                continue  # Modal's own default: nothing asked for
            raise InvalidError(f"{where}({key}=...): {_UNSUPPORTED[key]} not supported by corral")
        raise TypeError(f"{where}() got an unexpected keyword argument {key!r}")


@dataclasses.dataclass(frozen=True)
class Tunnel:
    """A sandbox port reachable from the host (Modal's ``modal.Tunnel``, without TLS)."""

    host: str
    port: int
    container_port: int

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def tcp_socket(self) -> Tuple[str, int]:
        """(host, port) to connect to."""
        return self.host, self.port


def _public_tags(tags: Any) -> Dict[str, str]:
    return {k: v for k, v in dict(tags).items() if not k.startswith(INTERNAL_TAG_PREFIX)}


def _network(block_network: bool, cidr_allowlist: Optional[Sequence[str]]) -> Optional[pb.NetworkPolicy]:
    if block_network:
        if cidr_allowlist:
            raise InvalidError("cidr_allowlist= needs block_network=False")
        return None
    allow = list(cidr_allowlist) if cidr_allowlist is not None else ["0.0.0.0/0", "::/0"]
    for c in allow:
        if not isinstance(c, str) or "/" not in c:
            raise InvalidError(f"cidr_allowlist: {c!r} is not a CIDR (e.g. 203.0.113.0/24)")
    return pb.NetworkPolicy(cidr_allowlist=allow)


class Sandbox:
    """A sandbox: a confined Linux environment running an optional entrypoint command.

    Create one with ``Sandbox.create(...)``; run processes in it with ``exec``; read and
    write its files through ``filesystem``; it ends when its entrypoint exits, its timeout
    passes, or ``terminate()`` is called. ``with Sandbox.create(...) as sb:`` terminates it on
    exit from the block.
    """

    def __init__(self, proto: pb.Sandbox, client: Client) -> None:
        self._proto = proto
        self._client = client
        self._entry: Optional[_Exec] = None
        self._entry_readers: Optional[Tuple[StreamReader[str], StreamReader[str], StreamWriter]] = None
        self._fs = FileSystem(self)

    def __repr__(self) -> str:
        return f"corral.Sandbox({self.object_id})"

    # --- creation and lookup ---------------------------------------------------------------
    @_sync.static
    @staticmethod
    async def create(*command: str, app: Optional[App] = None, image: Union[str, Image, None] = None,
                     cpu: Optional[float] = None, memory: Union[int, Tuple[int, int], None] = None,
                     ephemeral_disk: Optional[int] = None, timeout: Optional[float] = 300,
                     idle_timeout: Optional[float] = None, workdir: Optional[str] = None,
                     env: Optional[Dict[str, str]] = None, secrets: Optional[Sequence[Secret]] = None,
                     block_network: bool = True, cidr_allowlist: Optional[Sequence[str]] = None,
                     ports: Optional[Sequence[int]] = None, unencrypted_ports: Optional[Sequence[int]] = None,
                     gpu: Optional[str] = None, tags: Optional[Dict[str, str]] = None,
                     name: Optional[str] = None, pids: Optional[int] = None,
                     client: Optional[Client] = None, image_progress: Optional[ProgressFn] = None,
                     **modal_options: Any) -> "Sandbox":
        """Create a sandbox, optionally running ``command`` as its entrypoint.

        image: a name ("python", the default; "busybox"; "debian") or a corral.Image (built
        first if it has steps). cpu: cores (fractional); memory: MiB; ephemeral_disk: MiB of
        writable layer; timeout / idle_timeout: seconds. block_network=True (default) leaves
        only loopback; block_network=False opens outbound traffic to cidr_allowlist (default:
        everything public). ports: sandbox ports to expose on the host (see ``tunnels()``).
        """
        _refuse("corral.Sandbox.create", modal_options)
        if gpu is not None:
            raise InvalidError(f"corral.Sandbox.create(gpu={gpu!r}): GPU sandboxes are not supported "
                               "by this corral version")
        for arg in command:
            if not isinstance(arg, str):
                raise InvalidError(f"Sandbox.create: command arguments must be strings, got {arg!r}")
        c = resolve(client)
        res = pb.Resources()
        if cpu is not None:
            if not cpu > 0:
                raise InvalidError(f"cpu={cpu!r}: want a positive number of cores")
            res.cpu = float(cpu)
        if memory is not None:
            mem = max(memory) if isinstance(memory, tuple) else memory
            if not isinstance(mem, int) or mem <= 0:
                raise InvalidError(f"memory={memory!r}: want MiB as a positive int")
            res.memory_mib = mem
        if ephemeral_disk is not None:
            if not isinstance(ephemeral_disk, int) or ephemeral_disk <= 0:
                raise InvalidError(f"ephemeral_disk={ephemeral_disk!r}: want MiB as a positive int")
            res.disk_mib = ephemeral_disk
        if pids is not None:
            res.pids = int(pids)
        for what, t in (("timeout", timeout), ("idle_timeout", idle_timeout)):
            if t is not None and t < 0:
                raise InvalidError(f"{what}={t!r}: want seconds >= 0")
        all_tags = dict(tags or {})
        for k in all_tags:
            if k.startswith(INTERNAL_TAG_PREFIX):
                raise InvalidError(f"tag {k!r}: names starting with {INTERNAL_TAG_PREFIX!r} are reserved")
        if app is not None:
            all_tags[APP_TAG] = app.name
            if image is None and app.image is not None:
                image = app.image
            secrets = list(app.secrets) + list(secrets or ())
        # A token tag makes creation safe to retry: after a dropped connection we look for it
        # before trying again, so one create never makes two sandboxes.
        token = uuid.uuid4().hex
        all_tags[CREATE_TAG] = token
        img = image if image is not None else "python"
        ref = await img._ref(c, image_progress) if isinstance(img, Image) else img
        if not isinstance(ref, str) or not ref:
            raise InvalidError(f"image={image!r}: want a name or a corral.Image")
        # The image's own environment (Image.env steps) lies under env= and secrets.
        base_env = dict(img._proto.env) if isinstance(img, Image) and img._proto is not None else {}
        req = pb.CreateSandboxRequest(
            image=ref, command=list(command), env={**base_env, **merge_env(env, secrets)}, workdir=workdir or "",
            resources=res, timeout_ms=int((timeout or 0) * 1000), idle_timeout_ms=int((idle_timeout or 0) * 1000),
            tags=all_tags, name=name or "", ports=[int(p) for p in list(ports or ()) + list(unencrypted_ports or ())])
        net = _network(block_network, cidr_allowlist)
        if net is not None:
            req.network.CopyFrom(net)
        return Sandbox(await _create(c, req, token, image_progress), c)

    @_sync.static
    @staticmethod
    async def from_id(sandbox_id: str, *, client: Optional[Client] = None) -> "Sandbox":
        """The sandbox with this id (running, or finished and still retained)."""
        c = resolve(client)
        resp = await c.call("sandbox", "GetSandbox", pb.GetSandboxRequest(sandbox_id=sandbox_id),
                            what=f"sandbox {sandbox_id}")
        return Sandbox(resp.sandbox, c)

    @_sync.static
    @staticmethod
    async def from_name(app_name: str, name: str, *, client: Optional[Client] = None) -> "Sandbox":
        """The running sandbox with this name in the app."""
        c = resolve(client)
        resp = await c.call("sandbox", "ListSandboxes", pb.ListSandboxesRequest(tags={APP_TAG: app_name}))
        for s in resp.sandboxes:
            if s.name == name and s.state == pb.SANDBOX_STATE_RUNNING:
                return Sandbox(s, c)
        raise NotFoundError(f"no running sandbox named {name!r} in app {app_name!r}")

    @_sync.static
    @staticmethod
    async def list(*, app_id: Optional[str] = None, app: Optional[App] = None,
                   tags: Optional[Dict[str, str]] = None, include_finished: bool = False,
                   client: Optional[Client] = None) -> "List[Sandbox]":
        """Running sandboxes (and retained finished ones with include_finished), newest first,
        filtered by app and by tags (all must match)."""
        c = resolve(client)
        want = dict(tags or {})
        if app is not None:
            app_id = app.app_id
        if app_id is not None:
            want[APP_TAG] = app_id
        resp = await c.call("sandbox", "ListSandboxes",
                            pb.ListSandboxesRequest(tags=want, include_finished=include_finished))
        out = [Sandbox(s, c) for s in resp.sandboxes]
        out.sort(key=lambda s: s._proto.created_at_ms, reverse=True)
        return out

    # --- state -------------------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sandbox id."""
        return self._proto.sandbox_id

    @property
    def name(self) -> str:
        """Its name ("" if none)."""
        return self._proto.name

    @property
    def image(self) -> str:
        """The image name or id it was created from."""
        return self._proto.image

    @property
    def returncode(self) -> Optional[int]:
        """The entrypoint's exit code (or -signal) once the sandbox finished, else None.

        Updated by wait(), poll() and terminate()."""
        if self._proto.state != pb.SANDBOX_STATE_FINISHED:
            return None
        return returncode_of(self._proto.exit_status)

    @property
    def exit_reason(self) -> Optional[ExitReason]:
        """Why the sandbox ended (EXITED, TIMEOUT, TERMINATED, ...), None while it runs."""
        if self._proto.state != pb.SANDBOX_STATE_FINISHED:
            return None
        return ExitReason.from_proto(self._proto.exit_status.reason)

    @property
    def exit_message(self) -> str:
        """The daemon's detail on the end (e.g. why it failed to start)."""
        return self._proto.exit_status.message

    @property
    def filesystem(self) -> FileSystem:
        """Files in the sandbox: read_text, write_text, list_files, stat, make_directory, ..."""
        return self._fs

    def _entrypoint(self) -> Tuple[StreamReader[str], StreamReader[str], StreamWriter]:
        if self._entry_readers is None:
            self._entry = _Exec(self._client, self.object_id, ENTRYPOINT)
            self._entry_readers = (StreamReader(self._entry.stdout, True),
                                   StreamReader(self._entry.stderr, True), StreamWriter(self._entry.stdin))
        return self._entry_readers

    @property
    def stdout(self) -> StreamReader[str]:
        """The entrypoint's stdout (text)."""
        return self._entrypoint()[0]

    @property
    def stderr(self) -> StreamReader[str]:
        """The entrypoint's stderr (text)."""
        return self._entrypoint()[1]

    @property
    def stdin(self) -> StreamWriter:
        """The entrypoint's stdin."""
        return self._entrypoint()[2]

    # --- processes ---------------------------------------------------------------------------
    @_sync.method
    async def exec(self, /, *args: str, timeout: Optional[float] = None, workdir: Optional[str] = None,
                   env: Optional[Dict[str, str]] = None, secrets: Optional[Sequence[Secret]] = None,
                   pty: bool = False, pty_size: Optional[Tuple[int, int]] = None, text: bool = True,
                   stdout: StreamType = PIPE, stderr: StreamType = PIPE, bufsize: int = -1,
                   exec_id: Optional[str] = None, **modal_options: Any) -> "ContainerProcess[Any]":
        """Start a process in the sandbox; returns at once with a :class:`ContainerProcess`.

        text=True (default) reads stdout/stderr as str, text=False as bytes. stdout/stderr:
        corral.PIPE (read them), corral.DEVNULL (discard) or corral.STDOUT (print here).
        timeout: seconds, after which the process is killed. pty=True runs it on a terminal
        (pty_size=(rows, cols)); its stderr then arrives on stdout.
        """
        _refuse("corral.Sandbox.exec", modal_options)
        if not args:
            raise InvalidError("Sandbox.exec: give the command, e.g. sb.exec('python3', '-c', code)")
        for a in args:
            if not isinstance(a, str):
                raise InvalidError(f"Sandbox.exec: arguments must be strings, got {a!r}")
        if bufsize not in (-1, 1):
            raise InvalidError(f"Sandbox.exec(bufsize={bufsize}): only -1 and 1 (line buffered) exist")
        if timeout is not None and timeout < 0:
            raise InvalidError(f"Sandbox.exec(timeout={timeout!r}): want seconds >= 0")
        req = pb.StartExecRequest(
            sandbox_id=self.object_id, exec_id=exec_id or new_exec_id(), argv=list(args),
            env=merge_env(env, secrets), workdir=workdir or "", timeout_ms=int((timeout or 0) * 1000),
            pty=pty, stdout=stream_mode(stdout, "stdout"), stderr=stream_mode(stderr, "stderr"))  # type: ignore[arg-type]
        if pty and pty_size is not None:
            req.pty_size.CopyFrom(pb.PtySize(rows=pty_size[0], cols=pty_size[1]))
        # Idempotent by exec id: a retry after a dropped connection finds the same process.
        resp = await self._client.call("sandbox", "StartExec", req, what=f"exec in {self.object_id}")
        ex = _Exec(self._client, self.object_id, resp.exec.exec_id,
                   stdout_piped=stdout != StreamType.DEVNULL,
                   stderr_piped=stderr != StreamType.DEVNULL and not pty)
        ex.proto = resp.exec
        start_forwarders(ex, stdout, stderr)
        return ContainerProcess(ex, text)

    # --- lifecycle ---------------------------------------------------------------------------
    async def _wait_once(self, timeout_ms: int) -> bool:
        r = await self._client.call(
            "sandbox", "WaitSandbox", pb.WaitSandboxRequest(sandbox_id=self.object_id, timeout_ms=timeout_ms),
            timeout=timeout_ms / 1000 + self._client.timeout, what=f"waiting for {self.object_id}")
        self._proto = r.sandbox
        return bool(r.finished)

    @_sync.method
    async def wait(self, raise_on_termination: bool = True) -> None:
        """Wait until the sandbox finishes.

        With raise_on_termination (default), a sandbox that was terminated raises
        SandboxTerminatedError, one whose timeout passed SandboxTimeoutError; check
        ``returncode`` / ``exit_reason`` otherwise."""
        if not await self._wait_once(1000):
            if self._proto.command:
                # Drain the entrypoint's output meanwhile: an unread full buffer must not
                # block the entrypoint, and with it this wait.
                self._entrypoint()
                assert self._entry is not None
                for o in (self._entry.stdout, self._entry.stderr):
                    o.unbounded = True
                    o.start()
            while not await self._wait_once(MAX_LONG_POLL_MS):
                pass
        if raise_on_termination:
            reason = self.exit_reason
            if reason == ExitReason.TERMINATED:
                raise SandboxTerminatedError(f"sandbox {self.object_id} was terminated")
            if reason in (ExitReason.TIMEOUT, ExitReason.IDLE_TIMEOUT):
                raise SandboxTimeoutError(f"sandbox {self.object_id} ended: {reason.value.lower()}")

    @_sync.method
    async def poll(self) -> Optional[int]:
        """The return code if the sandbox has finished, else None (does not wait)."""
        resp = await self._client.call("sandbox", "GetSandbox", pb.GetSandboxRequest(sandbox_id=self.object_id),
                                       what=f"sandbox {self.object_id}")
        self._proto = resp.sandbox
        return self.returncode

    @_sync.method
    async def terminate(self) -> None:
        """Kill every process of the sandbox and release its resources (idempotent)."""
        resp = await self._client.call("sandbox", "TerminateSandbox",
                                       pb.TerminateSandboxRequest(sandbox_id=self.object_id),
                                       what=f"terminating {self.object_id}")
        self._proto = resp.sandbox

    @_sync.method
    async def set_tags(self, tags: Dict[str, str]) -> None:
        """Replace the sandbox's tags (its app membership is kept)."""
        new = {str(k): str(v) for k, v in tags.items()}
        if APP_TAG in self._proto.tags and APP_TAG not in new:
            new[APP_TAG] = self._proto.tags[APP_TAG]
        resp = await self._client.call("sandbox", "SetSandboxTags",
                                       pb.SetSandboxTagsRequest(sandbox_id=self.object_id, tags=new),
                                       what=f"tagging {self.object_id}")
        self._proto = resp.sandbox

    @_sync.method
    async def get_tags(self) -> Dict[str, str]:
        """The sandbox's tags."""
        resp = await self._client.call("sandbox", "GetSandbox", pb.GetSandboxRequest(sandbox_id=self.object_id),
                                       what=f"sandbox {self.object_id}")
        self._proto = resp.sandbox
        return _public_tags(self._proto.tags)

    @_sync.method
    async def snapshot_filesystem(self, *, name: str = "", ttl: Optional[float] = None) -> Image:
        """Turn the sandbox's files into a new image (its layers plus one); sandboxes created
        from that image start from this state. ttl: seconds until an unused snapshot is deleted."""
        resp = await self._client.call(
            "sandbox", "SnapshotFilesystem",
            pb.SnapshotFilesystemRequest(sandbox_id=self.object_id, name=name, ttl_ms=int((ttl or 0) * 1000)),
            timeout=max(self._client.timeout, 300), what=f"snapshotting {self.object_id}")
        return Image(_proto=resp.image, _client=self._client)

    @_sync.method
    async def tunnels(self) -> Dict[int, Tunnel]:
        """Host addresses at which the sandbox's ``ports`` are reachable, by sandbox port."""
        resp = await self._client.call("sandbox", "GetSandboxTunnels",
                                       pb.GetSandboxTunnelsRequest(sandbox_id=self.object_id),
                                       what=f"tunnels of {self.object_id}")
        return {t.container_port: Tunnel(t.host, t.host_port, t.container_port) for t in resp.tunnels}

    @_sync.method
    async def update_network_policy(self, *, block_network: bool = False,
                                    cidr_allowlist: Optional[Sequence[str]] = None) -> None:
        """Replace the network policy of the running sandbox; flows it forbids stop at once."""
        net = _network(block_network, cidr_allowlist) or pb.NetworkPolicy()
        resp = await self._client.call("sandbox", "UpdateNetworkPolicy",
                                       pb.UpdateNetworkPolicyRequest(sandbox_id=self.object_id, network=net),
                                       what=f"network policy of {self.object_id}")
        self._proto = resp.sandbox

    # --- Modal's filesystem shorthands ---------------------------------------------------------
    @_sync.method
    async def ls(self, path: str) -> List[str]:
        """Names in a directory (Modal's ``sb.ls``)."""
        return [e.path.rsplit("/", 1)[-1] for e in await self._fs.list_files.aio(path)]

    @_sync.method
    async def mkdir(self, path: str, parents: bool = False) -> None:
        """Create a directory (Modal's ``sb.mkdir``)."""
        await self._fs.make_directory.aio(path, parents=parents)

    @_sync.method
    async def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file or directory (Modal's ``sb.rm``)."""
        await self._fs.remove.aio(path, recursive=recursive)

    # --- context managers ----------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._terminate_quietly_sync()

    async def __aenter__(self) -> "Sandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await _sync.run_async(self._terminate_quietly())

    def _terminate_quietly_sync(self) -> None:
        _sync.run_sync(self._terminate_quietly())

    async def _terminate_quietly(self) -> None:
        try:
            await self.terminate.aio()
        except NotFoundError:
            pass  # already finished and purged


async def _create(c: Client, req: pb.CreateSandboxRequest, token: str,
                  progress: Optional[ProgressFn]) -> pb.Sandbox:
    backoff = Backoff(c.retry_timeout)
    builds = 0
    while True:
        gen = c.generation
        try:
            resp = await c._rpc("sandbox", "CreateSandbox")(req, timeout=c.timeout, metadata=c.metadata)
            return resp.sandbox  # type: ignore[no-any-return]
        except grpc.RpcError as e:
            details = e.details() if hasattr(e, "details") else ""
            if "is being built" in (details or "") and builds < 3:
                builds += 1
                # A built-in image on first use: follow its build (progress shown with
                # enable_output), then create. No sandbox exists yet, so no token lookup.
                await Image(_base=req.image)._build(c, progress)
                continue
            if not (c.transient(e, gen) and await backoff.sleep()):
                raise c.error(e, "creating sandbox") from None
        found = await c.call("sandbox", "ListSandboxes",
                             pb.ListSandboxesRequest(tags={CREATE_TAG: token}, include_finished=True))
        if found.sandboxes:
            return found.sandboxes[0]  # type: ignore[no-any-return]


__all__ = ["Sandbox", "Tunnel", "FileEntry"]
