"""Classify built on `run`, as TFS builds it: the outputs a classifier may answer, and the
clear refusals of those it may not."""

from __future__ import annotations

import numpy as np
import pytest

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms.servable import (
    CLASSIFY_METHOD,
    Signature,
    TensorSpec,
    classify,
)
from tests.support.requests import example
from tests.support.servables import Servable

SIGNATURE = Signature(
    "classify",
    {"inputs": TensorSpec(DataType.DT_STRING, (-1,), "in:0")},
    {
        "classes": TensorSpec(DataType.DT_STRING, (-1, 2), "c:0"),
        "scores": TensorSpec(DataType.DT_FLOAT, (-1, 2), "s:0"),
    },
    CLASSIFY_METHOD,
)
EXAMPLES = [example(x=1.0).SerializeToString(), example(x=2.0).SerializeToString()]


def classifier(scores: np.ndarray) -> Servable:
    classes = np.array([[b"a", b"b"], [b"a", b"b"]], dtype=object)
    return Servable([SIGNATURE], lambda sig, inputs, names: {"classes": classes, "scores": scores})


def test_scores_of_any_real_type_are_answered() -> None:
    for scores in (np.array([[0.25, 0.75], [1, 0]], np.float64), np.array([[1, 0], [0, 1]])):
        results = classify(classifier(scores), SIGNATURE, EXAMPLES)
        assert [[(c.label, c.score) for c in row] for row in results] == [
            [(b"a", float(scores[0, 0])), (b"b", float(scores[0, 1]))],
            [(b"a", float(scores[1, 0])), (b"b", float(scores[1, 1]))],
        ]


def test_scores_that_are_not_numbers_are_refused_in_tfs_words() -> None:
    scores = np.array([[b"x", b"y"], [b"x", b"y"]], dtype=object)
    with pytest.raises(ServoError) as caught:
        classify(classifier(scores), SIGNATURE, EXAMPLES)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.message == "Expected scores Tensor of DT_FLOAT. Got: object"
