"""servo and its stand-ins against TFS's own test data.

Each of TFS's real models loads through servo's platform code and gives the same signatures
and answers as the stand-in the rest of the suite uses (tests/support/tfs_models.py); the
metadata of both is TFS's own answer (the `*_metadata.json` files); the config texts are TFS's.

These tests need TFS's data (see tests/support/testdata.py): without it they are not run, and
with CI=true they fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import router, tflite
from servo.platforms import tensorflow as tfp
from servo.platforms.router import PlatformOptions
from servo.platforms.servable import ModelServable, Signature, signature_def_map_json
from tests.support.testdata import TfsModels, tfs_path
from tests.support.tfs_models import CONFIGS

pytestmark = pytest.mark.tfs_testdata

OPTIONS = PlatformOptions()
SAVED_MODELS = [
    ("saved_model_half_plus_two_cpu", "00000123"),
    ("saved_model_half_plus_two_2_versions", "00000123"),
    ("saved_model_half_plus_two_2_versions", "00000124"),
    ("saved_model_half_plus_three", "00000123"),
    ("saved_model_counter", "00000123"),
    ("saved_model_half_plus_two_tf2_cpu", "00000123"),
]
TFLITE_MODELS = ["saved_model_half_plus_two_tflite", "saved_model_half_plus_two_tflite_with_sigdef"]


def example(x: float, x2: float | None = None) -> bytes:
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    if x2 is not None:
        feature["x2"] = tf.train.Feature(float_list=tf.train.FloatList(value=[x2]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feeds(signature: Signature) -> dict[str, np.ndarray]:
    """Inputs for any signature of these models: serialized Examples (one with x2 set, one
    with its default) where the model parses them, else floats of the signature's shape."""
    out: dict[str, np.ndarray] = {}
    for alias, spec in signature.inputs.items():
        if spec.dtype == DataType.DT_STRING or spec.tensor_name.startswith("tf_example"):
            # half_plus_three's regress signature says DT_FLOAT for its serialized Examples.
            out[alias] = np.array([example(1.0, x2=7.0), example(4.0), example(-3.0)], object)
        elif spec.shape == (1,):
            out[alias] = np.array([6.0], np.float32)
        elif spec.shape is None:
            out[alias] = np.array(3.0, np.float32)  # the counter's delta
        else:
            out[alias] = np.array([[1.0], [6.0], [-2.5]], np.float32)
    return out


def answer(servable: ModelServable, name: str) -> dict[str, np.ndarray] | Code:
    signature = servable.signatures[name]
    try:
        return servable.run(signature, feeds(signature))
    except ServoError as err:
        return err.code


@contextmanager
def loaded(load, *paths: str) -> Iterator[list[ModelServable]]:
    servables = [load(path, OPTIONS) for path in paths]
    try:
        yield servables
    finally:
        for servable in servables:
            servable.close()


def assert_same_answers(real: ModelServable, ours: ModelServable) -> None:
    for name in sorted(real.signatures):  # the counter's state moves the same way in both
        expected, got = answer(real, name), answer(ours, name)
        if isinstance(expected, Code):
            assert got == expected, name
            continue
        assert isinstance(got, dict) and list(got) == list(expected), name
        for alias, value in expected.items():
            assert got[alias].dtype == value.dtype, (name, alias)
            np.testing.assert_array_equal(got[alias], value, err_msg=f"{name}/{alias}")


@pytest.mark.parametrize(("model", "version"), SAVED_MODELS)
def test_real_saved_model_matches_its_stand_in(
    model: str, version: str, tfs_models: TfsModels
) -> None:
    real_path, our_path = tfs_path(model, version), tfs_models.path(model, version)
    with loaded(tfp.load, real_path, our_path) as (real, ours):
        assert signature_def_map_json(ours.signatures) == signature_def_map_json(real.signatures)
        assert_same_answers(real, ours)
    real_assets, our_assets = Path(real_path) / "assets", Path(our_path) / "assets"
    assert our_assets.is_dir() == real_assets.is_dir()
    if real_assets.is_dir():
        assert {p.name: p.read_bytes() for p in our_assets.iterdir()} == {
            p.name: p.read_bytes() for p in real_assets.iterdir()
        }


def test_real_counter_counts_like_its_stand_in(tfs_models: TfsModels) -> None:
    def calls(servable: ModelServable) -> list[float]:
        def call(name: str, **inputs: np.ndarray) -> float:
            return float(servable.run(servable.signatures[name], inputs)["output"])

        delta = np.array(2.5, np.float32)
        return [
            call("incr_counter"),
            call("incr_counter_by", delta=delta),
            call("get_counter"),
            call("reset_counter"),
            call("incr_counter"),
        ]

    paths = [tfs_path("saved_model_counter", "00000123")]
    paths.append(tfs_models.path("saved_model_counter", "00000123"))
    with loaded(tfp.load, *paths) as (real, ours):
        assert calls(real) == calls(ours) == [1.0, 3.5, 3.5, 0.0, 1.0]


@pytest.mark.parametrize("model", TFLITE_MODELS)
def test_real_tflite_model_matches_its_stand_in(model: str, tfs_models: TfsModels) -> None:
    paths = [tfs_path(model, "00000123"), tfs_models.path(model, "00000123")]
    with loaded(tflite.load, *paths) as (real, ours):
        assert signature_def_map_json(ours.signatures) == signature_def_map_json(real.signatures)
        for batch in ([[1.0]], [[1.0], [6.0], [-2.5]], [2.0, 4.0]):
            x = np.array(batch, np.float32)
            expected = real.run(real.signatures["serving_default"], {"x": x})
            got = ours.run(ours.signatures["serving_default"], {"x": x})
            np.testing.assert_array_equal(got["y"], expected["y"])


def test_real_bad_model_fails_like_its_stand_in(tfs_models: TfsModels) -> None:
    errors = []
    for base in (tfs_path("bad_half_plus_two"), tfs_models.path("bad_half_plus_two")):
        version = str(Path(base) / "00000123")
        assert router.detect_platform(version) is None
        with pytest.raises(ServoError) as err:
            tfp.load(version, OPTIONS)
        errors.append((err.value.code, err.value.message.replace(version, "<path>")))
    assert errors[0] == errors[1]
    assert errors[0][0] == Code.NOT_FOUND


# -- TFS's metadata answers ------------------------------------------------------------------

METADATA_SAMPLES = [
    ("half_plus_two_model_metadata.json", "saved_model_half_plus_two_cpu"),
    ("saved_model_half_plus_two_2_versions_metadata.json", "saved_model_half_plus_two_2_versions"),
]


def metadata_sample(name: str) -> dict:
    with open(tfs_path(name)) as f:
        return json.load(f)["metadata"]["signature_def"]


def model_path(source: str, model: str, tfs_models: TfsModels) -> str:
    return tfs_path(model, "00000123") if source == "real" else tfs_models.path(model, "00000123")


@pytest.mark.parametrize("source", ["real", "stand-in"])
@pytest.mark.parametrize(("sample", "model"), METADATA_SAMPLES)
def test_metadata_is_tfs_answer(
    sample: str, model: str, source: str, tfs_models: TfsModels
) -> None:
    with loaded(tfp.load, model_path(source, model, tfs_models)) as (servable,):
        assert signature_def_map_json(servable.signatures) == metadata_sample(sample)


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_tf2_metadata_matches_the_tfs_tf2_sample(source: str, tfs_models: TfsModels) -> None:
    # saved_model_half_plus_two_tf2_2_versions_metadata.json is TFS's answer for a TF2 export
    # of half_plus_two with the same tensor names as saved_model_half_plus_two_tf2_cpu. Two
    # differences are in the files, not in servo: this export's serving_default carries a
    # default value for x (TFS prints SignatureDef.defaults too), and the sample's init-op
    # entry predates the `defaults` field.
    path = model_path(source, "saved_model_half_plus_two_tf2_cpu", tfs_models)
    with loaded(tfp.load, path) as (servable,):
        ours = signature_def_map_json(servable.signatures)["signature_def"]
    sample = metadata_sample("saved_model_half_plus_two_tf2_2_versions_metadata.json")
    sample = sample["signature_def"]
    assert set(ours) == set(sample)
    assert ours["serving_default"]["defaults"]["x"]["float_val"] == [0.0]
    for name, entry in ours.items():
        expected = {"defaults": {}, **sample[name]}
        if name == "serving_default":
            expected["defaults"] = entry["defaults"]
        assert entry == expected, name


# -- config files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_texts_are_tfs_own(name: str, tfs_models: TfsModels) -> None:
    real = Path(tfs_path(name)).read_text()
    assert Path(tfs_models.path(name)).read_text() == real == CONFIGS[name]
