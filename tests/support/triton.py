"""The official Open Inference Protocol client, `tritonclient`, driven as a process of its own
venv (`make test` makes it: .venv-triton; tritonclient pins a protobuf older than servo's).

    answers = triton(server, "grpc", [{"op": "ready"}, {"op": "infer", "model": "mlp", ...}])

Each answer is {"result": ...} or {"error": text, "status": ...} (tests/support/triton_driver.py
says what each call does).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.server import ServerProcess
from tests.support.testdata import REPO

DRIVER = Path(__file__).with_name("triton_driver.py")
CALL_TIMEOUT = 120.0


def triton_python() -> str:
    """The interpreter that has tritonclient: $SERVO_TRITON_PYTHON (the Makefile sets it), or
    the repository's .venv-triton."""
    python = os.environ.get("SERVO_TRITON_PYTHON") or str(REPO / ".venv-triton" / "bin" / "python")
    if not Path(python).exists():
        raise AssertionError(
            f"No tritonclient venv at {python}: run `make test` (it makes .venv-triton) or set "
            "SERVO_TRITON_PYTHON to a Python that has tritonclient[http,grpc]"
        )
    return python


def triton(server: ServerProcess, protocol: str, calls: list[dict[str, Any]]) -> list[Any]:
    """`calls` made in order by one tritonclient client of `protocol` ("http" or "grpc")."""
    url = f"127.0.0.1:{server.rest_port}" if protocol == "http" else server.grpc_target
    request = json.dumps({"protocol": protocol, "url": url, "calls": calls})
    done = subprocess.run(
        [triton_python(), str(DRIVER)],
        input=request,
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"the tritonclient driver failed:\n{done.stderr}"
    answers: list[Any] = json.loads(done.stdout)
    return answers


def results(server: ServerProcess, protocol: str, calls: list[dict[str, Any]]) -> list[Any]:
    """`triton`'s results, every call required to succeed."""
    answers = triton(server, protocol, calls)
    for spec, answer in zip(calls, answers, strict=True):
        assert "error" not in answer, f"{protocol} {spec}: {answer}"
    return [answer["result"] for answer in answers]
