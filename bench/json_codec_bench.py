"""The REST JSON codec's hot path, in microseconds per call: the example MLP's one-row predict.

Parses `{"instances": [[16 floats]]}` for a float signature and writes the 4-float answer,
next to bare orjson doing only the JSON part, so that the codec's own cost is the difference.
Also a 64-row body, NaN answers (the slow writing path) and the columnar form, for scale.
Best of several timeit repeats; no assertion (timings belong to the machine).

    python bench/json_codec_bench.py [--number 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from servo.apis.rest import json_codec
from servo.dtypes import DataType
from servo.platforms.servable import Signature, TensorSpec

SIGNATURE = Signature(
    "serving_default",
    {"x": TensorSpec(DataType.DT_FLOAT, (-1, 16), "x:0")},
    {"y": TensorSpec(DataType.DT_FLOAT, (-1, 4), "y:0")},
)


def get_signature(name: str) -> Signature:
    return SIGNATURE


def body(rows: int, form: str = "instances") -> bytes:
    return orjson.dumps({form: [[0.1 * (i + r) for i in range(16)] for r in range(rows)]})


def answer(rows: int) -> dict[str, np.ndarray]:
    return {"y": np.linspace(0, 1, 4 * rows, dtype=np.float32).reshape(rows, 4)}


def micros(call: Callable[[], Any], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the best one counts")
    args = parser.parse_args()

    one, many, columnar = body(1), body(64), body(1, "inputs")
    parsed_one, parsed_many = orjson.loads(one), orjson.loads(many)
    out_one, out_many = answer(1), answer(64)
    out_nan = {"y": np.array([[0.5, np.nan, np.inf, 2.05]], np.float32)}

    def parse(doc: dict[str, Any]) -> json_codec.PredictBody:
        return json_codec.parse_predict(doc, get_signature)

    def orjson_dumps(outputs: dict[str, np.ndarray]) -> bytes:
        return orjson.dumps({"predictions": outputs["y"]}, option=orjson.OPT_SERIALIZE_NUMPY)

    # (name, call, how many times slower than the one-row calls, to keep runs short)
    cases: list[tuple[str, Callable[[], Any], int]] = [
        ("orjson.loads, 1 row (baseline)", lambda: orjson.loads(one), 1),
        ("loads, 1 row", lambda: json_codec.loads(one), 1),
        ("parse_predict, 1 row (parsed doc)", lambda: parse(parsed_one), 1),
        ("loads + parse_predict, 1 row", lambda: parse(json_codec.loads(one)), 1),
        ("loads + parse_predict, columnar", lambda: parse(json_codec.loads(columnar)), 1),
        ("orjson.dumps, 1 row (baseline)", lambda: orjson_dumps(out_one), 1),
        ("dumps_predict, 1 row", lambda: json_codec.dumps_predict(out_one, True), 1),
        ("dumps_predict, NaN and Infinity", lambda: json_codec.dumps_predict(out_nan, True), 1),
        ("orjson.loads, 64 rows (baseline)", lambda: orjson.loads(many), 20),
        ("parse_predict, 64 rows (parsed doc)", lambda: parse(parsed_many), 20),
        ("orjson.dumps, 64 rows (baseline)", lambda: orjson_dumps(out_many), 20),
        ("dumps_predict, 64 rows", lambda: json_codec.dumps_predict(out_many, True), 20),
    ]
    width = max(len(name) for name, _, _ in cases)
    print(f"{'case':<{width}}  us/call")
    for name, call, divisor in cases:
        number = max(args.number // divisor, 100)
        print(f"{name:<{width}}  {micros(call, number, args.repeat):7.2f}")


if __name__ == "__main__":
    main()
