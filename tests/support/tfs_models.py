"""Writes stand-ins for TensorFlow Serving's test models, from code, with TensorFlow.

TFS's own test data (`../shared/testdata/tfs`, see tests/support/testdata.py) is laid beside
the checkout only in CI. The suite runs on these models instead, so that a clone needs nothing
else; tests marked `tfs_testdata` check each of them against the real one it stands for.

Each model has the name, layout (`<base>/<version>/...`), signatures, tensor names, dtypes,
shapes and values of TFS's model of that name, as servo reads them; the graphs are this file's
own (op names and order, the TensorFlow version that wrote them and such differ).

- `saved_model_half_plus_two_cpu/00000123`: TF1 SavedModel, y = a*x + b with a = 0.5, b = 2.
  `serving_default` predicts y:0 from x:0 (float [-1, 1]). The Example-based signatures take
  tf_example:0 (string, unknown rank), parsed with features "x" (float [1]) and "x2" (float
  [1], default 0): `classify_x_to_y` (scores y:0), `regress_x_to_y` (y:0), `regress_x_to_y2`
  (y2:0 = a*x + c, c = 3). `regress_x2_to_y3` takes x2:0 (float [-1, 1]) to y3:0 = a2*x2 + c2
  (a2 = 0.5, c2 = 3). An asset `foo.txt`; the main op stores the asset's path in a variable.
- `saved_model_half_plus_two_2_versions/{00000123,00000124}`: two identical versions of
  half_plus_two with a, b, c only (y3 = a*x2 + c), and `classify_x2_to_y3` besides; the init
  op is stored as a legacy init op, as in TFS's export.
- `saved_model_half_plus_three/00000123`: an old export: its TensorInfos record no shapes.
  `serving_default` x:0 -> y:0 = 0.5*x + 3 (x parsed from tf_example, or fed);
  `tensorflow/serving/regress` tf_example:0 -> Identity:0 (the signature says DT_FLOAT for the
  serialized Examples, as TFS's does). Legacy init op and an asset, as TFS's.
- `saved_model_counter/00000123`: TF1 state in a reference variable `counter` (0.0); predict
  signatures `get_counter`, `incr_counter`, `incr_counter_by` (input delta:0, float, unknown
  rank) and `reset_counter`, each with one output "output" of type DT_FLOAT_REF, shape [].
- `saved_model_half_plus_two_tf2_cpu/00000123`: TF2 SavedModel (tf.saved_model.save) of a
  module with variables a, b, c and an asset: `serving_default` (x: float [1], default [0])
  and the same classify/regress signatures as TF1's, all with TF2's generated tensor names.
- `saved_model_half_plus_two_tflite/00000123/model.tflite`: TF Lite y = a*x + b, tensors "x"
  and "y" of shape [1, 1], no signatures of any kind.
- `saved_model_half_plus_two_tflite_with_sigdef/00000123/model.tflite`: the same with input
  tensor "tflite_input" and a `serving_default` SignatureDef (x -> "tflite_input:0", y ->
  "y:0") in the metadata entry `signature_defs_metadata`, where TFS's TF Lite session reads
  SignatureDefs; no native TF Lite signatures.
- `bad_half_plus_two/00000123`: not a SavedModel: a graph and its variables in the
  checkpoint layout that predates SavedModel (`export.meta`, `export.*`, `checkpoint`).
- `good_model_config.txt`, `bad_model_config.txt`, `batching_config.txt`,
  `monitoring_config.txt`: the texts of TFS's config files of those names.

Usage: python -m tests.support.tfs_models OUTDIR (OUTDIR must not exist yet, or be empty).
The suite runs this through tests/support/testdata.py, which caches the result.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSION = "00000123"
SECOND_VERSION = "00000124"
ASSET_NAME = "foo.txt"
ASSET_TEXT = "asset-file-contents"

MODELS = (
    "saved_model_half_plus_two_cpu",
    "saved_model_half_plus_two_2_versions",
    "saved_model_half_plus_three",
    "saved_model_counter",
    "saved_model_half_plus_two_tf2_cpu",
    "saved_model_half_plus_two_tflite",
    "saved_model_half_plus_two_tflite_with_sigdef",
    "bad_half_plus_two",
)

CONFIGS = {
    "good_model_config.txt": """\
model_config_list: {
  config: {
    name: "half_plus_two",
    base_path: "${TEST_HALF_PLUS_TWO_DIR}",
    model_platform: "tensorflow"
  },
  config: {
    name: "half_plus_three",
    base_path: "${TEST_HALF_PLUS_THREE_DIR}",
    model_platform: "tensorflow"
  }
}
""",
    "bad_model_config.txt": "improperly formatted file",
    "batching_config.txt": """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
""",
    "monitoring_config.txt": """\
prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
""",
}

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def write_all(out: Path) -> None:
    """Writes every model and config text into `out` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    with tempfile.TemporaryDirectory() as scratch:
        asset = Path(scratch) / ASSET_NAME
        asset.write_text(ASSET_TEXT)
        write_half_plus_two_cpu(out / "saved_model_half_plus_two_cpu" / VERSION, asset)
        two = out / "saved_model_half_plus_two_2_versions"
        write_half_plus_two_2_versions(two / VERSION, asset)
        shutil.copytree(two / VERSION, two / SECOND_VERSION)  # TFS's two are the same bytes
        write_half_plus_three(out / "saved_model_half_plus_three" / VERSION, asset)
        write_counter(out / "saved_model_counter" / VERSION)
        write_half_plus_two_tf2(out / "saved_model_half_plus_two_tf2_cpu" / VERSION, asset)
    write_tflite(out / "saved_model_half_plus_two_tflite" / VERSION, "x", sigdef=False)
    write_tflite(
        out / "saved_model_half_plus_two_tflite_with_sigdef" / VERSION, "tflite_input", sigdef=True
    )
    write_bad_half_plus_two(out / "bad_half_plus_two" / VERSION)
    for name, text in CONFIGS.items():
        (out / name).write_text(text)


# -- TF1 SavedModels -------------------------------------------------------------------------


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the v1 APIs' deprecation notices
    return tf


def _info(tensor: Any, *, shape: bool = True, dtype: int | None = None) -> Any:
    """A TensorInfo of `tensor`: its shape (unless `shape` is False, as exports before shapes
    were recorded) and its dtype, or `dtype` where the model's signature says another."""
    tf = _tf()
    from tensorflow.core.protobuf import meta_graph_pb2

    if shape and dtype is None:
        return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)
    info = meta_graph_pb2.TensorInfo(name=tensor.name)
    info.dtype = tensor.dtype.as_datatype_enum if dtype is None else dtype
    if shape:
        info.tensor_shape.CopyFrom(tensor.shape.as_proto())
    return info


def _signature(method: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    signature = meta_graph_pb2.SignatureDef(method_name=method)
    for alias, info in inputs.items():
        signature.inputs[alias].CopyFrom(info)
    for alias, info in outputs.items():
        signature.outputs[alias].CopyFrom(info)
    return signature


def _variable(value: Any, name: str, **kwargs: Any) -> Any:
    """A TF1 reference variable (VariableV2), as TFS's TF1 exports have."""
    return _tf().compat.v1.Variable(value, name=name, use_resource=False, **kwargs)


def _examples(with_x2: bool = True) -> tuple[Any, dict[str, Any]]:
    """The tf_example placeholder (string, unknown rank) and its parsed features."""
    tf = _tf()
    v1 = tf.compat.v1
    serialized = v1.placeholder(tf.string, name="tf_example")
    features = {"x": v1.io.FixedLenFeature([1], tf.float32)}
    if with_x2:
        features["x2"] = v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0])
    return serialized, v1.io.parse_example(serialized, features)


def _batch_of_one(tensor: Any) -> Any:
    """`tensor` with the static shape [-1, 1] that TFS's exports record for a parsed batch
    (TF's parse_example of an unknown-rank input leaves the rank unknown)."""
    tensor.set_shape([None, 1])
    return tensor


def _save_tf1(
    export_dir: Path,
    build: Callable[[], dict[str, Any]],
    *,
    asset: Path | None = None,
    legacy_init_op: bool = False,
    device: str | None = None,
) -> None:
    """Builds a graph with `build` (which returns the signature map) and saves it as a TF1
    SavedModel with tag "serve". With `asset`, the file is the model's asset and the init op
    stores the asset's path (fed at load) in a string variable; `legacy_init_op` moves the
    init op to the collection older exports used."""
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        with graph.device(device):
            signatures = build()
        init_op = None
        if asset is not None:
            asset_path = tf.constant(str(asset))
            v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
            holder = _variable("", "filename_tensor", collections=[], trainable=False)
            init_op = tf.group(v1.assign(holder, asset_path))
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=init_op,
            )
            builder.save()
    if legacy_init_op and init_op is not None:
        _move_init_op_to_legacy_collection(export_dir / "saved_model.pb")


def _move_init_op_to_legacy_collection(pb_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import constants

    saved_model = saved_model_pb2.SavedModel.FromString(pb_path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        collections = meta_graph.collection_def
        collections[constants.LEGACY_INIT_OP_KEY].CopyFrom(collections[constants.MAIN_OP_KEY])
        del collections[constants.MAIN_OP_KEY]
    pb_path.write_bytes(saved_model.SerializeToString())


def _half_plus_two_graph(*, own_x2_weights: bool, classify_x2: bool) -> dict[str, Any]:
    """half_plus_two's graph and signatures; `own_x2_weights` gives y3 variables a2 and c2
    of its own (the _cpu export), `classify_x2` adds classify_x2_to_y3 (the 2_versions one)."""
    tf = _tf()
    a = _variable(0.5, "a")
    b = _variable(2.0, "b")
    c = _variable(3.0, "c")
    serialized, parsed = _examples()
    x = _batch_of_one(tf.identity(parsed["x"], name="x"))
    y = tf.identity(a * x + b, name="y")
    y2 = tf.identity(a * x + c, name="y2")
    x2 = _batch_of_one(tf.identity(parsed["x2"], name="x2"))
    if own_x2_weights:
        a2, c2 = _variable(0.5, "a2"), _variable(3.0, "c2")
    else:
        a2, c2 = a, c
    y3 = tf.identity(a2 * x2 + c2, name="y3")
    examples = {"inputs": _info(serialized)}
    signatures = {
        "serving_default": _signature(PREDICT, {"x": _info(x)}, {"y": _info(y)}),
        "classify_x_to_y": _signature(CLASSIFY, examples, {"scores": _info(y)}),
        "regress_x_to_y": _signature(REGRESS, examples, {"outputs": _info(y)}),
        "regress_x_to_y2": _signature(REGRESS, examples, {"outputs": _info(y2)}),
        "regress_x2_to_y3": _signature(REGRESS, {"inputs": _info(x2)}, {"outputs": _info(y3)}),
    }
    if classify_x2:
        signatures["classify_x2_to_y3"] = _signature(
            CLASSIFY, {"inputs": _info(x2)}, {"scores": _info(y3)}
        )
    return signatures


def write_half_plus_two_cpu(export_dir: Path, asset: Path) -> None:
    _save_tf1(
        export_dir,
        lambda: _half_plus_two_graph(own_x2_weights=True, classify_x2=False),
        asset=asset,
        device="/cpu:0",
    )


def write_half_plus_two_2_versions(export_dir: Path, asset: Path) -> None:
    _save_tf1(
        export_dir,
        lambda: _half_plus_two_graph(own_x2_weights=False, classify_x2=True),
        asset=asset,
        legacy_init_op=True,
    )


def write_half_plus_three(export_dir: Path, asset: Path) -> None:
    def build() -> dict[str, Any]:
        tf = _tf()
        v1 = tf.compat.v1
        from tensorflow.core.framework import types_pb2

        a = _variable(0.5, "a")
        b = _variable(3.0, "b")
        c = _variable(3.0, "c")
        serialized, parsed = _examples(with_x2=False)
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(a * x, b, name="y")
        x2 = v1.placeholder(tf.float32, name="x2")
        tf.add(a * x2, c, name="y2")  # in the graph, in no signature, as in TFS's
        regressed = tf.identity(y, name="Identity")
        return {
            "serving_default": _signature(
                PREDICT, {"x": _info(x, shape=False)}, {"y": _info(y, shape=False)}
            ),
            "tensorflow/serving/regress": _signature(
                REGRESS,
                {"inputs": _info(serialized, shape=False, dtype=types_pb2.DT_FLOAT)},
                {"outputs": _info(regressed, shape=False)},
            ),
        }

    _save_tf1(export_dir, build, asset=asset, legacy_init_op=True)


def write_counter(export_dir: Path) -> None:
    def build() -> dict[str, Any]:
        tf = _tf()
        v1 = tf.compat.v1
        counter = _variable(0.0, "counter")
        ref = tf.compat.v1.get_default_graph().get_tensor_by_name("counter:0")  # float_ref
        with tf.name_scope("incr_counter_op"):
            incr = v1.assign_add(counter, 1.0)
        delta = v1.placeholder(tf.float32, name="delta")
        with tf.name_scope("incr_counter_by_op"):
            incr_by = v1.assign_add(counter, delta)
        with tf.name_scope("reset_counter_op"):
            reset = v1.assign(counter, 0.0)
        return {
            "get_counter": _signature(PREDICT, {}, {"output": _info(ref)}),
            "incr_counter": _signature(PREDICT, {}, {"output": _info(incr)}),
            "incr_counter_by": _signature(
                PREDICT, {"delta": _info(delta)}, {"output": _info(incr_by)}
            ),
            "reset_counter": _signature(PREDICT, {}, {"output": _info(reset)}),
        }

    _save_tf1(export_dir, build)


def write_bad_half_plus_two(version_dir: Path) -> None:
    """half_plus_two's graph saved as a checkpoint and MetaGraph (the layout before
    SavedModel): no saved_model.pb, so no SavedModel loader takes it."""
    tf = _tf()
    v1 = tf.compat.v1
    version_dir.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        a = _variable(0.5, "a")
        b = _variable(2.0, "b")
        x = v1.placeholder(tf.float32, name="x")
        tf.add(a * x, b, name="y")
        saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            saver.save(session, str(version_dir / "export"))


# -- TF2 SavedModel --------------------------------------------------------------------------


def write_half_plus_two_tf2(export_dir: Path, asset: Path) -> None:
    tf = _tf()
    features = {
        "x": tf.io.FixedLenFeature([1], tf.float32),
        "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    }
    examples = tf.TensorSpec([None], tf.string)
    one_float = tf.TensorSpec([1], tf.float32)

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")
            self.asset = tf.saved_model.Asset(str(asset))

        def _x(self, inputs: Any) -> Any:
            return tf.io.parse_example(inputs, features)["x"]

        @tf.function(input_signature=[one_float])
        def predict(self, x: Any = tf.constant([0.0])) -> dict[str, Any]:  # noqa: B008
            # The default becomes the signature's `defaults` entry, as in TFS's export.
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy(self, inputs: Any) -> dict[str, Any]:
            return {"outputs": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy2(self, inputs: Any) -> dict[str, Any]:
            return {"outputs": self.a * self._x(inputs) + self.c}

        @tf.function(input_signature=[one_float])
        def regress_x2y3(self, inputs: Any) -> dict[str, Any]:
            return {"outputs": self.a * inputs + self.c}

        @tf.function(input_signature=[examples])
        def classify_xy(self, inputs: Any) -> dict[str, Any]:
            return {"scores": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[one_float])
        def classify_x2y3(self, inputs: Any) -> dict[str, Any]:
            return {"scores": self.a * inputs + self.c}

    module = HalfPlusTwo()
    signatures = {
        "serving_default": module.predict,
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy,
        "classify_x2_to_y3": module.classify_x2y3,
    }
    tf.saved_model.save(module, str(export_dir), signatures=signatures)


# -- TF Lite ---------------------------------------------------------------------------------


def write_tflite(version_dir: Path, input_name: str, *, sigdef: bool) -> None:
    """y = a*x + b as a TF Lite flatbuffer written field by field with TF Lite's schema:
    inputs and outputs of shape [1, 1], and no native signatures (TFS's models predate them);
    with `sigdef`, a serving_default SignatureDef in the model's metadata."""
    import flatbuffers
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as fb

    buffers: list[Any] = [fb.BufferT()]  # buffer 0 is the empty one, by convention

    def buffer(data: bytes | None = None) -> int:
        entry = fb.BufferT()
        if data is not None:
            entry.data = np.frombuffer(data, dtype=np.uint8)
        buffers.append(entry)
        return len(buffers) - 1

    tensors: list[Any] = []

    def tensor(name: str, shape: list[int], data: bytes | None = None) -> int:
        entry = fb.TensorT()
        entry.name, entry.type, entry.shape = name, fb.TensorType.FLOAT32, shape
        entry.buffer = buffer(data)
        tensors.append(entry)
        return len(tensors) - 1

    x = tensor(input_name, [1, 1])
    a = tensor("a", [], np.float32(0.5).tobytes())
    b = tensor("b", [], np.float32(2.0).tobytes())
    product = tensor("Mul", [1, 1])
    y = tensor("y", [1, 1])

    codes: list[Any] = []

    def operator(name: str, inputs: list[int], out: int) -> Any:
        """A builtin op (MUL or ADD, with no fused activation)."""
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = getattr(fb.BuiltinOperator, name.upper())
        code.version = 1
        codes.append(code)
        op = fb.OperatorT()
        op.opcodeIndex = len(codes) - 1
        op.inputs, op.outputs = inputs, [out]
        op.builtinOptionsType = getattr(fb.BuiltinOptions, f"{name}Options")
        op.builtinOptions = getattr(fb, f"{name}OptionsT")()
        return op

    subgraph = fb.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors = tensors
    subgraph.inputs, subgraph.outputs = [x], [y]
    subgraph.operators = [operator("Mul", [x, a], product), operator("Add", [product, b], y)]

    def metadata(name: str, data: bytes) -> Any:
        entry = fb.MetadataT()
        entry.name, entry.buffer = name, buffer(data)
        return entry

    model = fb.ModelT()
    model.version = 3
    model.description = "servo's stand-in for a TFS test model (tests/support/tfs_models.py)"
    model.subgraphs = [subgraph]
    model.operatorCodes = codes
    model.metadata = [metadata("min_runtime_version", b"1.5.0")]
    if sigdef:
        model.metadata.append(
            metadata("signature_defs_metadata", _signature_defs_metadata(input_name))
        )
    model.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    version_dir.mkdir(parents=True)
    (version_dir / "model.tflite").write_bytes(bytes(builder.Output()))


def _signature_defs_metadata(input_name: str) -> bytes:
    """The flexbuffer map of signature key -> serialized SignatureDef that TF Lite's
    signature_def_util stores, and TFS's TF Lite session reads, as strings."""
    from flatbuffers import flexbuffers
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(name: str) -> Any:
        entry = meta_graph_pb2.TensorInfo(name=name, dtype=types_pb2.DT_FLOAT)
        entry.tensor_shape.dim.add(size=1)
        entry.tensor_shape.dim.add(size=1)
        return entry

    signature = _signature(PREDICT, {"x": info(f"{input_name}:0")}, {"y": info("y:0")})
    serialized = signature.SerializeToString(deterministic=True)
    builder = flexbuffers.Builder()
    with builder.Map():
        # The Python builder writes strings as UTF-8 text: an ASCII SignatureDef (as this one
        # is: short names, no negative dims) is stored byte for byte.
        builder.String("serving_default", serialized.decode("ascii"))
    return bytes(builder.Finish())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(f"usage: python -m tests.support.tfs_models OUTDIR\n\n{__doc__}", file=sys.stderr)
        return 2
    write_all(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
