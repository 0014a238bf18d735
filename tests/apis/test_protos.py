"""servo's own .proto files: fresh generated code, and wire facts identical to TF's and TFS's.

The descriptor comparison is the guard on the wire facts: every servo message with a TensorFlow
or TFS counterpart must agree with it field by field (name, number, type, label, JSON name,
oneof, packing, referenced types), and a field servo leaves out must be reserved.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, text_format
from google.protobuf.descriptor import FieldDescriptor

from tests.support.testdata import TfsModels

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "servo" / "protos"
SERVO_MODULES = sorted(p.stem for p in PROTO_DIR.glob("*_pb2.py"))
# The Open Inference Protocol's messages have no TensorFlow counterpart: tritonclient's are
# theirs (tests/apis/test_open_inference_protos.py compares them).
OPEN_INFERENCE_MODULE = "open_inference_pb2"
TFS_MODULES = [m for m in SERVO_MODULES if m != OPEN_INFERENCE_MODULE]

# TensorFlow's and TFS's modules that define every counterpart.
TF_MODULES = [
    "tensorflow.core.framework.types_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.example.feature_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.protobuf.named_tensor_pb2",
    "tensorflow.core.protobuf.config_pb2",
    "tensorflow.core.protobuf.error_codes_pb2",
    "tensorflow.tsl.profiler.protobuf.profiler_options_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.input_pb2",
    "tensorflow_serving.apis.logging_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.session_service_pb2",
    "tensorflow_serving.apis.status_pb2",
    "tensorflow_serving.config.file_system_storage_path_source_pb2",
    "tensorflow_serving.config.log_collector_config_pb2",
    "tensorflow_serving.config.logging_config_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
]

# Messages servo deliberately trims: the fields it leaves out must be reserved.
PARTIAL = {"tensorflow.TensorProto", "tensorflow.RunOptions", "tensorflow.RunMetadata"}
PARTIAL_NESTED = {"tensorflow.TensorInfo.CompositeTensor"}

# Messages the installed packages do not ship (TFS keeps them out of its pip package); their
# facts, read from TFS's source, are written out here instead: name -> [(field, number, type,
# repeated, referenced type)].
_I64 = "google.protobuf.Int64Value"
NO_COUNTERPART: dict[str, list[tuple[str, int, int, bool, str | None]]] = {
    "tensorflow.serving.BatchingParameters": [
        ("max_batch_size", 1, FieldDescriptor.TYPE_MESSAGE, False, _I64),
        ("batch_timeout_micros", 2, FieldDescriptor.TYPE_MESSAGE, False, _I64),
        ("max_enqueued_batches", 3, FieldDescriptor.TYPE_MESSAGE, False, _I64),
        ("num_batch_threads", 4, FieldDescriptor.TYPE_MESSAGE, False, _I64),
        (
            "thread_pool_name",
            5,
            FieldDescriptor.TYPE_MESSAGE,
            False,
            "google.protobuf.StringValue",
        ),
        ("allowed_batch_sizes", 6, FieldDescriptor.TYPE_INT64, True, None),
        ("pad_variable_length_inputs", 7, FieldDescriptor.TYPE_BOOL, False, None),
        (
            "enable_large_batch_splitting",
            8,
            FieldDescriptor.TYPE_MESSAGE,
            False,
            "google.protobuf.BoolValue",
        ),
        ("max_execution_batch_size", 9, FieldDescriptor.TYPE_MESSAGE, False, _I64),
    ],
    "tensorflow.serving.PrometheusConfig": [
        ("enable", 1, FieldDescriptor.TYPE_BOOL, False, None),
        ("path", 2, FieldDescriptor.TYPE_STRING, False, None),
    ],
    "tensorflow.serving.MonitoringConfig": [
        (
            "prometheus_config",
            1,
            FieldDescriptor.TYPE_MESSAGE,
            False,
            "tensorflow.serving.PrometheusConfig",
        ),
    ],
    "tensorflow.serving.SSLConfig": [
        ("server_key", 1, FieldDescriptor.TYPE_STRING, False, None),
        ("server_cert", 2, FieldDescriptor.TYPE_STRING, False, None),
        ("custom_ca", 3, FieldDescriptor.TYPE_STRING, False, None),
        ("client_verify", 4, FieldDescriptor.TYPE_BOOL, False, None),
    ],
}

# The profiler service's messages: TensorFlow's pip package ships no Python module of them,
# only the C++ header generated from the .proto, whose accessor comments state every field
# (`// uint64 duration_ms = 1;`): servo's messages are checked against that header.
PROFILER_HEADER = "tensorflow/include/tsl/profiler/protobuf/profiler_service.pb.h"
FROM_PROFILER_HEADER = {
    "tensorflow.ToolRequestOptions",
    "tensorflow.ProfileRequest",
    "tensorflow.ProfileRequest.ToolOptionsEntry",
    "tensorflow.ProfileToolData",
    "tensorflow.ProfileResponse",
    "tensorflow.TerminateRequest",
    "tensorflow.TerminateResponse",
    "tensorflow.MonitorRequest",
    "tensorflow.MonitorResponse",
}
# Servo's deliberate differences from the header: (message, field) -> servo's declaration.
# The XSpace travels as its serialized bytes (the same wire form as the message field).
PROFILER_RETYPED = {("tensorflow.ProfileResponse", "xspace"): "bytes xspace = 8"}

# What the brief promises servo defines (by TensorFlow's names).
REQUIRED = [
    "tensorflow.TensorShapeProto",
    "tensorflow.TensorProto",
    "tensorflow.Example",
    "tensorflow.Features",
    "tensorflow.Feature",
    "tensorflow.BytesList",
    "tensorflow.FloatList",
    "tensorflow.Int64List",
    "tensorflow.FeatureList",
    "tensorflow.FeatureLists",
    "tensorflow.SequenceExample",
    "tensorflow.TensorInfo",
    "tensorflow.SignatureDef",
    "tensorflow.serving.ModelSpec",
    "tensorflow.serving.PredictRequest",
    "tensorflow.serving.PredictResponse",
    "tensorflow.serving.ClassificationRequest",
    "tensorflow.serving.ClassificationResponse",
    "tensorflow.serving.Classifications",
    "tensorflow.serving.Class",
    "tensorflow.serving.ClassificationResult",
    "tensorflow.serving.RegressionRequest",
    "tensorflow.serving.RegressionResponse",
    "tensorflow.serving.Regression",
    "tensorflow.serving.RegressionResult",
    "tensorflow.serving.Input",
    "tensorflow.serving.ExampleList",
    "tensorflow.serving.ExampleListWithContext",
    "tensorflow.serving.InferenceTask",
    "tensorflow.serving.InferenceResult",
    "tensorflow.serving.MultiInferenceRequest",
    "tensorflow.serving.MultiInferenceResponse",
    "tensorflow.serving.GetModelMetadataRequest",
    "tensorflow.serving.GetModelMetadataResponse",
    "tensorflow.serving.SignatureDefMap",
    "tensorflow.serving.GetModelStatusRequest",
    "tensorflow.serving.GetModelStatusResponse",
    "tensorflow.serving.ModelVersionStatus",
    "tensorflow.serving.StatusProto",
    "tensorflow.serving.ReloadConfigRequest",
    "tensorflow.serving.ReloadConfigResponse",
    "tensorflow.serving.PredictionLog",
    "tensorflow.serving.ClassifyLog",
    "tensorflow.serving.RegressLog",
    "tensorflow.serving.PredictLog",
    "tensorflow.serving.MultiInferenceLog",
    "tensorflow.serving.SessionRunLog",
    "tensorflow.serving.LogMetadata",
    "tensorflow.serving.SessionRunRequest",
    "tensorflow.serving.SessionRunResponse",
    "tensorflow.serving.ModelServerConfig",
    "tensorflow.serving.ModelConfigList",
    "tensorflow.serving.ModelConfig",
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Latest",
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.All",
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Specific",
    "tensorflow.serving.LoggingConfig",
    "tensorflow.serving.LogCollectorConfig",
    "tensorflow.serving.SamplingConfig",
    "tensorflow.serving.MonitoringConfig",
    "tensorflow.serving.PrometheusConfig",
    "tensorflow.serving.SSLConfig",
    "tensorflow.serving.BatchingParameters",
    "tensorflow.ProfileOptions",
    "tensorflow.ProfileRequest",
    "tensorflow.ProfileResponse",
    "tensorflow.TerminateRequest",
    "tensorflow.MonitorRequest",
]


def _unprefix(name: str) -> str:
    assert name.startswith("servo."), name
    return name.removeprefix("servo.")


@pytest.fixture(scope="module")
def servo_files() -> list[descriptor.FileDescriptor]:
    return [importlib.import_module(f"servo.protos.{m}").DESCRIPTOR for m in TFS_MODULES]


@pytest.fixture(scope="module")
def tf_pool() -> descriptor_pool.DescriptorPool:
    import tensorflow_serving  # noqa: F401 - needed by this test

    for module in TF_MODULES:
        importlib.import_module(module)
    return descriptor_pool.Default()


def _messages(files: list[descriptor.FileDescriptor]) -> list[descriptor.Descriptor]:
    out: list[descriptor.Descriptor] = []

    def walk(message: descriptor.Descriptor) -> None:
        out.append(message)
        for nested in message.nested_types:
            walk(nested)

    for fd in files:
        for message in fd.message_types_by_name.values():
            walk(message)
    return out


def _enums(files: list[descriptor.FileDescriptor]) -> list[descriptor.EnumDescriptor]:
    out = []
    for fd in files:
        out.extend(fd.enum_types_by_name.values())
    for message in _messages(files):
        out.extend(message.enum_types)
    return out


def _reserved(message: descriptor.Descriptor) -> set[int]:
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    return {n for r in proto.reserved_range for n in range(r.start, r.end)}


def _oneof(field: FieldDescriptor) -> str | None:
    # proto3 `optional` fields sit in a synthetic oneof; presence is compared separately.
    oneof = field.containing_oneof
    if oneof is None or (field.has_presence and oneof.name == "_" + field.name):
        return None
    return oneof.name


def _referenced(field: FieldDescriptor) -> str | None:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return None


def _referenced_unprefixed(field: FieldDescriptor) -> str | None:
    ref = _referenced(field)
    return _unprefix(ref) if ref is not None and ref.startswith("servo.") else ref


def _field_facts(field: FieldDescriptor) -> tuple:
    return (
        field.name,
        field.number,
        field.type,
        field.is_repeated,
        field.json_name,
        _oneof(field),
        field.has_presence,
        field.is_packed,
        _referenced_unprefixed(field),
    )


# (a) ------------------------------------------------------------------------------------------


def test_generated_code_is_fresh() -> None:
    import grpc_tools  # noqa: F401 - needed by this test

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proto_has_a_module() -> None:
    assert {p.stem for p in PROTO_DIR.glob("*.proto")} == {m[: -len("_pb2")] for m in SERVO_MODULES}


# (b) ------------------------------------------------------------------------------------------


def test_servo_and_tensorflow_protos_load_side_by_side(servo_files, tf_pool) -> None:
    from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
    from tensorflow_serving.apis import predict_pb2 as tfs_predict_pb2

    from servo.protos import predict_pb2, tensor_pb2

    assert predict_pb2.PredictRequest is not tfs_predict_pb2.PredictRequest
    assert tensor_pb2.TensorProto.DESCRIPTOR.full_name == "servo.tensorflow.TensorProto"
    assert tf_tensor_pb2.TensorProto.DESCRIPTOR.full_name == "tensorflow.TensorProto"
    for name in ("servo.tensorflow.serving.PredictRequest", "tensorflow.serving.PredictRequest"):
        assert tf_pool.FindMessageTypeByName(name).full_name == name


def test_servo_protos_use_own_packages_and_no_services(servo_files) -> None:
    for fd in servo_files:
        assert fd.name.startswith("servo/protos/"), fd.name
        assert fd.package in {
            "servo.tensorflow",
            "servo.tensorflow.error",
            "servo.tensorflow.serving",
        }, fd.name
        # A service here would be served under /servo.tensorflow.serving.*: the wrong path.
        assert not fd.services_by_name, fd.name
        for dep in fd.dependencies:
            assert dep.name.startswith(("servo/protos/", "google/protobuf/")), dep.name


# (c) ------------------------------------------------------------------------------------------


def test_every_required_message_exists(servo_files) -> None:
    defined = {_unprefix(m.full_name) for m in _messages(servo_files)}
    assert set(REQUIRED) - defined == set()


def test_messages_match_tensorflow_field_by_field(servo_files, tf_pool) -> None:
    compared = 0
    for message in _messages(servo_files):
        name = _unprefix(message.full_name)
        if name in NO_COUNTERPART or name in FROM_PROFILER_HEADER:
            continue
        theirs = tf_pool.FindMessageTypeByName(name)
        assert message.GetOptions().map_entry == theirs.GetOptions().map_entry, name
        ours = {f.number: f for f in message.fields}
        extra = set(ours) - {f.number for f in theirs.fields}
        assert not extra, f"{name}: servo has fields TensorFlow lacks: {sorted(extra)}"
        for field in theirs.fields:
            if field.number not in ours:
                assert name in PARTIAL | PARTIAL_NESTED, f"{name} lacks field {field.name}"
                assert field.number in _reserved(message), f"{name}.{field.name} not reserved"
                continue
            assert _field_facts(ours[field.number]) == _field_facts(field), name
        assert _reserved(theirs) <= _reserved(message), f"{name}: reserved numbers differ"
        # Same oneofs with the same members (ignoring proto3 optional's synthetic ones).
        our_oneofs = {_oneof(f) for f in message.fields} - {None}
        assert our_oneofs == {_oneof(f) for f in theirs.fields if f.number in ours} - {None}
        compared += 1
    assert compared >= 70


def test_messages_without_installed_counterpart_match_tfs_source(servo_files) -> None:
    by_name = {_unprefix(m.full_name): m for m in _messages(servo_files)}
    for name, expected in NO_COUNTERPART.items():
        facts = [
            (f.name, f.number, f.type, f.is_repeated, _referenced_unprefixed(f))
            for f in by_name[name].fields
        ]
        assert sorted(facts) == sorted(expected), name


def _header_fields() -> dict[str, dict[int, str]]:
    """The installed TensorFlow's profiler_service.pb.h: message -> {number: declaration}."""
    import re

    import tensorflow

    header = Path(tensorflow.__file__).parent.parent / PROFILER_HEADER
    messages: dict[str, dict[int, str]] = {}
    current: dict[int, str] | None = None
    for line in header.read_text().splitlines():
        declared = re.match(r"class (?:PROTOBUF_EXPORT )?(\w+) final", line)
        if declared:
            name = declared.group(1).removesuffix("_DoNotUse").replace("_", ".")
            current = messages.setdefault(f"tensorflow.{name}", {})
            continue
        field = re.match(r"  // ((?:repeated )?\S+(?: \S+)? \w+ = (\d+));$", line)
        if field and current is not None:
            current[int(field.group(2))] = field.group(1)
    return messages


def _declaration(field: FieldDescriptor) -> str:
    """A servo field as protoc's header comment writes it (`repeated string tools = 3`)."""

    def type_name(f: FieldDescriptor) -> str:
        if f.message_type is not None:
            return "." + _unprefix(f.message_type.full_name)
        if f.enum_type is not None:
            return "." + _unprefix(f.enum_type.full_name)
        return descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)[len("TYPE_") :].lower()

    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{type_name(key)}, {type_name(value)}> {field.name} = {field.number}"
    repeated = "repeated " if field.is_repeated else ""
    return f"{repeated}{type_name(field)} {field.name} = {field.number}"


def test_profiler_messages_match_tensorflows_header(servo_files) -> None:
    header = _header_fields()
    by_name = {_unprefix(m.full_name): m for m in _messages(servo_files)}
    assert set(by_name) >= FROM_PROFILER_HEADER
    for name in FROM_PROFILER_HEADER - {"tensorflow.ProfileRequest.ToolOptionsEntry"}:
        message, theirs = by_name[name], header[name]
        ours = {f.number: f for f in message.fields}
        assert set(ours) <= set(theirs), f"{name}: servo has fields TensorFlow lacks"
        for number, declaration in theirs.items():
            field = ours.get(number)
            if field is None:
                assert number in _reserved(message), f"{name}: {declaration} not reserved"
                continue
            expected = PROFILER_RETYPED.get((name, field.name), declaration)
            assert _declaration(field) == expected, name


def test_enums_match_tensorflow(servo_files, tf_pool) -> None:
    enums = _enums(servo_files)
    assert {_unprefix(e.full_name) for e in enums} >= {
        "tensorflow.DataType",
        "tensorflow.error.Code",
        "tensorflow.serving.ModelType",
        "tensorflow.serving.ModelVersionStatus.State",
    }
    for enum in enums:
        theirs = tf_pool.FindEnumTypeByName(_unprefix(enum.full_name))
        assert [(v.name, v.number) for v in enum.values] == [
            (v.name, v.number) for v in theirs.values
        ], enum.full_name


def test_python_enums_match_the_protos() -> None:
    from servo.core.status import Code
    from servo.dtypes import DataType
    from servo.protos import error_codes_pb2, get_model_status_pb2, types_pb2

    for dtype in DataType:
        assert types_pb2.DataType.Value(dtype.name) == dtype.value
    for code in Code:
        assert error_codes_pb2.Code.Value(code.name) == code.value
    state = get_model_status_pb2.ModelVersionStatus.State
    assert list(state.items()) == [
        ("UNKNOWN", 0),
        ("START", 10),
        ("LOADING", 20),
        ("AVAILABLE", 30),
        ("UNLOADING", 40),
        ("END", 50),
    ]


# (d) ------------------------------------------------------------------------------------------


def _tfs_predict_request():
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.version.value = 123
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.5]], np.float32)))
    request.inputs["s"].CopyFrom(tf.make_tensor_proto([b"a", b"\xff\x00"]))
    request.inputs["h"].CopyFrom(tf.make_tensor_proto(np.array([1.5, 2], np.float16)))
    request.output_filter.append("y")
    request.client_id = b"me"
    return request


def test_predict_request_round_trips_through_servo(tf_pool) -> None:
    from tensorflow_serving.apis import predict_pb2 as tfs_predict_pb2

    from servo.protos import predict_pb2

    original = _tfs_predict_request()
    ours = predict_pb2.PredictRequest.FromString(original.SerializeToString())
    assert ours.model_spec.version.value == 123
    assert ours.inputs["x"].tensor_shape.dim[0].size == 2
    assert list(ours.output_filter) == ["y"]
    back = tfs_predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert back == original
    assert ours.SerializeToString(deterministic=True) == original.SerializeToString(
        deterministic=True
    )
    assert json_format.MessageToDict(ours) == json_format.MessageToDict(original)


def test_prediction_log_round_trips_through_servo(tf_pool) -> None:
    from tensorflow_serving.apis import prediction_log_pb2 as tfs_log_pb2

    from servo.protos import prediction_log_pb2

    log = tfs_log_pb2.PredictionLog()
    log.log_metadata.model_spec.name = "m"
    log.log_metadata.sampling_config.sampling_rate = 0.5
    log.predict_log.request.CopyFrom(_tfs_predict_request())
    log.predict_log.response.outputs["y"].float_val.append(2.5)
    wire = log.SerializeToString(deterministic=True)
    ours = prediction_log_pb2.PredictionLog.FromString(wire)
    assert ours.WhichOneof("log_type") == "predict_log"
    assert ours.SerializeToString(deterministic=True) == wire


def test_status_json_uses_tfs_names(tf_pool) -> None:
    from tensorflow_serving.apis import get_model_status_pb2 as tfs_status_pb2

    from servo.protos import get_model_status_pb2

    def build(module):
        response = module.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = 123
        status.state = module.ModelVersionStatus.AVAILABLE
        status.status.error_message = ""
        return response

    expected = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    for module in (get_model_status_pb2, tfs_status_pb2):
        got = json_format.MessageToDict(
            build(module),
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=False,
        )
        assert got == expected


MODEL_CONFIG = """
model_config_list {
  config {
    name: "m"
    base_path: "/models/m"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 42 }
    version_labels { key: "canary" value: 43 }
    logging_config { sampling_config { sampling_rate: 0.01 } }
  }
}
"""


def test_config_text_format_parses_like_tfs(tf_pool) -> None:
    from tensorflow_serving.config import model_server_config_pb2 as tfs_config_pb2

    from servo.protos import model_server_config_pb2

    ours = text_format.Parse(MODEL_CONFIG, model_server_config_pb2.ModelServerConfig())
    theirs = text_format.Parse(MODEL_CONFIG, tfs_config_pb2.ModelServerConfig())
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    config = ours.model_config_list.config[0]
    assert config.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert dict(config.version_labels) == {"stable": 42, "canary": 43}


@pytest.mark.parametrize(
    ("file", "module", "message"),
    [
        ("good_model_config.txt", "model_server_config_pb2", "ModelServerConfig"),
        ("batching_config.txt", "batching_parameters_pb2", "BatchingParameters"),
        ("monitoring_config.txt", "monitoring_config_pb2", "MonitoringConfig"),
    ],
)
def test_tfs_sample_configs_parse(
    file: str, module: str, message: str, tfs_models: TfsModels
) -> None:
    cls = getattr(importlib.import_module(f"servo.protos.{module}"), message)
    parsed = text_format.Parse(Path(tfs_models.path(file)).read_text(), cls())
    assert parsed.ByteSize() > 0
