"""The sharded front against shard servers it cannot trust: in-process gRPC servers that answer
as a shard of a table would, or slowly, or as another shard, or with another table. The front
on real servo shards is tests/integration/test_sharded_server.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from servo import tensor_codec
from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import sharded
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import within_deadline
from servo.platforms.sharding import shard_of
from servo.protos.predict_pb2 import PredictRequest, PredictResponse
from tests.support.server import free_port


@dataclass
class FakeShard:
    """Answers `shard` lookups of a table where key k maps to [len(k), index] (dim values)."""

    index: int
    count: int
    version: int = 1
    dim: int = 2
    claims: tuple[int, int] | None = None  # which shard it says it is (default: its own)
    hold: threading.Event | None = None  # set to let calls answer (default: at once)
    asked: list[list[bytes]] = field(default_factory=list)

    def predict(self, request: PredictRequest, context: Any) -> PredictResponse:
        keys = tensor_codec.to_ndarray(request.inputs["keys"]).tolist()
        self.asked.append(keys)
        if self.hold is not None:
            self.hold.wait(30)
        assert request.model_spec.signature_name == "shard"
        values = np.array(
            [[len(k), self.index] + [0] * (self.dim - 2) for k in keys], dtype=np.float32
        ).reshape(len(keys), self.dim)
        response = PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.version
        tensor_codec.from_ndarray(values, into=response.outputs["values"])
        claims = self.claims or (self.index, self.count)
        tensor_codec.from_ndarray(
            np.array(claims, np.int64), DataType.DT_INT64, into=response.outputs["shard"]
        )
        return response


@contextmanager
def serving(shard: FakeShard) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                shard.predict,
                request_deserializer=PredictRequest.FromString,
                response_serializer=PredictResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if shard.hold is not None:
            shard.hold.set()
        server.stop(None)


def _front(tmp_path: Path, addresses: list[str], **settings: Any) -> sharded.ShardedTable:
    version = tmp_path / "1"
    version.mkdir(exist_ok=True)
    doc = {"model": "emb", "shards": addresses, "connect_timeout_ms": 5000, **settings}
    (version / "sharded.json").write_text(json.dumps(doc))
    return sharded.load(str(version), PlatformOptions(model_name="front"))


@contextmanager
def front_of(tmp_path: Path, shards: list[FakeShard], **settings: Any) -> Iterator[Any]:
    with ExitStack() as stack:
        addresses = [stack.enter_context(serving(s)) for s in shards]
        table = _front(tmp_path, addresses, **settings)
        stack.callback(table.close)
        yield table


def lookup(table: sharded.ShardedTable, keys: Any) -> np.ndarray:
    array = np.array(keys, dtype=object)
    return table.run(table.signatures["serving_default"], {"keys": array})["values"]


def test_keys_go_to_their_shards_and_come_back_in_the_requests_order(tmp_path: Path) -> None:
    shards = [FakeShard(i, 3) for i in range(3)]
    with front_of(tmp_path, shards) as table:
        sig = table.signatures["serving_default"]
        assert sig.inputs["keys"].dtype == DataType.DT_STRING
        assert sig.outputs["values"].dtype == DataType.DT_FLOAT
        keys = [f"k{'x' * i}".encode() for i in range(40)]
        for shard in shards:
            shard.asked.clear()
        values = lookup(table, np.array(keys, dtype=object).reshape(5, 8))
        assert values.shape == (5, 8, 2)
        owners = shard_of(keys, 3).tolist()
        assert values.reshape(40, 2).tolist() == [
            [len(k), o] for k, o in zip(keys, owners, strict=True)
        ]
        for shard in shards:  # one call per shard, with its keys only
            assert shard.asked == [
                [k for k, o in zip(keys, owners, strict=True) if o == shard.index]
            ]
        # A shard with none of a request's keys is not asked.
        mine = [k for k, o in zip(keys, owners, strict=True) if o == 0]
        lookup(table, mine)
        assert [len(s.asked) for s in shards] == [2, 1, 1]
        assert lookup(table, np.zeros(0, dtype=object)).shape == (0, 2)


def test_a_shard_that_is_another_shard_is_refused(tmp_path: Path) -> None:
    shards = [FakeShard(0, 2), FakeShard(1, 2, claims=(0, 2))]
    with pytest.raises(ServoError) as caught, front_of(tmp_path, shards):
        pass
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert "Shard 1 of 2 (emb at 127.0.0.1:" in caught.value.message
    assert "answers as shard 0 of 2" in caught.value.message


def test_shards_of_different_tables_are_refused(tmp_path: Path) -> None:
    shards = [FakeShard(0, 2), FakeShard(1, 2, dim=3)]
    with pytest.raises(ServoError) as caught, front_of(tmp_path, shards):
        pass
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert "the shards hold different tables" in caught.value.message


def test_an_answer_servo_cannot_read_is_the_shards_fault(tmp_path: Path) -> None:
    class Garbled(FakeShard):
        def predict(self, request: PredictRequest, context: Any) -> PredictResponse:
            response = super().predict(request, context)
            response.outputs["values"].tensor_content = b"\x00" * 3  # not whole float32s
            return response

    with pytest.raises(ServoError) as caught, front_of(tmp_path, [Garbled(0, 1)]):
        pass
    assert caught.value.code == Code.INTERNAL
    assert "Shard 0 of 1 (emb at 127.0.0.1:" in caught.value.message
    assert "answered a tensor servo cannot read" in caught.value.message


def test_versions_that_differ_are_refused_naming_them(tmp_path: Path) -> None:
    shards = [FakeShard(0, 3), FakeShard(1, 3, version=2), FakeShard(2, 3)]
    with pytest.raises(ServoError) as caught, front_of(tmp_path, shards):
        pass
    assert caught.value.code == Code.UNAVAILABLE
    assert "shards 0, 2 serve version 1; shard 1 serves version 2" in caught.value.message


def test_a_pinned_version_is_what_every_shard_is_asked_for(tmp_path: Path) -> None:
    seen: list[int] = []

    class Pinned(FakeShard):
        def predict(self, request: PredictRequest, context: Any) -> PredictResponse:
            seen.append(request.model_spec.version.value)
            return super().predict(request, context)

    with front_of(tmp_path, [Pinned(0, 1, version=7)], version=7) as table:
        lookup(table, [b"a"])
    assert seen == [7, 7]


def test_a_slow_shard_answers_deadline_exceeded_naming_it(tmp_path: Path) -> None:
    hold = threading.Event()
    slow = FakeShard(1, 2)
    with front_of(tmp_path, [FakeShard(0, 2), slow], deadline_ms=200) as table:
        slow.hold = hold
        keys = [f"k{i}".encode() for i in range(20)]
        with pytest.raises(ServoError) as caught:
            lookup(table, keys)
        assert caught.value.code == Code.DEADLINE_EXCEEDED
        assert "Shard 1 of 2" in caught.value.message
        assert "deadline_ms 200" in caught.value.message
        # A request whose deadline has passed asks no shard.
        with pytest.raises(ServoError) as passed:
            within_deadline(time.monotonic() - 1, lambda: lookup(table, keys))
        assert passed.value.code == Code.DEADLINE_EXCEEDED
        hold.set()


def test_a_shard_that_is_down_fails_the_load_naming_it(tmp_path: Path) -> None:
    with serving(FakeShard(0, 2)) as up:
        down = f"127.0.0.1:{free_port()}"
        with pytest.raises(ServoError) as caught:
            _front(tmp_path, [up, down], connect_timeout_ms=300)
    assert caught.value.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
    assert f"Shard 1 of 2 (emb at {down})" in caught.value.message


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({}, '"shards" must list'),
        ({"shards": []}, '"shards" must list'),
        ({"shards": ["no-port"]}, '"shards" must list'),
        ({"shards": ["a:1", "a:1"]}, "lists an address twice"),
        ({"shards": ["a:1"], "deadline_ms": 0}, '"deadline_ms" must be a positive integer'),
        ({"shards": ["a:1"], "version": "3"}, '"version" must be a version number'),
        ({"shards": ["a:1"], "model": ""}, '"model" must name'),
        ({"shards": ["a:1"], "shard": 1}, "unknown field(s) shard"),
    ],
)
def test_settings_are_checked(tmp_path: Path, doc: dict[str, Any], words: str) -> None:
    (tmp_path / "sharded.json").write_text(json.dumps(doc))
    with pytest.raises(ServoError) as caught:
        sharded.read_settings(str(tmp_path), "front")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert words in caught.value.message


def test_settings_defaults(tmp_path: Path) -> None:
    (tmp_path / "sharded.json").write_text(json.dumps({"shards": ["a:1", "b:2"]}))
    settings = sharded.read_settings(str(tmp_path), "front")
    assert settings == sharded.Settings("front", ("a:1", "b:2"), None, 1000, 30000, 64 << 20)
