"""Every program in examples/ runs here (on busybox where it can; skipped, with the reason,
while the daemon lacks what it needs)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, sdk_env

EXAMPLES = os.path.join(REPO, "examples")


def run_example(addr, name, *args, image="busybox", timeout=180):
    env = sdk_env(addr)
    env["CORRAL_EXAMPLE_IMAGE"] = image
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                       env=env, timeout=timeout)
    assert r.returncode == 0, f"{name} failed ({r.returncode}):\n{r.stdout.decode()}\n{r.stderr.decode()}"
    return r.stdout.decode()


def test_run_untrusted_sh(addr, client):
    out = json.loads(run_example(addr, "run_untrusted.py", "--language", "sh"))
    assert out == {"stdout": "42\n", "stderr": "oops\n", "exit_code": 3, "exit_reason": "EXITED"}
    out = json.loads(run_example(addr, "run_untrusted.py", "--language", "sh", "--timeout", "1",
                                 "while :; do :; done"))
    assert out["exit_reason"] == "TIMEOUT"


def test_run_untrusted_python(addr, requires):
    requires("python")
    out = json.loads(run_example(addr, "run_untrusted.py", image="python"))
    assert out == {"stdout": "45\n", "stderr": "oops\n", "exit_code": 3, "exit_reason": "EXITED"}


def test_agent_tool(addr, requires):
    sys.path.insert(0, EXAMPLES)
    import agent_tool
    schema = agent_tool.TOOL_OPENAI["function"]["parameters"]
    assert schema["required"] == ["code"] and agent_tool.TOOL_ANTHROPIC["input_schema"] is schema
    assert "error" in json.loads(agent_tool.handle_tool_call("other_tool", "{}"))
    requires("python")
    out = run_example(addr, "agent_tool.py", image="python")
    assert '"stdout": "42\\n"' in out


def test_workspace_fork(addr, requires):
    requires("filesystem")
    requires("snapshot")
    out = run_example(addr, "workspace_fork.py").splitlines()
    assert out == [f"1000 999 ready fork{n}" for n in range(4)]


def test_modal_port(addr, requires):
    requires("python")
    out = run_example(addr, "modal_port.py", image="python")
    assert "out: 0\nout: 1\nout: 2\nerr: done\nexit: 0\nbytes: 21\n" in out
    assert "listed: True" in out and "terminated: True" in out
    src = open(os.path.join(EXAMPLES, "modal_port.py")).read()
    assert src.count("corral") == 2, "the port must differ from Modal's program only in its import"
