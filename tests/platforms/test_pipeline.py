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
from servo.platforms.servable import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    Classification,
    Signature,
    TensorSpec,
    classify,
    regress,
)
from tests.support.inprocess import FakeCore
from tests.support.requests import example
from tests.support.servables import Servable, example_x

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


# -- classify and regress --------------------------------------------------------------------

EXAMPLES = TensorSpec(S, (-1,))


def _examples(*xs: float) -> list[bytes]:
    return [example(x=x).SerializeToString() for x in xs]


def _examples_model() -> Servable:
    """TFS's Example signatures: `classify` (classes and scores of two classes, p = x / 10),
    `regress` (2x + 1) and `scores_only` (classify, one score: x); `predict_scores`, the same
    with the predict method; `float_classify`, the classify method on floats (score: x); and
    `double` (predict: each serialized tf.Example with its x doubled)."""
    two, one = TensorSpec(F, (-1, 2)), TensorSpec(F, (-1, 1))
    signatures = [
        Signature(
            "classify",
            {"inputs": EXAMPLES},
            {"classes": TensorSpec(S, (-1, 2)), "scores": two},
            CLASSIFY_METHOD,
        ),
        Signature("scores_only", {"inputs": EXAMPLES}, {"scores": one}, CLASSIFY_METHOD),
        Signature("predict_scores", {"inputs": EXAMPLES}, {"scores": one}),
        Signature(
            "float_classify", {"inputs": TensorSpec(F, (-1,))}, {"scores": one}, CLASSIFY_METHOD
        ),
        Signature(
            "regress", {"inputs": EXAMPLES}, {"outputs": TensorSpec(F, (-1,))}, REGRESS_METHOD
        ),
        Signature("double", {"examples": EXAMPLES}, {"examples": EXAMPLES}),
    ]

    def run(sig: Signature, inputs: Any, outputs: Any) -> dict[str, np.ndarray]:
        if sig.name == "double":
            doubled = [example(x=2 * example_x(e)).SerializeToString() for e in inputs["examples"]]
            return {"examples": np.array(doubled, dtype=object)}
        if sig.name == "float_classify":
            return {"scores": inputs["inputs"].reshape(-1, 1)}
        x = np.array([example_x(e) for e in inputs["inputs"]], dtype=np.float32)
        if sig.name == "regress":
            return {"outputs": 2 * x + 1}
        if sig.name in ("scores_only", "predict_scores"):
            return {"scores": x.reshape(-1, 1)}
        p = x / 10
        return {
            "classes": np.array([[b"neg", b"pos"]] * len(x), dtype=object),
            "scores": np.stack([1 - p, p], axis=1),
        }

    return Servable(signatures, run)


def _examples_core() -> FakeCore:
    return FakeCore().add("examples", _examples_model()).add("lengths", _lengths())


def _on(signature: str, inputs: str = "request.inputs", name: str = "last") -> dict[str, Any]:
    return {"name": name, "model": "examples", "signature": signature, "inputs": {"inputs": inputs}}


DOUBLE = {
    "name": "double",
    "model": "examples",
    "signature": "double",
    "inputs": {"examples": "request.inputs"},
}


@pytest.mark.parametrize(
    ("method", "signature", "call"),
    [
        (CLASSIFY_METHOD, "classify", classify),
        (CLASSIFY_METHOD, "scores_only", classify),
        (REGRESS_METHOD, "regress", regress),
    ],
)
def test_a_pipeline_whose_last_step_classifies_or_regresses_does_as_the_step(
    tmp_path: Path, method: str, signature: str, call: Any
) -> None:
    core = _examples_core()
    step = _examples_model()
    xs = (1.0, 2.5, -4.0)
    # One step: the step's signature, under the pipeline's name and method.
    served = _load(core, _write(tmp_path, {"steps": [_on(signature)]}))
    [derived] = served.signatures.values()
    own = step.signatures[signature]
    assert (derived.name, derived.method_name) == ("serving_default", method)
    assert (dict(derived.inputs), dict(derived.outputs)) == (dict(own.inputs), dict(own.outputs))
    # Answered as the step answers, even where the method must be the API's.
    want = call(step, own, _examples(*xs), method_name_check=True)
    assert call(served, derived, _examples(*xs), method_name_check=True) == want
    # After a step that rewrites the examples: the last step's answer to what it was handed.
    doc = {"steps": [DOUBLE, _on(signature, "double.examples")]}
    served = _load(core, _write(tmp_path, doc))
    derived = served.signatures["serving_default"]
    assert derived.method_name == method
    doubled = call(step, own, _examples(*(2 * x for x in xs)), method_name_check=True)
    assert call(served, derived, _examples(*xs), method_name_check=True) == doubled
    assert doubled != want
    core.assert_released()


@pytest.mark.parametrize(
    ("outputs", "method"),
    [
        ({"classes": "last.classes", "scores": "last.scores"}, CLASSIFY_METHOD),
        ({"scores": "last.scores"}, CLASSIFY_METHOD),
        ({"classes": "last.classes"}, CLASSIFY_METHOD),
        # Renamed, swapped, or joined by another step's output: not the step's classify.
        ({"labels": "last.classes", "scores": "last.scores"}, PREDICT_METHOD),
        ({"classes": "last.scores", "scores": "last.classes"}, PREDICT_METHOD),
        ({"scores": "last.scores", "examples": "double.examples"}, PREDICT_METHOD),
        ({"scores": "double.examples"}, PREDICT_METHOD),
    ],
)
def test_mapped_outputs_keep_the_classify_method_only_as_the_steps_own(
    tmp_path: Path, outputs: dict[str, str], method: str
) -> None:
    doc = {"steps": [DOUBLE, _on("classify", "double.examples")], "outputs": outputs}
    served = _load(_examples_core(), _write(tmp_path, doc))
    assert served.signatures["serving_default"].method_name == method


@pytest.mark.parametrize(
    ("doc", "without_check"),
    [
        # The request's examples under another alias.
        ({"steps": [_on("classify", "request.examples")]}, "No classification inputs found"),
        # Two inputs of the request.
        (
            {
                "steps": [
                    _on("classify"),
                    {"name": "ids", "model": "lengths", "inputs": {"keys": "request.text"}},
                ],
                "outputs": {"classes": "last.classes", "scores": "last.scores"},
            },
            "Expected one input Tensor.",
        ),
        # A classify step that takes no serialized tf.Examples.
        (
            {"steps": [_on("float_classify")]},
            "Input 'inputs' of signature serving_default has dtype object",
        ),
        # A predict signature last, with a classifier's tensors: classify takes it without
        # the check (TFS's default), as TFS takes a TF2 model's.
        ({"steps": [_on("predict_scores")]}, None),
    ],
)
def test_a_pipeline_that_does_not_fit_classify_stays_predict(
    tmp_path: Path, doc: dict[str, Any], without_check: str | None
) -> None:
    served = _load(_examples_core(), _write(tmp_path, doc))
    signature = served.signatures["serving_default"]
    assert signature.method_name == PREDICT_METHOD
    inputs = {
        alias: np.array(_examples(1.0), dtype=object) if spec.dtype == S else np.ones(1, np.float32)
        for alias, spec in signature.inputs.items()
    }
    served.run(signature, inputs)  # a predict signature as before
    with pytest.raises(ServoError) as err:
        classify(served, signature, _examples(1.0), method_name_check=True)
    assert (err.value.code, err.value.message) == (
        Code.INVALID_ARGUMENT,
        f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
        f"Was: {PREDICT_METHOD}",
    )
    if without_check is None:
        assert classify(served, signature, _examples(3.0)) == [[Classification(b"", 3.0)]]
    else:
        with pytest.raises(ServoError) as err:
            classify(served, signature, _examples(1.0))
        assert err.value.code == Code.INVALID_ARGUMENT
        assert err.value.message.startswith(without_check), err.value.message


def test_a_step_failing_in_a_classify_is_named(tmp_path: Path) -> None:
    core = _examples_core()
    served = _load(core, _write(tmp_path, {"steps": [DOUBLE, _on("classify", "double.examples")]}))

    def fail(sig: Any, inputs: Any, outputs: Any) -> Any:
        raise ServoError(Code.RESOURCE_EXHAUSTED, "out of memory")

    core.add("examples", Servable(list(_examples_model().signatures.values()), fail), version=2)
    with pytest.raises(ServoError) as err:
        classify(served, served.signatures["serving_default"], _examples(1.0), True)
    assert (err.value.code, err.value.message) == (
        Code.RESOURCE_EXHAUSTED,
        "Pipeline step 'double' (model examples version 2): out of memory",
    )
    core.assert_released()
