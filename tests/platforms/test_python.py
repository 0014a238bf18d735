"""The python platform: a Model class in the version directory's model.py, how it is imported,
loaded and unloaded, its signatures and errors. The contract every platform keeps is checked in
test_conformance.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import python as python_platform
from servo.platforms.options import PlatformOptions

SCALER = """
import json, os
import numpy as np
from helper import double   # a module next to model.py

class Model:
    signatures = {
        "serving_default": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1, 2]}},
            "outputs": {"y": {"dtype": "float32", "shape": [-1, 2]},
                        "label": {"dtype": "string", "shape": [-1]}},
        },
        "count": {
            "inputs": {"words": {"dtype": "DT_STRING", "shape": [-1]}},
            "outputs": {"n": {"dtype": "int64", "shape": None}},
        },
    }
    unloaded = []

    def load(self, path):
        with open(os.path.join(path, "scale.json")) as f:
            self.scale = json.load(f)["scale"]

    def predict(self, inputs, signature_name):
        if signature_name == "count":
            return np.array(len(inputs["words"]))
        x = inputs["x"]
        return {"y": double(x) * self.scale, "label": [b"row"] * len(x)}

    def unload(self):
        Model.unloaded.append(self.scale)
"""


def write_model(path: Path, source: str, **files: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.py").write_text(textwrap.dedent(source))
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


@pytest.fixture
def scaler(tmp_path: Path):
    path = write_model(
        tmp_path / "1",
        SCALER,
        **{"helper.py": "def double(x):\n    return x * 2\n", "scale.json": '{"scale": 10}'},
    )
    servable = python_platform.load(path, PlatformOptions())
    yield servable
    servable.close()


def test_signatures_and_predict(scaler) -> None:
    sig = scaler.signatures["serving_default"]
    assert sig.inputs["x"].dtype == DataType.DT_FLOAT and sig.inputs["x"].shape == (-1, 2)
    assert sig.outputs["label"].dtype == DataType.DT_STRING
    out = scaler.run(sig, {"x": np.array([[1, 2], [3, 4]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[20, 40], [60, 80]])
    assert out["y"].dtype == np.float32
    assert out["label"].tolist() == [b"row", b"row"]
    count = scaler.signatures["count"]
    assert count.outputs["n"].shape is None
    n = scaler.run(count, {"words": np.array([b"a", b"b", b"c"], dtype=object)})
    assert n["n"].dtype == np.int64 and int(n["n"]) == 3


def test_unload_is_called_on_close(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "1",
        SCALER,
        **{"helper.py": "def double(x):\n    return x\n", "scale.json": '{"scale": 3}'},
    )
    servable = python_platform.load(path, PlatformOptions())
    cls = type(servable.model)
    servable.close()
    assert cls.unloaded == [3]
    servable.close()  # once is enough: the model's unload() is not called again
    assert cls.unloaded == [3]


def test_default_signature_without_metadata(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "1",
        """
        class Model:
            def predict(self, inputs, signature_name):
                return inputs["inputs"] + 1
        """,
    )
    servable = python_platform.load(path, PlatformOptions())
    sig = servable.signatures["serving_default"]
    assert list(sig.inputs) == ["inputs"] and list(sig.outputs) == ["outputs"]
    out = servable.run(sig, {"inputs": np.array([1.5], np.float32)})
    np.testing.assert_array_equal(out["outputs"], [2.5])


def test_not_thread_safe_models_are_serialized(tmp_path: Path) -> None:
    import threading

    path = write_model(
        tmp_path / "1",
        """
        import threading
        class Model:
            thread_safe = False
            def __init__(self):
                self.inside = 0
                self.overlaps = 0
                self.lock = threading.Lock()
            def predict(self, inputs, signature_name):
                with self.lock:
                    self.inside += 1
                    if self.inside > 1:
                        self.overlaps += 1
                sum(range(2000))
                with self.lock:
                    self.inside -= 1
                return inputs["inputs"]
        """,
    )
    servable = python_platform.load(path, PlatformOptions())
    sig = servable.signatures["serving_default"]
    x = {"inputs": np.zeros(1, np.float32)}

    def work() -> None:
        for _ in range(200):
            servable.run(sig, x)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert servable.model.overlaps == 0


@pytest.mark.parametrize(
    ("source", "code", "message"),
    [
        ("x = 1\n", Code.INVALID_ARGUMENT, "must define a class named Model"),
        ("import no_such_module_here\n", Code.INVALID_ARGUMENT, "failed to import"),
        ("class Model:\n    pass\n", Code.INVALID_ARGUMENT, "has no predict method"),
        (
            "class Model:\n    def load(self, path):\n        raise OSError('weights gone')\n"
            "    def predict(self, inputs, signature_name):\n        return inputs\n",
            Code.INTERNAL,
            "failed to load: OSError: weights gone",
        ),
        (
            "class Model:\n    signatures = {'s': {'inputs': {'x': {'dtype': 'complex7'}},"
            " 'outputs': {'y': {'dtype': 'float32'}}}}\n"
            "    def predict(self, inputs, signature_name):\n        return inputs\n",
            Code.INVALID_ARGUMENT,
            "'x'",
        ),
    ],
)
def test_bad_models_fail_to_load_clearly(tmp_path: Path, source, code, message) -> None:
    path = write_model(tmp_path / "1", source)
    with pytest.raises(ServoError) as err:
        python_platform.load(path, PlatformOptions())
    assert err.value.code == code
    assert message in err.value.message


def test_predict_errors_become_request_errors(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "1",
        """
        from servo.core.status import Code, ServoError
        class Model:
            def predict(self, inputs, signature_name):
                if inputs["inputs"].size == 0:
                    raise ServoError(Code.INVALID_ARGUMENT, "empty input")
                if inputs["inputs"].size == 1:
                    raise ZeroDivisionError("boom")
                return {"wrong": inputs["inputs"]}
        """,
    )
    servable = python_platform.load(path, PlatformOptions())
    sig = servable.signatures["serving_default"]
    cases = [
        (0, Code.INVALID_ARGUMENT, "empty input"),
        (1, Code.INTERNAL, "Model.predict raised ZeroDivisionError: boom"),
        (2, Code.INTERNAL, "Model.predict did not return output 'outputs'"),
    ]
    for size, code, message in cases:
        with pytest.raises(ServoError) as err:
            servable.run(sig, {"inputs": np.zeros(size, np.float32)})
        assert (err.value.code, err.value.message) == (code, message)


HELPED = """
from helper import VALUE

class Model:
    def predict(self, inputs, signature_name):
        return inputs["inputs"] * 0 + VALUE
"""


def test_each_version_imports_its_own_helpers(tmp_path: Path) -> None:
    one = write_model(tmp_path / "m" / "1", HELPED, **{"helper.py": "VALUE = 1\n"})
    two = write_model(tmp_path / "m" / "2", HELPED, **{"helper.py": "VALUE = 2\n"})
    first = python_platform.load(one, PlatformOptions())
    second = python_platform.load(two, PlatformOptions())
    try:
        sig = first.signatures["serving_default"]
        x = {"inputs": np.zeros(1, np.float32)}
        assert first.run(sig, x)["outputs"].tolist() == [1.0]
        assert second.run(sig, x)["outputs"].tolist() == [2.0]
    finally:
        first.close()
        second.close()


def test_model_module_is_importable_by_name_while_loaded(tmp_path: Path) -> None:
    import sys

    # dataclasses look the defining module up in sys.modules (here, for the annotations)
    source = """
    from __future__ import annotations
    import dataclasses

    @dataclasses.dataclass
    class Settings:
        scale: float = 3.0

    class Model:
        def predict(self, inputs, signature_name):
            return inputs["inputs"] * Settings().scale
    """
    path = write_model(tmp_path / "1", source, **{"helper.py": "X = 1\n"})
    before = set(sys.modules)
    servable = python_platform.load(path, PlatformOptions())
    added = set(sys.modules) - before
    assert len(added) == 1 and sys.modules[added.pop()].Settings().scale == 3.0
    out = servable.run(servable.signatures["serving_default"], {"inputs": np.ones(2, np.float32)})
    assert out["outputs"].tolist() == [3.0, 3.0]
    servable.close()
    assert set(sys.modules) - before == set()


def test_failed_load_leaves_no_module_behind(tmp_path: Path) -> None:
    import sys

    source = """
    class Model:
        def load(self, path):
            raise OSError("weights missing")

        def predict(self, inputs, signature_name):
            return inputs["inputs"]
    """
    path = write_model(tmp_path / "1", source)
    before = set(sys.modules)
    with pytest.raises(ServoError, match="weights missing"):
        python_platform.load(path, PlatformOptions())
    assert set(sys.modules) - before == set()
