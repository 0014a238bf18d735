"""`ReloadConfigRequest.metric_names` through a real server process with the official
tensorflow-serving-api client: each reload answers the increase of the named metrics over it,
read as TFS's HandleReloadConfigRequest reads them (the metric's first point's int64 value,
0 for an unknown name). What the handler computes is tested in process in
tests/apis/grpc/test_service.py and tests/test_metrics.py.

The server starts with no model at all, so that the model a reload adds is its metrics'
first point (TensorFlow orders a metric's points by their labels; TFS reads only the first).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.support.models import SUM_MODEL, write_python_model
from tests.support.server import grpc_stubs, running_server

pytestmark = pytest.mark.integration

NAMES = [
    "servo_model_load_count",  # a counter: loads that ended, by model and outcome
    "servo_model_version_state",  # an int64 gauge
    "servo_model_load_latency_microseconds",  # a histogram: no int64 value
    "/tensorflow/serving/request_count",
    "/no/such/metric",
]


def increases(answer: model_management_pb2.ReloadConfigResponse) -> dict[str, int]:
    assert all(m.WhichOneof("value_increase") == "int64_value_increase" for m in answer.metric)
    return {m.name: m.int64_value_increase for m in answer.metric}


def test_a_reload_answers_the_increase_of_the_metrics_it_names(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "a", SUM_MODEL, version=1)
    empty = tmp_path / "models.config"
    empty.write_text("model_config_list {}\n")
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = "a", str(base), "python"
    with (
        running_server(
            [f"--model_config_file={empty}", "--allow_python_models_over_network=true"]
        ) as server,
        grpc_stubs(server) as stubs,
    ):
        request = model_management_pb2.ReloadConfigRequest(config=config, metric_names=NAMES)
        answer = stubs.models.HandleReloadConfigRequest(request, timeout=120)
        assert answer.status.error_code == 0
        # The reload returned once a's version 1 had loaded: one load, now AVAILABLE (30).
        assert increases(answer) == {
            "servo_model_load_count": 1,
            "servo_model_version_state": 30,
            "servo_model_load_latency_microseconds": 0,
            "/tensorflow/serving/request_count": 0,
            "/no/such/metric": 0,
        }

        # The same config again loads nothing: no increase.
        answer = stubs.models.HandleReloadConfigRequest(request, timeout=120)
        assert increases(answer)["servo_model_load_count"] == 0

        # A second model loads too, but TFS reads a metric's first point only: (a, OK), which
        # did not change. A name asked twice is answered once.
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = "b", str(base), "python"
        request = model_management_pb2.ReloadConfigRequest(
            config=config, metric_names=["servo_model_load_count", "servo_model_load_count"]
        )
        answer = stubs.models.HandleReloadConfigRequest(request, timeout=120)
        assert answer.status.error_code == 0
        assert [(m.name, m.int64_value_increase) for m in answer.metric] == [
            ("servo_model_load_count", 0)
        ]
        assert server.stop() == 0
