"""The distribution as a user installs it: the checkout built into a wheel, installed with one
extra (`[onnx]`) into an empty virtual environment, and that environment's `servo` command
serving an ONNX model on loopback.

The wheel is built from a copy of the checkout (so the checkout gets no build/ or egg-info),
without build isolation (the test environment has setuptools); the venv's pip fetches the
dependencies as a user's would, through pip's cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from servo import DISTRIBUTION
from tests.support.examples import example_script
from tests.support.server import ServerProcess
from tests.support.testdata import REPO

pytestmark = pytest.mark.integration

INSTALL_TIMEOUT = 900  # seconds: the dependencies may have to be downloaded


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=INSTALL_TIMEOUT,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env() -> dict[str, str]:
    """This environment without what points Python at the checkout or at the test venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def build_wheel(out: Path) -> Path:
    tree = out / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", tree / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    wheels = out / "wheels"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        wheels,
        tree,
    )
    (wheel,) = wheels.glob("*.whl")
    return wheel


def test_the_distribution_name_is_not_servo() -> None:
    """`servo` on the package index is another project: the name pip installs is servo's own,
    and every install hint names it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "servo-model-server"
    assert project["scripts"] == {"servo": "servo.cli.main:main"}
    for extra in project["optional-dependencies"]["all"]:
        assert extra.startswith(f"{DISTRIBUTION}[")
    hint = re.compile(r"(?<![\w-])servo\[")  # the bare name, not servo-model-server[...]
    files = [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml"]
    files += [p for folder in ("src", "scripts", "tests") for p in (REPO / folder).rglob("*.py")]
    stale = [str(path.relative_to(REPO)) for path in files if hint.search(path.read_text())]
    assert not stale, f"install hints naming the package index's other servo: {stale}"


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_a_wheel_with_one_extra_serves_an_onnx_model(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith("servo_model_server-")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", f"{DISTRIBUTION}[onnx] @ {wheel.as_uri()}")
    # Installed from the wheel, not found in the checkout.
    where = run(python, "-c", "import servo; print(servo.__file__)", cwd=tmp_path).strip()
    assert where.startswith(str(venv)), where

    model = tmp_path / "models" / "mlp"
    example_script().write_mlp(model)  # the project's own ONNX model: 16 floats -> 4
    server = ServerProcess(
        ["--model_name=mlp", f"--model_base_path={model}"],
        program=[str(venv / "bin" / "servo")],
        base_env=clean_env(),
    )
    try:
        server.wait_ready()
        answer = httpx.post(
            f"{server.rest}/v1/models/mlp:predict",
            json={"instances": [[float(i) for i in range(16)]]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        assert len(prediction) == 4
    finally:
        code = server.stop()  # SIGTERM to its PID
    assert code == 0, server.output
