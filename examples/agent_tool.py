#!/usr/bin/python3
"""An agent tool: `run_python(code) -> dict`, with its JSON schema for OpenAI and Anthropic.

An LLM agent registers TOOL_OPENAI (chat completions `tools=[...]`) or TOOL_ANTHROPIC
(messages API `tools=[...]`); when the model calls the tool, pass the call's name and
arguments to handle_tool_call() and send the returned JSON back as the tool result.

One sandbox serves the whole conversation (state persists between calls, like a notebook);
close() terminates it.
"""
import json
import os
from typing import Any, Dict, Optional

import corral

IMAGE = os.environ.get("CORRAL_EXAMPLE_IMAGE", "python")
MAX_OUTPUT = 20_000  # characters of stdout/stderr returned to the model

_PARAMETERS = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "Python 3 source to run. Print what you want to see."},
        "timeout": {"type": "number", "description": "Seconds before the run is killed (default 30)."},
    },
    "required": ["code"],
}
_DESCRIPTION = ("Run Python 3 code in an isolated sandbox (no network) and return its stdout, "
                "stderr and exit code. Files written under /tmp persist between calls.")
TOOL_OPENAI = {"type": "function",
               "function": {"name": "run_python", "description": _DESCRIPTION, "parameters": _PARAMETERS}}
TOOL_ANTHROPIC = {"name": "run_python", "description": _DESCRIPTION, "input_schema": _PARAMETERS}

_sandbox: Optional[corral.Sandbox] = None


def _clip(s: str) -> str:
    return s if len(s) <= MAX_OUTPUT else s[:MAX_OUTPUT] + f"\n... [{len(s) - MAX_OUTPUT} more characters]"


def run_python(code: str, timeout: float = 30) -> Dict[str, Any]:
    """Run code in the conversation's sandbox; returns stdout, stderr, exit_code, exit_reason."""
    global _sandbox
    if _sandbox is None or _sandbox.poll() is not None:
        _sandbox = corral.Sandbox.create(image=IMAGE, memory=512, timeout=3600, idle_timeout=600)
    p = _sandbox.exec("python3", "-c", code, timeout=timeout, workdir="/tmp")
    p.stdin.write_eof()
    p.stdin.drain()
    out, err = p.stdout.read(), p.stderr.read()
    code_ = p.wait()
    return {"stdout": _clip(out), "stderr": _clip(err), "exit_code": code_,
            "exit_reason": p.exit_reason.value if p.exit_reason else None}


def handle_tool_call(name: str, arguments: Any) -> str:
    """Dispatch a model's tool call (arguments as a JSON string or dict); returns JSON."""
    if name != "run_python":
        return json.dumps({"error": f"unknown tool {name!r}"})
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    try:
        return json.dumps(run_python(str(args["code"]), float(args.get("timeout", 30))))
    except (KeyError, ValueError, corral.Error) as e:
        return json.dumps({"error": f"{type(e).__name__}: {e}"})


def close() -> None:
    """Terminate the conversation's sandbox."""
    global _sandbox
    if _sandbox is not None:
        _sandbox.terminate()
        _sandbox = None


if __name__ == "__main__":
    print(json.dumps(TOOL_OPENAI, indent=2))
    try:
        # What a model's two calls look like: state carries over between them.
        print(handle_tool_call("run_python", json.dumps({"code": "x = 6 * 7\nopen('/tmp/x','w').write(str(x))"})))
        print(handle_tool_call("run_python", {"code": "print(open('/tmp/x').read())"}))
    finally:
        close()
