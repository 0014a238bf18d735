"""podman for the tests of the container image (tests/deploy/test_container_image.py).

`engine_problem()` says why podman cannot be used here (None when it can): those tests run
where it can, and with CI=true they run anyway, and fail on that reason. The flags are the
Makefile's (PODMAN_FLAGS, CONTAINER_LIMITS): runc, and limits no higher than this machine's.
"""

from __future__ import annotations

import resource
import shutil
import subprocess

PODMAN = ("podman", "--runtime=runc")
TIMEOUT = 120


def run_flags() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return [f"--ulimit=nofile={nofile}:{nofile}", "--ulimit=nproc=4096:4096"]


def podman(*args: str, timeout: float = TIMEOUT) -> str:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"podman {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def engine_problem() -> str | None:
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (`make container-packages`)"
    done = subprocess.run(
        [*PODMAN, "info"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if done.returncode != 0:
        return f"`podman info` failed: {done.stderr.strip()[-500:]}"
    return None
