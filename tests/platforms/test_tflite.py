"""The tflite platform: stand-ins for TFS's TF Lite test models (tests/support/tfs_models.py),
signatures as TFS builds them, resizing, the interpreter pool, each on both interpreters
servo runs (ai-edge-litert's, TensorFlow's tf.lite; without TensorFlow:
test_tflite_without_tensorflow.py). The contract every platform keeps is checked in
test_conformance.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import tflite
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import PREDICT_METHOD, signature_def_map_json
from tests.support.testdata import TfsModels

OPTIONS = PlatformOptions()


@pytest.fixture(scope="module", autouse=True, params=["ai_edge_litert", "tensorflow"])
def interpreter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this file on LiteRT's interpreter (what servo picks when ai-edge-litert is
    installed) and on TensorFlow's (its fallback)."""
    from ai_edge_litert.interpreter import Interpreter

    assert tflite.RUNTIME == "ai_edge_litert"  # installed by the tflite extra
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "tensorflow":
            patch.setattr(tflite, "_Interpreter", tf.lite.Interpreter)
        else:
            assert tflite._Interpreter is Interpreter
        yield request.param


def column(*values: float) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


@pytest.fixture(scope="module")
def plain(tfs_models: TfsModels, interpreter: str) -> Iterator[tflite.TfLiteServable]:
    """TFS's TF Lite half_plus_two with no SignatureDefs."""
    path = tfs_models.path("saved_model_half_plus_two_tflite", "00000123")
    servable = tflite.load(path, OPTIONS)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def with_sigdef(tfs_models: TfsModels, interpreter: str) -> Iterator[tflite.TfLiteServable]:
    """TFS's TF Lite half_plus_two with SignatureDefs in its metadata."""
    path = tfs_models.path("saved_model_half_plus_two_tflite_with_sigdef", "00000123")
    servable = tflite.load(path, OPTIONS)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def native(
    tmp_path_factory: pytest.TempPathFactory, interpreter: str
) -> Iterator[tflite.TfLiteServable]:
    """A model converted from TF2 functions, with the converter's own signatures."""

    class Model(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int32, name="n"),
            ]
        )
        def stats(self, a: tf.Tensor, n: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"sum": tf.reduce_sum(a, axis=1), "twice": n * 2}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def half_plus_two(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x * 0.5 + 2.0}

    model = Model()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.stats.get_concrete_function(), model.half_plus_two.get_concrete_function()], model
    )
    version = tmp_path_factory.mktemp("native") / "1"
    version.mkdir()
    (version / "model.tflite").write_bytes(converter.convert())
    servable = tflite.load(str(version), OPTIONS)
    yield servable
    servable.close()


@pytest.mark.parametrize("which", ["plain", "with_sigdef"])
def test_half_plus_two_answers_any_batch_size(which: str, request: pytest.FixtureRequest) -> None:
    servable: tflite.TfLiteServable = request.getfixturevalue(which)
    sig = servable.signatures["serving_default"]
    # The model was exported with input shape [1, 1]; a fed batch resizes the input.
    for batch in ([1.0, 2.0, 5.0], [7.0], [float(i) for i in range(33)], [3.0, 4.0]):
        out = servable.run(sig, {"x": column(*batch)})
        np.testing.assert_array_equal(out["y"], column(*[b / 2 + 2 for b in batch]))
    # And the flat form of TFS's README.
    out = servable.run(sig, {"x": np.array([1.0, 2.0, 5.0], np.float32)})
    np.testing.assert_array_equal(out["y"], [2.5, 3.0, 4.5])


@pytest.mark.parametrize("which", ["plain", "native"])
def test_inputs_are_not_resized_beyond_the_dims_xnnpack_takes(
    which: str, request: pytest.FixtureRequest
) -> None:
    # XNNPack, TF Lite's default CPU delegate, takes 6 dims at most: it refuses 7 and crashed
    # the process on 8 or more (TF 2.21), through indices and signature runners alike.
    servable: tflite.TfLiteServable = request.getfixturevalue(which)
    sig = servable.signatures["serving_default" if which == "plain" else "half_plus_two"]
    for dims in (7, 8, 12):
        with pytest.raises(ServoError) as err:
            servable.run(sig, {"x": np.ones((1,) * dims, np.float32)})
        assert err.value.code == Code.INVALID_ARGUMENT
        assert f"has {dims} dims; this TF Lite model takes at most 6" in err.value.message
    x = np.full((1, 1, 1, 1, 2, 1), 3.0, np.float32)
    np.testing.assert_array_equal(servable.run(sig, {"x": x})["y"], x / 2 + 2)


def test_signature_without_sigdefs_is_the_one_tfs_generates(
    plain: tflite.TfLiteServable,
) -> None:
    # TFS: serving_default, predict, keyed by the tensor name cut at ':', named by the tensor.
    assert signature_def_map_json(plain.signatures) == {
        "signature_def": {
            "serving_default": {
                "inputs": {"x": _info("x")},
                "outputs": {"y": _info("y")},
                "method_name": PREDICT_METHOD,
                "defaults": {},
            }
        }
    }


def test_stored_sigdefs_are_used_with_tfs_name_fixing(with_sigdef: tflite.TfLiteServable) -> None:
    # The stored SignatureDef names "tflite_input:0" and "y:0"; the model's tensors have no
    # ":0", so the names resolve as TFS resolves them.
    assert signature_def_map_json(with_sigdef.signatures) == {
        "signature_def": {
            "serving_default": {
                "inputs": {"x": _info("tflite_input")},
                "outputs": {"y": _info("y")},
                "method_name": PREDICT_METHOD,
                "defaults": {},
            }
        }
    }


def _info(name: str) -> dict:
    dims = [{"size": "1", "name": ""}, {"size": "1", "name": ""}]
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def test_native_signatures_are_served(native: tflite.TfLiteServable) -> None:
    assert set(native.signatures) == {"stats", "half_plus_two"}
    stats = native.signatures["stats"]
    assert stats.inputs["a"].dtype == DataType.DT_FLOAT
    assert stats.inputs["a"].shape == (-1, 2)
    assert stats.inputs["n"].dtype == DataType.DT_INT32
    out = native.run(
        stats,
        {"a": np.array([[1, 2], [3, 4], [5, 6]], np.float32), "n": np.arange(3, dtype=np.int32)},
    )
    np.testing.assert_array_equal(out["sum"], [3.0, 7.0, 11.0])
    np.testing.assert_array_equal(out["twice"], [0, 2, 4])
    only = native.run(
        stats, {"a": np.ones((1, 2), np.float32), "n": np.array([5], np.int32)}, ["twice"]
    )
    assert list(only) == ["twice"]
    np.testing.assert_array_equal(only["twice"], [10])
    out = native.run(native.signatures["half_plus_two"], {"x": column(1.0, 5.0)})
    np.testing.assert_array_equal(out["y"], column(2.5, 4.5))


def test_concurrent_runs_share_a_small_pool(tfs_models: TfsModels) -> None:
    path = tfs_models.path("saved_model_half_plus_two_tflite", "00000123")
    servable = tflite.load(path, PlatformOptions(extra={"tflite_num_interpreters": 2}))
    sig = servable.signatures["serving_default"]
    failures: list[str] = []

    def work(thread: int) -> None:
        for i in range(100):
            x = np.full((thread + 1, 1), float(i), dtype=np.float32)
            y = servable.run(sig, {"x": x})["y"]
            if y.shape != x.shape or not np.array_equal(y, x / 2 + 2):
                failures.append(f"thread {thread} run {i}: {y!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert servable._pool._created <= 2
    finally:
        servable.close()


def test_string_inputs_keep_every_byte(tmp_path: Path) -> None:
    class Strings(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="s"),
                tf.TensorSpec([None], tf.int32, name="order"),
            ]
        )
        def pick(self, s: tf.Tensor, order: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"picked": tf.gather(s, order)}

    model = Strings()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.pick.get_concrete_function()], model
    )
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    servable = tflite.load(str(tmp_path), OPTIONS)
    try:
        sig = servable.signatures["serving_default"]
        strings = np.empty(3, dtype=object)
        strings[:] = [b"ab\x00\x00", b"\x00", b"\xff\x00z"]  # NULs inside and at the end
        out = servable.run(sig, {"s": strings, "order": np.array([2, 1, 0], np.int32)})
        assert out["picked"].tolist() == [b"\xff\x00z", b"\x00", b"ab\x00\x00"]
    finally:
        servable.close()


def test_interpreter_in_use_is_the_one_patched(
    plain: tflite.TfLiteServable, interpreter: str
) -> None:
    slot = plain._pool.acquire()
    try:
        assert type(slot.interpreter).__module__.split(".")[0] == interpreter
    finally:
        plain._pool.release(slot)
