"""The tensorflow platform on servo's stand-ins for TFS's SavedModels (tests/support/tfs_models.py;
tests/platforms/test_tfs_testdata.py holds them and servo to TFS's real ones): what is particular
to TensorFlow (TF1 and TF2 exports, tags, TFS's texts, session state, assets). The contract every
platform keeps is checked in test_conformance.py."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.metrics import ServerMetrics
from servo.platforms import tensorflow as tfp
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    Classification,
    classify,
    regress,
    signature_def_map_json,
)
from tests.support.testdata import TfsModels, saved_signature_map_json

OPTIONS = PlatformOptions()


def load(path: str, options: PlatformOptions = OPTIONS) -> tfp.TensorFlowServable:
    return tfp.load(path, options)


def example(x: float) -> bytes:
    """A serialized tf.Example with the float feature "x", as TFS's clients send them."""
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


def column(*values: float) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


@pytest.fixture(scope="module")
def half_plus_two(tfs_models: TfsModels) -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_models.path("saved_model_half_plus_two_cpu", "00000123"))
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def half_plus_three(tfs_models: TfsModels) -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_models.path("saved_model_half_plus_three", "00000123"))
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def tf2(tfs_models: TfsModels) -> Iterator[tfp.TensorFlowServable]:
    servable = load(tfs_models.path("saved_model_half_plus_two_tf2_cpu", "00000123"))
    yield servable
    servable.close()


# -- half_plus_two (TF1) ---------------------------------------------------------------------


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


def test_half_plus_two_metadata_is_the_saved_signature_map(
    half_plus_two: tfp.TensorFlowServable,
) -> None:
    # TFS's metadata is the SignatureDef map as stored; test_tfs_testdata.py holds it to
    # TFS's own answer.
    expected = saved_signature_map_json(half_plus_two.path)
    assert signature_def_map_json(half_plus_two.signatures) == expected
    assert set(expected["signature_def"]) == {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x_to_y2",
        "regress_x2_to_y3",
    }
    inputs = half_plus_two.signatures["classify_x_to_y"].inputs["inputs"]
    assert (inputs.dtype, inputs.shape, inputs.tensor_name) == (
        DataType.DT_STRING,
        None,
        "tf_example:0",
    )


def test_bytes_that_are_no_example_are_invalid_argument(
    half_plus_two: tfp.TensorFlowServable,
) -> None:
    # ParseExample's own error, with TensorFlow's code and text.
    with pytest.raises(ServoError) as err:
        half_plus_two.run(
            half_plus_two.signatures["regress_x_to_y"],
            {"inputs": np.array([b"not an example"], dtype=object)},
        )
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "Could not parse example input" in err.value.message


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
def test_two_versions_both_answer_and_list_their_signatures(
    version: str, tfs_models: TfsModels
) -> None:
    servable = load(tfs_models.path("saved_model_half_plus_two_2_versions", version))
    try:
        out = servable.run(servable.signatures["serving_default"], {"x": column(1.0, 2.0, 5.0)})
        np.testing.assert_array_equal(out["y"], column(2.5, 3.0, 4.5))
        sig = servable.signatures["classify_x2_to_y3"]
        np.testing.assert_array_equal(
            servable.run(sig, {"inputs": column(2.0)})["scores"], column(4.0)
        )
        expected = saved_signature_map_json(servable.path)
        assert signature_def_map_json(servable.signatures) == expected
        assert "classify_x2_to_y3" in expected["signature_def"]
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


def test_tf2_metadata_is_the_saved_signature_map(tf2: tfp.TensorFlowServable) -> None:
    ours = signature_def_map_json(tf2.signatures)
    assert ours == saved_signature_map_json(tf2.path)
    # TF2's generated tensor names, and serving_default's default value for x.
    serving = ours["signature_def"]["serving_default"]
    assert serving["inputs"]["x"]["name"] == "serving_default_x:0"
    assert serving["defaults"]["x"]["float_val"] == [0.0]


def test_tf2_init_op_signature_is_listed_but_cannot_run(tf2: tfp.TensorFlowServable) -> None:
    sig = tf2.signatures["__saved_model_init_op"]
    assert sig.outputs["__saved_model_init_op"].dtype == DataType.DT_INVALID
    with pytest.raises(ServoError) as err:
        tf2.run(sig, {})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "NoOp" in err.value.message


def test_counter_signatures_change_and_read_the_session_state(tfs_models: TfsModels) -> None:
    servable = load(tfs_models.path("saved_model_counter", "00000123"))
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


def test_each_load_has_its_own_state(tfs_models: TfsModels) -> None:
    path = tfs_models.path("saved_model_counter", "00000123")
    first, second = load(path), load(path)
    try:
        first.run(first.signatures["incr_counter"], {})
        out = second.run(second.signatures["get_counter"], {})
        assert float(out["output"]) == 0.0
    finally:
        first.close()
        second.close()


def test_loading_warns_of_no_deprecation_from_servos_calls(
    tfs_models: TfsModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DeprecationWarning raised for a call in servo's code, and none of TensorFlow's
    logged deprecation notices (`deprecation.deprecated` logs "From FILE:LINE: NAME ... is
    deprecated", once per process and function) naming a servo file: every SavedModel kind
    of TFS's test data (TF1 with assets and legacy init op, TF2) loads."""
    from tensorflow.python.util import deprecation

    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})  # notices already written: again
    notices: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notices.append(record.getMessage())

    handler = Collect(logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=DeprecationWarning, module=r"servo(\.|$)")
            warnings.filterwarnings(
                "error", category=PendingDeprecationWarning, module=r"servo(\.|$)"
            )
            for model in (
                "saved_model_half_plus_two_cpu",
                "saved_model_half_plus_three",
                "saved_model_half_plus_two_tf2_cpu",
            ):
                load(tfs_models.path(model, "00000123")).close()
    finally:
        tf_logger.removeHandler(handler)
    servo_dir = os.path.dirname(tfp.__file__).rsplit(os.sep, 1)[0]
    assert [n for n in notices if "deprecated" in n and servo_dir in n] == []


# -- failures --------------------------------------------------------------------------------


def test_bad_half_plus_two_fails_like_tfs(tfs_models: TfsModels) -> None:
    path = tfs_models.path("bad_half_plus_two", "00000123")
    with pytest.raises(ServoError) as err:
        load(path)
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message.startswith(
        "Could not find SavedModel .pb or .pbtxt at supplied export directory path: " + path
    )


def test_a_bad_saved_model_pbtxt_fails_as_tensorflows_reader_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TensorFlow's ReadTextProto: protobuf's parser logs its line, then DATA_LOSS "Can't parse
    <path> as text proto" (servo adds the line to the status, which no log accompanies)."""
    (tmp_path / "saved_model.pbtxt").write_text("saved_model_schema_version: 1\nmeta_graph {}\n")
    path = str(tmp_path / "saved_model.pbtxt")
    line = (
        "Error parsing text-format tensorflow.SavedModel: 2:12: Message type "
        '"tensorflow.SavedModel" has no field named "meta_graph".'
    )
    with pytest.raises(ServoError) as err:
        load(str(tmp_path))
    assert (err.value.code, err.value.message) == (
        Code.DATA_LOSS,
        f"Can't parse {path} as text proto: {line}",
    )
    assert line in caplog.messages


def test_missing_tags_fail_like_tfs(tfs_models: TfsModels) -> None:
    path = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    with pytest.raises(ServoError) as err:
        load(path, PlatformOptions(saved_model_tags=("serve", "gpu")))
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message.startswith(
        "Could not find meta graph def matching supplied tags: { serve gpu }."
    )


def test_missing_variables_fail_with_tensorflows_error(
    tmp_path: Path, tfs_models: TfsModels
) -> None:
    version = tmp_path / "1"
    shutil.copytree(tfs_models.path("saved_model_half_plus_two_cpu", "00000123"), version)
    for f in (version / "variables").iterdir():
        f.chmod(0o644)
        f.unlink()
    with pytest.raises(ServoError) as err:
        load(str(version))
    assert err.value.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.DATA_LOSS)
    assert str(version) in err.value.message


def test_thread_options_reach_the_session_config(tfs_models: TfsModels) -> None:
    options = PlatformOptions(intra_op_parallelism=2, inter_op_parallelism=1)
    servable = load(tfs_models.path("saved_model_half_plus_two_cpu", "00000123"), options)
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


# -- TensorFlow's loader metrics ---------------------------------------------------------------


def test_each_load_attempt_is_counted_by_directory_and_outcome(
    tfs_models: TfsModels, tmp_path: Path
) -> None:
    """As TensorFlow's LoadSavedModel counts: load_attempt_count{model_path, status} with
    "success" or "fail", and load_latency{model_path} adding every attempt's microseconds."""
    metrics = ServerMetrics()
    options = PlatformOptions(saved_model_loads=metrics.saved_model_load)
    good = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    load(good, options).close()
    (tmp_path / "saved_model.pbtxt").write_text("not a SavedModel {")
    with pytest.raises(ServoError):
        load(str(tmp_path), options)
    assert metrics.saved_model_load_attempt_count.value(good, "success") == 1
    assert metrics.saved_model_load_attempt_count.value(good, "fail") == 0
    assert metrics.saved_model_load_attempt_count.value(str(tmp_path), "fail") == 1
    assert metrics.saved_model_load_latency.value(good) > 0
    assert metrics.saved_model_load_latency.value(str(tmp_path)) > 0
    page = metrics.render().decode()
    name = ":tensorflow:cc:saved_model:load_attempt_count"
    assert f'{name}{{model_path="{good}",status="success"}} 1' in page
