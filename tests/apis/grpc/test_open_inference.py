"""The Open Inference Protocol's gRPC service (in process, over the fake core): health and
metadata, ModelInfer with typed contents and raw contents, versions and labels, its errors,
and the same answer as TFS's Predict on the same model."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from servo import tensor_codec
from servo.core.servable_state import ManagerState
from servo.core.status import Code, Status
from servo.protos import open_inference_pb2 as pb
from servo.protos import predict_pb2
from tests.support.inprocess import FakeCore, GrpcClient, data_plane

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def client(served: FakeCore) -> Iterator[GrpcClient]:
    c = GrpcClient(data_plane(served))
    yield c
    c.close()


def test_health_and_server_metadata(served: FakeCore, client: GrpcClient) -> None:
    assert client.call("ServerLive", pb.ServerLiveRequest()).live
    assert client.call("ServerReady", pb.ServerReadyRequest()).ready
    metadata = client.call("ServerMetadata", pb.ServerMetadataRequest())
    assert (metadata.name, list(metadata.extensions)) == ("servo", [])  # no repository here
    assert client.call("ModelReady", pb.ModelReadyRequest(name="mlp")).ready
    assert client.call("ModelReady", pb.ModelReadyRequest(name="two_versions", version="canary"))
    # Readiness is an answer, not an error: false for a loading or unknown model.
    served.set_state("loading", 1, ManagerState.LOADING)
    assert not client.call("ModelReady", pb.ModelReadyRequest(name="loading")).ready
    assert not client.call("ModelReady", pb.ModelReadyRequest(name="nope")).ready
    assert not client.call("ServerReady", pb.ServerReadyRequest()).ready


def test_model_metadata(served: FakeCore, client: GrpcClient) -> None:
    metadata = client.call("ModelMetadata", pb.ModelMetadataRequest(name="mlp"))
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        "mlp",
        ["1"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 16])
    ]
    served.set_state("failed", 3, ManagerState.END, Status(Code.NOT_FOUND, "no model.onnx"))
    code, details = client.status("ModelMetadata", pb.ModelMetadataRequest(name="failed"))
    assert (
        code == grpc.StatusCode.NOT_FOUND and "version 3 END: NOT_FOUND: no model.onnx" in details
    )


def _infer(model: str, **inputs: np.ndarray) -> pb.ModelInferRequest:
    """A request whose inputs travel raw, as tritonclient sends them."""
    request = pb.ModelInferRequest(model_name=model, id="r-9")
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else {"float32": "FP32"}[array.dtype.name]
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if array.dtype == object:
            request.raw_input_contents.append(
                b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
            )
        else:
            request.raw_input_contents.append(array.astype("<f4").tobytes())
    return request


def test_raw_contents_in_and_out_match_tfs_predict(client: GrpcClient) -> None:
    x = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 16)
    answer = client.call("ModelInfer", _infer("mlp", x=x))
    assert (answer.model_name, answer.model_version, answer.id) == ("mlp", "1", "r-9")
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [2, 4])
    v2 = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(2, 4)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "mlp"
    tensor_codec.from_ndarray(x, into=predict.inputs["x"])
    tfs = tensor_codec.to_ndarray(client.call("Predict", predict).outputs["y"])
    np.testing.assert_array_equal(v2, tfs)


def test_typed_contents_several_inputs_and_the_outputs_asked_for(client: GrpcClient) -> None:
    request = pb.ModelInferRequest(model_name="two_io")
    a = request.inputs.add(name="a", datatype="FP32", shape=[2, 2])
    a.contents.fp32_contents.extend([1, 2, 3, 4])
    tag = request.inputs.add(name="tag", datatype="BYTES", shape=[2])
    tag.contents.bytes_contents.extend([b"ab", b"\xff\x00"])
    request.outputs.add(name="tag_bytes")
    answer = client.call("ModelInfer", request)
    assert [o.name for o in answer.outputs] == ["tag_bytes"]
    assert answer.raw_output_contents[0] == (
        struct.pack("<I", 2) + b"ba" + struct.pack("<I", 2) + b"\x00\xff"
    )


def test_versions_and_labels(client: GrpcClient) -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    for version, answered in [("", "124"), ("123", "123"), ("stable", "123"), ("canary", "124")]:
        request = _infer("two_versions", x=x)
        request.model_version = version
        assert client.call("ModelInfer", request).model_version == answered


def _shared_memory(request: pb.ModelInferRequest) -> None:
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"


def _numeric_signature_name(request: pb.ModelInferRequest) -> None:
    request.parameters["signature_name"].int64_param = 1


@pytest.mark.parametrize(
    ("change", "details"),
    [
        (lambda r: r.ClearField("inputs"), "The request has no inputs"),
        (
            lambda r: r.raw_input_contents.append(b""),
            "The request has 1 input(s) but 2 raw_input_contents",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
            "Input 'x' has contents while the request has raw_input_contents: use one",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 12),
            "Input 'x' has shape [2, 16] and datatype FP32: 128 bytes expected, 12 given",
        ),
        (_shared_memory, "Input 'x': servo has no shared-memory extension"),
        (_numeric_signature_name, 'The "signature_name" parameter must be a string_param'),
    ],
)
def test_bad_requests(
    client: GrpcClient, change: Callable[[pb.ModelInferRequest], object], details: str
) -> None:
    request = _infer("mlp", x=np.zeros((2, 16), np.float32))
    change(request)
    code, got = client.status("ModelInfer", request)
    assert code == INVALID and got.startswith(details), got


def test_unknown_model_and_typed_contents_errors(client: GrpcClient) -> None:
    code, _ = client.status("ModelInfer", _infer("never_served", x=np.zeros(2, np.float32)))
    assert code == grpc.StatusCode.NOT_FOUND
    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 16])
    tensor.contents.fp32_contents.extend([0.0] * 15)
    assert client.status("ModelInfer", request) == (
        INVALID,
        "Input 'x' has shape [1, 16], 16 element(s), but its fp32_contents holds 15",
    )
    code, details = client.status("ModelInfer", pb.ModelInferRequest(model_name="mlp"))
    assert (code, details) == (INVALID, "The request has no inputs")


def test_malformed_bytes_are_refused_as_the_protocols_message(client: GrpcClient) -> None:
    from tests.support.inprocess import Aborted

    with pytest.raises(Aborted) as err:
        client.call_bytes("ModelInfer", b"\x08")
    assert err.value.code == INVALID
    assert "not a inference.ModelInferRequest in protobuf's wire format" in err.value.details
