"""Fuzzing both protocols (hypothesis, bounded): a client's mistake is never a server error.

REST: predict, classify, regress, status and metadata requests in every form TFS takes (row
and column predict bodies, examples with a context, b64 values, versions and labels), with
values and shapes of any kind; random JSON and random bytes; gzip, broken gzip and other
Content-Encodings. gRPC: random but well-formed PredictRequest, ClassificationRequest,
RegressionRequest, MultiInferenceRequest, GetModelMetadataRequest and GetModelStatusRequest
messages, and random bytes, sent over a real grpc.aio server on a loopback port in this
process (so that bytes that do not parse meet grpcio's own decoding path, as on a server).

Every answer must be a success or an error of a client's kind: never an HTTP status >= 500
nor a gRPC code whose HTTP status would be (INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS,
UNAVAILABLE, DEADLINE_EXCEEDED), and every REST answer is JSON with an `error` message when
it fails. The models are the API tests' catalog less those built to fail or to sleep
(`slow`, `counter`, and two_io's "fail" signature), over a fake core (tests/support/
inprocess.py). Each property runs a fixed number of examples (`EXAMPLES`, 300; the variable
SERVO_FUZZ_EXAMPLES sets another), no deadline.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servo.apis.grpc.message_budget import MessageBudget
from servo.apis.grpc.registrar import Registrar
from servo.apis.grpc.service import MODEL_SERVICE, PREDICTION_SERVICE, Services, server_options
from servo.apis.rest.app import RestOptions
from servo.apis.rest.json_codec import http_status
from servo.cli.flags import DEFAULT_GRPC_MAX_BUFFERED_MESSAGE_BYTES
from servo.core.status import Code, ServoError
from servo.dtypes import DataType, to_numpy
from servo.platforms.servable import ModelServable, Signature, TensorSpec
from servo.protos import (
    classification_pb2,
    example_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)
from servo.tensor_codec import from_ndarray
from tests.support.catalog import ServedModel, load_into, pick
from tests.support.inprocess import FakeCore, RestClient, data_plane

# Per property; SERVO_FUZZ_EXAMPLES sets another bound for a longer run.
EXAMPLES = int(os.environ.get("SERVO_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MODELS = (
    "half_plus_two",
    "two_versions",
    "tflite",
    "mlp",
    "vocab",
    "word_count",
    "two_io",
    "summer",
    "custom",
)
SIGNATURES = (
    "serving_default",
    "classify_x_to_y",
    "regress_x_to_y",
    "regress_x_to_y2",
    "classify_x2_to_y3",
    "regress_x2_to_y3",
    "echo",
    "halves",
    "complexes",
    "tensorflow/serving/predict",
    "",
)
INPUT_NAMES = ("x", "y", "inputs", "a", "tag", "h", "c", "text", "keys", "words", "")
LABELS = ("stable", "canary", "nope")
# The gRPC codes whose HTTP status is a server error.
SERVER_ERRORS = {c for c in Code if http_status(c) >= 500}


@pytest.fixture(scope="module")
def fuzz_core(
    api_catalog: list[ServedModel], api_servables: dict[str, dict[int, ModelServable]]
) -> FakeCore:
    return load_into(FakeCore(), pick(api_catalog, *MODELS), api_servables)


def names(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Mostly one of `known`, else any text (never two_io's "fail", built to fail)."""
    return st.one_of(
        st.sampled_from(known), st.sampled_from(known), st.sampled_from(known), st.text(max_size=12)
    ).filter(lambda s: s != "fail")


def numbers() -> st.SearchStrategy[Any]:
    return (
        st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.booleans()
    )


# -- REST ------------------------------------------------------------------------------------

SCALARS = (
    numbers()
    | st.none()
    | st.text(max_size=10)
    | st.binary(max_size=8).map(lambda b: {"b64": base64.b64encode(b).decode()})
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(names(INPUT_NAMES), inner, max_size=4)
    ),
    max_leaves=24,
)


def tensor_values() -> st.SearchStrategy[Any]:
    """A tensor in JSON: a scalar, a list of them, a list of lists (ragged or not)."""
    return (
        SCALARS
        | st.lists(SCALARS, max_size=20)
        | st.lists(st.lists(numbers(), max_size=18), max_size=4)
        | JSON
    )


def predict_bodies() -> st.SearchStrategy[Any]:
    named = st.dictionaries(names(INPUT_NAMES), tensor_values(), max_size=3)
    rows = st.lists(tensor_values() | named, max_size=4)
    body = st.fixed_dictionaries(
        {},
        optional={
            "signature_name": names(SIGNATURES) | JSON,
            "instances": rows | JSON,
            "inputs": named | tensor_values(),
        },
    )
    return body


def feature_values() -> st.SearchStrategy[Any]:
    return (
        numbers()
        | st.text(max_size=10)
        | st.lists(numbers(), max_size=6)
        | st.lists(st.text(max_size=6), max_size=4)
        | st.binary(max_size=8).map(lambda b: {"b64": base64.b64encode(b).decode()})
        | JSON
    )


def example_bodies() -> st.SearchStrategy[Any]:
    example = st.dictionaries(names(INPUT_NAMES), feature_values(), max_size=3)
    return st.fixed_dictionaries(
        {},
        optional={
            "signature_name": names(SIGNATURES) | JSON,
            "examples": st.lists(example, max_size=4) | JSON,
            "context": example | JSON,
        },
    )


def model_paths() -> st.SearchStrategy[str]:
    model = names(MODELS).filter(lambda s: "/" not in s and ":" not in s)
    version = st.sampled_from(["", "", "", "/versions/1", "/versions/123", "/versions/124"]) | (
        st.integers(min_value=0, max_value=2**64).map(lambda v: f"/versions/{v}")
    )
    label = (
        names(LABELS).filter(lambda s: "/" not in s and ":" not in s).map(lambda s: f"/labels/{s}")
    )
    return st.builds(
        lambda m, tail: f"/v1/models/{m}{tail}", model, st.one_of(version, version, label)
    )


ENCODINGS = st.sampled_from([""] * 6 + ["identity", "gzip", "gzip-broken", "deflate", "br", "x-"])


def encoded(body: bytes, encoding: str) -> tuple[bytes, dict[str, str]]:
    if encoding == "gzip":
        return gzip.compress(body), {"content-encoding": "gzip"}
    if encoding == "gzip-broken":
        return gzip.compress(body)[:-5], {"content-encoding": "gzip"}
    return body, ({"content-encoding": encoding} if encoding else {})


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@pytest.fixture(scope="module")
def rest(fuzz_core: FakeCore) -> Iterator[RestClient]:
    client = RestClient(data_plane(fuzz_core), RestOptions(max_body_bytes=100_000))
    yield client
    client.close()
    fuzz_core.assert_released()


# TFS's one 5xx for a request: JSON has no spelling of half or complex values in the columnar
# form, and TFS answers UNIMPLEMENTED (501) for them (the row form wraps it in a 400).
UNIMPLEMENTED_IN_TFS = "Conversion of JSON Value: "


def check_rest(rest: RestClient, method: str, path: str, body: bytes, encoding: str = "") -> None:
    body, headers = encoded(body, encoding)
    answer = rest.request(method, path, body, headers)  # checks the answer is JSON
    if answer.status >= 400:
        assert isinstance(answer.error, str) and answer.error
    if answer.status == 501 and answer.error.startswith(UNIMPLEMENTED_IN_TFS):
        return
    assert answer.status < 500, (method, path, body[:300], headers, answer.status, answer.body)


@given(
    model_paths(),
    st.sampled_from([":predict", ":classify", ":regress"]),
    predict_bodies() | example_bodies(),
    ENCODINGS,
)
@FUZZ
def test_rest_inference_bodies(
    rest: RestClient, path: str, api: str, doc: Any, encoding: str
) -> None:
    check_rest(rest, "POST", path + api, json_bytes(doc), encoding)


@given(
    model_paths(),
    st.sampled_from([":predict", ":classify", ":regress"]),
    JSON.map(json_bytes) | st.binary(max_size=200) | st.text(max_size=100).map(str.encode),
)
@FUZZ
def test_rest_random_json_and_bytes(rest: RestClient, path: str, api: str, body: bytes) -> None:
    check_rest(rest, "POST", path + api, body)


@given(
    model_paths(),
    st.sampled_from(["", "/metadata"]),
    st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "DELETE"]),
    st.binary(max_size=50),
)
@FUZZ
def test_rest_status_and_metadata(
    rest: RestClient, path: str, tail: str, method: str, body: bytes
) -> None:
    check_rest(rest, method, path + tail, body)


# -- gRPC ------------------------------------------------------------------------------------


class WireServices:
    """TFS's services on a grpc.aio server on a free loopback port, and a channel to it, both
    on one event loop of this process; calls send bytes and get (code, details) back. The
    services register as servo registers them (servo.apis.grpc.registrar): with the bound on
    the messages held, at its default, and the access log's wrapper; once a call has ended,
    the bound holds nothing."""

    def __init__(self, core: FakeCore) -> None:
        self.plane = data_plane(core)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.server = grpc.aio.server(options=server_options(""))
        self.budget = MessageBudget(DEFAULT_GRPC_MAX_BUFFERED_MESSAGE_BYTES)
        registrar = Registrar(self.server, self.budget, log=True)
        registrar.add_generic_rpc_handlers(Services(self.plane).generic_handlers())
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    def call(self, path: str, request: bytes) -> tuple[grpc.StatusCode, str]:
        async def send() -> tuple[grpc.StatusCode, str]:
            try:
                await self.channel.unary_unary(path)(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            return grpc.StatusCode.OK, ""

        answer = self.loop.run_until_complete(send())
        assert self.budget.held == 0, f"{path}: {self.budget.held} bytes still held"
        return answer

    def close(self) -> None:
        async def stop() -> None:
            await self.channel.close()
            await self.server.stop(None)

        self.loop.run_until_complete(stop())
        self.plane.runner.close()
        self.loop.close()


@pytest.fixture(scope="module")
def wire(fuzz_core: FakeCore) -> Iterator[WireServices]:
    services = WireServices(fuzz_core)
    yield services
    services.close()
    fuzz_core.assert_released()


GRPC_SERVER_ERRORS = {grpc.StatusCode[c.name] for c in SERVER_ERRORS}


# UNIMPLEMENTED answers that are TFS's own: for a MultiInference task of a method it has no
# inference for.
UNIMPLEMENTED = re.compile(r"Unsupported signature method_name: ")


def check_grpc(wire: WireServices, path: str, request: bytes) -> None:
    code, details = wire.call(path, request)
    if code != grpc.StatusCode.OK:
        assert details
    if code == grpc.StatusCode.UNIMPLEMENTED and UNIMPLEMENTED.match(details):
        return
    assert code not in GRPC_SERVER_ERRORS, (path, request[:300], code, details)


def model_specs(draw: st.DrawFn, into: Any) -> None:
    """Fills a ModelSpec field (or leaves it out)."""
    if draw(st.integers(0, 9)) == 0:
        return
    spec = into.model_spec
    spec.name = draw(names(MODELS))
    choice = draw(st.sampled_from(["none", "none", "version", "label"]))
    if choice == "version":
        spec.version.value = draw(
            st.sampled_from([1, 123, 124]) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        )
    elif choice == "label":
        spec.version_label = draw(names(LABELS))
    if draw(st.booleans()):
        spec.signature_name = draw(names(SIGNATURES))


# TensorFlow's DataType numbers: all of them, a few past the end.
DTYPES = st.integers(min_value=0, max_value=30) | st.sampled_from([101, 119, 999])


@st.composite
def tensors(draw: st.DrawFn, into: Any) -> None:
    """A TensorProto of any dtype and a small shape (at most 64 elements, or one dim of any
    size with no values), with values in any of its value fields."""
    into.dtype = draw(DTYPES)
    if draw(st.booleans()):
        into.tensor_shape.unknown_rank = True
    dims = draw(st.lists(st.integers(min_value=-2, max_value=4), max_size=3))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        dims = [draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))]  # no values
    elif math.prod(max(d, 1) for d in dims) > 64:
        dims = dims[:1]
    for size in dims:
        into.tensor_shape.dim.add().size = size
    if len(dims) == 1 and abs(dims[0]) > 64:
        return
    small = st.lists
    field = draw(
        st.sampled_from(
            ["float", "double", "int", "int64", "string", "bool", "half", "scomplex", "content"]
        )
    )
    if field == "float":
        into.float_val.extend(draw(small(st.floats(width=32), max_size=8)))
    elif field == "double":
        into.double_val.extend(draw(small(st.floats(), max_size=8)))
    elif field == "int":
        into.int_val.extend(draw(small(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    elif field == "int64":
        into.int64_val.extend(draw(small(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif field == "string":
        into.string_val.extend(draw(small(st.binary(max_size=8), max_size=8)))
    elif field == "bool":
        into.bool_val.extend(draw(small(st.booleans(), max_size=8)))
    elif field == "half":
        into.half_val.extend(draw(small(st.integers(0, 2**16 - 1), max_size=8)))
    elif field == "scomplex":
        into.scomplex_val.extend(draw(small(st.floats(width=32), max_size=8)))
    else:
        into.tensor_content = draw(st.binary(max_size=64))


@st.composite
def predict_requests(draw: st.DrawFn) -> bytes:
    request = predict_pb2.PredictRequest()
    model_specs(draw, request)
    for name in draw(st.lists(names(INPUT_NAMES), max_size=3, unique=True)):
        draw(tensors(request.inputs[name]))
    request.output_filter.extend(draw(st.lists(names((*INPUT_NAMES, "y", "sum")), max_size=2)))
    return request.SerializeToString()


def features(draw: st.DrawFn, into: Any) -> None:
    for name in draw(st.lists(names(INPUT_NAMES), max_size=3, unique=True)):
        feature = into.feature[name]
        kind = draw(st.sampled_from(["float", "int64", "bytes", "none"]))
        if kind == "float":
            feature.float_list.value.extend(draw(st.lists(st.floats(width=32), max_size=4)))
        elif kind == "int64":
            feature.int64_list.value.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
            )
        elif kind == "bytes":
            feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))


def inputs(draw: st.DrawFn, into: Any) -> None:
    """An Input: a list of examples, the same with a context, or nothing."""
    kind = draw(st.sampled_from(["list", "context", "none"]))
    if kind == "none":
        return
    if kind == "list":
        examples = into.example_list.examples
    else:
        examples = into.example_list_with_context.examples
        features(draw, into.example_list_with_context.context.features)
    for _ in range(draw(st.integers(0, 3))):
        example: example_pb2.Example = examples.add()
        features(draw, example.features)


@st.composite
def example_requests(draw: st.DrawFn, kind: type) -> bytes:
    request = kind()
    model_specs(draw, request)
    inputs(draw, request.input)
    return request.SerializeToString()  # type: ignore[no-any-return]


@st.composite
def multi_inference_requests(draw: st.DrawFn) -> bytes:
    request = inference_pb2.MultiInferenceRequest()
    for _ in range(draw(st.integers(0, 3))):
        task = request.tasks.add()
        model_specs(draw, task)
        task.method_name = draw(
            st.sampled_from(
                [
                    "tensorflow/serving/classify",
                    "tensorflow/serving/regress",
                    "tensorflow/serving/predict",
                ]
            )
            | st.text(max_size=12)
        )
    inputs(draw, request.input)
    return request.SerializeToString()


@st.composite
def metadata_requests(draw: st.DrawFn) -> bytes:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    model_specs(draw, request)
    request.metadata_field.extend(
        draw(st.lists(st.sampled_from(["signature_def"]) | st.text(max_size=8), max_size=2))
    )
    return request.SerializeToString()


@st.composite
def status_requests(draw: st.DrawFn) -> bytes:
    request = get_model_status_pb2.GetModelStatusRequest()
    model_specs(draw, request)
    return request.SerializeToString()


def prediction(method: str) -> str:
    return f"/{PREDICTION_SERVICE}/{method}"


MESSAGES = st.one_of(
    predict_requests().map(lambda r: (prediction("Predict"), r)),
    example_requests(classification_pb2.ClassificationRequest).map(
        lambda r: (prediction("Classify"), r)
    ),
    example_requests(regression_pb2.RegressionRequest).map(lambda r: (prediction("Regress"), r)),
    multi_inference_requests().map(lambda r: (prediction("MultiInference"), r)),
    metadata_requests().map(lambda r: (prediction("GetModelMetadata"), r)),
    status_requests().map(lambda r: (f"/{MODEL_SERVICE}/GetModelStatus", r)),
)
METHODS = st.sampled_from(
    [
        prediction(m)
        for m in ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata")
    ]
    + [f"/{MODEL_SERVICE}/GetModelStatus", f"/{MODEL_SERVICE}/HandleReloadConfigRequest"]
)


@given(MESSAGES)
@FUZZ
def test_grpc_messages(wire: WireServices, message: tuple[str, bytes]) -> None:
    check_grpc(wire, *message)


@given(METHODS, st.binary(max_size=200) | MESSAGES.map(lambda m: m[1][:-1] + b"\xff"))
@FUZZ
def test_grpc_random_bytes(wire: WireServices, path: str, request: bytes) -> None:
    check_grpc(wire, path, request)


# -- requests built from the models' own signatures -------------------------------------------


def signature_choice(draw: st.DrawFn, core: FakeCore) -> tuple[str, int, str, Signature]:
    """A model, one of its versions, and one of its signatures (never two_io's "fail")."""
    name = draw(st.sampled_from(sorted(core.models)))
    version = draw(st.sampled_from(sorted(core.models[name])))
    signatures = core.models[name][version].signatures
    key = draw(st.sampled_from(sorted(k for k in signatures if k != "fail")))
    return name, version, key, signatures[key]


def shape_of(draw: st.DrawFn, spec: TensorSpec, batch: int) -> list[int]:
    """The spec's shape with its unknown dims filled (a leading one with the request's batch
    size); one time in eight a dim added, dropped or resized. At most 64 elements."""
    if spec.shape is None:
        dims = draw(st.lists(st.integers(1, 3), max_size=2))
    else:
        dims = [
            (batch if i == 0 else draw(st.integers(1, 3))) if d < 0 else d
            for i, d in enumerate(spec.shape)
        ]
    if draw(st.integers(0, 7)) == 0:
        change = draw(st.sampled_from(["add", "drop", "resize"]))
        if change == "add":
            dims.append(draw(st.integers(0, 3)))
        elif dims and change == "drop":
            dims.pop()
        elif dims:
            dims[draw(st.integers(0, len(dims) - 1))] = draw(st.integers(0, 4))
    return dims if math.prod(dims) <= 64 else [1] * len(dims)


def array_of(draw: st.DrawFn, dtype: DataType, shape: list[int]) -> np.ndarray:
    """Values of `dtype` (float32 where servo holds no such type), any finite or not."""
    try:
        kind = to_numpy(dtype)
    except ServoError:
        kind = np.dtype(np.float32)
    n = math.prod(shape)
    if kind.kind == "f":
        width = min(64, 8 * kind.itemsize)
        values: list[Any] = draw(st.lists(st.floats(width=width), min_size=n, max_size=n))
    elif kind.kind in "iu":
        info = np.iinfo(kind)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n))
    elif kind.kind == "b":
        values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    elif kind.kind == "c":
        values = [
            complex(a, b)
            for a, b in draw(
                st.lists(
                    st.tuples(st.floats(width=32), st.floats(width=32)), min_size=n, max_size=n
                )
            )
        ]
    else:
        strings = st.binary(max_size=8) | st.text(max_size=8).map(str.encode)
        values = draw(st.lists(strings, min_size=n, max_size=n))
        return np.array(values, dtype=object).reshape(shape)
    return np.array(values, dtype=kind).reshape(shape)


def json_of(array: Any) -> Any:
    """An array as TFS's JSON writes a tensor: nested lists; bytes as text, or b64 when they
    are not UTF-8; complex values as [real, imaginary] (JSON has none)."""

    def one(value: Any) -> Any:
        if isinstance(value, bytes):
            try:
                return value.decode()
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode()}
        if isinstance(value, complex):
            return [value.real, value.imag]
        return value

    if isinstance(array, np.ndarray):
        return one(array.item()) if array.ndim == 0 else [json_of(row) for row in array]
    return one(array.item() if isinstance(array, np.generic) else array)


@st.composite
def signature_inputs(
    draw: st.DrawFn, core: FakeCore
) -> tuple[str, int, str, Signature, dict[str, np.ndarray]]:
    """A model, version and signature, and inputs for it: every input of the signature, of
    its dtype and shape, but now and then one missing, an extra one, or another dtype."""
    name, version, key, signature = signature_choice(draw, core)
    batch = draw(st.integers(1, 3))
    arrays = {}
    for alias, spec in signature.inputs.items():
        dtype = spec.dtype
        if draw(st.integers(0, 9)) == 0:
            dtype = draw(st.sampled_from(list(DataType)))
        arrays[alias] = array_of(draw, dtype, shape_of(draw, spec, batch))
    if arrays and draw(st.integers(0, 9)) == 0:
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    if draw(st.integers(0, 9)) == 0:
        arrays[draw(names(INPUT_NAMES))] = np.zeros([batch], np.float32)
    return name, version, key, signature, arrays


@st.composite
def signature_predict_bodies(draw: st.DrawFn, core: FakeCore) -> tuple[str, bytes]:
    """A REST predict path and body for a signature, in the row or the column form."""
    name, version, key, _, arrays = draw(signature_inputs(core))
    path = f"/v1/models/{name}" + draw(st.sampled_from(["", f"/versions/{version}"])) + ":predict"
    doc: dict[str, Any] = (
        {"signature_name": key} if key != "serving_default" or draw(st.booleans()) else {}
    )
    if draw(st.booleans()):  # columns
        columns = {alias: json_of(a) for alias, a in arrays.items()}
        doc["inputs"] = (
            next(iter(columns.values())) if len(columns) == 1 and draw(st.booleans()) else columns
        )
    else:  # rows: one value per row, or an object of the inputs per row
        rows = min((len(a) for a in arrays.values() if a.ndim), default=0)
        if len(arrays) == 1 and draw(st.booleans()):
            (only,) = arrays.values()
            doc["instances"] = json_of(only) if only.ndim else [json_of(only)]
        else:
            doc["instances"] = [
                {alias: json_of(a[i] if a.ndim else a) for alias, a in arrays.items()}
                for i in range(rows)
            ]
    return path, json_bytes(doc)


@st.composite
def signature_predict_messages(draw: st.DrawFn, core: FakeCore) -> bytes:
    """A PredictRequest for a signature, its tensors in value fields or tensor_content."""
    name, version, key, signature, arrays = draw(signature_inputs(core))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if draw(st.booleans()):
        request.model_spec.version.value = version
    request.model_spec.signature_name = key
    for alias, array in arrays.items():
        tensor = request.inputs[alias]
        try:
            from_ndarray(array, use_tensor_content=draw(st.booleans()), into=tensor)
        except ServoError:  # a dtype the codec cannot write: as float32
            from_ndarray(array.astype(np.float32), into=tensor)
    outputs = sorted(signature.outputs)
    request.output_filter.extend(
        draw(st.lists(st.sampled_from(outputs), max_size=2, unique=True)) if outputs else []
    )
    return request.SerializeToString()


@given(st.data())
@FUZZ
def test_rest_predict_from_signatures(
    rest: RestClient, fuzz_core: FakeCore, data: st.DataObject
) -> None:
    path, body = data.draw(signature_predict_bodies(fuzz_core))
    check_rest(rest, "POST", path, body)


@given(st.data())
@FUZZ
def test_grpc_predict_from_signatures(
    wire: WireServices, fuzz_core: FakeCore, data: st.DataObject
) -> None:
    check_grpc(wire, prediction("Predict"), data.draw(signature_predict_messages(fuzz_core)))
