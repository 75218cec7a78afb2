"""The ``corral`` command line: sandboxes, images and an interactive shell.

    corral info
    corral sandbox create|list|exec|shell|logs|terminate ...
    corral image build|list|import|rm ...
    corral shell [--image python] [COMMAND...]

``--json`` (before the subcommand) prints machine-readable output. The daemon is found at
``CORRAL_ADDR`` (or ``--addr``), with ``CORRAL_TOKEN`` for TCP.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from . import _errors
from ._client import Client
from ._image import Image, print_progress
from ._process import ContainerProcess, ExitReason
from ._sandbox import Sandbox, _public_tags
from .v1 import image_pb2 as ipb

SHELL = ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l"]


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.client = Client(address=args.addr) if args.addr else Client()

    def emit(self, obj: Any, text: Optional[str] = None) -> None:
        if self.json:
            print(json.dumps(obj, indent=2, sort_keys=True))
        elif text is not None:
            print(text)


def _kv(items: Optional[Sequence[str]], what: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for it in items or ():
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise _errors.InvalidError(f"{what} {it!r}: want NAME=VALUE")
        out[k] = v
    return out


def _exit_status(code: int) -> int:
    """A process's return code as this program's exit status (-signal becomes 128+signal)."""
    return code if 0 <= code <= 255 else (128 - code if code < 0 else 1)


def _sandbox_dict(sb: Sandbox) -> Dict[str, Any]:
    p = sb._proto
    return {"sandbox_id": p.sandbox_id, "name": p.name, "image": p.image,
            "state": "FINISHED" if sb.returncode is not None else "RUNNING",
            "command": list(p.command), "tags": _public_tags(p.tags), "created_at_ms": p.created_at_ms,
            "exit_reason": sb.exit_reason.value if sb.exit_reason else None, "returncode": sb.returncode}


def _image_dict(img: Image) -> Dict[str, Any]:
    p = img._proto
    assert p is not None
    return {"image_id": p.image_id, "name": p.name, "size_bytes": p.size_bytes,
            "layers": len(p.layer_ids), "created_at_ms": p.created_at_ms, "expires_at_ms": p.expires_at_ms}


# --- info ------------------------------------------------------------------------------------

def cmd_info(ctx: Ctx) -> int:
    info = ctx.client.info()
    if ctx.json:
        ctx.emit(info)
        return 0
    cap = info.get("capacity", {})
    print(f"corrald {info.get('version', '?')} at {ctx.client.address}")
    print(f"kernel {info.get('kernel_release', '?')}, cgroups {info.get('cgroup_mode', '?')}")
    print(f"sandboxes {cap.get('running_sandboxes', 0)}/{cap.get('max_sandboxes', '?')}, "
          f"{cap.get('cpus', '?')} cpus, {int(cap.get('memory_bytes', 0)) >> 20} MiB")
    print(f"images: {', '.join(info.get('images', [])) or '(none)'}")
    for f in info.get("features", []):
        print(f"  [{'x' if f.get('active') else ' '}] {f.get('name')}: {f.get('detail', '')}")
    return 0


# --- sandboxes -------------------------------------------------------------------------------

def _create_kwargs(a: argparse.Namespace, as_json: bool) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"image": a.image, "env": _kv(a.env, "--env"), "tags": _kv(a.tag, "--tag"),
                          "image_progress": Progress(as_json, 0)}  # a first-use build shows progress
    for name in ("cpu", "memory", "timeout", "idle_timeout", "workdir", "name"):
        v = getattr(a, name)
        if v is not None:
            kw[name] = v
    if a.allow:
        kw["block_network"] = False
        kw["cidr_allowlist"] = a.allow
    if a.port:
        kw["ports"] = a.port
    return kw


def cmd_sandbox_create(ctx: Ctx) -> int:
    a = ctx.args
    cmd = [c for c in a.command if c != "--"]
    sb = Sandbox.create(*cmd, client=ctx.client, **_create_kwargs(a, ctx.json))
    ctx.emit(_sandbox_dict(sb), sb.object_id)
    return 0


def cmd_sandbox_list(ctx: Ctx) -> int:
    sbs = Sandbox.list(tags=_kv(ctx.args.tag, "--tag"), include_finished=ctx.args.all, client=ctx.client)
    if ctx.json:
        ctx.emit([_sandbox_dict(s) for s in sbs])
        return 0
    print(f"{'SANDBOX':24} {'STATE':9} {'IMAGE':12} {'AGE':>7}  COMMAND / TAGS")
    now = time.time() * 1000
    for s in sbs:
        d = _sandbox_dict(s)
        state = d["state"] if d["state"] == "RUNNING" else (d["exit_reason"] or "FINISHED")
        age = f"{int((now - d['created_at_ms']) / 1000)}s"
        tags = " ".join(f"{k}={v}" for k, v in sorted(d["tags"].items()))
        print(f"{d['sandbox_id']:24} {state[:9]:9} {d['image'][:12]:12} {age:>7}  "
              f"{' '.join(d['command'])[:40]} {tags}".rstrip())
    return 0


def _pump(chunks: Any, sink: Any) -> None:
    for chunk in chunks:
        sink.write(chunk)
        sink.flush()


def _forward_stdin(p: ContainerProcess[Any], fd: int) -> None:
    """Copy local stdin to the process until EOF (then close its stdin) or until it exits."""
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                p.stdin.write_eof()
                p.stdin.drain()
                return
            p.stdin.write(data)
            p.stdin.drain()
    except (_errors.Error, OSError):
        return  # the process exited or closed its stdin


def run_noninteractive(p: ContainerProcess[Any], forward_stdin: bool) -> int:
    """Stream a process's stdout/stderr to ours until it exits; returns its return code."""
    threads = [threading.Thread(target=_pump, args=(p.stdout.chunks(), sys.stdout.buffer), daemon=True),
               threading.Thread(target=_pump, args=(p.stderr.chunks(), sys.stderr.buffer), daemon=True)]
    for t in threads:
        t.start()
    if forward_stdin:
        threading.Thread(target=_forward_stdin, args=(p, sys.stdin.fileno()), daemon=True).start()
    code = p.wait()
    for t in threads:
        t.join()
    return code


def _term_size(fd: int) -> tuple:  # type: ignore[type-arg]
    try:
        sz = os.get_terminal_size(fd)
        return sz.lines, sz.columns
    except OSError:
        return 24, 80


def run_interactive(sb: Sandbox, argv: Sequence[str], workdir: Optional[str], env: Dict[str, str]) -> int:
    """Run argv on a pty in the sandbox, wired to this terminal (raw mode, resize on SIGWINCH)."""
    import termios
    import tty
    fd = sys.stdin.fileno()
    is_tty = os.isatty(fd)
    rows, cols = _term_size(fd)
    p = sb.exec(*argv, pty=True, pty_size=(rows, cols), text=False, workdir=workdir, env=env)
    saved = termios.tcgetattr(fd) if is_tty else None
    old_handler: Any = None

    def on_winch(signum: int, frame: Any) -> None:
        r, c = _term_size(fd)
        try:
            p.resize(r, c)
        except _errors.Error:
            pass

    try:
        if is_tty:
            tty.setraw(fd, termios.TCSANOW)  # TCSAFLUSH would drop typed-ahead input
            old_handler = signal.signal(signal.SIGWINCH, on_winch)
        threading.Thread(target=_forward_stdin, args=(p, fd), daemon=True).start()
        out = sys.stdout.buffer
        for chunk in p.stdout.chunks():
            out.write(chunk)
            out.flush()
        code = p.wait()
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)
    return code


def cmd_sandbox_exec(ctx: Ctx) -> int:
    a = ctx.args
    cmd = [c for c in a.command if c != "--"]
    if not cmd:
        raise _errors.InvalidError("give the command to run: corral sandbox exec ID -- CMD [ARG...]")
    sb = Sandbox.from_id(a.sandbox_id, client=ctx.client)
    env = _kv(a.env, "--env")
    if a.tty:
        return _exit_status(run_interactive(sb, cmd, a.workdir, env))
    if ctx.json:
        p = sb.exec(*cmd, workdir=a.workdir, env=env, timeout=a.timeout)
        if a.interactive:
            p.stdin.write(sys.stdin.buffer.read())
        p.stdin.write_eof()
        p.stdin.drain()
        out, err = p.stdout.read(), p.stderr.read()
        code = p.wait()
        ctx.emit({"stdout": out, "stderr": err, "returncode": code, "exec_id": p.object_id,
                  "exit_reason": p.exit_reason.value if p.exit_reason else None})
        return _exit_status(code)
    p = sb.exec(*cmd, workdir=a.workdir, env=env, timeout=a.timeout, text=False)
    if not a.interactive:
        p.stdin.write_eof()
        p.stdin.drain()
    return _exit_status(run_noninteractive(p, a.interactive))


def cmd_sandbox_shell(ctx: Ctx) -> int:
    a = ctx.args
    cmd = [c for c in a.command if c != "--"] or SHELL
    sb = Sandbox.from_id(a.sandbox_id, client=ctx.client)
    return _exit_status(run_interactive(sb, cmd, a.workdir, _kv(a.env, "--env")))


def cmd_sandbox_logs(ctx: Ctx) -> int:
    sb = Sandbox.from_id(ctx.args.sandbox_id, client=ctx.client)
    if not sb._proto.command:
        raise _errors.InvalidError(f"sandbox {sb.object_id} has no entrypoint command, so no logs")
    threads = [threading.Thread(target=_pump, args=(r.chunks(), s), daemon=True)
               for r, s in ((sb.stdout, sys.stdout), (sb.stderr, sys.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


def cmd_sandbox_terminate(ctx: Ctx) -> int:
    out = []
    for sid in ctx.args.sandbox_id:
        sb = Sandbox.from_id(sid, client=ctx.client)
        sb.terminate()
        out.append(_sandbox_dict(sb))
        if not ctx.json:
            print(f"{sid} terminated")
    if ctx.json:
        ctx.emit(out)
    return 0


def cmd_shell(ctx: Ctx) -> int:
    a = ctx.args
    cmd = [c for c in a.command if c != "--"] or SHELL
    with Sandbox.create(client=ctx.client, **_create_kwargs(a, ctx.json)) as sb:
        if not os.isatty(sys.stdin.fileno()):
            print(f"corral: sandbox {sb.object_id} (stdin is not a terminal: no pty)", file=sys.stderr)
        return _exit_status(run_interactive(sb, cmd, a.workdir, {}))


# --- images ----------------------------------------------------------------------------------

class Progress:
    """Build progress for a terminal: step results and log lines (or JSON events)."""

    def __init__(self, as_json: bool, steps: int) -> None:
        self.as_json = as_json
        self.steps = steps
        self.t0 = time.monotonic()

    def __call__(self, ev: ipb.BuildImageResponse) -> None:
        kind = ev.WhichOneof("event")
        if self.as_json:
            from google.protobuf.json_format import MessageToDict
            sys.stderr.write(json.dumps(MessageToDict(ev, preserving_proto_field_name=True)) + "\n")
        elif kind == "step_done":
            sd = ev.step_done
            sys.stderr.write(f"[{sd.index + 1}/{self.steps or '?'}] {'cached' if sd.cached else 'built'} "
                             f"layer {sd.layer_id[:12]}  ({time.monotonic() - self.t0:.1f}s)\n")
        else:
            print_progress(ev)
        sys.stderr.flush()


def cmd_image_build(ctx: Ctx) -> int:
    a = ctx.args
    img = Image.from_name(a.base, client=ctx.client)
    steps = 0
    if a.apt:
        img, steps = img.apt_install(*a.apt), steps + 1
    for cmd in a.run or ():
        img, steps = img.run_commands(cmd), steps + 1
    if a.pip:
        img, steps = img.pip_install(*a.pip), steps + 1
    if a.env:
        img, steps = img.env(_kv(a.env, "--env")), steps + 1
    if a.workdir:
        img, steps = img.workdir(a.workdir), steps + 1
    if a.force:
        img = img.force_build()
    if a.allow_network:
        img._allow_network = True
    if steps == 0 and not a.name:
        img.build()  # a built-in: builds it on first use
    else:
        if steps == 0:
            img._steps = (ipb.BuildStep(env=ipb.SetEnv()),)
        img.build(progress=Progress(ctx.json, steps), name=a.name or "")
    ctx.emit(_image_dict(img), img.object_id)
    return 0


def cmd_image_list(ctx: Ctx) -> int:
    imgs = Image.list(client=ctx.client)
    if ctx.json:
        ctx.emit([_image_dict(i) for i in imgs])
        return 0
    print(f"{'IMAGE':14} {'NAME':24} {'SIZE':>10} {'LAYERS':>6}")
    for i in imgs:
        d = _image_dict(i)
        print(f"{d['image_id'][:12]:14} {d['name'][:24]:24} {d['size_bytes'] >> 20:>7} MiB {d['layers']:>6}")
    return 0


def cmd_image_import(ctx: Ctx) -> int:
    img = Image.from_oci_archive(ctx.args.path, name=ctx.args.name or "")
    img._client = ctx.client
    img.build()
    ctx.emit(_image_dict(img), img.object_id)
    return 0


def cmd_image_rm(ctx: Ctx) -> int:
    for ref in ctx.args.image:
        Image.from_name(ref, client=ctx.client).delete()
        if not ctx.json:
            print(f"{ref} deleted")
    if ctx.json:
        ctx.emit({"deleted": ctx.args.image})
    return 0


# --- argument parsing ------------------------------------------------------------------------

def _add_create_options(p: argparse.ArgumentParser, default_image: str) -> None:
    p.add_argument("--image", default=default_image, help=f"image name or id (default {default_image})")
    p.add_argument("--cpu", type=float, help="CPU cores (fractional)")
    p.add_argument("--memory", type=int, help="memory limit, MiB")
    p.add_argument("--timeout", type=float, help="lifetime limit, seconds (default 300)")
    p.add_argument("--idle-timeout", type=float, help="idle limit, seconds")
    p.add_argument("--workdir", help="working directory (absolute)")
    p.add_argument("--name", help="unique name among running sandboxes")
    p.add_argument("-e", "--env", action="append", metavar="NAME=VALUE", help="environment variable")
    p.add_argument("--tag", action="append", metavar="NAME=VALUE", help="tag")
    p.add_argument("--allow", action="append", metavar="CIDR", help="allow outbound traffic to CIDR")
    p.add_argument("--port", action="append", type=int, help="expose a sandbox port on the host")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="corral", description="Drive a corrald: sandboxes, images, shells.")
    top.add_argument("--addr", help="daemon address (default $CORRAL_ADDR or unix:///run/corral/corral.sock)")
    top.add_argument("--json", action="store_true", help="machine-readable output")
    sub = top.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("info", help="daemon version, features, capacity, images").set_defaults(fn=cmd_info)

    sbp = sub.add_parser("sandbox", help="create, list, exec in, shell into, watch, terminate sandboxes")
    sbs = sbp.add_subparsers(dest="sandbox_cmd", required=True, metavar="ACTION")
    p = sbs.add_parser("create", help="create a sandbox (prints its id)")
    _add_create_options(p, "python")
    p.add_argument("command", nargs=argparse.REMAINDER, help="entrypoint command (after --)")
    p.set_defaults(fn=cmd_sandbox_create)
    p = sbs.add_parser("list", help="list sandboxes")
    p.add_argument("--all", action="store_true", help="include finished sandboxes still retained")
    p.add_argument("--tag", action="append", metavar="NAME=VALUE", help="only with this tag")
    p.set_defaults(fn=cmd_sandbox_list)
    p = sbs.add_parser("exec", help="run a command in a sandbox, streaming its output")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    p.add_argument("-t", "--tty", action="store_true", help="run on a pty (interactive)")
    p.add_argument("--workdir")
    p.add_argument("--timeout", type=float, help="kill the command after this many seconds")
    p.add_argument("-e", "--env", action="append", metavar="NAME=VALUE")
    p.add_argument("sandbox_id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_sandbox_exec)
    p = sbs.add_parser("shell", help="an interactive shell in a running sandbox")
    p.add_argument("--workdir")
    p.add_argument("-e", "--env", action="append", metavar="NAME=VALUE")
    p.add_argument("sandbox_id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_sandbox_shell)
    p = sbs.add_parser("logs", help="the entrypoint's output, streamed until it ends")
    p.add_argument("sandbox_id")
    p.set_defaults(fn=cmd_sandbox_logs)
    p = sbs.add_parser("terminate", help="terminate sandboxes")
    p.add_argument("sandbox_id", nargs="+")
    p.set_defaults(fn=cmd_sandbox_terminate)

    imp = sub.add_parser("image", help="build, list, import, delete images")
    ims = imp.add_subparsers(dest="image_cmd", required=True, metavar="ACTION")
    p = ims.add_parser("build", help="build an image from a base and steps, showing progress")
    p.add_argument("--base", default="python", help="base image (default python)")
    p.add_argument("--apt", action="append", metavar="PKG", help="apt-get install PKG")
    p.add_argument("--run", action="append", metavar="CMD", help="run a shell command (repeatable)")
    p.add_argument("--pip", action="append", metavar="PKG", help="pip install PKG")
    p.add_argument("-e", "--env", action="append", metavar="NAME=VALUE")
    p.add_argument("--workdir")
    p.add_argument("--name", help="name the result")
    p.add_argument("--force", action="store_true", help="rebuild cached steps")
    p.add_argument("--allow-network", action="store_true", help="network access for build steps")
    p.set_defaults(fn=cmd_image_build)
    p = ims.add_parser("list", help="list images")
    p.set_defaults(fn=cmd_image_list)
    p = ims.add_parser("import", help="import a docker-save / OCI layout tar archive")
    p.add_argument("path")
    p.add_argument("--name")
    p.set_defaults(fn=cmd_image_import)
    p = ims.add_parser("rm", help="delete images")
    p.add_argument("image", nargs="+")
    p.set_defaults(fn=cmd_image_rm)

    p = sub.add_parser("shell", help="an interactive shell in a new sandbox (terminated on exit)")
    _add_create_options(p, "python")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command instead of a shell")
    p.set_defaults(fn=cmd_shell)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``corral`` console script."""
    args = parser().parse_args(argv)
    try:
        return int(args.fn(Ctx(args)))
    except _errors.Error as e:
        print(f"corral: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `corral ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


__all__ = ["main", "ExitReason"]
