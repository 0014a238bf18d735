"""The onnx platform: answers equal to ONNX Runtime's own, dtypes and dims, session options, the
graphs it refuses. The contract every platform keeps is checked in test_conformance.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import onnx as onnxp
from servo.platforms.options import PlatformOptions

OPTIONS = PlatformOptions()


@pytest.fixture(scope="module")
def mlp(mlp_version_dir: str) -> Iterator[onnxp.OnnxServable]:
    servable = onnxp.load(mlp_version_dir, OPTIONS)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def reference(mlp_version_dir: str) -> ort.InferenceSession:
    """ONNX Runtime called directly on the same file."""
    return ort.InferenceSession(
        str(Path(mlp_version_dir) / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def write_model(directory: Path, graph: onnx.GraphProto, opset: int = 17) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    return str(directory)


def identity_graph(*tensors: tuple[str, int, list]) -> onnx.GraphProto:
    """One Identity per (name, ONNX type, shape): input `<name>` -> output `<name>_out`."""
    return helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in tensors],
        "identities",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in tensors],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in tensors],
    )


def test_aliases_and_tensor_names_are_the_graphs(mlp: onnxp.OnnxServable) -> None:
    sig = mlp.signatures["serving_default"]
    assert {a: spec.tensor_name for a, spec in sig.inputs.items()} == {"x": "x"}
    assert {a: spec.tensor_name for a, spec in sig.outputs.items()} == {"y": "y"}


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_mlp_answers_equal_onnx_runtime(
    mlp: onnxp.OnnxServable, reference: ort.InferenceSession, batch: int
) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    out = mlp.run(mlp.signatures["serving_default"], {"x": x})
    (expected,) = reference.run(["y"], {"x": x})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], expected)
    assert out["y"].shape == (batch, 4)
    # Real weights: not every output is the same.
    assert np.unique(out["y"]).size > 1


def test_dtypes_and_dims_are_mapped(tmp_path: Path) -> None:
    graph = identity_graph(
        ("f16", TensorProto.FLOAT16, ["n", 2]),
        ("i64", TensorProto.INT64, [None]),
        ("u8", TensorProto.UINT8, [3]),
        ("flag", TensorProto.BOOL, []),
        ("d", TensorProto.DOUBLE, ["a", "b", 4]),
    )
    servable = onnxp.load(write_model(tmp_path / "1", graph), OPTIONS)
    try:
        sig = servable.signatures["serving_default"]
        got = {k: (v.dtype, v.shape) for k, v in sig.inputs.items()}
        assert got == {
            "f16": (DataType.DT_HALF, (-1, 2)),
            "i64": (DataType.DT_INT64, (-1,)),
            "u8": (DataType.DT_UINT8, (3,)),
            "flag": (DataType.DT_BOOL, ()),
            "d": (DataType.DT_DOUBLE, (-1, -1, 4)),
        }
        assert set(sig.outputs) == {f"{k}_out" for k in got}
        feeds = {
            "f16": np.ones((5, 2), np.float16),
            "i64": np.arange(4, dtype=np.int64),
            "u8": np.array([1, 2, 3], np.uint8),
            "flag": np.array(True),
            "d": np.zeros((1, 2, 4)),
        }
        out = servable.run(sig, feeds)
        for name, value in feeds.items():
            np.testing.assert_array_equal(out[f"{name}_out"], value)
            assert out[f"{name}_out"].dtype == value.dtype
    finally:
        servable.close()


def test_strings_are_bytes_in_and_out(tmp_path: Path) -> None:
    graph = identity_graph(("s", TensorProto.STRING, ["n"]))
    servable = onnxp.load(write_model(tmp_path / "1", graph), OPTIONS)
    try:
        sig = servable.signatures["serving_default"]
        assert sig.inputs["s"].dtype == DataType.DT_STRING
        words = np.array([b"caf\xc3\xa9", b"", b"abc"], dtype=object)
        out = servable.run(sig, {"s": words})["s_out"]
        assert out.dtype == object
        assert list(out) == [b"caf\xc3\xa9", b"", b"abc"]
    finally:
        servable.close()


def test_unsupported_types_fail_at_load(tmp_path: Path) -> None:
    # A sequence output: no TensorFlow dtype can hold it.
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ServoError) as err:
        onnxp.load(write_model(tmp_path / "1", graph), OPTIONS)
    assert err.value.code == Code.UNIMPLEMENTED
    assert "seq" in err.value.message and "seq(tensor(float))" in err.value.message


def test_invalid_graph_is_invalid_argument(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ServoError) as err:
        onnxp.load(write_model(tmp_path / "1", graph), OPTIONS)
    assert err.value.code == Code.INVALID_ARGUMENT


def test_session_options_from_platform_options_and_extra(mlp_version_dir: str) -> None:
    options = PlatformOptions(intra_op_parallelism=1, inter_op_parallelism=1)
    so = onnxp._session_options(options)
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
    options = PlatformOptions(
        intra_op_parallelism=1,
        extra={
            "onnx_intra_op_num_threads": 2,
            "onnx_inter_op_num_threads": 3,
            "onnx_execution_mode": "parallel",
            "onnx_graph_optimization_level": "basic",
            "onnx_session_config": {"session.intra_op.allow_spinning": "0"},
        },
    )
    so = onnxp._session_options(options)
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 3)
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    servable = onnxp.load(mlp_version_dir, options)
    try:
        out = servable.run(servable.signatures["serving_default"], {"x": np.ones((2, 16), "f4")})
        assert out["y"].shape == (2, 4)
    finally:
        servable.close()
    with pytest.raises(ServoError) as err:
        onnxp.load(mlp_version_dir, PlatformOptions(extra={"onnx_execution_mode": "sideways"}))
    assert err.value.code == Code.INVALID_ARGUMENT
