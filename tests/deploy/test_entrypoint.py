"""The container image's entrypoint (deploy/container/servo-entrypoint) without an engine: the
command it builds from TFS's environment variables and the extra arguments, and a real servo
started through it on loopback serving a TF Lite model, as the image runs it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, free_port
from tests.support.testdata import REPO, TfsModels

ENTRYPOINT = REPO / "deploy" / "container" / "servo-entrypoint"
CONTRACT = ("MODEL_NAME", "MODEL_BASE_PATH", "GRPC_PORT", "PORT")


def shim(bin_dir: Path, body: str) -> dict[str, str]:
    """An environment whose `servo` is a script of `body`, without the contract's variables."""
    bin_dir.mkdir(exist_ok=True)
    servo = bin_dir / "servo"
    servo.write_text(f"#!/bin/sh\n{body}\n")
    servo.chmod(servo.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT}
    return env | {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}


def command(tmp_path: Path, *args: str, **variables: str) -> list[str]:
    """The argv the entrypoint execs, recorded by a stand-in `servo`."""
    env = shim(tmp_path / "bin", 'for a in servo "$@"; do printf \'%s\\n\' "$a"; done')
    done = subprocess.run(
        [str(ENTRYPOINT), *args],
        env=env | variables,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_defaults_are_tfs_image_contract(tmp_path: Path) -> None:
    assert command(tmp_path) == [
        "servo",
        "serve",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=model",
        "--model_base_path=/models/model",
    ]


def test_environment_chooses_the_model_and_ports(tmp_path: Path) -> None:
    argv = command(
        tmp_path, MODEL_NAME="half", MODEL_BASE_PATH="/srv/my models", GRPC_PORT="9000", PORT="9001"
    )
    assert argv[2:] == [
        "--port=9000",
        "--rest_api_port=9001",
        "--model_name=half",
        "--model_base_path=/srv/my models/half",
    ]


def test_extra_arguments_are_appended_as_given(tmp_path: Path) -> None:
    extra = ["--enable_batching", "--rest_api_timeout_in_ms=5000", "a b", "--model_name=other"]
    argv = command(tmp_path, *extra, MODEL_NAME="m")
    assert argv[:6] == [
        "servo",
        "serve",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=m",
        "--model_base_path=/models/m",
    ]
    assert argv[6:] == extra  # servo's flags: the last --model_name wins, as in TFS


@pytest.mark.parametrize(
    "config", [["--model_config_file=/models/models.config"], ["--model_config_file", "/c"]]
)
def test_a_config_file_replaces_the_single_model_flags(tmp_path: Path, config: list[str]) -> None:
    # TFS passes --model_name/--model_base_path anyway and ignores them; servo refuses
    # --model_base_path with a config file, so the entrypoint leaves them out.
    argv = command(tmp_path, "--enable_batching", *config, MODEL_NAME="m")
    assert argv == [
        "servo",
        "serve",
        "--port=8500",
        "--rest_api_port=8501",
        "--enable_batching",
        *config,
    ]


def test_real_servo_through_the_entrypoint(tmp_path: Path, tfs_models: TfsModels) -> None:
    # MODEL_BASE_PATH/MODEL_NAME is the model's base path; its version 123 is served.
    base = tmp_path / "models"
    version = Path(tfs_models.path("saved_model_half_plus_two_tflite", "00000123"))
    shutil.copytree(version, base / "half" / "00000123")
    env = shim(tmp_path / "bin", f'exec "{sys.executable}" -m servo "$@"')
    ports = (free_port(), free_port())
    server = ServerProcess(
        ["--bind_address=127.0.0.1"],  # an extra argument, appended: loopback only
        command=[str(ENTRYPOINT)],
        ports=ports,
        base_env=env
        | {"MODEL_NAME": "half", "MODEL_BASE_PATH": str(base)}
        | {"GRPC_PORT": str(ports[0]), "PORT": str(ports[1])},
    )
    try:
        server.wait_ready()
        status = httpx.get(f"{server.rest}/v1/models/half", timeout=10).json()
        assert status["model_version_status"][0]["version"] == "123"
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        reply = httpx.post(
            f"{server.rest}/v1/models/half:predict", json={"instances": [1.0, 2.0]}, timeout=10
        )
        assert reply.json() == {"predictions": [2.5, 3.0]}
        assert httpx.get(f"{server.rest}/v2/health/ready", timeout=10).status_code == 200
        # The entrypoint execs servo: the process started is servo's, and SIGTERM stops it.
        assert server.stop() == 0
    finally:
        server.stop()
