"""The pipeline platform over a fake core: pipeline.json read and checked against its steps'
signatures when it loads (each refusal naming the step), the derived signature, steps run in
dependency order on the versions taken at the request's start, errors naming the step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import pipeline
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import Signature, TensorSpec
from tests.support.inprocess import FakeCore
from tests.support.servables import Servable

F, I64, S = DataType.DT_FLOAT, DataType.DT_INT64, DataType.DT_STRING


def _lengths(offset: int = 0) -> Servable:
    """keys (strings) -> ids: each key's length (+ offset)."""
    signature = Signature(
        "serving_default", {"keys": TensorSpec(S, (-1,))}, {"ids": TensorSpec(I64, (-1,))}
    )

    def run(sig: Signature, inputs: Any, outputs: Any) -> dict[str, np.ndarray]:
        return {"ids": np.array([len(k) + offset for k in inputs["keys"]], dtype=np.int64)}

    return Servable([signature], run)


def _scorer(scale: float = 1.0) -> Servable:
    """ids (int64) and weights (float) -> scores = ids * weight * scale, doubled = 2 ids."""
    signature = Signature(
        "serving_default",
        {"ids": TensorSpec(I64, (-1,)), "weight": TensorSpec(F, (-1,))},
        {"scores": TensorSpec(F, (-1,)), "doubled": TensorSpec(I64, (-1,))},
    )

    def run(sig: Signature, inputs: Any, outputs: Any) -> dict[str, np.ndarray]:
        scores = (inputs["ids"] * inputs["weight"] * scale).astype(np.float32)
        answer = {"scores": scores, "doubled": inputs["ids"] * 2}
        return {k: answer[k] for k in outputs} if outputs else answer

    return Servable([signature], run)


PIPELINE = {
    "steps": [
        {"name": "score", "model": "scorer", "inputs": {"ids": "ids.ids", "weight": "request.w"}},
        {"name": "ids", "model": "lengths", "inputs": {"keys": "request.text"}},
    ],
    "outputs": {"ids": "ids.ids", "scores": "score.scores"},
}


def _write(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "1"
    path.mkdir(exist_ok=True)
    (path / pipeline.PIPELINE_FILE).write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def core() -> FakeCore:
    return FakeCore().add("lengths", _lengths()).add("scorer", _scorer())


def _load(core: FakeCore, path: str) -> pipeline.PipelineServable:
    return pipeline.load(path, PlatformOptions(servables=core.servable_handle))


def test_the_signature_comes_from_the_steps_and_steps_run_in_order(
    core: FakeCore, tmp_path: Path
) -> None:
    served = _load(core, _write(tmp_path, PIPELINE))
    [signature] = served.signatures.values()
    assert signature.name == "serving_default"
    assert dict(signature.inputs) == {"w": TensorSpec(F, (-1,)), "text": TensorSpec(S, (-1,))}
    assert dict(signature.outputs) == {
        "ids": TensorSpec(I64, (-1,)),
        "scores": TensorSpec(F, (-1,)),
    }
    assert [s.name for s in served.steps] == ["ids", "score"]  # the order they read each other
    text = np.array([b"a", b"abc"], dtype=object)
    out = served.run(signature, {"text": text, "w": np.array([0.5, 2.0], np.float32)})
    assert out["ids"].tolist() == [1, 3] and out["scores"].tolist() == [0.5, 6.0]
    # The answer is what calling the steps one after the other answers.
    ids = _lengths().run(_lengths().signatures["serving_default"], {"keys": text})["ids"]
    direct = _scorer().run(
        _scorer().signatures["serving_default"],
        {"ids": ids, "weight": np.array([0.5, 2.0], np.float32)},
    )
    np.testing.assert_array_equal(out["scores"], direct["scores"])
    assert served.run(signature, {"text": text, "w": np.ones(2, np.float32)}, ["ids"]).keys() == {
        "ids"
    }
    core.assert_released()


def test_without_outputs_the_last_steps_are_the_pipelines(core: FakeCore, tmp_path: Path) -> None:
    doc = {"steps": PIPELINE["steps"]}
    served = _load(core, _write(tmp_path, doc))
    assert set(served.signatures["serving_default"].outputs) == {"scores", "doubled"}


def test_a_request_keeps_the_versions_it_started_with(core: FakeCore, tmp_path: Path) -> None:
    served = _load(core, _write(tmp_path, PIPELINE))
    signature = served.signatures["serving_default"]
    inputs = {"text": np.array([b"ab"], dtype=object), "w": np.ones(1, np.float32)}
    core.add("scorer", _scorer(scale=10.0), version=2)  # a newer version: the next requests'
    assert served.run(signature, inputs)["scores"].tolist() == [20.0]
    pinned = {**PIPELINE, "steps": [{**PIPELINE["steps"][0], "version": 1}, PIPELINE["steps"][1]]}
    assert _load(core, _write(tmp_path, pinned)).run(signature, inputs)["scores"].tolist() == [2.0]
    core.assert_released()


def test_a_failing_step_is_named(core: FakeCore, tmp_path: Path) -> None:
    served = _load(core, _write(tmp_path, PIPELINE))
    signature = served.signatures["serving_default"]
    inputs = {"text": np.array([b"ab"], dtype=object), "w": np.ones(1, np.float32)}

    def fail(sig: Any, inputs: Any, outputs: Any) -> Any:
        raise ServoError(Code.RESOURCE_EXHAUSTED, "out of memory")

    core.add("scorer", Servable(list(_scorer().signatures.values()), fail), version=2)
    with pytest.raises(ServoError) as err:
        served.run(signature, inputs)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert err.value.message == "Pipeline step 'score' (model scorer version 2): out of memory"
    # A step whose model has nothing to serve now.
    core.set_state("scorer", 1, ManagerState.END)
    core.set_state("scorer", 2, ManagerState.END)
    with pytest.raises(ServoError) as err:
        served.run(signature, inputs)
    assert err.value.code == Code.UNAVAILABLE
    assert err.value.message.startswith("Pipeline step 'score' (model scorer): no version to run")
    core.assert_released()


def test_a_step_whose_signature_changed_is_refused(core: FakeCore, tmp_path: Path) -> None:
    served = _load(core, _write(tmp_path, PIPELINE))
    core.add("lengths", _lengths(), version=2)
    changed = Signature(
        "serving_default", {"keys": TensorSpec(S, (-1, 1))}, {"ids": TensorSpec(I64, (-1,))}
    )
    core.add("lengths", Servable([changed], lambda *a: {}), version=3)
    with pytest.raises(ServoError) as err:
        served.run(
            served.signatures["serving_default"],
            {"text": np.array([b"ab"], dtype=object), "w": np.ones(1, np.float32)},
        )
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "Pipeline step 'ids' (model lengths version 3)" in err.value.message


def _step(name: str, model: str, **inputs: str) -> dict[str, Any]:
    return {"name": name, "model": model, "inputs": inputs}


@pytest.mark.parametrize(
    ("doc", "code", "message"),
    [
        (
            {"steps": [_step("a", "nope", keys="request.t")]},
            Code.UNAVAILABLE,
            "Pipeline step 'a' (model nope) has no AVAILABLE version to check the pipeline against",
        ),
        (
            {"steps": [{**_step("a", "lengths", keys="request.t"), "signature": "other"}]},
            Code.INVALID_ARGUMENT,
            "Pipeline step 'a' (model lengths): version 1 has no signature 'other'",
        ),
        (
            {"steps": [_step("a", "lengths", keys="b.ids"), _step("b", "lengths", keys="a.ids")]},
            Code.INVALID_ARGUMENT,
            "Pipeline steps read each other in a cycle: a -> b -> a",
        ),
        (
            {"steps": [_step("a", "lengths", keys="z.ids")]},
            Code.INVALID_ARGUMENT,
            "Pipeline step 'a' (model lengths): input 'keys' reads z.ids, but the pipeline has "
            "no step 'z'",
        ),
        (
            {"steps": [_step("a", "lengths", keys="request.t"), _step("b", "scorer", ids="a.ids")]},
            Code.INVALID_ARGUMENT,
            "Pipeline step 'b' (model scorer): signature serving_default input(s) 'weight' are "
            "fed by nothing",
        ),
        (
            {"steps": [_step("a", "lengths", keys="request.t", extra="request.u")]},
            Code.INVALID_ARGUMENT,
            "Pipeline step 'a' (model lengths): signature serving_default has no input 'extra'",
        ),
        (
            {
                "steps": [
                    _step("a", "scorer", ids="request.i", weight="request.w"),
                    _step("b", "lengths", keys="a.scores"),
                ]
            },
            Code.INVALID_ARGUMENT,
            "Pipeline step 'b' (model lengths): input 'keys' takes DT_STRING [-1], but a.scores "
            "is DT_FLOAT [-1]",
        ),
        (
            {"steps": [_step("a", "lengths", keys="request.t"), _step("b", "lengths", keys="a.x")]},
            Code.INVALID_ARGUMENT,
            "Pipeline step 'b' (model lengths): input 'keys' reads a.x, but step 'a' has no "
            "output 'x'",
        ),
        (
            {"steps": [_step("a", "lengths", keys="request.t")], "outputs": {"o": "a.nope"}},
            Code.INVALID_ARGUMENT,
            "Pipeline output 'o' reads a.nope, which no step has",
        ),
        (
            {"steps": [_step("request", "lengths", keys="request.t")]},
            Code.INVALID_ARGUMENT,
            "step 0: a name is any text without a dot but 'request'",
        ),
        (
            {"steps": [_step("a", "lengths", keys="t")]},
            Code.INVALID_ARGUMENT,
            "step 'a' input 'keys': 't' is not a reference",
        ),
        ({"steps": []}, Code.INVALID_ARGUMENT, 'expected {"steps": [...]'),
    ],
)
def test_pipelines_that_cannot_run_are_refused_when_they_load(
    core: FakeCore, tmp_path: Path, doc: Any, code: Code, message: str
) -> None:
    with pytest.raises(ServoError) as err:
        _load(core, _write(tmp_path, doc))
    assert err.value.code == code
    assert message in err.value.message, err.value.message
    core.assert_released()


def test_no_file_and_no_server(tmp_path: Path, core: FakeCore) -> None:
    with pytest.raises(ServoError) as err:
        _load(core, str(tmp_path))
    assert err.value.code == Code.NOT_FOUND
    with pytest.raises(ServoError) as err:
        pipeline.load(_write(tmp_path, PIPELINE), PlatformOptions())
    assert err.value.code == Code.FAILED_PRECONDITION


def test_steps_of_one_model_run_one_version_even_when_it_swaps_between_them(
    tmp_path: Path,
) -> None:
    """A newer version that becomes the latest while a request takes its handles: the steps
    that name the same model still run one version (one handle for them)."""
    core = FakeCore().add("lengths", _lengths(offset=0))
    taken: list[str] = []

    def servables(name: str, version: int | None, label: str | None) -> Any:
        handle = core.servable_handle(name, version, label)
        taken.append(name)
        if len(taken) == 1:  # right after the request's first handle, version 2 is the latest
            core.add("lengths", _lengths(offset=100), version=2)
        return handle

    doc = {
        "steps": [
            _step("a", "lengths", keys="request.t"),
            _step("b", "lengths", keys="request.u"),
        ],
        "outputs": {"a": "a.ids", "b": "b.ids"},
    }
    served = pipeline.load(_write(tmp_path, doc), PlatformOptions(servables=core.servable_handle))
    served._servables = servables  # the request's lookups, watched
    keys = np.array([b"ab"], dtype=object)
    out = served.run(served.signatures["serving_default"], {"t": keys, "u": keys})
    assert (out["a"].tolist(), out["b"].tolist()) == ([2], [2])  # both version 1
    assert taken == ["lengths"]
    core.assert_released()


def test_a_step_whose_new_version_keeps_the_interface_is_run(
    core: FakeCore, tmp_path: Path
) -> None:
    """Another version whose signature differs only in the model's inner tensor names."""
    served = _load(core, _write(tmp_path, PIPELINE))
    renamed = Signature(
        "serving_default",
        {"keys": TensorSpec(S, (-1,), "keys_1:0")},
        {"ids": TensorSpec(I64, (-1,), "ids_1:0")},
    )
    core.add("lengths", Servable([renamed], _lengths(offset=5)._run), version=2)
    out = served.run(
        served.signatures["serving_default"],
        {"text": np.array([b"ab"], dtype=object), "w": np.ones(1, np.float32)},
    )
    assert out["ids"].tolist() == [7]
