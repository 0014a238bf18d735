"""scripts/make_example_models.py: the example repository it writes, and how it rewrites it."""

from __future__ import annotations

import hashlib
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
    models = {m.name: (m.platform, m.needs_tensorflow) for m in example_script.MODELS}
    assert models == {
        "half_plus_two": ("tensorflow", True),
        "mlp": ("onnx", False),
        "mlp_large": ("onnx", False),
        "vocab": ("lookup", False),
        "word_count": ("python", False),
    }


def test_models_config_serves_what_was_written(example_script: ModuleType, tmp_path: Path) -> None:
    from servo.server import config as configs

    out = tmp_path / "models"
    assert example_script.main([str(out), "--only", "vocab", "--only", "word_count"]) == 0
    config = configs.read_model_server_config(str(out / "models.config"))
    entries = {m.name: (m.base_path, m.model_platform) for m in config.model_config_list.config}
    assert entries == {
        "vocab": (str((out / "vocab").resolve()), "lookup"),
        "word_count": (str((out / "word_count").resolve()), "python"),
    }


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
