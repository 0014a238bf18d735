"""The tensorflow platform against TFS's own SavedModels and TFS's metadata answers."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import tensorflow as tfp
from servo.platforms.router import PlatformOptions
from servo.platforms.servable import (
    Classification,
    classify,
    regress,
    signature_def_map_json,
)
from tests.platforms.conftest import tfs_path

OPTIONS = PlatformOptions()


def load(path: str, options: PlatformOptions = OPTIONS) -> tfp.TensorFlowServable:
    return tfp.load(path, options)


def example(x: float) -> bytes:
    """A serialized tf.Example with the float feature "x", as TFS's clients send them."""
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


def column(*values: float) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


def metadata_sample(name: str) -> dict:
    with open(tfs_path(name)) as f:
        return json.load(f)["metadata"]["signature_def"]


@pytest.fixture(scope="module")
def half_plus_two() -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_path("saved_model_half_plus_two_cpu", "00000123"))
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def half_plus_three() -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_path("saved_model_half_plus_three", "00000123"))
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def tf2() -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_path("saved_model_half_plus_two_tf2_cpu", "00000123"))
    yield servable
    servable.close()


# -- half_plus_two (TF1) ---------------------------------------------------------------------


def test_half_plus_two_predicts_a_batch(half_plus_two: tfp.TensorFlowServable) -> None:
    sig = half_plus_two.signatures["serving_default"]
    out = half_plus_two.run(sig, {"x": column(1.0, 2.0, 5.0)})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], column(2.5, 3.0, 4.5))
    assert out["y"].dtype == np.float32


def test_half_plus_two_accepts_a_flat_batch_like_tfs(half_plus_two: tfp.TensorFlowServable) -> None:
    # TFS's README sends {"instances": [1.0, 2.0, 5.0]}: shape [3] for x: [-1, 1]. TFS's C++
    # session does not check fed shapes against the placeholder; neither does servo.
    sig = half_plus_two.signatures["serving_default"]
    out = half_plus_two.run(sig, {"x": np.array([1.0, 2.0, 5.0], dtype=np.float32)})
    assert out["y"].shape == (3,)
    np.testing.assert_array_equal(out["y"], [2.5, 3.0, 4.5])


def test_half_plus_two_float_regress_signature(half_plus_two: tfp.TensorFlowServable) -> None:
    sig = half_plus_two.signatures["regress_x2_to_y3"]
    out = half_plus_two.run(sig, {"inputs": column(1.0, 4.0)})
    np.testing.assert_array_equal(out["outputs"], column(3.5, 5.0))  # x/2 + 3


def test_half_plus_two_regress_on_examples(half_plus_two: tfp.TensorFlowServable) -> None:
    xs = [1.0, 2.0, 5.0, -3.0]
    examples = [example(x) for x in xs]
    assert regress(half_plus_two, half_plus_two.signatures["regress_x_to_y"], examples) == [
        x / 2 + 2 for x in xs
    ]
    assert regress(half_plus_two, half_plus_two.signatures["regress_x_to_y2"], examples) == [
        x / 2 + 3 for x in xs
    ]


def test_half_plus_two_classify_on_examples(half_plus_two: tfp.TensorFlowServable) -> None:
    xs = [1.0, 4.0]
    result = classify(
        half_plus_two, half_plus_two.signatures["classify_x_to_y"], [example(x) for x in xs]
    )
    # The signature has scores only: TFS's answer has empty labels.
    assert result == [[Classification(b"", x / 2 + 2)] for x in xs]


def test_half_plus_two_metadata_is_tfs_answer(half_plus_two: tfp.TensorFlowServable) -> None:
    expected = metadata_sample("half_plus_two_model_metadata.json")
    assert signature_def_map_json(half_plus_two.signatures) == expected
    inputs = half_plus_two.signatures["classify_x_to_y"].inputs["inputs"]
    assert (inputs.dtype, inputs.shape, inputs.tensor_name) == (
        DataType.DT_STRING,
        None,
        "tf_example:0",
    )


def test_output_filter_runs_only_the_asked_outputs(half_plus_two: tfp.TensorFlowServable) -> None:
    sig = half_plus_two.signatures["serving_default"]
    assert list(half_plus_two.run(sig, {"x": column(1.0)}, ["y"])) == ["y"]
    with pytest.raises(ServoError) as err:
        half_plus_two.run(sig, {"x": column(1.0)}, ["nope"])
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "nope" in err.value.message


def test_bad_inputs_are_invalid_argument(half_plus_two: tfp.TensorFlowServable) -> None:
    sig = half_plus_two.signatures["serving_default"]
    with pytest.raises(ServoError) as err:
        half_plus_two.run(sig, {})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "'x'" in err.value.message
    with pytest.raises(ServoError) as err:
        half_plus_two.run(sig, {"x": np.array([[1.0]], dtype=np.float64)})
    assert err.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(ServoError) as err:  # ParseExample rejects bytes that are no Example
        half_plus_two.run(
            half_plus_two.signatures["regress_x_to_y"],
            {"inputs": np.array([b"not an example"], dtype=object)},
        )
    assert err.value.code == Code.INVALID_ARGUMENT


def test_concurrent_runs_each_get_their_own_answer(half_plus_two: tfp.TensorFlowServable) -> None:
    sig = half_plus_two.signatures["serving_default"]
    failures: list[str] = []

    def work(thread: int) -> None:
        for i in range(50):
            x = np.full((thread + 1, 1), float(i * 8 + thread), dtype=np.float32)
            y = half_plus_two.run(sig, {"x": x})["y"]
            if y.shape != x.shape or not np.array_equal(y, x / 2 + 2):
                failures.append(f"thread {thread} run {i}: {y!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# -- the other TFS test models ---------------------------------------------------------------


def test_half_plus_three_predict_and_regress(half_plus_three: tfp.TensorFlowServable) -> None:
    out = half_plus_three.run(
        half_plus_three.signatures["serving_default"], {"x": np.array([1.0, 2.0, 5.0], np.float32)}
    )
    np.testing.assert_array_equal(out["y"], [3.5, 4.0, 5.5])
    sig = half_plus_three.signatures["tensorflow/serving/regress"]
    assert regress(half_plus_three, sig, [example(1.0), example(4.0)]) == [3.5, 5.0]
    # An old export that recorded no shapes: unknown rank.
    assert sig.inputs["inputs"].shape is None


def test_metadata_leaves_out_shapes_the_model_does_not_record(
    half_plus_three: tfp.TensorFlowServable,
) -> None:
    # This export's TensorInfos have no tensor_shape; TFS's JSON leaves the unset field out
    # (and says unknown_rank only where the model says it).
    sig = signature_def_map_json(half_plus_three.signatures)["signature_def"]["serving_default"]
    assert sig["inputs"]["x"] == {"dtype": "DT_FLOAT", "name": "x:0"}
    assert sig["outputs"]["y"] == {"dtype": "DT_FLOAT", "name": "y:0"}


@pytest.mark.parametrize("version", ["00000123", "00000124"])
def test_two_versions_both_answer_and_match_tfs_metadata(version: str) -> None:
    servable = load(tfs_path("saved_model_half_plus_two_2_versions", version))
    try:
        out = servable.run(servable.signatures["serving_default"], {"x": column(1.0, 2.0, 5.0)})
        np.testing.assert_array_equal(out["y"], column(2.5, 3.0, 4.5))
        sig = servable.signatures["classify_x2_to_y3"]
        np.testing.assert_array_equal(
            servable.run(sig, {"inputs": column(2.0)})["scores"], column(4.0)
        )
        expected = metadata_sample("saved_model_half_plus_two_2_versions_metadata.json")
        assert signature_def_map_json(servable.signatures) == expected
    finally:
        servable.close()


def test_tf2_saved_model_loads_in_a_session(tf2: tfp.TensorFlowServable) -> None:
    sig = tf2.signatures["serving_default"]
    assert sig.inputs["x"].shape == (1,)
    np.testing.assert_array_equal(
        tf2.run(sig, {"x": np.array([1.0], np.float32)})["y"], np.array([2.5], np.float32)
    )
    # As for TF1 models, the session does not hold fed shapes to the signature's.
    np.testing.assert_array_equal(
        tf2.run(sig, {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"], [2.5, 3.0, 4.5]
    )
    examples = [example(1.0), example(4.0)]
    out = tf2.run(tf2.signatures["regress_x_to_y2"], {"inputs": np.array(examples, dtype=object)})
    np.testing.assert_array_equal(out["outputs"], column(3.5, 5.0))
    np.testing.assert_array_equal(
        tf2.run(tf2.signatures["classify_x2_to_y3"], {"inputs": np.array([2.0], np.float32)})[
            "scores"
        ],
        [4.0],
    )


def test_tf2_metadata_matches_the_tfs_tf2_sample(tf2: tfp.TensorFlowServable) -> None:
    # saved_model_half_plus_two_tf2_2_versions_metadata.json is TFS's answer for a TF2 export
    # of half_plus_two with the same tensor names as saved_model_half_plus_two_tf2_cpu. Two
    # differences are in the files, not in servo: this export's serving_default carries a
    # default value for x (TFS prints SignatureDef.defaults too), and the sample's init-op
    # entry predates the `defaults` field.
    ours = signature_def_map_json(tf2.signatures)["signature_def"]
    sample = metadata_sample("saved_model_half_plus_two_tf2_2_versions_metadata.json")
    sample = sample["signature_def"]
    assert set(ours) == set(sample)
    assert ours["serving_default"]["defaults"]["x"]["float_val"] == [0.0]
    for name, entry in ours.items():
        expected = {"defaults": {}, **sample[name]}
        if name == "serving_default":
            expected["defaults"] = entry["defaults"]
        assert entry == expected, name


def test_tf2_init_op_signature_is_listed_but_cannot_run(tf2: tfp.TensorFlowServable) -> None:
    sig = tf2.signatures["__saved_model_init_op"]
    assert sig.outputs["__saved_model_init_op"].dtype == DataType.DT_INVALID
    with pytest.raises(ServoError) as err:
        tf2.run(sig, {})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "NoOp" in err.value.message


def test_counter_signatures_change_and_read_the_session_state() -> None:
    servable = load(tfs_path("saved_model_counter", "00000123"))
    try:

        def call(name: str, **inputs: np.ndarray) -> float:
            out = servable.run(servable.signatures[name], inputs)["output"]
            assert isinstance(out, np.ndarray) and out.shape == ()
            return float(out)

        assert call("get_counter") == 0.0
        assert call("incr_counter") == 1.0
        assert call("incr_counter") == 2.0
        assert call("incr_counter_by", delta=np.array(3.0, dtype=np.float32)) == 5.0
        assert call("get_counter") == 5.0
        assert call("reset_counter") == 0.0
        assert call("get_counter") == 0.0
        # A variable read by reference keeps TFS's reference type in the metadata.
        assert servable.signatures["incr_counter"].outputs["output"].dtype == (
            DataType.DT_FLOAT_REF
        )
    finally:
        servable.close()


def test_each_load_has_its_own_state() -> None:
    path = tfs_path("saved_model_counter", "00000123")
    first, second = load(path), load(path)
    try:
        first.run(first.signatures["incr_counter"], {})
        out = second.run(second.signatures["get_counter"], {})
        assert float(out["output"]) == 0.0
    finally:
        first.close()
        second.close()


# -- failures --------------------------------------------------------------------------------


def test_bad_half_plus_two_fails_like_tfs() -> None:
    path = tfs_path("bad_half_plus_two", "00000123")
    with pytest.raises(ServoError) as err:
        load(path)
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message.startswith(
        "Could not find SavedModel .pb or .pbtxt at supplied export directory path: " + path
    )


def test_missing_tags_fail_like_tfs() -> None:
    path = tfs_path("saved_model_half_plus_two_cpu", "00000123")
    with pytest.raises(ServoError) as err:
        load(path, PlatformOptions(saved_model_tags=("serve", "gpu")))
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message.startswith(
        "Could not find meta graph def matching supplied tags: { serve gpu }."
    )


def test_corrupt_saved_model_pb_is_data_loss(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xfe not a protocol buffer" * 10)
    with pytest.raises(ServoError) as err:
        load(str(tmp_path))
    assert err.value.code == Code.DATA_LOSS
    assert "saved_model.pb" in err.value.message


def test_missing_variables_fail_with_tensorflows_error(tmp_path: Path) -> None:
    version = tmp_path / "1"
    shutil.copytree(tfs_path("saved_model_half_plus_two_cpu", "00000123"), version)
    for f in (version / "variables").iterdir():
        f.chmod(0o644)
        f.unlink()
    with pytest.raises(ServoError) as err:
        load(str(version))
    assert err.value.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.DATA_LOSS)
    assert str(version) in err.value.message


def test_closed_servable_refuses_to_run(tmp_path: Path) -> None:
    servable = load(tfs_path("saved_model_half_plus_two_cpu", "00000123"))
    sig = servable.signatures["serving_default"]
    servable.close()
    with pytest.raises(ServoError) as err:
        servable.run(sig, {"x": column(1.0)})
    assert err.value.code == Code.FAILED_PRECONDITION
    servable.close()  # a second close is harmless


def test_thread_options_reach_the_session_config() -> None:
    options = PlatformOptions(intra_op_parallelism=2, inter_op_parallelism=1)
    servable = load(tfs_path("saved_model_half_plus_two_cpu", "00000123"), options)
    try:
        config = servable._session._config  # what the session was made with
        assert config.intra_op_parallelism_threads == 2
        assert config.inter_op_parallelism_threads == 1
        out = servable.run(servable.signatures["serving_default"], {"x": column(2.0)})
        np.testing.assert_array_equal(out["y"], column(3.0))
    finally:
        servable.close()


# -- asset-based lookup tables, TF1 and TF2 --------------------------------------------------


def _write_vocab(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("apple\nbanana\ncherry\n")
    return vocab


def _tf1_table_model(export_dir: Path, scratch: Path) -> None:
    """A TF1 SavedModel whose table is initialized from an asset by its main op."""
    v1 = tf.compat.v1
    vocab = _write_vocab(scratch)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        vocab_path = tf.constant(str(vocab), name="vocab_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, vocab_path)
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocab_path,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        words = v1.placeholder(tf.string, shape=[None], name="words")
        ids = tf.identity(table.lookup(words), name="ids")
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            {"words": words}, {"ids": ids}
        )
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session,
            ["serve"],
            signature_def_map={"serving_default": signature},
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=v1.tables_initializer(),
        )
        builder.save()


def _tf2_table_model(export_dir: Path, scratch: Path) -> None:
    """A TF2 SavedModel (tf.saved_model.save) with a table over an asset file."""
    vocab = _write_vocab(scratch)

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    str(vocab),
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                ),
                default_value=-1,
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
        def serve(self, words: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"ids": self.table.lookup(words)}

    module = Lookup()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})


@pytest.mark.parametrize("write", [_tf1_table_model, _tf2_table_model], ids=["tf1", "tf2"])
def test_asset_based_tables_are_initialized_at_load(write: object, tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    write(exported, tmp_path / "scratch")  # type: ignore[operator]
    # The vocabulary the export read is gone, and the model moved: the table must be built
    # from the copy in the version's assets/, found at load time.
    shutil.rmtree(tmp_path / "scratch")
    version = tmp_path / "moved" / "7"
    os.makedirs(version.parent)
    os.replace(exported, version)
    assert (version / "assets" / "vocab.txt").exists()
    servable = load(str(version))
    try:
        sig = servable.signatures["serving_default"]
        (alias,) = sig.inputs
        words = np.array([b"cherry", b"apple", b"durian"], dtype=object)
        out = servable.run(sig, {alias: words})
        np.testing.assert_array_equal(out["ids"], [2, 0, -1])
    finally:
        servable.close()
