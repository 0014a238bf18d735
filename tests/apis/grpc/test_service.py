"""TFS's gRPC services (servo.apis.grpc.service) in process, over a fake core serving the API
tests' models (tests/apis/conftest.py): each method called by its path through the handlers
the services register, its request and answer serialized as on the wire.

Every RPC of both services; versions and labels; output_filter; tensor_content; metadata as
the official client unpacks it; every error in TFS's code and words, cut at 1024 characters;
the method-name check; deadlines; HandleReloadConfigRequest's answers; the request metrics.
Real sockets, the official stub and channel, the health service and messages over gRPC's
default size are tested through a server in tests/integration/test_grpc.py.
"""

from __future__ import annotations

import json
import logging
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tfs_metadata_pb2

from servo.apis.grpc.service import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    MalformedLog,
    channel_arguments,
    grpc_code,
    max_receive_bytes,
    server_options,
)
from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError, Status
from servo.decoded_size import DecodeLimits
from servo.dtypes import DataType
from servo.metrics import ServerMetrics
from servo.platforms.servable import REGRESS_METHOD, Signature, TensorSpec
from servo.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_server_config_pb2,
    predict_pb2,
    regression_pb2,
)
from servo.server.model_management import ModelManagementGrants
from servo.tensor_codec import to_ndarray
from tests.support.inprocess import RPCS, Aborted, FakeCore, GrpcClient, data_plane
from tests.support.requests import (
    CLASSIFY,
    PREDICT,
    REGRESS,
    classify_request,
    example,
    metadata_request,
    multi_request,
    predict_request,
    regress_request,
    status_request,
    tensor,
    tfs,
)
from tests.support.servables import EXAMPLES, Gate, Servable, half_plus_two, raising
from tests.support.testdata import TfsModels, saved_signature_map_json, tfs_path

INVALID = grpc.StatusCode.INVALID_ARGUMENT
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


def client(core: FakeCore, **options: Any) -> Iterator[GrpcClient]:
    tensor_content = options.pop("tensor_content", False)
    grants = options.pop("grants", None)
    grpc_ = GrpcClient(data_plane(core, **options), tensor_content=tensor_content, grants=grants)
    yield grpc_
    grpc_.close()
    core.assert_released()


@pytest.fixture
def rpc(served: FakeCore, metrics: ServerMetrics) -> Iterator[GrpcClient]:
    """The services with TFS's defaults, metrics on."""
    yield from client(served, metrics=metrics)


@pytest.fixture
def packed(served: FakeCore) -> Iterator[GrpcClient]:
    """--enable_serialization_as_tensor_content"""
    yield from client(served, tensor_content=True)


@pytest.fixture
def checked(served: FakeCore) -> Iterator[GrpcClient]:
    """--enable_signature_method_name_check"""
    yield from client(served, method_name_check=True)


def array(tensor: Any) -> np.ndarray:
    return to_ndarray(tensor)


# -- registration ------------------------------------------------------------------------------


def test_methods_are_registered_under_tfs_service_names(rpc: GrpcClient) -> None:
    assert PREDICTION_SERVICE == "tensorflow.serving.PredictionService"
    assert MODEL_SERVICE == "tensorflow.serving.ModelService"
    assert [h.service_name() for h in rpc.handlers] == [  # type: ignore[attr-defined]
        PREDICTION_SERVICE,
        MODEL_SERVICE,
        "inference.GRPCInferenceService",  # the Open Inference Protocol's
    ]
    for method, (service, _) in RPCS.items():
        handler = rpc.handler(f"/{service}/{method}")
        assert handler is not None and handler.unary_unary is not None, method
        assert not handler.request_streaming and not handler.response_streaming
    for path in [
        "/tensorflow.serving.PredictionService/GetModelStatus",  # the other service's
        "/tensorflow.serving.ModelService/Predict",
        "/servo.tensorflow.serving.PredictionService/Predict",  # servo's proto package
        "/servo.inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",  # not served
        "/tensorflow.serving.PredictionService/predict",
        "/tensorflow.serving.SessionService/SessionRun",
    ]:
        assert rpc.handler(path) is None, path


def test_an_official_client_message_is_answered_in_its_classes(rpc: GrpcClient) -> None:
    answer = rpc.call("Predict", tfs(predict_request("half_plus_two", [[1.0]])))
    assert type(answer).__module__ == "tensorflow_serving.apis.predict_pb2"
    assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.5]]


def test_grpc_codes_have_the_numbers_of_servo_codes() -> None:
    for code in Code:
        assert grpc_code(code).value[0] == int(code), code


def test_channel_arguments_and_server_options() -> None:
    assert channel_arguments("") == []
    assert channel_arguments("a=1, b=x,,c=") == [("a", 1), ("b", "x"), ("c", "")]
    for bad in ("a", "=1", "a=1,b"):
        with pytest.raises(ValueError, match="--grpc_channel_arguments: expected key=value"):
            channel_arguments(bad)
    options = server_options("grpc.so_reuseport=1,grpc.max_receive_message_length=10")
    assert options[:3] == [
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
    ]
    # The flag's arguments come last, so that they win.
    assert options[3:] == [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 10)]
    assert server_options("", max_receive=1000)[0] == ("grpc.max_receive_message_length", 1000)


def test_messages_are_received_up_to_the_decoded_limit_and_some_framing() -> None:
    assert max_receive_bytes(DecodeLimits()) == 256 * 2**20 + 4 * 2**20
    assert max_receive_bytes(DecodeLimits(max_request_bytes=2**40)) == 2**31 - 1


# -- Predict -----------------------------------------------------------------------------------


def test_predict_fills_in_the_model_spec_it_used(rpc: GrpcClient) -> None:
    answer = rpc.call("Predict", predict_request("half_plus_two", [[1.0], [2.0], [5.0]]))
    np.testing.assert_array_equal(array(answer.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert (answer.model_spec.name, answer.model_spec.signature_name) == (
        "half_plus_two",
        "serving_default",
    )
    assert answer.model_spec.version.value == 123
    assert answer.model_spec.WhichOneof("version_choice") == "version"
    # TFS's default: typed fields, not tensor_content.
    assert not answer.outputs["y"].tensor_content
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    answer = rpc.call("Predict", predict_request("half_plus_three", [[1.0]]))
    assert answer.outputs["y"].float_val == [3.5]
    # A signature named in the request is named in the answer as given.
    request = predict_request("half_plus_two", [[1.0]], signature_name="serving_default")
    assert rpc.call("Predict", request).model_spec.signature_name == "serving_default"


def test_predict_on_every_platform(rpc: GrpcClient) -> None:
    for name in ("tf2", "tflite", "tflite_sigdef"):
        answer = rpc.call("Predict", predict_request(name, [[1.0], [3.0]]))
        (output,) = answer.outputs.values()
        assert array(output).reshape(-1).tolist() == [2.5, 3.5], name
    request = predict_request("word_count", ["a model server", "servo"], "text", dtype=None)
    answer = rpc.call("Predict", request)
    assert array(answer.outputs["words"]).tolist() == [3, 1]
    assert array(answer.outputs["chars"]).tolist() == [14, 5]
    request = predict_request("two_io", [[1, 2], [3, 4]], "a")
    request.inputs["tag"].CopyFrom(tensor([b"ab", b"xyz"], None))
    answer = rpc.call("Predict", request)
    assert array(answer.outputs["sum"]).tolist() == [3.0, 7.0]
    assert array(answer.outputs["tag_bytes"]).tolist() == [b"ba", b"zyx"]
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    assert array(rpc.call("Predict", predict_request("mlp", x)).outputs["y"]).shape == (2, 4)
    request = predict_request("vocab", ["servo", "nope"], "keys", dtype=None)
    assert array(rpc.call("Predict", request).outputs["ids"]).tolist() == [8, -1]


def test_versions_and_labels(rpc: GrpcClient) -> None:
    for spec, version in [
        ({"version": 123}, 123),
        ({"version": 124}, 124),
        ({"version_label": "stable"}, 123),
        ({"version_label": "canary"}, 124),
        ({}, 124),
    ]:
        answer = rpc.call("Predict", predict_request("two_versions", [[1.0]], **spec))
        assert answer.model_spec.version.value == version, spec
        assert answer.model_spec.WhichOneof("version_choice") == "version"  # a label's number
        assert answer.outputs["y"].float_val == [2.5]


def test_output_filter(rpc: GrpcClient) -> None:
    request = predict_request("word_count", ["a b"], "text", dtype=None)
    assert sorted(rpc.call("Predict", request).outputs) == ["chars", "words"]
    request.output_filter.append("words")
    answer = rpc.call("Predict", request)
    assert list(answer.outputs) == ["words"]
    assert array(answer.outputs["words"]).tolist() == [2]
    request.output_filter.append("words")
    assert rpc.status("Predict", request) == (INVALID, "duplicate output tensor alias: words")
    request.output_filter[:] = ["nope"]
    assert rpc.status("Predict", request) == (
        INVALID,
        "output tensor alias not found in signature: nope Outputs expected to be in the set "
        "{chars,words}.",
    )
    # Messages longer than 1024 characters are cut as TFS cuts them.
    request.output_filter[:] = ["z" * 2000]
    message = f"output tensor alias not found in signature: {'z' * 2000} Outputs expected"
    assert rpc.status("Predict", request) == (INVALID, message[:1024] + "...TRUNCATED")


def test_a_message_of_1024_characters_is_not_cut(served: FakeCore, rpc: GrpcClient) -> None:
    for size, expected in [(1024, "e" * 1024), (1025, "e" * 1024 + "...TRUNCATED")]:
        served.add(f"e{size}", raising(ServoError(Code.ABORTED, "e" * size)))
        status = rpc.status("Predict", predict_request(f"e{size}", [1.0]))
        assert status == (grpc.StatusCode.ABORTED, expected)


def test_state_through_signatures(rpc: GrpcClient) -> None:
    def call(signature: str) -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "counter"
        request.model_spec.signature_name = signature
        answer = rpc.call("Predict", request)
        assert answer.model_spec.signature_name == signature
        return float(array(answer.outputs["output"]))

    call("reset_counter")
    assert [call("incr_counter"), call("incr_counter"), call("get_counter")] == [1.0, 2.0, 2.0]


def test_outputs_as_tensor_content(packed: GrpcClient) -> None:
    answer = packed.call("Predict", predict_request("half_plus_two", [[1.0], [2.0]]))
    y = answer.outputs["y"]
    assert y.tensor_content == np.array([2.5, 3.0], "<f4").tobytes()
    assert not y.float_val
    assert array(y).tolist() == [[2.5], [3.0]]
    # Strings too, in TensorFlow's encoding (TensorFlow's own parser reads them back).
    request = predict_request("two_io", [[1, 2], [3, 4]], "a")
    request.inputs["tag"].CopyFrom(tensor([b"ab", b"x" * 200], None))
    answer = packed.call("Predict", tfs(request))
    tags = answer.outputs["tag_bytes"]
    assert tags.tensor_content and not tags.string_val
    parsed = tf.io.parse_tensor(tags.SerializeToString(), tf.string)
    assert parsed.numpy().tolist() == [b"ba", b"x" * 200]
    assert tf.make_ndarray(answer.outputs["sum"]).tolist() == [3.0, 7.0]


# -- Predict's errors ---------------------------------------------------------------------------


def _content_mismatch() -> predict_pb2.PredictRequest:
    request = predict_request("half_plus_two")
    tensor = request.inputs["x"]
    tensor.dtype = 1  # type: ignore[assignment]  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1000  # the content holds one value
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_content = np.float32(1).tobytes()
    return request


def _extra() -> predict_pb2.PredictRequest:
    request = predict_request("half_plus_two", [[1.0]])
    request.inputs["extra"].CopyFrom(tensor([1.0]))
    return request


PREDICT_ERRORS: list[tuple[str, Callable[[], Any], grpc.StatusCode, str]] = [
    (
        "unknown model",
        lambda: predict_request("nope", [1.0]),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        lambda: predict_request("half_plus_two", [1.0], version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half_plus_two, 9)",
    ),
    (
        "unknown label",
        lambda: predict_request("two_versions", [1.0], version_label="beta"),
        INVALID,
        "Unrecognized servable version label: beta",
    ),
    (
        "bad signature",
        lambda: predict_request("half_plus_two", [1.0], signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    (
        "empty name",
        lambda: predict_request("", [1.0]),
        INVALID,
        "ModelSpec has no name specified.",
    ),
    ("no model spec", predict_pb2.PredictRequest, INVALID, "Missing ModelSpec"),
    (
        "no inputs",
        lambda: predict_request("half_plus_two"),
        INVALID,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    ),
    (
        "an extra input",
        _extra,
        INVALID,
        "input size does not match signature: 2!=1 len({extra,x}) != len({x}). "
        "Sent extra: {extra}. Missing but required: {}.",
    ),
    (
        "a missing input",
        lambda: predict_request("two_io", [[1.0, 2.0]], alias="a"),
        INVALID,
        "input size does not match signature: 1!=2 len({a}) != len({a,tag}). Sent extra: {}. "
        "Missing but required: {tag}.",
    ),
    (
        "a wrong input name",
        lambda: predict_request("half_plus_two", [[1.0]], alias="nope"),
        INVALID,
        "Signature input alias: x(feed name: x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {nope}, or default input alias set: ",
    ),
    (
        "a wrong dtype",
        lambda: predict_request("half_plus_two", [["a"]], dtype=None),
        INVALID,
        "Expects arg[0] to be float but string is provided",
    ),
    (
        "content not of its shape's size",
        _content_mismatch,
        INVALID,
        "tensor parsing error: x",
    ),
]


@pytest.mark.parametrize(
    ("request_factory", "code", "message"),
    [case[1:] for case in PREDICT_ERRORS],
    ids=[case[0] for case in PREDICT_ERRORS],
)
def test_predict_errors(rpc: GrpcClient, request_factory, code, message) -> None:
    code_, details = rpc.status("Predict", request_factory())
    assert code_ == code
    # TFS's message; servo may say why a tensor did not parse after it.
    if message.startswith("tensor parsing error"):
        assert details.startswith(message + " ("), details
    else:
        assert details == message


ERROR_CODES = [code for code in Code if code is not Code.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=[c.name for c in ERROR_CODES])
def test_a_model_error_keeps_its_code_and_text(rpc: GrpcClient, code: Code) -> None:
    request = predict_request("two_io", [int(code)], "code", dtype=np.int32, signature_name="fail")
    assert rpc.status("Predict", request) == (grpc_code(code), f"failed with {code.name}")
    assert grpc_code(code).name == code.name


def test_an_exception_in_a_model_is_internal_and_the_services_keep_serving(
    rpc: GrpcClient,
) -> None:
    request = predict_request("two_io", [-1], "code", dtype=np.int32, signature_name="fail")
    assert rpc.status("Predict", request) == (
        grpc.StatusCode.INTERNAL,
        "Model.predict raised ValueError: a bug in the model",
    )
    answer = rpc.call("Predict", predict_request("two_io", [1.0], signature_name="echo"))
    assert answer.outputs["x"].float_val == [1.0]


def test_a_bug_is_internal_with_its_type_and_is_logged(
    served: FakeCore, rpc: GrpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    served.add("buggy", raising(RuntimeError("boom")))
    with caplog.at_level(logging.ERROR):
        status = rpc.status("Predict", predict_request("buggy", [1.0]))
    assert status == (grpc.StatusCode.INTERNAL, "RuntimeError: boom")
    assert "gRPC Predict failed" in caplog.text


@pytest.mark.parametrize(
    ("method", "request_class"),
    [
        ("Predict", predict_pb2.PredictRequest),
        ("Classify", classification_pb2.ClassificationRequest),
        ("Regress", regression_pb2.RegressionRequest),
        ("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest),
        ("GetModelStatus", get_model_status_pb2.GetModelStatusRequest),
    ],
)
def test_a_request_without_a_model_spec(rpc: GrpcClient, method: str, request_class: Any) -> None:
    # No model_spec at all: TFS's own message, not the empty name's.
    assert rpc.status(method, request_class()) == (INVALID, "Missing ModelSpec")


# -- Classify, Regress, MultiInference ---------------------------------------------------------


@pytest.mark.parametrize("name", ["half_plus_two", "tf2"])
def test_classify_regress_and_multi_inference(rpc: GrpcClient, name: str) -> None:
    """TF1 signatures say classify and regress; TF2's all say predict, and TFS (without
    --enable_signature_method_name_check) classifies and regresses on them all the same."""
    answer = rpc.call("Classify", classify_request(name, "classify_x_to_y", 1.0, 4.0))
    assert [[(c.label, c.score) for c in r.classes] for r in answer.result.classifications] == [
        [("", 2.5)],
        [("", 4.0)],
    ]
    assert (answer.model_spec.name, answer.model_spec.signature_name) == (name, "classify_x_to_y")
    assert answer.model_spec.version.value == 123

    answer = rpc.call("Regress", regress_request(name, "regress_x_to_y", 2.0, 5.0))
    assert [r.value for r in answer.result.regressions] == [3.0, 4.5]
    assert answer.model_spec.signature_name == "regress_x_to_y"

    # An example list with a context: each example's features merged over the context's.
    request = regress_request(name, "regress_x_to_y2", context=example(x=4.0))
    request.input.example_list_with_context.examples.extend([example(), example(x=2.0)])
    answer = rpc.call("Regress", request)
    assert [r.value for r in answer.result.regressions] == [5.0, 4.0]

    request = multi_request(name, [(REGRESS, "regress_x_to_y"), (CLASSIFY, "classify_x_to_y")], 2.0)
    answer = rpc.call("MultiInference", request)
    assert [r.WhichOneof("result") for r in answer.results] == [
        "regression_result",
        "classification_result",
    ]
    assert answer.results[0].regression_result.regressions[0].value == 3.0
    assert answer.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for result, signature in zip(
        answer.results, ["regress_x_to_y", "classify_x_to_y"], strict=True
    ):
        assert (result.model_spec.name, result.model_spec.signature_name) == (name, signature)
        assert result.model_spec.version.value == 123


def test_regress_on_half_plus_three(rpc: GrpcClient) -> None:
    answer = rpc.call("Regress", regress_request("half_plus_three", REGRESS, 1.0))
    assert [r.value for r in answer.result.regressions] == [3.5]


def test_classify_and_regress_of_a_version_and_a_label(rpc: GrpcClient) -> None:
    for spec, version in [({"version": 123}, 123), ({"version_label": "canary"}, 124)]:
        request = classify_request("two_versions", "classify_x_to_y", 2.0, **spec)
        answer = rpc.call("Classify", request)
        assert answer.model_spec.version.value == version
        assert answer.model_spec.WhichOneof("version_choice") == "version"
        request = regress_request("two_versions", "regress_x_to_y", 2.0, **spec)
        assert rpc.call("Regress", request).model_spec.version.value == version


def tf_signature_text(tfs_models: TfsModels, model: str, signature: str) -> str:
    """A SignatureDef of one of the test models, as TensorFlow's DebugString writes it."""
    saved = saved_model_pb2.SavedModel()
    with open(Path(tfs_models.path(model)) / "00000123" / "saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    return text_format.MessageToString(saved.meta_graphs[0].signature_def[signature])


def test_classify_regress_and_multi_inference_errors(
    rpc: GrpcClient, tfs_models: TfsModels
) -> None:
    error = rpc.status("Classify", classify_request("half_plus_two", "nope", 1.0))
    assert error == (INVALID, "No signature was found with the name: nope")
    error = rpc.status("Regress", regress_request("half_plus_two", "nope", 1.0))
    assert error == (INVALID, "No signature was found with the name: nope")
    error = rpc.status("Regress", regress_request("half_plus_two", "serving_default", 1.0))
    assert error == (
        INVALID,
        "No regression inputs found in SignatureDef: "
        + tf_signature_text(tfs_models, "saved_model_half_plus_two_cpu", "serving_default"),
    )
    error = rpc.status("Classify", classify_request("half_plus_two", "regress_x_to_y", 1.0))
    assert error == (
        INVALID,
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: '
        + tf_signature_text(tfs_models, "saved_model_half_plus_two_cpu", "regress_x_to_y"),
    )
    error = rpc.status("Classify", classify_request("half_plus_two", "classify_x_to_y"))
    assert error == (INVALID, "Input is empty.")
    error = rpc.status("Regress", regress_request("half_plus_two", "regress_x_to_y"))
    assert error == (INVALID, "Input is empty.")
    request = regress_request("half_plus_two", "regress_x_to_y", context=example(x=1.0))
    assert rpc.status("Regress", request) == (INVALID, "Input is empty.")  # a context alone
    error = rpc.status("Classify", classify_request("nope", "classify_x_to_y", 1.0))
    assert error == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")

    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")] * 2, 1.0)
    assert rpc.status("MultiInference", request) == (
        INVALID,
        "Duplicate evaluation of signature: regress_x_to_y",
    )
    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")], 1.0)
    request.tasks.add().CopyFrom(request.tasks[0])
    request.tasks[1].model_spec.name = "tf2"
    assert rpc.status("MultiInference", request) == (
        INVALID,
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    )
    request.tasks[1].model_spec.name = ""
    assert rpc.status("MultiInference", request) == (
        INVALID,
        "Found ModelSpec with an empty model name.",
    )
    request = multi_request("half_plus_two", [(REGRESS, "nope")], 1.0)
    assert rpc.status("MultiInference", request) == (
        INVALID,
        "Requested signature not found in model graph: nope",
    )
    request = multi_request("half_plus_two", [(PREDICT, "regress_x_to_y")])
    assert rpc.status("MultiInference", request) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")])
    assert rpc.status("MultiInference", request) == (INVALID, "Input is empty.")
    # No tasks: TFS looks up an empty ModelSpec.
    request = inference_pb2.MultiInferenceRequest()
    request.input.example_list.examples.add()
    assert rpc.status("MultiInference", request) == (INVALID, "ModelSpec has no name specified.")
    request = multi_request("nope", [(REGRESS, "regress_x_to_y")], 1.0)
    assert rpc.status("MultiInference", request) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


def test_the_signature_method_name_check(checked: GrpcClient) -> None:
    status = checked.status("Classify", classify_request("half_plus_two", "regress_x_to_y", 1.0))
    assert status == (
        INVALID,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress",
    )
    answer = checked.call("Classify", classify_request("half_plus_two", "classify_x_to_y", 1.0))
    assert isinstance(answer, classification_pb2.ClassificationResponse)
    assert answer.result.classifications[0].classes[0].score == 2.5
    status = checked.status("Regress", regress_request("half_plus_two", "classify_x_to_y", 1.0))
    assert status == (
        INVALID,
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify",
    )
    assert checked.status("Predict", predict_request("custom", [1.0])) == (
        grpc.StatusCode.INTERNAL,
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method",
    )
    # TF2's signatures all say predict: with the check they neither classify nor regress.
    request = multi_request("tf2", [(REGRESS, "regress_x_to_y")], 1.0)
    code, details = checked.status("MultiInference", request)
    assert (code, details) == (
        INVALID,
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict",
    )


def test_every_task_is_checked_before_any_runs(served: FakeCore) -> None:
    """A multi-inference whose second task fails the method-name check runs no model call."""
    servable = half_plus_two()
    served.add("h2", servable)
    for grpc_ in client(served, method_name_check=True):
        tasks = [(CLASSIFY, "classify_x_to_y"), (REGRESS, "serving_default")]
        assert grpc_.status("MultiInference", multi_request("h2", tasks, 1.0)) == (
            INVALID,
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/predict",
        )
        assert servable.calls == []
        grpc_.call("MultiInference", multi_request("h2", tasks[:1], 1.0))
        assert [name for name, _ in servable.calls] == ["classify_x_to_y"]


def test_answers_name_the_default_signature_when_the_request_names_none(
    served: FakeCore, rpc: GrpcClient
) -> None:
    """TFS's MakeModelSpec: an empty signature name is answered as serving_default."""
    regress = Signature(
        "serving_default",
        {"inputs": EXAMPLES},
        {"outputs": TensorSpec(DataType.DT_FLOAT, (-1, 1))},
        REGRESS_METHOD,
    )
    served.add(
        "r",
        Servable([regress], lambda s, i, _: {"outputs": np.ones((len(i["inputs"]), 1), "f4")}),
    )
    answer = rpc.call("Regress", regress_request("r", "", 1.0))
    assert answer.model_spec.signature_name == "serving_default"
    answer = rpc.call("MultiInference", multi_request("r", [(REGRESS, "")], 1.0))
    assert answer.results[0].model_spec.signature_name == "serving_default"
    assert answer.results[0].regression_result.regressions[0].value == 1.0
    answer = rpc.call("Predict", predict_request("half_plus_two", [[1.0]]))
    assert answer.model_spec.signature_name == "serving_default"


def test_without_the_check_any_method_predicts(rpc: GrpcClient) -> None:
    answer = rpc.call("Predict", predict_request("custom", [1.0]))
    assert answer.outputs["x"].float_val == [1.0]


# -- GetModelMetadata --------------------------------------------------------------------------


def half_plus_two_signature_map(rpc: GrpcClient) -> tfs_metadata_pb2.SignatureDefMap:
    """half_plus_two's metadata as the official client unpacks it."""
    request = tfs(metadata_request("half_plus_two", "signature_def"))
    answer = rpc.call("GetModelMetadata", request)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("half_plus_two", 123)
    assert list(answer.metadata) == ["signature_def"]
    assert answer.metadata["signature_def"].TypeName() == "tensorflow.serving.SignatureDefMap"
    signature_map = tfs_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signature_map)
    return signature_map


def assert_signature_map_is(
    signature_map: tfs_metadata_pb2.SignatureDefMap, expected: dict
) -> None:
    """`expected` (TFS's JSON of a SignatureDefMap), read back through the client's own
    message, equals the answer; and the answer written as JSON equals `expected`."""
    assert signature_map == json_format.ParseDict(expected, tfs_metadata_pb2.SignatureDefMap())
    assert (
        json_format.MessageToDict(
            signature_map,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        == expected
    )


def test_metadata_unpacked_by_the_client(rpc: GrpcClient, tfs_models: TfsModels) -> None:
    signature_map = half_plus_two_signature_map(rpc)
    # The SignatureDefs the model file holds.
    version = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    assert_signature_map_is(signature_map, saved_signature_map_json(version))
    # A version by label, and a model of another platform.
    request = metadata_request("two_versions", "signature_def", version_label="stable")
    assert rpc.call("GetModelMetadata", request).model_spec.version.value == 123
    request = tfs(metadata_request("mlp", "signature_def"))
    answer = rpc.call("GetModelMetadata", request)
    assert answer.metadata["signature_def"].Unpack(signature_map)
    tensor = signature_map.signature_def["serving_default"].inputs["x"]
    assert (tensor.dtype, [d.size for d in tensor.tensor_shape.dim]) == (tf.float32, [-1, 16])


@pytest.mark.tfs_testdata
def test_metadata_is_tfs_sample(rpc: GrpcClient) -> None:
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)["metadata"]["signature_def"]
    assert_signature_map_is(half_plus_two_signature_map(rpc), expected)


def test_metadata_errors(rpc: GrpcClient) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    assert rpc.status("GetModelMetadata", request) == (INVALID, "Missing ModelSpec")
    request.model_spec.name = "half_plus_two"
    assert rpc.status("GetModelMetadata", request) == (
        INVALID,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    request.metadata_field.append("graph")
    assert rpc.status("GetModelMetadata", request) == (
        INVALID,
        "Metadata field graph is not supported",
    )
    request.metadata_field[:] = ["signature_def", "graph"]
    assert rpc.status("GetModelMetadata", request) == (
        INVALID,
        "Metadata field graph is not supported",
    )
    request.metadata_field[:] = ["signature_def"]
    request.model_spec.name = "nope"
    assert rpc.status("GetModelMetadata", request) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    request = metadata_request("two_versions", "signature_def", version_label="beta")
    assert rpc.status("GetModelMetadata", request) == (
        INVALID,
        "Unrecognized servable version label: beta",
    )


# -- GetModelStatus ----------------------------------------------------------------------------


def model_status(rpc: GrpcClient, name: str, **spec: Any) -> dict[int, tuple[int, int, str]]:
    answer = rpc.call("GetModelStatus", status_request(name, **spec))
    return {
        s.version: (s.state, s.status.error_code, s.status.error_message)
        for s in answer.model_version_status
    }


def test_model_status(rpc: GrpcClient) -> None:
    assert model_status(rpc, "two_versions") == {
        124: (AVAILABLE, 0, ""),
        123: (AVAILABLE, 0, ""),
    }
    answer = rpc.call("GetModelStatus", status_request("two_versions", version=123))
    assert [(s.version, s.state) for s in answer.model_version_status] == [(123, AVAILABLE)]
    assert model_status(rpc, "two_versions", version_label="canary") == {124: (AVAILABLE, 0, "")}
    assert rpc.status("GetModelStatus", status_request("two_versions", version=9)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model two_versions",
    )
    assert rpc.status("GetModelStatus", status_request("nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    # TFS looks the empty name up like any other
    assert rpc.status("GetModelStatus", status_request("")) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model ",
    )
    assert rpc.status("GetModelStatus", status_request("two_versions", version_label="x")) == (
        INVALID,
        "Unrecognized servable version label: x",
    )
    assert rpc.status("GetModelStatus", get_model_status_pb2.GetModelStatusRequest()) == (
        INVALID,
        "Missing ModelSpec",
    )


def test_status_of_a_version_that_failed_names_its_error(served: FakeCore, rpc: GrpcClient) -> None:
    failure = Status(Code.NOT_FOUND, "Could not find SavedModel .pb or .pbtxt")
    served.set_state("half_plus_two", 124, ManagerState.END, failure)
    assert model_status(rpc, "half_plus_two") == {
        124: (END, int(Code.NOT_FOUND), "Could not find SavedModel .pb or .pbtxt"),
        123: (AVAILABLE, 0, ""),
    }
    answer = rpc.call("GetModelStatus", tfs(status_request("half_plus_two", version=124)))
    (entry,) = answer.model_version_status
    assert (entry.state, entry.status.error_code) == (END, grpc.StatusCode.NOT_FOUND.value[0])
    answer = rpc.call("Predict", predict_request("half_plus_two", [[1.0]]))
    assert answer.model_spec.version.value == 123  # the old version keeps serving


# -- HandleReloadConfigRequest -----------------------------------------------------------------


def reload_request(*names: str, platform: str = "onnx") -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    for name in names:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, f"/models/{name}", platform
    return request


def test_a_reload_hands_the_config_to_the_core(served: FakeCore, rpc: GrpcClient) -> None:
    request = reload_request("a", "b")
    answer = rpc.call("HandleReloadConfigRequest", request)
    assert isinstance(answer, model_management_pb2.ReloadConfigResponse)
    assert (answer.status.error_code, answer.status.error_message) == (0, "")
    assert served.reloads == [request.config]
    answer = rpc.call("HandleReloadConfigRequest", tfs(reload_request("a")))
    assert answer.status.error_code == 0
    assert [len(c.model_config_list.config) for c in served.reloads] == [2, 1]


def test_waiting_reloads_do_not_queue_behind_each_other(
    served: FakeCore, rpc: GrpcClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reload waits on a thread of its own: 12 reloads that all wait at once (more than
    the event loop's default executor has threads: min(32, CPUs + 4)) all reach the core."""
    together = threading.Barrier(12, timeout=30)

    def waiting_reload(config: Any, **_: Any) -> None:
        together.wait()  # broken (and raising) unless all 12 are in here at once

    monkeypatch.setattr(served, "reload_config", waiting_reload)
    answers = rpc.call_together(
        "HandleReloadConfigRequest", [reload_request(f"m{i}") for i in range(12)]
    )
    assert [a.status.error_code for a in answers] == [0] * 12


@pytest.mark.parametrize(
    "config",
    [
        model_server_config_pb2.ModelServerConfig(),
        model_server_config_pb2.ModelServerConfig(
            custom_model_config={"type_url": "type.googleapis.com/x.Y"}
        ),
    ],
    ids=["no config", "a custom config"],
)
def test_a_reload_of_anything_but_a_model_config_list(
    served: FakeCore, rpc: GrpcClient, config: model_server_config_pb2.ModelServerConfig
) -> None:
    request = model_management_pb2.ReloadConfigRequest(config=config)
    assert rpc.status("HandleReloadConfigRequest", request) == (
        INVALID,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported",
    )
    assert served.reloads == []


def test_a_bad_config_is_invalid_and_changes_nothing(
    served: FakeCore, rpc: GrpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    rpc.call("HandleReloadConfigRequest", reload_request("added"))
    with caplog.at_level(logging.ERROR):
        status = rpc.status("HandleReloadConfigRequest", reload_request("a", "added", "added"))
    assert status == (INVALID, "Illegal to list model added multiple times in config list")
    assert "ReloadConfig failed: Illegal to list model added multiple times" in caplog.text
    request = reload_request("added")
    request.config.model_config_list.config[0].model_platform = "lookup"
    code, details = rpc.status("HandleReloadConfigRequest", request)
    assert code == INVALID and "added" in details  # a model keeps its platform
    assert len(served.reloads) == 1


def test_a_reload_that_fails_answers_the_core_error(served: FakeCore, rpc: GrpcClient) -> None:
    served.reload_error = ServoError(
        Code.UNKNOWN, "1 model(s) did not become available: {{{name: bad version: 1}}, }"
    )
    assert rpc.status("HandleReloadConfigRequest", reload_request("bad")) == (
        grpc.StatusCode.UNKNOWN,
        "1 model(s) did not become available: {{{name: bad version: 1}}, }",
    )
    served.reload_error = ServoError(Code.FAILED_PRECONDITION, "label")
    assert rpc.status("HandleReloadConfigRequest", reload_request("bad")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "label",
    )


def test_a_reload_answers_the_increase_of_each_named_metric(
    served: FakeCore, rpc: GrpcClient, metrics: ServerMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TFS's RecordMetricsIncrease: each name's value (its first point's int64) after the
    reload less the value before it; 0 for a name no metric has or one without int64
    points; a name asked twice answered once."""
    metrics.model_load_count.inc("a", "OK", amount=4)
    metrics.request_count.inc("z", "OK")
    reload = served.reload_config

    def loading_reload(config: Any) -> None:
        reload(config)
        metrics.model_load_count.inc("a", "OK", amount=2)
        metrics.model_version_state.set(30.0, "a", "1")
        metrics.model_load_latency.observe(1000.0, "a", "OK")
        metrics.request_count.inc("b", "OK", amount=9)  # a new first point, of 9

    monkeypatch.setattr(served, "reload_config", loading_reload)
    request = reload_request("a")
    request.metric_names.extend(
        [
            "servo_model_load_count",
            "servo_model_version_state",
            "servo_model_load_latency_microseconds",
            "/tensorflow/serving/request_count",
            "/no/such/metric",
            "servo_model_load_count",
        ]
    )
    answer = rpc.call("HandleReloadConfigRequest", tfs(request))
    assert answer.status.error_code == 0
    assert [
        (m.name, m.WhichOneof("value_increase"), m.int64_value_increase) for m in answer.metric
    ] == [
        ("servo_model_load_count", "int64_value_increase", 2),
        ("servo_model_version_state", "int64_value_increase", 30),
        ("servo_model_load_latency_microseconds", "int64_value_increase", 0),
        ("/tensorflow/serving/request_count", "int64_value_increase", 8),
        ("/no/such/metric", "int64_value_increase", 0),
    ]


def test_a_reload_without_metric_names_answers_no_metric(served: FakeCore, rpc: GrpcClient) -> None:
    answer = rpc.call("HandleReloadConfigRequest", reload_request("a"))
    assert list(answer.metric) == []


def test_an_empty_reload_over_the_network_answers_its_metrics_too(
    served: FakeCore, rpc: GrpcClient
) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.SetInParent()
    request.metric_names.append("servo_model_load_count")
    answer = rpc.call("HandleReloadConfigRequest", request)
    assert answer.status.error_code == 0 and served.reloads == []
    assert [(m.name, m.int64_value_increase) for m in answer.metric] == [
        ("servo_model_load_count", 0)
    ]


PYTHON_REFUSED = (
    "Model p: a python model at /models/p runs that directory's code, and adding or changing "
    "one over the network is not allowed; list it in --model_config_file, or start the server "
    "with --allow_python_models_over_network=true"
)


def test_a_reload_adding_a_python_model_is_refused_by_default(
    served: FakeCore, rpc: GrpcClient
) -> None:
    status = rpc.status("HandleReloadConfigRequest", reload_request("p", platform="python"))
    assert status == (grpc.StatusCode.PERMISSION_DENIED, PYTHON_REFUSED)
    # Moving a served python model to another directory is new code too.
    served.config = reload_request("p", platform="python").config
    moved = reload_request("p", platform="python")
    moved.config.model_config_list.config[0].base_path = "/elsewhere/p"
    code, details = rpc.status("HandleReloadConfigRequest", moved)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "/elsewhere/p" in details
    assert served.reloads == []
    # The python model the server already serves, sent back unchanged with another: allowed.
    again = reload_request("p", platform="python")
    again.config.model_config_list.config.add().CopyFrom(
        reload_request("o").config.model_config_list.config[0]
    )
    assert rpc.call("HandleReloadConfigRequest", again).status.error_code == 0
    assert served.reloads == [again.config]


def test_python_models_over_the_network_when_the_operator_allows_them(served: FakeCore) -> None:
    grants = ModelManagementGrants(allow_python_models_over_network=True)
    for rpc in client(served, grants=grants):
        request = reload_request("p", platform="python")
        assert rpc.call("HandleReloadConfigRequest", request).status.error_code == 0
    assert served.reloads == [request.config]


def test_config_changes_over_the_network_turned_off(served: FakeCore) -> None:
    for rpc in client(served, grants=ModelManagementGrants(allow_model_config_over_network=False)):
        assert rpc.status("HandleReloadConfigRequest", reload_request("o")) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "Model config changes over the network are turned off on this server "
            "(--allow_model_config_over_network=false); change --model_config_file instead",
        )
    assert served.reloads == []


def test_an_empty_model_list_over_the_network_takes_no_action(
    served: FakeCore, rpc: GrpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.SetInParent()
    with caplog.at_level(logging.INFO):
        answer = rpc.call("HandleReloadConfigRequest", request)
    assert (answer.status.error_code, answer.status.error_message) == (0, "")
    assert "Taking no action for an empty model_config_list" in caplog.text
    assert served.reloads == []


def test_reloads_are_not_counted_as_inference_requests(
    served: FakeCore, rpc: GrpcClient, metrics: ServerMetrics
) -> None:
    rpc.call("HandleReloadConfigRequest", reload_request("a"))
    rpc.call("GetModelStatus", status_request("half_plus_two"))
    rpc.call("GetModelMetadata", metadata_request("half_plus_two", "signature_def"))
    rpc.status("GetModelStatus", status_request("nope"))
    assert metrics.request_count._values == {}
    assert metrics.request_latency._values == {}


# -- deadlines ---------------------------------------------------------------------------------


def test_a_deadline_shorter_than_the_model_call(served: FakeCore) -> None:
    gate = Gate()
    served.add("gated", gate.servable)
    grpc_ = GrpcClient(data_plane(served))
    try:
        request = predict_request("gated", [1.5])
        assert grpc_.status("Predict", request, timeout=0.05) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Deadline Exceeded",
        )
        assert gate.started.is_set() and served.held == 1  # the call still runs, held
        gate.open()
        served.assert_released()
        # The services keep serving, the gated model included.
        answer = grpc_.call("Predict", predict_request("half_plus_two", [[1.0]]))
        assert answer.outputs["y"].float_val == [2.5]
        assert grpc_.call("Predict", request, timeout=None).outputs["x"].float_val == [1.5]
    finally:
        gate.open()
        grpc_.close()
    served.assert_released()


def test_a_deadline_bounds_classify_too(served: FakeCore) -> None:
    gate = Gate()
    served.add("gated", gate.servable)
    grpc_ = GrpcClient(data_plane(served))
    try:
        status = grpc_.status("Classify", classify_request("gated", "classify", 1.0), timeout=0.05)
        assert status == (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        gate.open()
        served.assert_released()
        answer = grpc_.call("Classify", classify_request("gated", "classify", 1.0))
        assert answer.result.classifications[0].classes[0].score == 1.0
    finally:
        gate.open()
        grpc_.close()


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_count_every_inference_call_and_time_the_good_ones(
    rpc: GrpcClient, metrics: ServerMetrics
) -> None:
    for _ in range(2):
        rpc.call("Predict", predict_request("half_plus_two", [1.0]))
    rpc.error("Predict", predict_request("half_plus_two", [1.0], alias="not_an_input"))
    rpc.call("Classify", classify_request("half_plus_two", "classify_x_to_y", 1.0, 2.0))
    rpc.call("Regress", regress_request("half_plus_two", "regress_x_to_y", 1.0))
    rpc.call("MultiInference", multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")], 1.0))
    rpc.error("Predict", predict_request("nope", [1.0]))
    rpc.error("Predict", predict_pb2.PredictRequest())

    count = metrics.request_count.value
    assert count("half_plus_two", "OK") == 5
    assert count("half_plus_two", "INVALID_ARGUMENT") == 1
    assert count("nope", "NOT_FOUND") == 1
    assert count("", "INVALID_ARGUMENT") == 1  # no model spec: no name
    # only the good calls are timed, by API and with the GRPC entrypoint
    latency = metrics.request_latency.count
    assert latency("half_plus_two", "Predict", "GRPC") == 2
    for api in ("Classify", "Regress", "MultiInference"):
        assert latency("half_plus_two", api, "GRPC") == 1
    assert latency("nope", "Predict", "GRPC") == 0
    assert metrics.runtime_latency.count("half_plus_two", "Predict", "TF1") == 2
    assert metrics.request_example_count_total.value("half_plus_two") == 4


# -- decoded size limits -------------------------------------------------------------------------


def fill_request(dims: tuple[int, ...]) -> predict_pb2.PredictRequest:
    """A predict on two_io's "fail" signature (int32 "code") with a DT_FLOAT of shape `dims`
    and one float_val, which TFS's fill rule expands to the whole shape."""
    request = predict_request("two_io", signature_name="fail")
    code = request.inputs["code"]
    code.dtype = DataType.DT_FLOAT
    for size in dims:
        code.tensor_shape.dim.add().size = size
    code.float_val.append(1.0)
    return request


def test_the_35_byte_request_of_issue_11_is_refused_without_allocating(rpc: GrpcClient) -> None:
    """Finding 2: a few bytes of tensor that fill 256 MiB. servo's main decoded it (and then
    refused its dtype); now it is refused from its shape, before anything is allocated."""
    request = fill_request((67108864,))
    assert len(request.inputs["code"].SerializeToString()) < 20
    tracemalloc.start()
    try:
        code, details = rpc.status("Predict", request)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (code, details) == (
        INVALID,
        "tensor parsing error: code (Tensor of shape [67108864] and type DT_FLOAT would take "
        "268435456 bytes decoded, over the limit of 134217728 bytes per tensor "
        "(--max_decoded_bytes_per_tensor))",
    )
    assert peak < 1 << 20


def test_the_limits_are_the_services_own(served: FakeCore) -> None:
    """Two inputs each under the limit per tensor, over the limit per request together."""
    limits = DecodeLimits(max_tensor_bytes=1000, max_request_bytes=1500)
    limited = GrpcClient(data_plane(served), decode_limits=limits)
    try:
        request = predict_request("two_io", [[1.0, 2.0]] * 100, "a")  # 800 bytes
        request.inputs["tag"].CopyFrom(tensor([b"ab"] * 20, None))  # 20 x (41 + 2)
        code, details = limited.status("Predict", request)
        assert code == INVALID
        assert details.startswith("tensor parsing error: ")
        assert details.endswith(
            "would take the request's decoded tensors to 1660 bytes, over the limit of 1500 "
            "bytes per request (--max_decoded_bytes_per_request))"
        )
        del request.inputs["a"].tensor_shape.dim[:]
        request.inputs["a"].CopyFrom(tensor([[1.0, 2.0]] * 50))
        answer = limited.call("Predict", request)
        assert len(answer.outputs["sum"].float_val) == 50
        code, details = limited.status("Predict", fill_request((251,)))  # 1004 bytes
        assert code == INVALID
        assert "1004 bytes decoded, over the limit of 1000 bytes per tensor" in details
    finally:
        limited.close()
    served.assert_released()


def test_examples_with_a_context_are_counted_before_the_context_is_copied(
    served: FakeCore,
) -> None:
    """The context is in every example the model is given: 200 examples of a 1 MB context are
    200 MB, refused before they are joined."""
    context = example(x=1.0)
    context.features.feature["pad"].bytes_list.value.append(b"p" * 1_000_000)
    size = len(context.SerializeToString())
    limits = DecodeLimits(max_tensor_bytes=100 * 2**20)
    limited = GrpcClient(data_plane(served), decode_limits=limits)
    try:
        regress = regress_request("half_plus_two", "regress_x_to_y", context=context)
        regress.input.example_list_with_context.examples.extend([example()] * 200)
        multi = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")])
        multi.input.CopyFrom(regress.input)
        classify = classify_request("half_plus_two", "classify_x_to_y")
        classify.input.CopyFrom(regress.input)
        requests = {"Regress": regress, "Classify": classify, "MultiInference": multi}
        for method, request in requests.items():
            tracemalloc.start()
            try:
                code, details = limited.status(method, request)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert (code, details) == (
                INVALID,
                f"The request's 200 examples would take {200 * (size + 41)} bytes decoded, over "
                f"the limit of {100 * 2**20} bytes per tensor (--max_decoded_bytes_per_tensor)",
            ), method
            assert peak < 4 * size, method  # the request's own bytes, never 200 copies
        del regress.input.example_list_with_context.examples[50:]
        assert len(limited.call("Regress", regress).result.regressions) == 50
    finally:
        limited.close()
    served.assert_released()


# -- malformed messages --------------------------------------------------------------------------


REQUEST_MESSAGES = {
    "Predict": "PredictRequest",
    "Classify": "ClassificationRequest",
    "Regress": "RegressionRequest",
    "MultiInference": "MultiInferenceRequest",
    "GetModelMetadata": "GetModelMetadataRequest",
    "GetModelStatus": "GetModelStatusRequest",
    "HandleReloadConfigRequest": "ReloadConfigRequest",
}
REQUEST_MESSAGES = {m: f"tensorflow.serving.{r}" for m, r in REQUEST_MESSAGES.items()}
REQUEST_MESSAGES |= {  # the Open Inference Protocol's
    m: f"inference.{m}Request" for m in RPCS if RPCS[m][0] == "inference.GRPCInferenceService"
}


@pytest.mark.parametrize("method", list(RPCS))
def test_bytes_that_are_not_the_message_are_invalid_argument(
    rpc: GrpcClient, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 9: UNKNOWN and a traceback per request on servo's main."""
    with pytest.raises(Aborted) as err:
        rpc.call_bytes(method, b"\xff\xff\xff garbage")
    message = REQUEST_MESSAGES[method]
    assert (err.value.code, err.value.details) == (
        INVALID,
        f"The request is not a {message} in protobuf's wire format: Wire format was corrupt",
    )
    assert "Traceback" not in caplog.text


def test_malformed_messages_are_counted_and_warned_of_at_a_bounded_rate(
    served: FakeCore, metrics: ServerMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    plane = data_plane(served, metrics=metrics)
    malformed_log = MalformedLog(interval=60.0, clock=lambda: now[0])
    client = GrpcClient(plane)
    client.services.malformed_log = malformed_log
    caplog.set_level(logging.WARNING, "servo.apis.grpc.service")
    try:
        for _ in range(100):
            with pytest.raises(Aborted):
                client.call_bytes("Predict", b"\x08")
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == [
            "Refused a malformed gRPC request to Predict, not a "
            "tensorflow.serving.PredictRequest: Wire format was corrupt (and 0 more since the "
            "last such warning; this warning is written at most every 60 s)"
        ]
        now[0] = 60.0
        with pytest.raises(Aborted):
            client.call_bytes("Regress", b"\x08")
        assert len(caplog.records) == 2
        assert "request to Regress, not a tensorflow.serving.RegressionRequest" in (
            caplog.records[1].getMessage()
        )
        assert "(and 99 more since the last such warning" in caplog.records[1].getMessage()
    finally:
        client.close()
    assert metrics.request_count.value("", "INVALID_ARGUMENT") == 101
