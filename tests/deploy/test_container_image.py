"""The slim container image (`make image-slim`, deploy/container/Containerfile) built and run
with podman: TFS's `run -p 8501:8501 -v MODEL:/models/NAME -e MODEL_NAME=NAME IMAGE` serving a
TF Lite model (ai-edge-litert, no TensorFlow in the image) over REST and gRPC, as a non-root
user, healthy through its HEALTHCHECK, and stopping cleanly on SIGTERM.

Marked `container`: run where podman works (tests/conftest.py), required with CI=true. The
fixture runs `make image-slim`: on a new machine it makes the two Debian bases (mmdebstrap,
about 45 s each) and installs the dependencies (about a minute); afterwards only servo's own
layer is rebuilt (seconds). The full image (TensorFlow) is `make image`, not built here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.container import PODMAN, podman, run_flags
from tests.support.server import free_port
from tests.support.testdata import REPO, TfsModels
from tests.support.waiting import wait_until

IMAGE = "localhost/servo-model-server:slim-test"
BUILD_TIMEOUT = 900  # seconds: a new machine makes the bases and downloads the dependencies

# The suite's per-test bound (120 s) would cut the first build short: this test's bound is
# the build's plus the run's.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.container,
    pytest.mark.timeout(BUILD_TIMEOUT + 120),
]


@pytest.fixture(scope="module")
def image() -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", "image-slim", f"SLIM_IMAGE={IMAGE}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"make image-slim failed:\n{done.stdout}\n{done.stderr}"
    return IMAGE


@pytest.fixture
def container(image: str, tmp_path: Path, tfs_models: TfsModels) -> Iterator[dict[str, object]]:
    models = tmp_path / "models"
    version = Path(tfs_models.path("saved_model_half_plus_two_tflite", "00000123"))
    shutil.copytree(version, models / "half" / "00000123")
    for path in [tmp_path, *models.rglob("*"), models]:  # readable by the image's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    rest, grpc = free_port(), free_port()
    name = f"servo-test-{rest}"
    podman(
        "run", "-d", "--name", name, *run_flags(),
        "-p", f"127.0.0.1:{rest}:8501", "-p", f"127.0.0.1:{grpc}:8500",
        "-v", f"{models / 'half'}:/models/half:ro", "-e", "MODEL_NAME=half",
        image, "--rest_api_timeout_in_ms=30000",  # an extra argument, appended
    )  # fmt: skip
    try:
        yield {"name": name, "rest": f"http://127.0.0.1:{rest}", "grpc": f"127.0.0.1:{grpc}"}
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True, check=False)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_slim_image_serves_a_mounted_model_as_tfs_does(container: dict[str, object]) -> None:
    name, rest = str(container["name"]), str(container["rest"])
    wait_until(lambda: ready(rest), 120, f"the container's readiness ({podman('logs', name)})")
    status = httpx.get(f"{rest}/v1/models/half", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    reply = httpx.post(f"{rest}/v1/models/half:predict", json={"instances": [1.0, 5.0]}, timeout=10)
    assert reply.json() == {"predictions": [2.5, 4.5]}

    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(str(container["grpc"])) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "half"
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
        assert reply.model_version_status[0].version == 123

    # The image's own HEALTHCHECK passes; it runs as its own user; no TensorFlow in it.
    assert subprocess.run([*PODMAN, "healthcheck", "run", name], check=False).returncode == 0
    assert podman("exec", name, "id", "-u").strip() == "10001"
    probe = "import importlib.util as u; print(u.find_spec('tensorflow'))"
    assert podman("exec", name, "python3", "-c", probe).strip() == "None"
    config = json.loads(podman("image", "inspect", IMAGE))[0]["Config"]
    assert set(config["ExposedPorts"]) == {"8500/tcp", "8501/tcp"}
    assert {"MODEL_NAME=model", "MODEL_BASE_PATH=/models"} <= set(config["Env"])

    # SIGTERM reaches servo (the entrypoint execs it), which drains and exits 0.
    podman("stop", "-t", "60", name)
    inspected = json.loads(podman("inspect", name))[0]["State"]
    assert inspected["ExitCode"] == 0, podman("logs", name)
