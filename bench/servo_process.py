"""One real servo server for the reliability benches (soak.py, memory.py): started on free
loopback ports, waited for by its log line, asked for version states through the REST status
API, and stopped by its PID (SIGTERM, then SIGKILL after a bound).

    with Servo(["--model_config_file=..."], log=workdir / "servo.log") as servo:
        servo.wait_state("m", 2, "AVAILABLE")    # polls GET /v1/models/m/versions/2
        servo.rss_bytes()                        # resident memory, from /proc/PID/status

Waits are on states (a log line, a version's state), bounded; the pause between checks only
keeps the polling cheap.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
READY_LINE = "Exporting HTTP/REST API"
POLL = 0.02  # seconds between checks of a state
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Servo:
    """`python -m servo serve ARGS` bound to 127.0.0.1, its output in `log`; on free ports,
    or on `grpc_port` (and `rest_port`) when its address must be known before the server
    starts (a shard's, listed in its front's sharded.json; a replica restarted behind a load
    balancer that names its ports); `env` adds to the environment (a store's endpoint
    and credentials)."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        ready_timeout: float = 180.0,
        grpc_port: int | None = None,
        env: dict[str, str] | None = None,
        rest_port: int | None = None,
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.rest_port = rest_port or free_port()
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "servo",
                "serve",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--bind_address=127.0.0.1",
                *args,
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.process.pid
        try:
            self._wait(lambda: READY_LINE in self.log.read_text(), ready_timeout, "ready")
        except BaseException:
            self.stop()
            raise

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _wait(self, check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if self.process.poll() is not None:
                raise RuntimeError(f"servo exited ({self.process.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"servo: never {what} within {timeout:.0f} s")
            time.sleep(POLL)

    # -- version states, through the status API -------------------------------------------

    def state(self, model: str, version: int) -> str | None:
        """The state of one version (START, LOADING, AVAILABLE, UNLOADING, END), or None
        while the server has not seen it."""
        url = f"{self.rest}/v1/models/{model}/versions/{version}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                doc = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return str(doc["model_version_status"][0]["state"])

    def wait_state(
        self, model: str, version: int, *states: str, timeout: float = 120.0
    ) -> tuple[str, float]:
        """Waits until the version is in one of `states`; (that state, when it was seen)."""
        seen: list[str] = []

        def check() -> bool:
            state = self.state(model, version)
            if state in states:
                seen.append(state)
                return True
            return False

        self._wait(check, timeout, f"{model} version {version} {'/'.join(states)}")
        return seen[0], time.monotonic()

    # -- resources -------------------------------------------------------------------------

    def rss_bytes(self) -> int:
        """The server process's resident memory (VmRSS in /proc/PID/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for PID {self.pid}")

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> int:
        """SIGTERM to the server's PID, SIGKILL if it has not exited in STOP_TIMEOUT."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()
        return self.process.returncode

    def __enter__(self) -> Servo:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
