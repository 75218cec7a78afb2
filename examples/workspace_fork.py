#!/usr/bin/python3
"""Set a workspace up once, snapshot it, and fork it into parallel sandboxes.

The expensive part (cloning, installing, generating data) runs once; every fork starts from
the snapshot in milliseconds, with its own copy-on-write files, and they run side by side.
"""
import concurrent.futures
import os
from typing import List

import corral

IMAGE = os.environ.get("CORRAL_EXAMPLE_IMAGE", "python")


def setup_workspace() -> corral.Image:
    """Prepare /work in a sandbox and snapshot it into an image."""
    with corral.Sandbox.create(image=IMAGE, timeout=120) as sb:
        sb.filesystem.write_text("/work/data.txt", "".join(f"{i}\n" for i in range(1000)))
        p = sb.exec("sh", "-c", "cd /work && wc -l < data.txt > lines && echo ready > state")
        assert p.wait() == 0, p.stderr.read()
        return sb.snapshot_filesystem(name="", ttl=600)


def run_fork(image: corral.Image, n: int) -> str:
    """One fork: change its copy of the workspace and report; others never see the change."""
    with corral.Sandbox.create(image=image, timeout=60) as sb:
        p = sb.exec("sh", "-c", f"cd /work && echo fork{n} >> state && "
                                f"echo $(cat lines) $(tail -n1 data.txt) $(cat state | tr '\\n' ' ')")
        out = p.stdout.read()
        assert p.wait() == 0, p.stderr.read()
        return out.strip()


def main(forks: int = 4) -> List[str]:
    image = setup_workspace()
    try:
        with concurrent.futures.ThreadPoolExecutor(forks) as pool:
            return list(pool.map(lambda n: run_fork(image, n), range(forks)))
    finally:
        image.delete()


if __name__ == "__main__":
    for line in main():
        print(line)
