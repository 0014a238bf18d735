"""servo's logs through real server processes: the access log's lines for REST and gRPC (the
served version, statuses, bytes, concurrent requests each naming its own model), the JSON
format line by line (and the access log in a file), and TensorFlow's C++ start-up banner:
absent by default, present with --tensorflow_cpp_min_log_level=0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support.requests import predict_request
from tests.support.server import ServerProcess, grpc_stubs, model_config, running_server
from tests.support.testdata import TfsModels

pytestmark = pytest.mark.integration

# The harness's environment may hold a TF_CPP_MIN_LOG_LEVEL of its own; "" is servo's unset.
NO_TF_LEVEL = {"TF_CPP_MIN_LOG_LEVEL": ""}
BANNER = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, str]:
    """A text access line's key=value pairs."""
    text = line.split("servo.access] ", 1)[1]
    return {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(text)}


def access_lines(server: ServerProcess, count: int) -> list[dict[str, str]]:
    """The first `count` access lines, once the server has written them."""
    server.wait_for_line("servo.access]")
    with server._cond:
        server._cond.wait_for(
            lambda: sum("servo.access]" in line for line in server.lines) >= count, 30
        )
        lines = [line for line in server.lines if "servo.access]" in line]
    assert len(lines) >= count, server.output
    return [fields(line) for line in lines[:count]]


@pytest.fixture(scope="module")
def config(tfs_models: TfsModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "models.config"
    path.write_text(
        model_config(
            [
                ("half_plus_two", tfs_models.path("saved_model_half_plus_two_cpu"), "tensorflow"),
                ("half_plus_three", tfs_models.path("saved_model_half_plus_three"), "tensorflow"),
            ]
        )
    )
    return path


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerProcess]:
    with running_server(
        [f"--model_config_file={config}", "--access_log"], env=NO_TF_LEVEL
    ) as process:
        yield process


def test_rest_access_lines_name_model_version_status_and_bytes(server: ServerProcess) -> None:
    body = b'{"instances": [1.0, 2.0]}'
    with httpx.Client(base_url=server.rest, timeout=30) as rest:
        ok = rest.post("/v1/models/half_plus_two:predict", content=body)
        missing = rest.post("/v1/models/nope:predict", content=body)
        status = rest.get("/v1/models/half_plus_three")
        infer = rest.post(
            "/v2/models/half_plus_two/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        )
    assert (ok.status_code, missing.status_code, status.status_code) == (200, 404, 200)
    assert infer.status_code == 200
    lines = access_lines(server, 4)
    assert lines[0] == {
        "protocol": "rest",
        "client": lines[0]["client"],
        "method": "POST",
        "path": "/v1/models/half_plus_two:predict",
        "status": "200",
        "api": "predict",
        "model": "half_plus_two",
        "version": "123",
        "bytes_in": str(len(body)),
        "bytes_out": str(len(ok.content)),
        "latency_ms": lines[0]["latency_ms"],
    }
    assert re.fullmatch(r"127\.0\.0\.1:\d+", lines[0]["client"])
    assert float(lines[0]["latency_ms"]) > 0
    assert lines[1]["status"] == "404" and lines[1]["model"] == "nope"
    assert lines[1]["version"] == "-" and lines[1]["bytes_out"] == str(len(missing.content))
    assert (lines[2]["api"], lines[2]["model"], lines[2]["method"]) == (
        "status",
        "half_plus_three",
        "GET",
    )
    assert (lines[3]["api"], lines[3]["model"], lines[3]["version"]) == (
        "infer",
        "half_plus_two",
        "123",
    )


def test_grpc_access_lines_for_every_service(server: ServerProcess) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    request = predict_request("half_plus_three", [1.0])
    before = sum("servo.access]" in line for line in server.lines)
    with grpc_stubs(server) as stubs:
        stubs.predictions.Predict(request, timeout=30)
        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as failed:
            stubs.predictions.Predict(request, timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "half_plus_two"
        stubs.models.GetModelStatus(status, timeout=30)
    lines = access_lines(server, before + 3)[before:]
    grpc_lines = [line for line in lines if line["protocol"] == "grpc"]
    assert [
        (line["path"], line["status"], line["model"], line["version"]) for line in grpc_lines
    ] == [
        ("/tensorflow.serving.PredictionService/Predict", "OK", "half_plus_three", "123"),
        ("/tensorflow.serving.PredictionService/Predict", "NOT_FOUND", "nope", "-"),
        ("/tensorflow.serving.ModelService/GetModelStatus", "OK", "half_plus_two", "-"),
    ]
    assert grpc_lines[0]["api"] == "predict" and grpc_lines[2]["api"] == "status"
    assert int(grpc_lines[0]["bytes_in"]) == request.ByteSize() - len(b"nope") + len(
        b"half_plus_three"
    )
    assert int(grpc_lines[0]["bytes_out"]) > 0 and grpc_lines[1]["bytes_out"] == "0"


def test_concurrent_requests_each_log_their_own_model(server: ServerProcess) -> None:
    """The model and version reach the line through the request's own context: requests in
    flight at once on both protocols never swap them."""
    models = ["half_plus_two", "half_plus_three"] * 20
    before = sum("servo.access]" in line for line in server.lines)

    def rest_call(name: str) -> None:
        with httpx.Client(base_url=server.rest, timeout=30) as rest:
            assert rest.post(f"/v1/models/{name}:predict", json={"instances": [1.0]}).is_success

    with grpc_stubs(server) as stubs, ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(rest_call, name) for name in models]
        calls += [
            pool.submit(stubs.predictions.Predict, predict_request(name, [1.0]), 30)
            for name in models
        ]
        for call in calls:
            call.result()
    lines = access_lines(server, before + 2 * len(models))[before:]
    for line in lines:
        named = line["path"].removeprefix("/v1/models/").removesuffix(":predict")
        if line["protocol"] == "rest":
            assert line["model"] == named, line
        assert line["model"] in ("half_plus_two", "half_plus_three") and line["version"] == "123"
    grpc_models = sorted(line["model"] for line in lines if line["protocol"] == "grpc")
    assert grpc_models == sorted(models)


def test_tensorflow_banner_is_quiet_by_default(server: ServerProcess) -> None:
    """TensorFlow loaded (the models are SavedModels) and none of its C++ start-up lines."""
    server.wait_for_line("Successfully loaded")
    assert [line for line in server.lines if any(b in line for b in BANNER)] == []


def test_tensorflow_banner_with_the_flag(config: Path) -> None:
    with running_server(
        [f"--model_config_file={config}", "--tensorflow_cpp_min_log_level=0"], env=NO_TF_LEVEL
    ) as process:
        process.wait_for_line("absl::InitializeLog")


def test_json_lines_parse_and_the_access_log_file_has_its_fields(
    config: Path, tmp_path: Path
) -> None:
    access = tmp_path / "access.log"
    with running_server(
        [
            f"--model_config_file={config}",
            "--log_format=json",
            "--access_log",
            f"--access_log_file={access}",
        ],
        env=NO_TF_LEVEL,
    ) as process:
        with httpx.Client(base_url=process.rest, timeout=30) as rest:
            assert rest.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
            assert rest.get("/v1/models/nope/metadata").status_code == 404
        assert process.stop() == 0
    docs = [json.loads(line) for line in process.lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any(d["logger"] == "servo.server" and "Exporting HTTP" in d["message"] for d in docs)
    assert not any(d["logger"] == "servo.access" for d in docs)  # they went to the file
    entries = [json.loads(line) for line in access.read_text().splitlines()]
    assert [(e["status"], e["api"], e["model"], e["version"]) for e in entries] == [
        (200, "predict", "half_plus_two", 123),
        (404, "metadata", "nope", None),
    ]
    assert entries[0]["message"] == "POST /v1/models/half_plus_two:predict 200"
    assert entries[0]["level"] == "INFO" and entries[0]["logger"] == "servo.access"
    assert entries[0]["bytes_in"] == len(b'{"instances":[1.0]}') and entries[0]["latency_ms"] > 0
