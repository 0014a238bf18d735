"""The composite platform: parts of one version directory loaded together as one servable,
run as a pipeline's steps; a part that fails fails the version and leaves nothing open; parts
stay inside the version directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servo.core.status import Code, ServoError
from servo.platforms import composite
from servo.platforms.options import PlatformOptions
from servo.platforms.router import load_platform
from servo.platforms.servable import CLASSIFY_METHOD, classify
from tests.support.models import COMPOSITE, EXAMPLES_MODEL, write_composite
from tests.support.requests import example

OPTIONS = PlatformOptions(load_platform=load_platform)


def test_the_parts_answer_as_one_servable(tmp_path: Path) -> None:
    base = write_composite(tmp_path / "c", 3, ["servo", "model", "server"], scale=0.5)
    served = composite.load(str(base / "3"), OPTIONS)
    try:
        signature = served.signatures["serving_default"]
        assert set(signature.inputs) == {"text"} and set(signature.outputs) == {
            "ids",
            "score",
            "version",
        }
        out = served.run(signature, {"text": np.array([b"model", b"nope", b"server"], object)})
        assert out["ids"].tolist() == [1, -1, 2]
        assert out["score"].tolist() == [0.5, -0.5, 1.0]
        assert out["version"].tolist() == [3, 3, 3]
        assert set(served.parts) == {"vocab", "scorer"}
    finally:
        served.close()
    with pytest.raises(ServoError) as err:
        served.run(signature, {"text": np.array([b"x"], object)})
    assert err.value.code == Code.FAILED_PRECONDITION


def test_a_part_that_fails_fails_the_version_and_closes_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = write_composite(tmp_path / "c", 1, ["a"], scale=1.0, broken=True)
    opened: list[object] = []

    def watched(platform: str, path: str, options: PlatformOptions) -> object:
        servable = load_platform(platform, path, options)
        opened.append(servable)
        return servable

    with pytest.raises(ServoError) as err:
        composite.load(str(base / "1"), PlatformOptions(load_platform=watched))
    assert err.value.message.startswith("Composite part 'scorer' (python at ")
    assert "this part cannot load" in err.value.message
    [vocab] = opened
    with pytest.raises(ServoError, match="unloaded"):
        vocab.run(vocab.signatures["serving_default"], {"keys": np.array([b"a"], object)})  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parts": {"vocab": {"platform": "lookup", "path": "../elsewhere"}}}, "is not inside"),
        ({"parts": {"vocab": {"platform": "lookup", "path": "/etc"}}}, '"path" must be'),
        ({"parts": {"vocab": {"platform": "pipeline", "path": "vocab"}}}, "cannot be a pipeline"),
        ({"parts": {}}, '"parts" must map'),
        (
            {"parts": {"vocab": {"platform": "lookup", "path": "vocab"}}},
            "the composite has no part 'scorer'",
        ),
    ],
)
def test_bad_composites_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    base = write_composite(tmp_path / "c", 1, ["a"], scale=1.0)
    (base / "1" / "composite.json").write_text(json.dumps({**COMPOSITE, **change}))
    with pytest.raises(ServoError) as err:
        composite.load(str(base / "1"), OPTIONS)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert message in err.value.message, err.value.message


def test_a_composite_whose_last_step_classifies_classifies_as_its_part(tmp_path: Path) -> None:
    """Its signature is derived as a pipeline's: the classify method of its last part's."""
    (tmp_path / "c" / "1" / "examples").mkdir(parents=True)
    (tmp_path / "c" / "1" / "examples" / "model.py").write_text(EXAMPLES_MODEL)
    doc = {
        "parts": {"examples": {"platform": "python", "path": "examples"}},
        "steps": [
            {
                "name": "double",
                "part": "examples",
                "signature": "double",
                "inputs": {"examples": "request.inputs"},
            },
            {
                "name": "classify",
                "part": "examples",
                "signature": "classify",
                "inputs": {"inputs": "double.examples"},
            },
        ],
    }
    (tmp_path / "c" / "1" / "composite.json").write_text(json.dumps(doc))
    served = composite.load(str(tmp_path / "c" / "1"), OPTIONS)
    try:
        signature = served.signatures["serving_default"]
        assert signature.method_name == CLASSIFY_METHOD
        part = served.parts["examples"]
        examples = [example(x=x).SerializeToString() for x in (1.0, 3.0)]
        doubled = [example(x=x).SerializeToString() for x in (2.0, 6.0)]
        assert classify(served, signature, examples, True) == classify(
            part, part.signatures["classify"], doubled, True
        )
    finally:
        served.close()
