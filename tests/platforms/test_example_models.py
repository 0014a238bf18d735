"""scripts/make_example_models.py: the example repository it writes, and how it rewrites it; the
text classifier served as a pipeline and as a composite answering as its two models called one
after the other, and the embedding table's shards holding together the whole table, each only
its own keys."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_models_list_is_the_documented_repository(example_script: ModuleType) -> None:
    models = {
        m.name: (m.platform, m.needs_tensorflow, m.needs, m.in_config)
        for m in example_script.MODELS
    }
    assert models == {
        "half_plus_two": ("tensorflow", True, None, True),
        "whitespace_tokenizer": ("tensorflow", True, ("tensorflow_text", "text"), True),
        "decision_forest": ("tensorflow", True, ("ydf_tf", "decision-forests"), True),
        "mlp": ("onnx", False, None, True),
        "mlp_large": ("onnx", False, None, True),
        "vocab": ("lookup", False, None, True),
        "word_count": ("python", False, None, True),
        "vocab_classifier": ("onnx", False, None, True),
        "text_classifier_pipeline": ("pipeline", False, None, True),
        "text_classifier_composite": ("composite", False, None, True),
        "embeddings": ("lookup", False, None, True),
        "embeddings_shards": ("lookup", False, None, False),
        "embeddings_sharded": ("sharded", False, None, False),
    }
    # A pipeline is listed (and configured) after the models its steps name.
    names = [m.name for m in example_script.MODELS]
    steps = example_script.TEXT_CLASSIFIER_PIPELINE["steps"]
    assert all(names.index(s["model"]) < names.index("text_classifier_pipeline") for s in steps)


def test_models_config_serves_what_was_written(example_script: ModuleType, tmp_path: Path) -> None:
    from servo.server import config as configs

    out = tmp_path / "models"
    written = ["vocab", "word_count", "embeddings", "embeddings_shards", "embeddings_sharded"]
    assert example_script.main([str(out), *(a for n in written for a in ("--only", n))]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "models.config"])
    config = configs.read_model_server_config(str(out / "models.config"))
    entries = {m.name: (m.base_path, m.model_platform) for m in config.model_config_list.config}
    # The shards and their front need servers of their own: `make serve` serves neither.
    assert entries == {
        "vocab": (str((out / "vocab").resolve()), "lookup"),
        "word_count": (str((out / "word_count").resolve()), "python"),
        "embeddings": (str((out / "embeddings").resolve()), "lookup"),
    }


def test_a_model_whose_package_is_missing_is_skipped_with_a_note(
    example_script: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from servo.server import config as configs

    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # imports as if not installed
    out = tmp_path / "models"
    (out / "whitespace_tokenizer" / "1").mkdir(parents=True)  # left by a run that had it
    args = [str(out), "--only", "whitespace_tokenizer", "--only", "vocab"]
    assert example_script.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        "skipped whitespace_tokenizer: it needs tensorflow_text, which is not installed "
        "(pip install 'servo-model-server[text]')",
        f"wrote {out / 'vocab'}",
        f"wrote {out / 'models.config'}",
    ]
    # make serve would fail to start on a model it cannot load: the config leaves it out.
    config = configs.read_model_server_config(str(out / "models.config"))
    assert [m.name for m in config.model_config_list.config] == ["vocab"]


def test_mlp_is_deterministic_and_rewritten_cleanly(
    example_script: ModuleType, tmp_path: Path
) -> None:
    import onnx  # noqa: F401 - needed by this test

    out = tmp_path / "models"
    other = out / "someone_elses_model" / "1"
    other.mkdir(parents=True)
    (other / "model.py").write_text("# another engineer's example\n")
    assert example_script.main([str(out), "--only", "mlp"]) == 0
    first = digest(out / "mlp")
    assert list(first) == ["1/model.onnx"]
    (out / "mlp" / "1" / "stale.txt").write_text("left over from an older script\n")
    (out / "mlp" / "9").mkdir()
    assert example_script.main([str(out), "--only", "mlp"]) == 0
    assert digest(out / "mlp") == first  # same bytes, nothing stale left
    assert (other / "model.py").exists()  # other models are left alone
    assert sorted(p.name for p in out.iterdir()) == ["mlp", "models.config", "someone_elses_model"]
    # The config lists the models the script knows, not other people's directories.
    assert "someone_elses_model" not in (out / "models.config").read_text()


def test_mlp_shape_and_weights(example_script: ModuleType, mlp_version_dir: str) -> None:
    import onnx
    import onnxruntime as ort

    path = str(Path(mlp_version_dir) / "model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert {k: v.shape for k, v in weights.items()} == {
        "w0": (16, 64),
        "b0": (64,),
        "w1": (64, 4),
        "b1": (4,),
    }
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (arg,) = session.get_inputs()
    assert (arg.name, arg.type, arg.shape[1]) == ("x", "tensor(float)", 16)
    assert not isinstance(arg.shape[0], int)  # a symbolic batch dim
    (out,) = session.get_outputs()
    assert (out.name, out.shape[1]) == ("y", 4)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    (y,) = session.run(["y"], {"x": x})
    hidden = np.maximum(x @ weights["w0"] + weights["b0"], 0)
    np.testing.assert_allclose(y, hidden @ weights["w1"] + weights["b1"], rtol=1e-5, atol=1e-5)


def test_mlp_large_is_the_benchmark_model(example_script: ModuleType, tmp_path: Path) -> None:
    import onnx  # noqa: F401 - needed by this test
    import onnxruntime as ort

    example_script.write_mlp_large(tmp_path / "mlp_large")
    path = tmp_path / "mlp_large" / "1" / "model.onnx"
    assert 50e6 < path.stat().st_size < 60e6  # ~54 MB of float32 weights
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 512
    (y,) = session.run(["y"], {"x": np.ones((3, 512), np.float32)})
    assert y.shape == (3, 10) and np.isfinite(y).all()


def test_skip_tensorflow_and_unknown_names(example_script: ModuleType, tmp_path: Path) -> None:
    import onnx  # noqa: F401 - needed by this test

    out = tmp_path / "models"
    assert example_script.main([str(out), "--only", "half_plus_two", "--skip-tensorflow"]) == 0
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(SystemExit) as exit_:
        example_script.main([str(out), "--only", "resnet"])
    assert exit_.value.code == 2


def test_half_plus_two_versions_serve_through_servo(
    example_script: ModuleType, tmp_path: Path
) -> None:
    import tensorflow as tf

    from servo.platforms import tensorflow as tfp
    from servo.platforms.options import PlatformOptions
    from servo.platforms.router import detect_platform
    from servo.platforms.servable import classify, regress

    out = tmp_path / "models"
    assert example_script.main([str(out), "--only", "half_plus_two"]) == 0
    first = digest(out / "half_plus_two")
    assert example_script.main([str(out), "--only", "half_plus_two"]) == 0
    assert digest(out / "half_plus_two") == first
    assert sorted(p.name for p in (out / "half_plus_two").iterdir()) == ["1", "2"]

    def example(x: float) -> bytes:
        feature = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
        features = tf.train.Features(feature={"x": feature})
        return tf.train.Example(features=features).SerializeToString()

    for version in ("1", "2"):
        path = str(out / "half_plus_two" / version)
        assert detect_platform(path) == "tensorflow"
        servable = tfp.load(path, PlatformOptions())
        try:
            sig = servable.signatures["serving_default"]
            x = sig.inputs["x"]
            assert (x.dtype.name, x.shape, x.tensor_name) == ("DT_FLOAT", (-1, 1), "x:0")
            y = servable.run(sig, {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})["y"]
            np.testing.assert_array_equal(y, [[2.5], [3.0], [4.5]])
            examples = [example(1.0), example(-4.0)]
            assert regress(servable, servable.signatures["regress_x_to_y"], examples) == [
                2.5,
                0.0,
            ]
            scores = classify(servable, servable.signatures["classify_x_to_y"], examples)
            assert [[c.score for c in row] for row in scores] == [[2.5], [0.0]]
        finally:
            servable.close()
    # Two separately written versions, not copies.
    one, two = (digest(out / "half_plus_two" / v) for v in ("1", "2"))
    assert one.keys() == two.keys() and one != two


@pytest.fixture(scope="module")
def classifier_models(example_script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vocabulary, its classifier, and the pipeline and the composite made of them."""
    import onnx  # noqa: F401 - needed by this test

    out = tmp_path_factory.mktemp("classifier-models")
    names = ["vocab", "vocab_classifier", "text_classifier_pipeline", "text_classifier_composite"]
    assert example_script.main([str(out), *(a for n in names for a in ("--only", n))]) == 0
    return out


# Word lists of one length per batch, with unknown words (id -1) and padding (id 0).
TEXTS = [
    ["servo", "serves", "a", "model"],
    ["the", "unknown", "<pad>", "<pad>"],
    ["flow", "tensor", "version", "server"],
    ["<pad>", "<pad>", "<pad>", "<pad>"],
]


def test_the_classifier_sums_word_vectors_and_pads_count_for_nothing(
    example_script: ModuleType, classifier_models: Path
) -> None:
    import onnx

    from servo.core.status import Code, ServoError
    from servo.platforms import onnx as onnx_platform
    from servo.platforms.options import PlatformOptions

    path = classifier_models / "vocab_classifier" / "1"
    model = onnx.load(str(path / "model.onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    served = onnx_platform.load(str(path), PlatformOptions())
    try:
        signature = served.signatures["serving_default"]
        assert {k: (v.dtype.name, v.shape) for k, v in signature.inputs.items()} == {
            "ids": ("DT_INT64", (-1, -1))
        }
        assert {k: (v.dtype.name, v.shape) for k, v in signature.outputs.items()} == {
            "scores": ("DT_FLOAT", (-1, 3))
        }
        ids = np.array([[8, 5, 2, 3], [1, -1, 0, 0], [0, 0, 0, 0]], np.int64)
        scores = served.run(signature, {"ids": ids})["scores"]
        logits = weights["vectors"][ids + 1].sum(axis=1) @ weights["w"] + weights["b"]
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        unpadded = served.run(signature, {"ids": np.array([[1, -1]], np.int64)})["scores"]
        np.testing.assert_allclose(unpadded[0], scores[1], rtol=1e-6)
        # Any negative id is the unknown word (never a row counted from the table's end).
        other = served.run(signature, {"ids": np.array([[1, -7]], np.int64)})["scores"]
        np.testing.assert_array_equal(other, unpadded)
        with pytest.raises(ServoError) as beyond:  # no word has id 10
            served.run(signature, {"ids": np.array([[10]], np.int64)})
        assert beyond.value.code == Code.INVALID_ARGUMENT
        assert len({int(row.argmax()) for row in scores}) > 1  # not one class for everything
    finally:
        served.close()


def test_the_pipeline_and_the_composite_answer_as_vocab_then_the_classifier(
    example_script: ModuleType, classifier_models: Path
) -> None:
    from servo.platforms import composite, lookup, pipeline
    from servo.platforms import onnx as onnx_platform
    from servo.platforms.options import PlatformOptions
    from servo.platforms.router import detect_platform, load_platform
    from tests.support.inprocess import FakeCore

    vocab = lookup.load(str(classifier_models / "vocab" / "1"), PlatformOptions())
    classifier = onnx_platform.load(
        str(classifier_models / "vocab_classifier" / "1"), PlatformOptions()
    )
    core = FakeCore().add("vocab", vocab).add("vocab_classifier", classifier)
    pipeline_dir = classifier_models / "text_classifier_pipeline" / "1"
    composite_dir = classifier_models / "text_classifier_composite" / "1"
    assert detect_platform(str(pipeline_dir)) == "pipeline"
    assert detect_platform(str(composite_dir)) == "composite"
    assert sorted(p.name for p in composite_dir.iterdir()) == ["composite.json", "model", "vocab"]
    served = [
        pipeline.load(str(pipeline_dir), PlatformOptions(servables=core.servable_handle)),
        composite.load(str(composite_dir), PlatformOptions(load_platform=load_platform)),
    ]
    try:
        text = np.array(TEXTS, dtype=object)
        ids = vocab.run(vocab.signatures["serving_default"], {"keys": text})["ids"]
        assert ids[:2].tolist() == [[8, 5, 2, 3], [1, -1, 0, 0]]
        scores = classifier.run(classifier.signatures["serving_default"], {"ids": ids})["scores"]
        for servable in served:
            signature = servable.signatures["serving_default"]
            assert set(signature.inputs) == {"text"}
            assert set(signature.outputs) == {"ids", "scores"}
            out = servable.run(signature, {"text": text})
            np.testing.assert_array_equal(out["ids"], ids)
            np.testing.assert_array_equal(out["scores"], scores)
        core.assert_released()
    finally:
        for servable in served:
            servable.close()
        vocab.close()
        classifier.close()
    # The composite's parts are the served models' files, byte for byte.
    assert digest(composite_dir / "vocab") == digest(classifier_models / "vocab" / "1")
    assert digest(composite_dir / "model") == digest(classifier_models / "vocab_classifier" / "1")


def test_the_shards_hold_together_the_whole_table_each_only_its_keys(
    example_script: ModuleType, tmp_path: Path
) -> None:
    from servo.platforms import lookup
    from servo.platforms.options import PlatformOptions
    from servo.platforms.router import detect_platform
    from servo.platforms.sharding import shard_of

    out = tmp_path / "models"
    names = ["embeddings", "embeddings_shards", "embeddings_sharded"]
    assert example_script.main([str(out), *(a for n in names for a in ("--only", n))]) == 0
    whole = lookup.load(str(out / "embeddings" / "1"), PlatformOptions())
    assert isinstance(whole, lookup.EmbeddingTable)
    try:
        keys, values = whole.contents()
    finally:
        whole.close()
    assert len(keys) == 4096 and values.shape == (4096, 16) and values.dtype == np.float32
    assert keys[:2] == [b"item-0000", b"item-0001"] and keys[-1] == b"item-4095"
    table = dict(zip(keys, values.tolist(), strict=True))

    shards_dir = out / "embeddings_shards"
    assert sorted(p.name for p in shards_dir.iterdir()) == ["shard-0", "shard-1", "shard-2"]
    seen: dict[bytes, list[float]] = {}
    for index in range(3):
        version = shards_dir / f"shard-{index}" / "1"
        assert detect_platform(str(version)) == "lookup"
        shard = lookup.load(str(version), PlatformOptions())
        assert isinstance(shard, lookup.EmbeddingTable)
        try:
            assert shard.shard is not None
            assert (shard.shard.index, shard.shard.count) == (index, 3)
            shard_keys, shard_values = shard.contents()
        finally:
            shard.close()
        assert shard_keys and set(shard_of(shard_keys, 3).tolist()) == {index}
        assert not seen.keys() & set(shard_keys)  # no key in two shards
        seen.update(zip(shard_keys, shard_values.tolist(), strict=True))
    assert seen == table

    front = out / "embeddings_sharded" / "1"
    assert detect_platform(str(front)) == "sharded"
    assert json.loads((front / "sharded.json").read_text()) == {
        "model": "embeddings",
        "shards": ["127.0.0.1:8610", "127.0.0.1:8611", "127.0.0.1:8612"],
    }
    # Written again, the table and its shards are the same bytes.
    first = {name: digest(out / name) for name in names}
    assert example_script.main([str(out), *(a for n in names for a in ("--only", n))]) == 0
    assert {name: digest(out / name) for name in names} == first
