"""The data plane under both protocols: one answer, one set of rules, handles always released.

Each test drives REST and gRPC in process (tests/support/inprocess.py) over a fake core of
in-memory servables, so what differs between the protocols is only what TFS makes differ.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from servo.apis import messages
from servo.apis.data_plane import ModelSpec
from servo.core.status import Code
from servo.dtypes import DataType
from servo.metrics import ServerMetrics
from servo.platforms.servable import CLASSIFY_METHOD, REGRESS_METHOD, Signature, TensorSpec
from servo.protos import (
    classification_pb2,
    example_pb2,
    prediction_log_pb2,
)
from servo.tensor_codec import from_ndarray, to_ndarray
from tests.support.inprocess import FakeCore, GrpcClient, RecordingLogger, RestClient, data_plane
from tests.support.requests import (
    classify_request,
    multi_request,
    predict_request,
    regress_request,
)
from tests.support.servables import Gate, Servable, echo, half_plus_two


@pytest.fixture
def core() -> FakeCore:
    return FakeCore().add("h2", half_plus_two()).add("echo", echo())


@pytest.fixture
def clients(core: FakeCore) -> Iterator[tuple[RestClient, GrpcClient, RecordingLogger]]:
    logger = RecordingLogger()
    plane = data_plane(core, request_logger=logger, metrics=ServerMetrics())
    rest, grpc_ = RestClient(plane), GrpcClient(plane)
    yield rest, grpc_, logger
    core.assert_released()
    rest.close()
    grpc_.loop.close()  # one runner for both: closed by rest


def test_predict_answers_alike_over_both_protocols(clients) -> None:
    rest, grpc_, _ = clients
    answer = rest.post("/v1/models/h2:predict", {"instances": [[1.0], [2.0]]})
    assert answer.status == 200 and answer.json() == {"predictions": [[2.5], [3.0]]}
    response = grpc_.call("Predict", predict_request("h2", [[1.0], [2.0]]))
    assert to_ndarray(response.outputs["y"]).tolist() == [[2.5], [3.0]]
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1


def test_every_inference_api_of_both_protocols_reaches_the_request_log(clients) -> None:
    rest, grpc_, logger = clients
    rest.post("/v1/models/h2:predict", {"instances": [[1.0]]})
    rest.post(
        "/v1/models/h2:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}
    )
    rest.post(
        "/v1/models/h2:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    )
    grpc_.call("Predict", predict_request("h2", [[1.0]]))
    grpc_.call("Classify", classify_request("h2", "classify_x_to_y", 1.0))
    grpc_.call("Regress", regress_request("h2", "regress_x_to_y", 2.0))
    kinds = [kind for kind, *_ in logger.records]
    assert kinds == ["predict", "classify", "regress"] * 2
    # A JSON request is logged as the messages gRPC would have carried.
    _, name, classify, answer = logger.records[1]
    assert name == "h2"
    assert isinstance(classify, classification_pb2.ClassificationRequest)
    assert classify.model_spec.signature_name == "classify_x_to_y"
    assert classify.input.example_list.examples[0].features.feature["x"].float_list.value == [1.0]
    assert answer.result.classifications[0].classes[0].score == 2.5
    _, _, regress, answer = logger.records[2]
    assert regress.model_spec.version.value == 1
    assert answer.result.regressions[0].value == 3.0
    # The records can be written as PredictionLog, as the server's logger does.
    record = prediction_log_pb2.PredictionLog()
    record.classify_log.request.CopyFrom(classify)
    record.regress_log.response.CopyFrom(logger.records[5][3])


@pytest.mark.parametrize("protocol", ["REST", "gRPC"])
def test_a_large_classify_is_measured_on_the_pool_after_small_ones_ran_inline(
    core: FakeCore, protocol: str
) -> None:
    """The cost key of classify and regress holds the request's size, whatever the protocol:
    a request much larger than those measured runs on the pool first."""
    servable = half_plus_two()
    core.add("c", servable)
    plane = data_plane(core, inline_seconds=0.05)  # every call here counts as fast
    rest, grpc_ = RestClient(plane), GrpcClient(plane)

    def classify(count: int) -> None:
        xs = [float(i) for i in range(count)]
        if protocol == "REST":
            body = {"signature_name": "classify_x_to_y", "examples": [{"x": x} for x in xs]}
            assert rest.post("/v1/models/c:classify", body).status == 200
        else:
            grpc_.call("Classify", classify_request("c", "classify_x_to_y", *xs))

    try:
        for _ in range(plane.runner.POOL_WINDOW + 1):
            classify(1)
        here = threading.current_thread().name
        assert servable.calls[-1][1] == here  # small ones: inline now
        classify(2000)
        assert servable.calls[-1][1].startswith("servo-run")  # a new size: on the pool
    finally:
        rest.close()
        grpc_.close()
    core.assert_released()


def test_a_call_past_its_deadline_keeps_its_version_until_it_ends(core: FakeCore) -> None:
    gate = Gate()
    core.add("slow", gate.servable)
    grpc_ = GrpcClient(data_plane(core))
    try:
        error = grpc_.error("Predict", predict_request("slow", [0.0]), timeout=0.05)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert core.held == 1  # the request is over; its call, on the pool, holds the version
        gate.open()
        core.assert_released()
    finally:
        gate.open()
        grpc_.close()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/nope:predict", {"instances": [1.0]}, 404),
        ("/v1/models/h2:predict", {"signature_name": "nope", "instances": [1.0]}, 400),
        ("/v1/models/h2:predict", {"instances": ["a"]}, 400),
        ("/v1/models/h2:predict", {"inputs": {"x": [[1.0]], "z": [1]}}, 200),
        ("/v1/models/h2:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400),
        ("/v1/models/h2:regress", {"signature_name": "serving_default", "examples": [{}]}, 400),
        ("/v1/models/h2/metadata", None, 200),
        ("/v1/models/h2/versions/9/metadata", None, 404),
    ],
)
def test_every_path_releases_its_handle(clients, path: str, body: object, status: int) -> None:
    rest, _, _ = clients
    answer = rest.get(path) if body is None else rest.post(path, body)
    assert answer.status == status, answer.body
    # the fixture checks that the core holds no handle


def test_the_method_name_check_reaches_predict_classify_and_warm_up(core: FakeCore) -> None:
    odd = TensorSpec(DataType.DT_FLOAT, (-1,), "x")
    core.add(
        "odd",
        Servable(
            [
                Signature("serving_default", {"x": odd}, {"x": odd}, "not/a/method"),
                Signature(
                    "predict_says",
                    {"inputs": TensorSpec(DataType.DT_STRING, None)},
                    {"scores": TensorSpec(DataType.DT_FLOAT, (-1, 1))},
                ),
            ],
            lambda s, inputs, _: (
                {"x": inputs["x"]}
                if "x" in inputs
                else {"scores": np.ones((len(inputs["inputs"]), 1), np.float32)}
            ),
        ),
    )
    classify = {"signature_name": "predict_says", "examples": [{"x": 1.0}]}
    for check in (False, True):
        rest = RestClient(data_plane(core, method_name_check=check))
        try:
            predict = rest.post("/v1/models/odd:predict", {"instances": [1.0]})
            classified = rest.post("/v1/models/odd:classify", classify)
        finally:
            rest.close()
        if check:
            assert predict.status == 500
            assert predict.error.startswith("Expected prediction signature method_name")
            assert classified.status == 400
            assert classified.error.startswith(
                f"Expected classification signature method_name to be {CLASSIFY_METHOD}"
            )
        else:
            assert predict.status == 200 and classified.status == 200
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.model_spec.name = "odd"
        from_ndarray(np.ones(1, np.float32), into=log.predict_log.request.inputs["x"])
        servable = core.models["odd"][1]
        if check:
            with pytest.raises(Exception, match="Expected prediction signature method_name"):
                messages.replay(servable, log, method_name_check=True)
        else:
            messages.replay(servable, log, method_name_check=False)
    core.assert_released()


def test_metadata_and_status_over_the_data_plane(core: FakeCore) -> None:
    plane = data_plane(core)
    try:
        id, names = plane.metadata(ModelSpec("h2"), lambda id, s: (id, sorted(s.signatures)))
        assert id.version == 1 and "serving_default" in names
        assert [v.version for v in plane.model_status(ModelSpec("h2"))] == [1]
        assert core.held == 0
        with pytest.raises(Exception) as error:
            plane.model_status(ModelSpec("nope"))
        assert getattr(error.value, "code", None) == Code.NOT_FOUND
    finally:
        plane.runner.close()


def test_examples_of_a_json_request_with_a_context_are_logged_merged(clients) -> None:
    rest, _, logger = clients
    body = {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}]}
    assert rest.post("/v1/models/h2:regress", body).json() == {"results": [4.0]}
    (_, _, request, _) = logger.records[-1]
    example = request.input.example_list.examples[0]
    assert isinstance(example, example_pb2.Example)
    assert example.features.feature["x"].float_list.value == [4.0]


def test_examples_per_request_go_to_tfs_example_histogram(core: FakeCore) -> None:
    """`request_example_counts{model}`: one observation per classify, regress or
    multi-inference request, of its number of examples (beside the running total)."""
    metrics = ServerMetrics()
    plane = data_plane(core, metrics=metrics)
    rest, grpc_ = RestClient(plane), GrpcClient(plane)
    try:
        rest.post(
            "/v1/models/h2:classify",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}] * 3},
        )
        grpc_.call("Regress", regress_request("h2", "regress_x_to_y", 1.0, 2.0))
        grpc_.call(
            "MultiInference",
            multi_request(
                "h2",
                [(CLASSIFY_METHOD, "classify_x_to_y"), (REGRESS_METHOD, "regress_x_to_y")],
                *[1.0] * 5,
            ),
        )
        grpc_.call("Predict", predict_request("h2", [[1.0]]))  # no examples: not counted
    finally:
        rest.close()
        grpc_.loop.close()
    assert metrics.request_example_counts.count("h2") == 3
    assert metrics.request_example_count_total.value("h2") == 10
    page = metrics.render().decode()
    name = ":tensorflow:serving:request_example_counts"
    assert f'{name}_bucket{{model="h2",le="2"}} 1' in page  # the regress of 2
    assert f'{name}_bucket{{model="h2",le="4"}} 2' in page  # and the classify of 3
    assert f'{name}_bucket{{model="h2",le="8"}} 3' in page  # and the multi-inference of 5
    assert f'{name}_sum{{model="h2"}} 10' in page
