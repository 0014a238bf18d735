"""Isolation between models in one server process: a model whose calls hang uses up only its
own share of the model-call threads, and answers UNAVAILABLE past it; other models, and its
own next version, keep answering; its old version unloads once its calls return."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest

from tests.support.models import write_example_models, write_python_model
from tests.support.server import ServerProcess, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# A version with a file "hang" in its directory answers only once a file "release" appears
# there (within two minutes, so that a failed test leaves no call running for long); the
# answer is the version's number.
HANGING_MODEL = """
import os
import time
import numpy as np

class Model:
    def load(self, path):
        self.path = path
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        if os.path.exists(os.path.join(self.path, "hang")):
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(self.path, "release")):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        return inputs["inputs"] * 0 + self.version
"""

HUNG_THREADS, HUNG_QUEUE = 2, 2


def states(server: ServerProcess, name: str) -> dict[str, str]:
    answer = httpx.get(f"{server.rest}/v1/models/{name}", timeout=10)
    if answer.status_code != 200:
        return {}
    return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}


def predict(server: ServerProcess, name: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.rest}/v1/models/{name}:predict", json=body, timeout=60)


def test_a_hung_model_starves_no_other_model_and_its_next_version_serves(
    tmp_path: Path,
) -> None:
    hung = write_python_model(tmp_path / "hung", HANGING_MODEL)
    (hung / "1" / "hang").touch()
    examples = write_example_models(tmp_path / "examples")
    config = tmp_path / "models.config"
    config.write_text(model_config([("hung", hung, "python"), ("mlp", examples / "mlp", "onnx")]))
    args = [
        f"--model_config_file={config}",
        # Long enough that the 12 calls below all arrive before the first queued one's
        # deadline frees its place, however loaded the machine.
        "--rest_api_timeout_in_ms=4000",
        # In the server's threads: a call that never returns holds its thread (in a worker
        # process it would end with its worker at the deadline: test_python_worker_server.py).
        "--python_model_isolation=thread",
        "--file_system_poll_wait_seconds=1",
        f"--max_concurrent_calls_per_model=0,hung={HUNG_THREADS}",
        f"--max_queued_calls_per_model=128,hung={HUNG_QUEUE}",
    ]
    with running_server(args) as server:
        # More calls than the whole server has threads (4 x CPUs by default): each ends at
        # its deadline (504) or, past the model's share, at once (503).
        with concurrent.futures.ThreadPoolExecutor(12) as clients:
            answers = list(
                clients.map(lambda _: predict(server, "hung", {"instances": [1.0]}), range(12))
            )
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {503, 504}, codes
        assert codes.count(503) >= 12 - HUNG_THREADS - HUNG_QUEUE, codes
        refused = next(a for a in answers if a.status_code == 503).json()["error"]
        assert "hung" in refused and "--max_concurrent_calls_per_model" in refused

        # Another model answers while the hung one's calls still run.
        mlp = predict(server, "mlp", {"instances": [list(range(16))]})
        assert mlp.status_code == 200, mlp.text

        # The hung model's next version serves from its own threads; the old version leaves
        # the serving map and waits for its calls in UNLOADING.
        write_python_model(hung, HANGING_MODEL, version=2)
        wait_until(lambda: states(server, "hung").get("2") == "AVAILABLE", what="version 2")
        answer = predict(server, "hung", {"instances": [1.0]})
        assert answer.status_code == 200 and answer.json() == {"predictions": [2.0]}
        wait_until(lambda: states(server, "hung").get("1") == "UNLOADING", what="v1 unloading")

        # Once its calls return, the old version's unload completes.
        (hung / "1" / "release").touch()
        wait_until(lambda: states(server, "hung").get("1") == "END", what="v1 unloaded")
        assert server.stop() == 0
