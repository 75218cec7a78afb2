"""The corral CLI, run as a subprocess (python3 -m corral) against the module's daemon."""
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import sdk_env


def cli(addr, *args, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "corral", *args], input=input, capture_output=True,
                          env=sdk_env(addr), timeout=timeout)


def test_info_json(addr):
    r = cli(addr, "--json", "info")
    assert r.returncode == 0, r.stderr
    assert "busybox" in json.loads(r.stdout)["images"]
    r = cli(addr, "info")
    assert r.returncode == 0 and b"images: " in r.stdout


def test_sandbox_create_exec_list_logs_terminate(addr):
    r = cli(addr, "sandbox", "create", "--image", "busybox", "--tag", "cli=1")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.decode().strip()
    try:
        r = cli(addr, "sandbox", "exec", sid, "--", "sh", "-c", "echo out; echo err >&2; exit 5")
        assert (r.returncode, r.stdout, r.stderr) == (5, b"out\n", b"err\n")
        r = cli(addr, "sandbox", "exec", "-i", sid, "--", "cat", input=b"piped\n")
        assert (r.returncode, r.stdout) == (0, b"piped\n")
        r = cli(addr, "--json", "sandbox", "exec", sid, "--", "echo", "hi")
        d = json.loads(r.stdout)
        assert (d["stdout"], d["returncode"], d["exit_reason"]) == ("hi\n", 0, "EXITED")
        r = cli(addr, "--json", "sandbox", "list", "--tag", "cli=1")
        assert [s["sandbox_id"] for s in json.loads(r.stdout)] == [sid]
        r = cli(addr, "sandbox", "list")
        assert sid.encode() in r.stdout
    finally:
        r = cli(addr, "sandbox", "terminate", sid)
        assert r.returncode == 0, r.stderr
    r = cli(addr, "sandbox", "create", "--image", "busybox", "--", "sh", "-c", "echo logline; echo e2 >&2")
    sid = r.stdout.decode().strip()
    r = cli(addr, "sandbox", "logs", sid)
    assert (r.stdout, r.stderr) == (b"logline\n", b"e2\n")


def test_errors_exit_1_with_message(addr):
    r = cli(addr, "sandbox", "exec", "sb-0000000000000000", "--", "true")
    assert r.returncode == 1 and b"NotFoundError" in r.stderr


def test_image_list_json(addr, requires):
    r = cli(addr, "--json", "image", "list")
    if r.returncode != 0 and b"UnimplementedError" in r.stderr:
        requires("images")  # skips, naming the missing RPC
    assert r.returncode == 0, r.stderr
    images = json.loads(r.stdout)
    assert isinstance(images, list) and all("image_id" in i for i in images)


def _read_until(fd, want, timeout):
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and want not in buf:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    return buf


def test_shell_through_a_pty(addr, daemon):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "corral", "shell", "--image", "busybox"],
                         stdin=slave, stdout=slave, stderr=slave, env=sdk_env(addr),
                         start_new_session=True)
    os.close(slave)
    try:
        assert b"# " in _read_until(master, b"# ", 30), "no shell prompt"
        os.write(master, b"stty size; echo hello-$((6*7))\r")
        out = _read_until(master, b"hello-42", 20)
        assert b"hello-42" in out and b"30 100" in out, out
        # The terminal is resized: SIGWINCH reaches the CLI, which resizes the sandbox's pty.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.killpg(p.pid, signal.SIGWINCH)
        time.sleep(0.3)
        os.write(master, b"stty size\r")
        out = _read_until(master, b"40 120", 20)
        assert b"40 120" in out, out
        os.write(master, b"exit 3\r")
        _read_until(master, b"\x00", 5)
        assert p.wait(20) == 3
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    # The shell's sandbox was terminated when the shell ended.
    r = cli(addr, "--json", "sandbox", "list")
    assert json.loads(r.stdout) == [] or all(s["state"] != "RUNNING" or s["image"] != "busybox"
                                             for s in json.loads(r.stdout))


@pytest.mark.parametrize("argv", [["--help"], ["sandbox", "--help"], ["image", "--help"]])
def test_help(addr, argv):
    r = cli(addr, *argv)
    assert r.returncode == 0 and b"usage: corral" in r.stdout


def test_image_build_progress(addr, requires):
    requires("build")
    r = cli(addr, "image", "build", "--base", "busybox", "--run", "echo cli-built > /cli.txt",
            "--name", "sdk-cli-built", timeout=600)
    assert r.returncode == 0, r.stderr
    assert b"[1/1]" in r.stderr, r.stderr  # the step's progress line
    image_id = r.stdout.decode().strip()
    r = cli(addr, "--json", "image", "list")
    assert image_id in [i["image_id"] for i in json.loads(r.stdout)]
    r = cli(addr, "image", "rm", "sdk-cli-built")
    assert r.returncode == 0, r.stderr
