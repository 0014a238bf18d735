"""Real servo server processes on free loopback ports, for integration tests.

A server is started as `python -m servo serve ...` with `--bind_address=127.0.0.1`; the test
waits for the line that says the ports are open (or for the process to exit), never for a
fixed time. Every process started is stopped (SIGTERM, then SIGKILL after a bound).
`run_servo` runs a command that must end by itself (a bad flag, a failed start), and
`grpc_stubs` opens a channel to a server with the official client's stubs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.testdata import REPO

READY_TIMEOUT = 120.0  # seconds for models to load and ports to open
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False


class ServerProcess:
    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        *,
        program: Sequence[str] = (sys.executable, "-m", "servo"),
        base_env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        ports: tuple[int, int] | None = None,
    ) -> None:
        """`program serve ARGS` (e.g. another venv's `servo` script), in `base_env` (default:
        this process's environment) updated with `env`. `command` runs `command ARGS` instead
        (e.g. the container's entrypoint), which must listen on `ports` (gRPC, REST)."""
        self.grpc_port, self.rest_port = ports or (free_port(), free_port())
        self.args = (
            [*command, *args]
            if command is not None
            else [
                *program,
                "serve",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--bind_address=127.0.0.1",
                *args,
            ]
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**(os.environ if base_env is None else base_env), **(env or {})}
            | {"PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,  # e.g. a lower resource limit for the server alone
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                if "Exporting HTTP/REST API" in line:
                    self._ready.set()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Waits until the REST port is open; fails with the server's output otherwise."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._ready.is_set() or self.process.poll() is not None, timeout
            )
        if not self._ready.is_set():
            raise AssertionError(f"servo did not become ready:\n{self.output}")

    def wait_for_line(self, text: str, timeout: float = READY_TIMEOUT) -> str:
        """Waits until the server writes a line containing `text`; returns that line."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._cond:
            self._cond.wait_for(
                lambda: found() is not None or self.process.poll() is not None, timeout
            )
            line = found()
        if line is None:
            raise AssertionError(f"servo never wrote {text!r}:\n{self.output}")
        return line

    def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> int:
        """SIGTERM, and the exit code (SIGKILL if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.wait_exit(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"servo did not stop on SIGTERM:\n{self.output}") from None
        return self.process.returncode


@contextmanager
def running_server(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    ready: bool = True,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[ServerProcess]:
    server = ServerProcess(args, env, preexec_fn)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def run_servo(*args: str, timeout: float = READY_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`python -m servo serve ARGS` to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "servo", "serve", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


@dataclass
class GrpcStubs:
    """A channel to a server and the official client's stubs on it."""

    channel: Any
    predictions: Any  # tensorflow_serving's PredictionServiceStub
    models: Any  # ModelServiceStub


@contextmanager
def grpc_stubs(
    server: ServerProcess, options: Sequence[tuple[str, Any]] = ()
) -> Iterator[GrpcStubs]:
    """A channel to `server`'s gRPC port (closed after) with both services' stubs."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target, options=list(options)) as channel:
        yield GrpcStubs(
            channel,
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


def model_config(
    models: Sequence[tuple[str, str | Path, str] | tuple[str, str | Path, str, str]],
    extra: str = "",
) -> str:
    """A model config file's text: (name, base_path, platform[, more fields of its entry]) per
    model; `extra` goes after the entries, inside model_config_list."""
    body = "".join(
        f'  config {{ name: "{m[0]}" base_path: "{m[1]}" model_platform: "{m[2]}"'
        f"{' ' + m[3].strip() if len(m) > 3 and m[3].strip() else ''} }}\n"
        for m in models
    )
    return f"model_config_list {{\n{body}{extra}}}\n"
