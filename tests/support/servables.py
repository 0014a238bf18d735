"""Small in-memory servables for tests of the data plane and the APIs.

`Servable(signatures, run)` is a ModelServable made of its signatures and one function; the
helpers build the ones the tests share: TFS's half_plus_two in miniature (predict, and
classify and regress on tf.Examples), an echo, one whose calls wait for the test (`Gate`), and
one whose calls raise. Every Servable records the thread each call ran on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from servo.dtypes import DataType
from servo.platforms.servable import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ModelServable,
    Signature,
    TensorSpec,
)
from servo.protos import example_pb2

Run = Callable[[Signature, Mapping[str, np.ndarray], Sequence[str] | None], dict[str, np.ndarray]]


class Servable(ModelServable):
    """Signatures and a function that runs them; `calls` records (signature, thread name)."""

    platform = "fake"

    def __init__(self, signatures: Sequence[Signature], run: Run) -> None:
        self._signatures = {s.name: s for s in signatures}
        self._run = run
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self.calls.append((signature.name, threading.current_thread().name))
        outputs = self._run(signature, inputs, output_names)
        return {k: v for k, v in outputs.items() if output_names is None or k in output_names}

    def close(self) -> None:
        self.closed = True


FLOAT_COLUMN = TensorSpec(DataType.DT_FLOAT, (-1, 1), "x:0")
EXAMPLES = TensorSpec(DataType.DT_STRING, None, "tf_example:0")


def example_x(serialized: bytes) -> float:
    """Feature "x" of a serialized tf.Example (its first float)."""
    example = example_pb2.Example.FromString(serialized)
    return float(example.features.feature["x"].float_list.value[0])


def half_plus_two() -> Servable:
    """y = x / 2 + 2, as TFS's half_plus_two: `serving_default` (predict, x -> y), and
    `classify_x_to_y` / `regress_x_to_y` on tf.Examples with a float feature x."""
    y = TensorSpec(DataType.DT_FLOAT, (-1, 1), "y:0")
    signatures = [
        Signature("serving_default", {"x": FLOAT_COLUMN}, {"y": y}, PREDICT_METHOD),
        Signature("classify_x_to_y", {"inputs": EXAMPLES}, {"scores": y}, CLASSIFY_METHOD),
        Signature("regress_x_to_y", {"inputs": EXAMPLES}, {"outputs": y}, REGRESS_METHOD),
    ]

    def run(
        signature: Signature, inputs: Mapping[str, np.ndarray], _: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        if signature.name == "serving_default":
            return {"y": inputs["x"] / 2 + 2}
        x = np.array([[example_x(e)] for e in inputs["inputs"]], dtype=np.float32)
        key = "scores" if signature.name.startswith("classify") else "outputs"
        return {key: x / 2 + 2}

    return Servable(signatures, run)


def echo(dtype: DataType = DataType.DT_FLOAT, **extra: Any) -> Servable:
    """`serving_default`: x -> x, of `dtype`, any shape with a batch dim."""
    spec = TensorSpec(dtype, (-1,), "x")
    signature = Signature("serving_default", {"x": spec}, {"x": spec}, **extra)
    return Servable([signature], lambda s, inputs, _: {"x": inputs["x"]})


class Gate:
    """A servable whose calls wait until the test opens the gate: `started` is set once a call
    runs; `open()` lets every call through (bounded, so that a failed test cannot hang).
    `serving_default` predicts x -> x; `classify` classifies examples (score 1 each)."""

    WAIT = 30.0

    def __init__(self) -> None:
        self.started = threading.Event()
        self._open = threading.Event()
        spec = TensorSpec(DataType.DT_FLOAT, (-1,), "x")
        scores = TensorSpec(DataType.DT_FLOAT, (-1, 1))

        def run(
            signature: Signature, inputs: Mapping[str, np.ndarray], _: Sequence[str] | None
        ) -> dict[str, np.ndarray]:
            self.started.set()
            assert self._open.wait(self.WAIT), "the gate was never opened"
            if signature.name == "classify":
                return {"scores": np.ones((len(inputs["inputs"]), 1), np.float32)}
            return {"x": inputs["x"]}

        self.servable = Servable(
            [
                Signature("serving_default", {"x": spec}, {"x": spec}),
                Signature("classify", {"inputs": EXAMPLES}, {"scores": scores}, CLASSIFY_METHOD),
            ],
            run,
        )

    def open(self) -> None:
        self._open.set()


def raising(exc: BaseException) -> Servable:
    """`serving_default` (x -> x) whose every call raises `exc`."""

    def run(
        signature: Signature, inputs: Mapping[str, np.ndarray], _: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        raise exc

    spec = TensorSpec(DataType.DT_FLOAT, (-1,), "x")
    return Servable([Signature("serving_default", {"x": spec}, {"x": spec})], run)
