"""Batching through the server: answers unchanged, full queues refused over REST (503) and gRPC
(UNAVAILABLE), the batching metrics, per-model parameters, and bad parameter files."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.models import write_python_model
from tests.support.requests import predict_request, tfs
from tests.support.server import grpc_stubs, model_config, run_servo, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GATED_MODEL = """
import os
import time
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]},
                    "batch": {"dtype": "int64", "shape": [-1]}},
    }}

    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        x = inputs["x"]
        gate = os.path.join(self.path, "gate")
        if x.size and x[0] < 0:  # a request that holds the batch thread until the gate opens
            open(os.path.join(self.path, "holding"), "w").close()
            while not os.path.exists(gate):
                time.sleep(0.01)
        return {"y": x * 2, "batch": np.full(x.shape, x.size)}
"""


def params(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_full_queue_is_503_over_rest_and_unavailable_over_grpc(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "gated", GATED_MODEL)
    config = params(
        tmp_path / "batching.config",
        "max_batch_size { value: 4 } max_enqueued_batches { value: 1 } "
        "num_batch_threads { value: 1 } batch_timeout_micros { value: 0 }",
    )
    monitoring = params(tmp_path / "monitoring.config", "prometheus_config { enable: true }")
    with (
        running_server(
            [
                "--model_name=gated",
                f"--model_base_path={base}",
                "--enable_batching",
                f"--batching_parameters_file={config}",
                f"--monitoring_config_file={monitoring}",
            ]
        ) as server,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        url = f"{server.rest}/v1/models/gated:predict"
        held = pool.submit(httpx.post, url, json={"instances": [-1.0]}, timeout=60)
        holding = base / "1" / "holding"
        wait_until(holding.exists, what=str(holding))  # the only batch thread is busy
        # Two requests that cannot share a batch, for a queue that holds one batch: whichever
        # arrives second is refused at once; the other waits in the queue.
        first = pool.submit(httpx.post, url, json={"instances": [1.0, 2.0]}, timeout=60)
        second = pool.submit(httpx.post, url, json={"instances": [3.0, 4.0, 5.0]}, timeout=60)
        done, _ = concurrent.futures.wait([first, second], 60, concurrent.futures.FIRST_COMPLETED)
        refused = done.pop().result()
        assert refused.status_code == 503
        assert refused.json() == {
            "error": "The batch scheduling queue to which this task was submitted is full"
        }
        waiting = second if first.done() else first
        with grpc_stubs(server) as stubs, pytest.raises(grpc.RpcError) as err:
            request = tfs(predict_request("gated", [7.0, 8.0, 9.0]))
            stubs.predictions.Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        (base / "1" / "gate").write_text("")
        assert held.result(60).json()["predictions"] == [{"y": -2.0, "batch": 1}]
        answered = waiting.result(60).json()["predictions"]
        assert [p["y"] for p in answered] in ([2.0, 4.0], [6.0, 8.0, 10.0])
        # Oversize requests are refused with TFS's message.
        answer = httpx.post(url, json={"instances": [1.0] * 5}, timeout=60)
        assert answer.status_code == 400
        assert answer.json()["error"] == "Task size 5 is larger than maximum input batch size 4"
        page = httpx.get(f"{server.rest}/monitoring/prometheus/metrics", timeout=30).text
        families = {f.name for f in text_string_to_metric_families(page)}
        assert ":tensorflow:serving:batching_session:queuing_latency" in families
        assert ":tensorflow:serving:batching:batch_size" in families
        assert ":tensorflow:serving:batching:padding_size" in families


def test_a_v2_infer_and_a_tfs_predict_share_one_batch(tmp_path: Path) -> None:
    """A v2 infer is a TFS predict: on the same model they join one batch. The batch closes
    when it is full (3 elements: the infer's 2 and the predict's 1) and not before, within a
    timeout far longer than the test, so it holds both whatever their order."""
    base = write_python_model(tmp_path / "gated", GATED_MODEL)
    config = params(
        tmp_path / "batching.config",
        "max_batch_size { value: 3 } max_enqueued_batches { value: 4 } "
        "num_batch_threads { value: 1 } batch_timeout_micros { value: 60000000 }",
    )
    with (
        running_server(
            [
                "--model_name=gated",
                f"--model_base_path={base}",
                "--enable_batching",
                f"--batching_parameters_file={config}",
            ]
        ) as server,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        infer = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        v2 = pool.submit(httpx.post, f"{server.rest}/v2/models/gated/infer", json=infer, timeout=60)
        v1 = pool.submit(
            httpx.post,
            f"{server.rest}/v1/models/gated:predict",
            json={"instances": [3.0]},
            timeout=60,
        )
        outputs = {o["name"]: o["data"] for o in v2.result(60).json()["outputs"]}
        assert outputs == {"y": [2.0, 4.0], "batch": [3, 3]}
        assert v1.result(60).json()["predictions"] == [{"y": 6.0, "batch": 3}]


def test_batched_answers_equal_unbatched_ones(tmp_path: Path, model_dirs: dict) -> None:
    rng = np.random.default_rng(5)
    inputs = [rng.normal(size=(int(rng.integers(1, 5)), 16)).astype(np.float32) for _ in range(40)]
    answers = {}
    for batching in (False, True):
        flags = ["--model_name=mlp", f"--model_base_path={model_dirs['mlp']}"]
        if batching:
            config = params(
                tmp_path / "b.config",
                "max_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 16 "
                "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 }",
            )
            flags += ["--enable_batching", f"--batching_parameters_file={config}"]
        with running_server(flags) as server, concurrent.futures.ThreadPoolExecutor(8) as pool:
            url = f"{server.rest}/v1/models/mlp:predict"
            answers[batching] = list(
                pool.map(
                    lambda x, url=url: httpx.post(
                        url, json={"instances": x.tolist()}, timeout=60
                    ).json()["predictions"],
                    inputs,
                )
            )
    for plain, batched in zip(answers[False], answers[True], strict=True):
        np.testing.assert_allclose(np.array(batched), np.array(plain), rtol=1e-5, atol=1e-6)


def test_per_model_parameters(tmp_path: Path) -> None:
    with_params = write_python_model(tmp_path / "with", GATED_MODEL)
    params(with_params / "1" / "batching_params.pbtxt", "max_batch_size { value: 2 }")
    without = write_python_model(tmp_path / "without", GATED_MODEL)
    config = tmp_path / "models.config"
    config.write_text(
        model_config([("with", with_params, "python"), ("without", without, "python")])
    )
    with running_server(
        [
            f"--model_config_file={config}",
            "--enable_batching",
            "--enable_per_model_batching_parameters",
        ]
    ) as server:
        answer = httpx.post(
            f"{server.rest}/v1/models/with:predict", json={"instances": [1.0, 2.0, 3.0]}, timeout=30
        )
        assert answer.status_code == 400 and "maximum input batch size 2" in answer.text
        answer = httpx.post(
            f"{server.rest}/v1/models/without:predict",
            json={"instances": [1.0, 2.0, 3.0]},
            timeout=30,
        )
        assert answer.status_code == 200  # no batching_params.pbtxt: not batched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
        ("max_batch_size: 8", "Invalid protobuf file"),
    ],
)
def test_bad_parameter_files_exit_1(tmp_path: Path, text: str, message: str) -> None:
    base = write_python_model(tmp_path / "m", GATED_MODEL)
    config = params(tmp_path / "b.config", text)
    result = run_servo(
        "--model_name=m",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={config}",
        "--rest_api_port=0",
    )
    assert result.returncode == 1
    assert message in result.stderr and str(config) in result.stderr


def test_batching_parameters_need_enable_batching(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", GATED_MODEL)
    result = run_servo(
        "--model_name=m", f"--model_base_path={base}", "--batching_parameters_file=/x"
    )
    assert result.returncode == 1 and "need --enable_batching" in result.stderr
