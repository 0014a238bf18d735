"""`make serve`'s script (scripts/serve_examples.py): the curls to try come once the server
listens, after its load logs, on the bind address asked; Ctrl-C reaches the server, which
stops gracefully, and the script exits with its code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.examples import example_script
from tests.support.server import free_port, model_config
from tests.support.testdata import REPO

pytestmark = pytest.mark.integration


def test_try_lines_come_once_the_server_listens_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    example_script().write_mlp(tmp_path / "mlp")
    config = tmp_path / "models.config"
    config.write_text(model_config([("mlp", str(tmp_path / "mlp"), "onnx")]))
    grpc_port, rest_port = free_port(), free_port()
    script = subprocess.Popen(
        [
            sys.executable,
            "scripts/serve_examples.py",
            "--bind-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            f"--rest-port={rest_port}",
            f"--models={config}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert script.stdout is not None
        for line in script.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("servo: gRPC on port"):
                break
        output = "\n".join(lines)
        assert lines[-1] == f"servo: gRPC on port {grpc_port}, REST on port {rest_port}. Try:", (
            output
        )
        listening = f"Exporting HTTP/REST API at:127.0.0.1:{rest_port}"
        assert any(listening in line for line in lines[:-1]), output  # the logs came first
        curl = next(script.stdout).strip()
        assert curl.startswith("curl -d ") and f"localhost:{rest_port}/v1/models/" in curl
        answer = httpx.get(f"http://127.0.0.1:{rest_port}/v1/models/mlp", timeout=10)
        assert answer.json()["model_version_status"][0]["state"] == "AVAILABLE"
        script.send_signal(signal.SIGINT)  # as Ctrl-C at a terminal reaches the script
        assert script.wait(60) == 0  # the server's own code: a graceful stop
        rest = script.stdout.read()
        assert "Received SIGINT" in rest or "SIGINT" in rest, rest
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
