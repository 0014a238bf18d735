"""Model directories the API tests share, unit and end to end: Python servables written from
their source, and the example repository's models (its script's ONNX MLP, lookup table and
Python servable).

    base = write_python_model(tmp / "two_io", TWO_IO_MODEL)     # base/1/model.py
    servo.platforms.python.load(str(base / "1"), PlatformOptions())   # in process
    model_config([("two_io", base, "python")])                 # or served by a process
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.examples import example_script

# Two inputs and two outputs, and signatures of types JSON cannot carry; "fail" fails with
# the error code it is given (-1: a plain exception, a bug in the model).
TWO_IO_MODEL = """
import numpy as np

class Model:
    signatures = {
        "serving_default": {
            "inputs": {"a": {"dtype": "float32", "shape": [-1, 2]},
                       "tag": {"dtype": "string", "shape": [-1]}},
            "outputs": {"sum": {"dtype": "float32", "shape": [-1]},
                        "tag_bytes": {"dtype": "string", "shape": [-1]}},
        },
        "echo": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"x": {"dtype": "float32", "shape": [-1]}},
        },
        "halves": {
            "inputs": {"h": {"dtype": "float16", "shape": [-1]}},
            "outputs": {"h": {"dtype": "float16", "shape": [-1]}},
        },
        "complexes": {
            "inputs": {"c": {"dtype": "complex64", "shape": [-1]}},
            "outputs": {"c": {"dtype": "complex64", "shape": [-1]}},
        },
        "fail": {
            "inputs": {"code": {"dtype": "int32", "shape": [-1]}},
            "outputs": {"code": {"dtype": "int32", "shape": [-1]}},
        },
    }

    def predict(self, inputs, signature_name):
        if signature_name == "echo":
            return {"x": inputs["x"]}
        if signature_name in ("halves", "complexes"):
            return dict(inputs)
        if signature_name == "fail":
            from servo.core.status import Code, ServoError

            code = int(inputs["code"][0])
            if code < 0:
                raise ValueError("a bug in the model")
            raise ServoError(Code(code), "failed with %s" % Code(code).name)
        return {"sum": inputs["a"].sum(axis=1),
                "tag_bytes": np.array([t[::-1] for t in inputs["tag"]], dtype=object)}
"""

# Sleeps as long as it is asked to; marks the start of each call in its version directory,
# for tests that act while a call runs (a process's SIGTERM, a deadline).
SLOW_MODEL = """
import os
import time
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"seconds": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"slept": {"dtype": "float32", "shape": [-1]}},
    }}

    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        seconds = float(inputs["seconds"].max())
        # A mark that the call has started, for tests that act while it runs.
        open(os.path.join(self.path, "started-%g" % seconds), "w").close()
        time.sleep(seconds)
        return {"slept": inputs["seconds"]}
"""

# The sum of its input, as float64: one small answer to a large request.
SUM_MODEL = """
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"total": {"dtype": "float64", "shape": [-1]}},
    }}

    def predict(self, inputs, signature_name):
        return {"total": np.array([inputs["x"].astype(np.float64).sum()])}
"""

# A signature whose method is none of TFS's (for --enable_signature_method_name_check).
CUSTOM_METHOD_MODEL = """
class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "method_name": "custom/method",
    }}

    def predict(self, inputs, signature_name):
        return {"x": inputs["x"]}
"""

# TFS's Example signatures, declared by a Python model: `classify` (classes "neg" and "pos",
# scores 1 - p and p for p = x / 10), `regress` (2x + 1), each on serialized tf.Examples with a
# float feature x; and `double` (predict: each example with its x doubled).
EXAMPLES_MODEL = """
import numpy as np
from servo.protos import example_pb2

EXAMPLES = {"dtype": "string", "shape": [-1]}


def _x(serialized):
    return example_pb2.Example.FromString(serialized).features.feature["x"].float_list.value[0]


class Model:
    signatures = {
        "classify": {
            "inputs": {"inputs": EXAMPLES},
            "outputs": {"classes": {"dtype": "string", "shape": [-1, 2]},
                        "scores": {"dtype": "float32", "shape": [-1, 2]}},
            "method_name": "tensorflow/serving/classify",
        },
        "regress": {
            "inputs": {"inputs": EXAMPLES},
            "outputs": {"outputs": {"dtype": "float32", "shape": [-1]}},
            "method_name": "tensorflow/serving/regress",
        },
        "double": {"inputs": {"examples": EXAMPLES}, "outputs": {"examples": EXAMPLES}},
    }

    def predict(self, inputs, signature_name):
        if signature_name == "double":
            out = []
            for serialized in inputs["examples"]:
                example = example_pb2.Example()
                example.features.feature["x"].float_list.value.append(2 * _x(serialized))
                out.append(example.SerializeToString())
            return {"examples": np.array(out, dtype=object)}
        x = np.array([_x(e) for e in inputs["inputs"]], dtype=np.float32)
        if signature_name == "regress":
            return {"outputs": 2 * x + 1}
        p = x / 10
        return {"classes": np.array([[b"neg", b"pos"]] * len(x), dtype=object),
                "scores": np.stack([1 - p, p], axis=1)}
"""


def write_python_model(base: Path, source: str, version: int = 1) -> Path:
    """`base/<version>/model.py` holding `source`; returns `base`."""
    version_dir = base / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(textwrap.dedent(source))
    return base


EXAMPLE_MODELS = ("mlp", "vocab", "word_count")


def write_example_models(out: Path) -> Path:
    """The example repository's ONNX MLP (16 -> 4), lookup table and Python servable, each at
    `out/<name>/1`; returns `out`."""
    only = [arg for name in EXAMPLE_MODELS for arg in ("--only", name)]
    assert example_script().main([str(out), *only]) == 0
    return out


# A composite's scoring part: ids -> score = ids * the scale in its directory's scale.txt,
# and the composite version it belongs to (its version directory's name).
SCORER_PART = """
import os
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"ids": {"dtype": "int64", "shape": [-1]}},
        "outputs": {"score": {"dtype": "float32", "shape": [-1]},
                    "version": {"dtype": "int64", "shape": [-1]}},
    }}

    def load(self, path):
        if os.path.exists(os.path.join(path, "broken")):
            raise RuntimeError("this part cannot load")
        with open(os.path.join(path, "scale.txt")) as f:
            self.scale = float(f.read())
        self.version = int(os.path.basename(os.path.dirname(path)))

    def predict(self, inputs, signature_name):
        ids = inputs["ids"]
        return {"score": (ids * self.scale).astype(np.float32),
                "version": np.full(ids.shape, self.version, np.int64)}
"""
COMPOSITE = {
    "parts": {
        "vocab": {"platform": "lookup", "path": "vocab"},
        "scorer": {"platform": "python", "path": "scorer"},
    },
    "steps": [
        {"name": "ids", "part": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "scores", "part": "scorer", "inputs": {"ids": "ids.ids"}},
    ],
    "outputs": {"ids": "ids.ids", "score": "scores.score", "version": "scores.version"},
}


def write_composite(
    base: Path, version: int, words: list[str], scale: float, *, broken: bool = False
) -> Path:
    """`base/<version>/`: a composite of a vocabulary (`words`) feeding the scorer part
    (`scale`; `broken`: its load fails); returns `base`."""
    import json

    root = base / str(version)
    (root / "vocab").mkdir(parents=True)
    (root / "vocab" / "vocab.txt").write_text("".join(w + "\n" for w in words))
    (root / "scorer").mkdir()
    (root / "scorer" / "model.py").write_text(textwrap.dedent(SCORER_PART))
    (root / "scorer" / "scale.txt").write_text(str(scale))
    if broken:
        (root / "scorer" / "broken").write_text("")
    (root / "composite.json").write_text(json.dumps(COMPOSITE))
    return base
