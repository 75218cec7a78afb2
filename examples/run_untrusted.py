#!/usr/bin/python3
"""Run untrusted, generated code in a throw-away sandbox and return stdout, stderr and exit.

    python3 examples/run_untrusted.py              # runs a sample program
    CORRAL_EXAMPLE_IMAGE=busybox python3 examples/run_untrusted.py --language sh

The sandbox has no network but loopback, 1 CPU, 256 MiB and a 30 s limit; it is terminated
when the `with` block ends, whatever the code did.
"""
import argparse
import json
import os
import sys

import corral

IMAGE = os.environ.get("CORRAL_EXAMPLE_IMAGE", "python")
INTERPRETERS = {"python": ["python3", "-c"], "sh": ["sh", "-c"]}


def run_code(code: str, language: str = "python", stdin: str = "", timeout: float = 30) -> dict:
    """Run code; returns {"stdout", "stderr", "exit_code", "exit_reason"}."""
    with corral.Sandbox.create(image=IMAGE, cpu=1.0, memory=256, timeout=timeout + 10) as sb:
        p = sb.exec(*INTERPRETERS[language], code, timeout=timeout)
        if stdin:
            p.stdin.write(stdin)
        p.stdin.write_eof()
        p.stdin.drain()
        stdout, stderr = p.stdout.read(), p.stderr.read()
        exit_code = p.wait()
        return {"stdout": stdout, "stderr": stderr, "exit_code": exit_code,
                "exit_reason": p.exit_reason.value if p.exit_reason else None}


SAMPLES = {
    "python": "import sys\nprint(sum(range(10)))\nprint('oops', file=sys.stderr)\nsys.exit(3)\n",
    "sh": "echo $((6*7)); echo oops >&2; exit 3",
}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--language", choices=sorted(INTERPRETERS), default="python")
    ap.add_argument("--timeout", type=float, default=30, help="seconds before the code is killed")
    ap.add_argument("code", nargs="?", help="code to run (default: a sample)")
    a = ap.parse_args()
    print(json.dumps(run_code(a.code or SAMPLES[a.language], a.language, timeout=a.timeout), indent=2))
    sys.exit(0)
