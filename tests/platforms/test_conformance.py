"""The contract of a ModelServable (src/servo/platforms/servable.py), checked the same way on
every platform.

Each platform has a subject: a model of it written by the project's own code (servo's stand-ins
for TFS's test models for tensorflow and tflite, the example repository's models for onnx,
lookup and python), the signatures it has, inputs with the answers they must get, and the
mistakes a caller can make with it. Every test runs on every subject. What a platform does
beyond the contract is tested in its own file (test_tensorflow.py, test_tflite.py, ...).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import python as python_platform
from servo.platforms import router
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ModelServable,
    Signature,
    signature_def_map_json,
)
from servo.protos import get_model_metadata_pb2
from tests.support import examples
from tests.support.testdata import TfsModels

Inputs = dict[str, np.ndarray]
Sample = tuple[Inputs, dict[str, np.ndarray]]  # inputs, and the answer they must get
# A signature as the tests write it: method name, and (dtype, shape) by alias of its inputs and
# of its outputs.
Specs = dict[str, tuple[DataType, tuple[int, ...] | None]]
SignatureShape = tuple[str, Specs, Specs]

OPTIONS = PlatformOptions()
THREADS = 8
RUNS_PER_THREAD = 25
WAIT = 60.0  # seconds: a bound on waits for threads, never reached when things work


def strings(values: list[str]) -> np.ndarray:
    """An object array of UTF-8 bytes: servo's form of a string tensor."""
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() for v in values]
    return array


def at_rank(value: np.ndarray, rank: int) -> np.ndarray:
    """`value` with dims of 1 put in front up to `rank`; rank 0 keeps its first element."""
    if rank == 0:
        return value.reshape(-1)[:1].reshape(())
    return value.reshape((1,) * (rank - value.ndim) + value.shape)


# -- the subjects ----------------------------------------------------------------------------


def half_plus_two(_: str, i: int) -> Sample:
    """TFS's half_plus_two, y = x/2 + 2, on a batch of 1 to 4 (TF and TF Lite alike)."""
    x = (np.arange(i % 4 + 1, dtype=np.float32) + i).reshape(-1, 1)
    return {"x": x}, {"y": x / 2 + 2}


@functools.cache
def mlp_weights(version_dir: str) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(version_dir, "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def mlp(version_dir: str, i: int) -> Sample:
    """The example MLP (16 -> 64 ReLU -> 4), computed here from its weights."""
    w = mlp_weights(version_dir)
    x = np.random.default_rng(i).standard_normal((i % 4 + 1, 16)).astype(np.float32)
    hidden = np.maximum(x @ w["w0"] + w["b0"], 0)
    return {"x": x}, {"y": hidden @ w["w1"] + w["b1"]}


VOCAB: list[str] = examples.example_script().VOCAB


def vocab(_: str, i: int) -> Sample:
    """The example vocabulary: a word's line, -1 for words it does not have."""
    words = [VOCAB[(i + k) % len(VOCAB)] if k % 3 else f"unknown-{i}" for k in range(i % 4 + 1)]
    ids = [VOCAB.index(w) if w in VOCAB else -1 for w in words]
    return {"keys": strings(words)}, {"ids": np.array(ids, np.int64)}


def word_count(_: str, i: int) -> Sample:
    """The example Python model: words and characters of each text."""
    texts = [" ".join(["servo"] * ((i + k) % 5)) + "é" * k for k in range(i % 4 + 1)]
    return {"text": strings(texts)}, {
        "words": np.array([len(t.split()) for t in texts], np.int64),
        "chars": np.array([len(t) for t in texts], np.int64),
    }


@dataclass(frozen=True)
class Subject:
    platform: str
    source: tuple[str, str]  # ("tfs", TFS's model/version) or ("example", the script's name)
    model_file: str  # the file that makes a version directory one of this platform
    signatures: Mapping[str, SignatureShape]
    sample: Callable[[str, int], Sample]  # (version dir, i) -> inputs and their answer
    # A signature and inputs of a shape the model cannot take; None when every input of every
    # signature takes any shape.
    wrong_shape: tuple[str, Inputs] | None
    corrupt_code: Code  # load's code for a model file that does not parse (its docstring's)
    corruptions: tuple[str, ...] = ("garbage", "truncated")
    signature: str = DEFAULT_SIGNATURE  # the signature `sample` runs
    options: PlatformOptions = OPTIONS  # what the platform's load is given
    name: str = ""  # the subject's test id, when not its platform's name

    def __str__(self) -> str:
        return self.name or self.platform


F = DataType.DT_FLOAT
HALF_PLUS_TWO_BATCH: Specs = {"x": (F, (-1, 1))}
EXAMPLES_IN: Specs = {"inputs": (DataType.DT_STRING, None)}

SUBJECTS = (
    Subject(
        "tensorflow",
        ("tfs", "saved_model_half_plus_two_cpu/00000123"),
        "saved_model.pb",
        {
            "serving_default": (PREDICT_METHOD, HALF_PLUS_TWO_BATCH, {"y": (F, (-1, 1))}),
            "classify_x_to_y": (CLASSIFY_METHOD, EXAMPLES_IN, {"scores": (F, (-1, 1))}),
            "regress_x_to_y": (REGRESS_METHOD, EXAMPLES_IN, {"outputs": (F, (-1, 1))}),
            "regress_x_to_y2": (REGRESS_METHOD, EXAMPLES_IN, {"outputs": (F, (-1, 1))}),
            "regress_x2_to_y3": (
                REGRESS_METHOD,
                {"inputs": (F, (-1, 1))},
                {"outputs": (F, (-1, 1))},
            ),
        },
        half_plus_two,
        # The session takes any shape that y = a*x + b can take (as TFS's does); ParseExample
        # takes a scalar or a vector of serialized Examples only.
        ("regress_x_to_y", {"inputs": np.array([[b"x"]], dtype=object)}),
        Code.DATA_LOSS,
    ),
    Subject(
        "tflite",
        ("tfs", "saved_model_half_plus_two_tflite/00000123"),
        "model.tflite",
        {"serving_default": (PREDICT_METHOD, {"x": (F, (1, 1))}, {"y": (F, (1, 1))})},
        half_plus_two,
        # Inputs are resized to any shape fed, of 6 dims at most (XNNPack's most).
        ("serving_default", {"x": np.ones((1,) * 7, np.float32)}),
        Code.INVALID_ARGUMENT,
    ),
    Subject(
        "onnx",
        ("example", "mlp"),
        "model.onnx",
        {"serving_default": (PREDICT_METHOD, {"x": (F, (-1, 16))}, {"y": (F, (-1, 4))})},
        mlp,
        ("serving_default", {"x": np.ones((2, 15), np.float32)}),
        Code.DATA_LOSS,
    ),
    Subject(
        "lookup",
        ("example", "vocab"),
        "vocab.txt",
        {
            "serving_default": (
                PREDICT_METHOD,
                {"keys": (DataType.DT_STRING, None)},
                {"ids": (DataType.DT_INT64, None)},
            ),
            "ids_to_keys": (
                PREDICT_METHOD,
                {"ids": (DataType.DT_INT64, None)},
                {"keys": (DataType.DT_STRING, None)},
            ),
        },
        vocab,
        None,  # keys of any shape
        Code.INVALID_ARGUMENT,
        corruptions=("garbage",),  # any prefix of a vocabulary is one
    ),
    Subject(
        "python",
        ("example", "word_count"),
        "model.py",
        {
            "serving_default": (
                PREDICT_METHOD,
                {"text": (DataType.DT_STRING, (-1,))},
                {"words": (DataType.DT_INT64, (-1,)), "chars": (DataType.DT_INT64, (-1,))},
            )
        },
        word_count,
        ("serving_default", {"text": np.array([[b"a b"]], dtype=object)}),
        Code.INVALID_ARGUMENT,
    ),
)
# The same Python model in a worker process of its own (--python_model_isolation=process).
SUBJECTS += (
    replace(
        SUBJECTS[-1],
        options=PlatformOptions(extra={python_platform.ISOLATION_KEY: python_platform.PROCESS}),
        name="python-process",
    ),
)


@pytest.fixture(scope="module", params=SUBJECTS, ids=str)
def subject(request: pytest.FixtureRequest) -> Subject:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def version_dir(subject: Subject, tfs_models: TfsModels, example_models: Path) -> str:
    kind, name = subject.source
    if kind == "tfs":
        return tfs_models.path(*name.split("/"))
    return str(example_models / name / "1")


def load(subject: Subject, path: str) -> ModelServable:
    servable: ModelServable = router.import_platform(subject.platform).load(path, subject.options)
    return servable


@pytest.fixture(scope="module")
def servable(subject: Subject, version_dir: str) -> Iterator[ModelServable]:
    loaded = load(subject, version_dir)
    yield loaded
    loaded.close()


def describe(signature: Signature) -> SignatureShape:
    def specs(tensors: Mapping[str, Any]) -> Specs:
        return {alias: (spec.dtype, spec.shape) for alias, spec in tensors.items()}

    return signature.method_name, specs(signature.inputs), specs(signature.outputs)


def difference(out: Mapping[str, Any], answer: Mapping[str, np.ndarray]) -> str | None:
    """How `out` differs from `answer` (None when it does not): the same aliases, each an array
    of the answer's dtype and shape and values (floats to within rounding)."""
    if set(out) != set(answer):
        return f"outputs {sorted(out)}, expected {sorted(answer)}"
    for alias, want in answer.items():
        got = out[alias]
        if not isinstance(got, np.ndarray):
            return f"{alias}: a {type(got).__name__}, not an array"
        if (got.dtype, got.shape) != (want.dtype, want.shape):
            return f"{alias}: {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
        if want.dtype == object:
            same = got.tolist() == want.tolist()
        elif want.dtype.kind == "f":
            same = np.allclose(got, want, rtol=1e-5, atol=1e-5)
        else:
            same = np.array_equal(got, want)
        if not same:
            return f"{alias}: {got.tolist()}, expected {want.tolist()}"
    return None


def assert_answers(subject: Subject, servable: ModelServable, version_dir: str, i: int) -> None:
    inputs, answer = subject.sample(version_dir, i)
    out = servable.run(servable.signatures[subject.signature], inputs)
    assert difference(out, answer) is None, difference(out, answer)


def refused(
    servable: ModelServable,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_names: list[str] | None = None,
) -> ServoError:
    """The ServoError that `run` raises (any other exception fails the test as it is)."""
    with pytest.raises(ServoError) as err:
        servable.run(signature, inputs, output_names)
    return err.value


def other_dtype(value: np.ndarray) -> np.ndarray:
    """`value` with a dtype of another kind, or width, than its own."""
    if value.dtype == object:
        return np.arange(value.size, dtype=np.float64).reshape(value.shape)
    return value.astype(np.float32 if value.dtype == np.float64 else np.float64)


# -- signatures ------------------------------------------------------------------------------


def test_signatures_are_the_models(subject: Subject, servable: ModelServable) -> None:
    signatures = servable.signatures
    assert {name: describe(sig) for name, sig in signatures.items()} == subject.signatures
    for name, sig in signatures.items():
        assert sig.name == name
    # The metadata API's form: TFS's SignatureDefMap, field for field.
    json_format.ParseDict(
        signature_def_map_json(signatures), get_model_metadata_pb2.SignatureDefMap()
    )


def test_signatures_stay_as_loaded(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    before = {name: describe(sig) for name, sig in servable.signatures.items()}
    inputs, _ = subject.sample(version_dir, 3)
    sig = servable.signatures[subject.signature]
    servable.run(sig, inputs)
    with contextlib.suppress(Exception):  # how it fails is for the tests of mistakes below
        servable.run(sig, {})
    assert {name: describe(sig) for name, sig in servable.signatures.items()} == before
    again = load(subject, version_dir)
    try:
        assert {name: describe(sig) for name, sig in again.signatures.items()} == before
    finally:
        again.close()


# -- answers ---------------------------------------------------------------------------------


def test_answers_are_the_models(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    for i in range(8):  # batches of 1 to 4, each size twice
        assert_answers(subject, servable, version_dir, i)


def test_an_empty_batch_gets_an_empty_answer(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, answer = subject.sample(version_dir, 0)
    out = servable.run(
        servable.signatures[subject.signature], {k: v[:0] for k, v in inputs.items()}
    )
    empty = {k: v[:0] for k, v in answer.items()}
    assert difference(out, empty) is None, difference(out, empty)


def test_concurrent_runs_each_get_their_own_answer(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    sig = servable.signatures[subject.signature]
    samples = [subject.sample(version_dir, i) for i in range(THREADS * RUNS_PER_THREAD)]
    start = threading.Barrier(THREADS)
    failures: list[str] = []

    def work(thread: int) -> None:
        start.wait(timeout=WAIT)
        for i in range(thread, len(samples), THREADS):
            inputs, answer = samples[i]
            try:
                problem = difference(servable.run(sig, inputs), answer)
            except Exception as exc:  # reported as a failure of this run
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                failures.append(f"thread {thread}, sample {i}: {problem}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


# -- the caller's mistakes -------------------------------------------------------------------


def test_wrong_dtype_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, _ = subject.sample(version_dir, 1)
    alias = next(iter(inputs))
    inputs[alias] = other_dtype(inputs[alias])
    err = refused(servable, servable.signatures[subject.signature], inputs)
    assert err.code == Code.INVALID_ARGUMENT
    assert_answers(subject, servable, version_dir, 1)


def test_missing_input_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, _ = subject.sample(version_dir, 1)
    alias = next(iter(inputs))
    del inputs[alias]
    err = refused(servable, servable.signatures[subject.signature], inputs)
    assert err.code == Code.INVALID_ARGUMENT
    assert alias in err.message
    assert_answers(subject, servable, version_dir, 1)


def test_extra_input_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, _ = subject.sample(version_dir, 1)
    inputs["no_such_input"] = next(iter(inputs.values()))
    err = refused(servable, servable.signatures[subject.signature], inputs)
    assert err.code == Code.INVALID_ARGUMENT
    assert "no_such_input" in err.message
    assert_answers(subject, servable, version_dir, 1)


def test_shape_the_model_cannot_take_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    if subject.wrong_shape is None:
        # No shape is wrong: every input of every signature says so.
        specs = [s for sig in servable.signatures.values() for s in sig.inputs.values()]
        assert specs and all(spec.shape is None for spec in specs)
        return
    name, inputs = subject.wrong_shape
    err = refused(servable, servable.signatures[name], inputs)
    assert err.code == Code.INVALID_ARGUMENT
    assert_answers(subject, servable, version_dir, 2)


@pytest.mark.parametrize("rank", [0, 9])
def test_any_rank_is_answered_or_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str, rank: int
) -> None:
    """A platform may take ranks other than the signature's (TensorFlow's session does); a
    rank it cannot take is INVALID_ARGUMENT, never another error or a crash."""
    inputs, _ = subject.sample(version_dir, 0)  # a batch of one
    reshaped = {k: at_rank(v, rank) for k, v in inputs.items()}
    sig = servable.signatures[subject.signature]
    try:
        out = servable.run(sig, reshaped)
    except ServoError as err:
        assert err.code == Code.INVALID_ARGUMENT, err
    else:
        assert set(out) == set(sig.outputs)
        assert all(isinstance(v, np.ndarray) for v in out.values())
    assert_answers(subject, servable, version_dir, 2)


def test_unknown_signature_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, _ = subject.sample(version_dir, 1)
    sig = servable.signatures[subject.signature]
    other = Signature("no_such_signature", sig.inputs, sig.outputs, sig.method_name)
    err = refused(servable, other, inputs)
    assert (err.code, err.message) == (
        Code.INVALID_ARGUMENT,
        'Serving signature name: "no_such_signature" not found in signature def',
    )


def test_unknown_output_is_invalid_argument(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, _ = subject.sample(version_dir, 1)
    sig = servable.signatures[subject.signature]
    err = refused(servable, sig, inputs, [*sig.outputs, "no_such_output"])
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message.startswith(
        "output tensor alias not found in signature: no_such_output Outputs expected to be in "
        "the set {"
    )
    assert_answers(subject, servable, version_dir, 1)


# -- output_names ----------------------------------------------------------------------------


def test_output_names_choose_the_outputs(
    subject: Subject, servable: ModelServable, version_dir: str
) -> None:
    inputs, answer = subject.sample(version_dir, 2)
    sig = servable.signatures[subject.signature]
    for alias in sig.outputs:
        out = servable.run(sig, inputs, [alias])
        assert difference(out, {alias: answer[alias]}) is None, alias
    backwards = tuple(reversed(sig.outputs))
    out = servable.run(sig, inputs, backwards)
    assert difference(out, answer) is None


TWO_OUTPUTS_MODEL_PY = """
class Model:
    signatures = {
        "serving_default": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {
                "double": {"dtype": "float32", "shape": [-1]},
                "square": {"dtype": "float32", "shape": [-1]},
            },
        }
    }

    def predict(self, inputs, signature_name):
        x = inputs["x"]
        return {"double": x * 2, "square": x * x}
"""


def write_two_outputs(platform: str, version: Path) -> None:
    """A model of `platform` with one signature, x (float [-1]) -> double = 2x, square = x*x."""
    version.mkdir(parents=True)
    if platform == "python":
        (version / "model.py").write_text(textwrap.dedent(TWO_OUTPUTS_MODEL_PY))
    elif platform == "onnx":
        import onnx
        from onnx import TensorProto, helper

        def value(name: str) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"])

        graph = helper.make_graph(
            [
                helper.make_node("Add", ["x", "x"], ["double"]),
                helper.make_node("Mul", ["x", "x"], ["square"]),
            ],
            "two_outputs",
            [value("x")],
            [value("double"), value("square")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (version / "model.onnx").write_bytes(model.SerializeToString())
    else:
        import tensorflow as tf

        class TwoOutputs(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
                return {"double": x * 2.0, "square": x * x}

        module = TwoOutputs()
        if platform == "tensorflow":
            tf.saved_model.save(module, str(version), signatures={"serving_default": module.serve})
        else:
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [module.serve.get_concrete_function()], module
            )
            (version / "model.tflite").write_bytes(converter.convert())


@pytest.fixture(scope="module", params=["tensorflow", "tflite", "onnx", "python"])
def two_outputs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServable]:
    """A servable of a platform whose signatures can have several outputs (a lookup table's
    have one each)."""
    platform: str = request.param
    version = tmp_path_factory.mktemp(f"two-outputs-{platform}") / "1"
    write_two_outputs(platform, version)
    loaded: ModelServable = router.import_platform(platform).load(str(version), OPTIONS)
    yield loaded
    loaded.close()


def test_output_names_choose_among_several_outputs(two_outputs: ModelServable) -> None:
    sig = two_outputs.signatures[DEFAULT_SIGNATURE]
    assert set(sig.outputs) == {"double", "square"}
    x = np.array([1.0, -2.0, 3.5], np.float32)
    answer = {"double": x * 2, "square": x * x}
    for wanted in (["double"], ("square",), ["square", "double"], None):
        out = two_outputs.run(sig, {"x": x}, wanted)
        expected = answer if wanted is None else {alias: answer[alias] for alias in wanted}
        assert difference(out, expected) is None, (wanted, difference(out, expected))
        assert set(out) == set(expected)


# -- close -----------------------------------------------------------------------------------


def test_closed_servable_refuses_to_run_and_closes_again_quietly(
    subject: Subject, version_dir: str
) -> None:
    closing = load(subject, version_dir)
    sig = closing.signatures[subject.signature]
    assert_answers(subject, closing, version_dir, 1)
    closing.close()
    closing.close()
    inputs, _ = subject.sample(version_dir, 1)
    err = refused(closing, sig, inputs)
    assert err.code == Code.FAILED_PRECONDITION
    assert "unloaded" in err.message and version_dir in err.message, err.message
    closing.close()


# -- load failures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """What a failed load could leave behind in the process and in the version directory."""

    modules: frozenset[str]
    threads: frozenset[str]  # the process's OS threads
    files: frozenset[tuple[str, str]]  # open file descriptors and what they point at
    tree: frozenset[tuple[str, int, int]]  # the version directory: path, size, mtime

    @classmethod
    def take(cls, version: Path) -> Footprint:
        gc.collect()
        files = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the descriptor listing the directory itself
                files.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        tree = set()
        for path in version.rglob("*"):
            stat = path.lstat()
            tree.add((str(path.relative_to(version)), stat.st_size, stat.st_mtime_ns))
        return cls(
            frozenset(sys.modules),
            frozenset(os.listdir("/proc/self/task")),
            frozenset(files),
            frozenset(tree),
        )

    def left_since(self, before: Footprint) -> dict[str, Any]:
        """What is here that was not `before` (and, for the directory, what changed)."""
        left = {
            "modules": sorted(self.modules - before.modules),
            "threads": sorted(self.threads - before.threads),
            "files": sorted(self.files - before.files),
            "directory": sorted(self.tree ^ before.tree),
        }
        return {k: v for k, v in left.items() if v}


def assert_fails_cleanly(subject: Subject, version: Path, code: Code, named: Path) -> ServoError:
    """`load` of `version` raises ServoError(`code`) naming `named`, and a second try leaves
    nothing behind (the first may initialize what a runtime keeps for the process)."""
    for attempt in ("first", "second"):
        before = Footprint.take(version)
        with pytest.raises(ServoError) as err:
            load(subject, str(version))
        assert err.value.code == code, err.value
        assert str(named) in err.value.message, err.value.message
        if attempt == "second":
            assert Footprint.take(version).left_since(before) == {}
    return err.value


@pytest.fixture
def broken(version_dir: str, tmp_path: Path) -> Path:
    """A copy of the subject's version directory, to break."""
    version = tmp_path / "1"
    shutil.copytree(version_dir, version)
    return version


def test_version_without_the_model_file_is_not_found(subject: Subject, broken: Path) -> None:
    (broken / subject.model_file).unlink()
    assert_fails_cleanly(subject, broken, Code.NOT_FOUND, broken)


def test_empty_version_directory_is_not_found(subject: Subject, tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    assert_fails_cleanly(subject, version, Code.NOT_FOUND, version)


def test_model_file_that_is_a_directory_is_not_found(subject: Subject, broken: Path) -> None:
    (broken / subject.model_file).unlink()
    (broken / subject.model_file).mkdir()
    assert_fails_cleanly(subject, broken, Code.NOT_FOUND, broken)


def test_corrupt_model_file_fails_with_the_platforms_code(subject: Subject, broken: Path) -> None:
    model_file = broken / subject.model_file
    good = model_file.read_bytes()
    for corruption in subject.corruptions:
        if corruption == "garbage":
            model_file.write_bytes(b"\x00\xff garbage, not a model \xfe" * 16)
        else:  # an interrupted copy
            model_file.write_bytes(good[: len(good) // 2])
        assert_fails_cleanly(subject, broken, subject.corrupt_code, model_file)
