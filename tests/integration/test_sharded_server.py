"""A table split across 3 servers, on real processes: the front answers every key as the whole
table does (TFS REST, TFS gRPC with TFS's client, v2), a stopped shard gives UNAVAILABLE naming
it, and a shard that serves another table version than the others is detected, never mixed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from servo.cli.split_table import split
from servo.platforms.sharding import shard_of
from tests.support.server import ServerProcess, grpc_stubs, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEYS = [f"item-{i}" for i in range(300)]
UNKNOWN = ["nope", "", "item-300"]


def _write_table(path: Path) -> Path:
    version = path / "1"
    version.mkdir(parents=True)
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((len(KEYS), 4)).astype(np.float32)
    text = "".join(
        f"{k}\t{' '.join(repr(float(v)) for v in row)}\n" for k, row in zip(KEYS, rows, strict=True)
    )
    (version / "embeddings.tsv").write_text(text)
    (version / "lookup.json").write_text(json.dumps({"default_value": -1.0}))
    return version


def _keys_not_on(shard: int) -> list[str]:
    owners = shard_of([k.encode() for k in KEYS], 3).tolist()
    return [k for k, s in zip(KEYS, owners, strict=True) if s != shard]


@dataclass
class Cluster:
    shards: list[ServerProcess]
    front: ServerProcess
    out: Path

    def predict(self, model: str, keys: list[str]) -> httpx.Response:
        return httpx.post(
            f"{self.front.rest}/v1/models/{model}:predict",
            json={"inputs": {"keys": keys}},
            timeout=30,
        )


@contextmanager
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """3 shard servers, and a front server serving the front and the whole table."""
    table = _write_table(tmp_path / "emb")
    out = tmp_path / "out"
    split(str(table), 3, str(out))
    with ExitStack() as stack:
        shards = [
            stack.enter_context(
                running_server(
                    [
                        "--model_name=emb",
                        f"--model_base_path={out / f'shard-{i}'}",
                        "--model_platform=lookup",
                        "--file_system_poll_wait_seconds=1",
                    ]
                )
            )
            for i in range(3)
        ]
        front_dir = out / "front" / "1"
        front_dir.mkdir(parents=True)
        sharded = {"model": "emb", "shards": [s.grpc_target for s in shards], "deadline_ms": 5000}
        (front_dir / "sharded.json").write_text(json.dumps(sharded))
        config = tmp_path / "models.config"
        config.write_text(
            model_config([("whole", table.parent, "lookup"), ("front", out / "front", "sharded")])
        )
        front = stack.enter_context(running_server([f"--model_config_file={config}"]))
        yield Cluster(shards, front, out)


def test_the_front_answers_every_key_as_the_whole_table(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    with cluster(tmp_path) as c:
        asked = [*KEYS, *UNKNOWN][::-1]  # keys of every shard, interleaved, and unknown ones
        whole = c.predict("whole", asked)
        front = c.predict("front", asked)
        assert whole.status_code == 200 and front.status_code == 200, front.text
        assert front.json() == whole.json()
        # A batch of any shape keeps its shape; TFS's gRPC client sees the same numbers.
        grid = np.array(asked[:12], dtype=object).reshape(3, 4)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "front"
        request.inputs["keys"].CopyFrom(tf.make_tensor_proto(grid))
        with grpc_stubs(c.front) as stubs:
            response = stubs.predictions.Predict(request, timeout=30)
        values = tf.make_ndarray(response.outputs["values"])
        assert values.shape == (3, 4, 4)
        expected = np.asarray(whole.json()["outputs"][:12], dtype=np.float32)
        assert np.array_equal(values.reshape(12, 4), expected)
        # v2
        infer = {"inputs": [{"name": "keys", "shape": [3], "datatype": "BYTES",
                             "data": asked[:3]}]}  # fmt: skip
        v2 = httpx.post(f"{c.front.rest}/v2/models/front/infer", json=infer, timeout=30).json()
        flat = [v for row in whole.json()["outputs"][:3] for v in row]
        assert v2["outputs"][0]["data"] == pytest.approx(flat)
        # One shard stops: its keys answer UNAVAILABLE naming it; the others' still answer.
        stopped = c.shards[1]
        assert stopped.stop() == 0
        answer = c.predict("front", asked)
        assert answer.status_code == 503
        assert f"Shard 1 of 3 (emb at {stopped.grpc_target}) is unavailable" in answer.text
        from servo.platforms.sharding import shard_of

        others = [
            k for k, s in zip(KEYS, shard_of([k.encode() for k in KEYS], 3), strict=True) if s != 1
        ]
        assert c.predict("front", others).json() == c.predict("whole", others).json()
        assert c.front.stop() == 0


def test_a_shard_serving_another_table_version_is_detected(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        assert c.predict("front", KEYS).status_code == 200
        # Version 2 reaches shard 2 only (an update half rolled out): same data, new version.
        shutil.copytree(c.out / "shard-2" / "1", c.out / "shard-2" / "2")

        def shard_2_serves_2() -> bool:
            status = httpx.get(f"{c.shards[2].rest}/v1/models/emb", timeout=30).json()
            states = {s["version"]: s["state"] for s in status["model_version_status"]}
            return states.get("2") == "AVAILABLE" and states.get("1") == "END"

        wait_until(shard_2_serves_2, what="shard 2 serving version 2 alone")
        answer = c.predict("front", KEYS)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert "answered from different table versions" in error
        assert "shards 0, 1 serve version 1; shard 2 serves version 2" in error
        # Keys of shards that agree still answer: nothing was mixed into them.
        from servo.platforms.sharding import shard_of

        agreeing = [
            k for k, s in zip(KEYS, shard_of([k.encode() for k in KEYS], 3), strict=True) if s != 2
        ]
        assert c.predict("front", agreeing).json() == c.predict("whole", agreeing).json()
        # The update reaches the other shards: the front answers again, from version 2.
        for i in (0, 1):
            shutil.copytree(c.out / f"shard-{i}" / "1", c.out / f"shard-{i}" / "2")
        wait_until(lambda: c.predict("front", KEYS).status_code == 200, what="all shards on 2")
        assert c.predict("front", KEYS).json() == c.predict("whole", KEYS).json()
