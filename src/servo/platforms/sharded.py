"""The `sharded` platform: the front of a table split by key across several servers.

Each shard is a lookup table of its own (`servo.platforms.lookup` with `"shard": {"index": i,
"count": n}` in its settings), served by a servo of its own. The front's version directory
holds `sharded.json`:

    {
      "model": "embeddings",
      "shards": ["10.0.0.1:8500", "10.0.0.2:8500", "10.0.0.3:8500"],
      "version": 3,
      "deadline_ms": 1000,
      "connect_timeout_ms": 30000,
      "max_message_bytes": 67108864
    }

- `shards`: the shards' gRPC addresses, shard 0 first; `model`: the table's model name on
  them (default: the front's own model name). `version` pins the table version every shard
  is asked for (default: each shard's newest). `deadline_ms` bounds each call to a shard
  (default 1000; a request's own deadline, when shorter, wins); `connect_timeout_ms` how long
  the front's load waits for every shard to answer (default 30000); `max_message_bytes` the
  largest answer a shard may send (default 64 MiB).
- The front's signature `serving_default` is the table's: keys (DT_STRING, any shape) -> the
  table's output (`values` of an embedding table, `ids` of a vocabulary). A request's keys are
  split by shard (`servo.platforms.sharding`), each shard with keys gets one
  `PredictionService/Predict` call on its `shard` signature, all at once, and the answers are
  put back in the request's key order.
- Every answer says which shard it comes from and which version of the table it holds (its
  model spec). The front refuses an answer from a server that is another shard than the one
  its place in `shards` says (FAILED_PRECONDITION: the list's order or a shard's settings are
  wrong), and a request whose shards answered from different table versions (UNAVAILABLE
  naming the shards and their versions: an update that has reached some shards and not
  others; pin `version` to roll shards one by one). A shard that is down, does not serve the
  table or does not answer in time gives UNAVAILABLE (or DEADLINE_EXCEEDED) naming the shard,
  its address and the model; the shard's own error code otherwise, always naming the shard.
- The front's load asks every shard for no keys: it fails (UNAVAILABLE, naming the shard, and
  is retried as any failed load) while a shard cannot answer, and learns the table's output,
  its dtype and its row shape, which every later answer must keep.

The calls are plaintext gRPC: shards belong on a network the operator trusts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from servo import tensor_codec
from servo.core.status import Code, ServoError
from servo.dtypes import DataType, from_numpy
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    ModelServable,
    Signature,
    TensorSpec,
    call_deadline,
    checked_call,
    unloaded,
)
from servo.platforms.sharding import SHARD_OUTPUT, SHARD_SIGNATURE, shard_of
from servo.protos.predict_pb2 import PredictRequest, PredictResponse

PLATFORM = "sharded"
SHARDED_FILE = "sharded.json"
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
_FIELDS = {"model", "shards", "version", "deadline_ms", "connect_timeout_ms", "max_message_bytes"}


_LIMITS = {"deadline_ms": 1000, "connect_timeout_ms": 30000, "max_message_bytes": 64 << 20}


@dataclass(frozen=True, slots=True)
class Settings:
    model: str
    shards: tuple[str, ...]
    version: int | None = None
    deadline_ms: int = _LIMITS["deadline_ms"]
    connect_timeout_ms: int = _LIMITS["connect_timeout_ms"]
    max_message_bytes: int = _LIMITS["max_message_bytes"]


def _bad(file: str, message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"{file}: {message}")


def read_settings(path: str, default_model: str) -> Settings:
    file = os.path.join(path, SHARDED_FILE)
    try:
        with open(file, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ServoError(Code.NOT_FOUND, f"No {SHARDED_FILE} in {path}") from None
    except (OSError, ValueError) as exc:
        raise _bad(file, f"not a JSON file: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad(file, 'expected {"shards": ["host:port", ...], ...}')
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise _bad(file, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    shards = doc.get("shards")
    if (
        not isinstance(shards, list)
        or not shards
        or not all(isinstance(s, str) and s.rpartition(":")[2].isdigit() for s in shards)
    ):
        raise _bad(
            file, '"shards" must list the shards\' gRPC addresses ("host:port"), shard 0 first'
        )
    if len(set(shards)) != len(shards):
        raise _bad(file, '"shards" lists an address twice')
    model = doc.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise _bad(file, '"model" must name the table\'s model on the shards')
    version = doc.get("version")
    if version is not None and (type(version) is not int or version < 0):
        raise _bad(file, '"version" must be a version number')
    numbers = {}
    for name, default in _LIMITS.items():
        value = doc.get(name, default)
        if type(value) is not int or value <= 0:
            raise _bad(file, f'"{name}" must be a positive integer')
        numbers[name] = value
    return Settings(model, tuple(shards), version, **numbers)


@dataclass(frozen=True, slots=True)
class _Answer:
    shard: int
    positions: np.ndarray  # where its keys sit in the request's flat keys
    values: np.ndarray
    version: int


class ShardedTable(ModelServable):
    """Thread-safety: `run` may be called from many threads at once (gRPC channels are)."""

    platform = PLATFORM
    may_run_inline = False  # it waits on other servers
    takes_deadline = True

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self._closed = False
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
        self._channels = [grpc.insecure_channel(a, options=options) for a in settings.shards]
        self._predict = [
            channel.unary_unary(
                PREDICT_METHOD,
                request_serializer=PredictRequest.SerializeToString,
                response_deserializer=PredictResponse.FromString,
            )
            for channel in self._channels
        ]
        # Set by `probe`: what the table answers, which every answer must keep.
        self._output = ""
        self._dtype = np.dtype(np.float32)
        self._row_shape: tuple[int, ...] = ()
        self._signatures: dict[str, Signature] = {}

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def _where(self, shard: int) -> str:
        s = self.settings
        return f"Shard {shard} of {len(s.shards)} ({s.model} at {s.shards[shard]})"

    def probe(self) -> None:
        """Asks every shard for no keys (waiting for it up to connect_timeout_ms), and learns
        the table's output from the answers."""
        positions = np.zeros(0, dtype=np.intp)
        timeout = self.settings.connect_timeout_ms / 1000
        calls = [
            (s, positions, self._call(s, [], timeout, wait_for_ready=True))
            for s in range(len(self._predict))
        ]
        answers = self._gather(calls, learn=True)
        self._check_versions(answers)
        spec = TensorSpec(from_numpy(self._dtype), None, self._output)
        keys = TensorSpec(DataType.DT_STRING, None, "keys")
        self._signatures = {
            DEFAULT_SIGNATURE: Signature(DEFAULT_SIGNATURE, {"keys": keys}, {self._output: spec})
        }

    def _call(
        self, shard: int, keys: list[bytes], timeout: float, wait_for_ready: bool = False
    ) -> Any:
        s = self.settings
        request = PredictRequest()
        request.model_spec.name = s.model
        request.model_spec.signature_name = SHARD_SIGNATURE
        if s.version is not None:
            request.model_spec.version.value = s.version
        tensor_codec.from_ndarray(
            np.array(keys, dtype=object), DataType.DT_STRING, into=request.inputs["keys"]
        )
        return self._predict[shard].future(request, timeout=timeout, wait_for_ready=wait_for_ready)

    def _timeout(self) -> float:
        timeout = self.settings.deadline_ms / 1000
        deadline = call_deadline()
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServoError(Code.DEADLINE_EXCEEDED, "The request's deadline passed")
            timeout = min(timeout, left)
        return timeout

    def _failed(self, shard: int, error: grpc.RpcError) -> ServoError:
        code = error.code()
        details = error.details() or code.name
        where = self._where(shard)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServoError(
                Code.DEADLINE_EXCEEDED,
                f"{where} did not answer in time (deadline_ms {self.settings.deadline_ms} in "
                f"{SHARDED_FILE}, or the request's deadline): {details}",
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
            return ServoError(Code.UNAVAILABLE, f"{where} is unavailable: {details}")
        return ServoError(Code(code.value[0]), f"{where} failed: {details}")

    def _gather(
        self, calls: list[tuple[int, np.ndarray, Any]], learn: bool = False
    ) -> list[_Answer]:
        answers = []
        try:
            for shard, positions, future in calls:
                try:
                    response = future.result()
                except grpc.RpcError as exc:
                    raise self._failed(shard, exc) from None
                answers.append(self._answer(shard, positions, response, learn))
        except BaseException:
            for _, _, future in calls:
                future.cancel()
            raise
        return answers

    def _read(self, shard: int, proto: Any) -> np.ndarray:
        """A tensor of a shard's answer; one servo cannot read is the shard's fault, not the
        client's (INTERNAL, naming the shard)."""
        try:
            return tensor_codec.to_ndarray(proto)
        except ServoError as exc:
            raise ServoError(
                Code.INTERNAL,
                f"{self._where(shard)} answered a tensor servo cannot read: {exc.message}",
            ) from None

    def _answer(self, shard: int, positions: np.ndarray, response: Any, learn: bool) -> _Answer:
        where = self._where(shard)
        count = len(self.settings.shards)
        outputs = dict(response.outputs)
        claimed = outputs.pop(SHARD_OUTPUT, None)
        identity = self._read(shard, claimed).tolist() if claimed is not None else None
        if identity != [shard, count]:
            said = (
                f"answers as shard {identity[0]} of {identity[1]}"
                if isinstance(identity, list) and len(identity) == 2
                else "does not say which shard it is"
            )
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"{where} {said}: list the shards in {SHARDED_FILE} in the order of their "
                f'"shard" settings, each table split into {count}',
            )
        if len(outputs) != 1:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"{where} answers outputs {sorted(outputs)}; a table's shard answers one",
            )
        ((alias, proto),) = outputs.items()
        values = self._read(shard, proto)
        if learn and shard == 0:
            self._output, self._dtype, self._row_shape = alias, values.dtype, values.shape[1:]
        if (alias, values.dtype, values.shape) != (
            self._output,
            self._dtype,
            (len(positions), *self._row_shape),
        ):
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"{where} answers {alias} {values.dtype} {list(values.shape)} for "
                f"{len(positions)} keys; shard 0 answers {self._output} {self._dtype} rows of "
                f"{list(self._row_shape)}: the shards hold different tables",
            )
        return _Answer(shard, positions, values, response.model_spec.version.value)

    def _check_versions(self, answers: Sequence[_Answer]) -> None:
        versions: dict[int, list[int]] = {}
        for answer in answers:
            versions.setdefault(answer.version, []).append(answer.shard)
        if len(versions) > 1:
            said = "; ".join(
                f"shard{'s' if len(shards) > 1 else ''} {', '.join(map(str, shards))} "
                f"serve{'' if len(shards) > 1 else 's'} "
                f"version {version}"
                for version, shards in sorted(versions.items())
            )
            raise ServoError(
                Code.UNAVAILABLE,
                f"The shards of {self.settings.model} answered from different table versions "
                f"({said}): an update has reached some shards and not others; retry when it "
                f'has reached all, or pin "version" in {SHARDED_FILE}',
            )

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise unloaded(f"Sharded table at {self.path}")
        checked_call(self._signatures, signature, inputs, output_names)
        keys = inputs["keys"]
        flat = [k.encode() if isinstance(k, str) else k for k in keys.ravel().tolist()]
        owners = shard_of(flat, len(self._predict))
        order = np.argsort(owners, kind="stable")
        bounds = np.searchsorted(owners[order], np.arange(len(self._predict) + 1))
        timeout = self._timeout()
        calls = []
        for shard in range(len(self._predict)):
            positions = order[bounds[shard] : bounds[shard + 1]]
            if len(positions):
                shard_keys = [flat[i] for i in positions.tolist()]
                calls.append((shard, positions, self._call(shard, shard_keys, timeout)))
        answers = self._gather(calls)
        self._check_versions(answers)
        found = np.empty((len(flat), *self._row_shape), dtype=self._dtype)
        for answer in answers:
            found[answer.positions] = answer.values
        return {self._output: found.reshape(keys.shape + self._row_shape)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for channel in self._channels:
                channel.close()


def load(path: str, options: PlatformOptions) -> ShardedTable:
    """Reads `path`/sharded.json and asks every shard for no keys (see the module docstring)."""
    table = ShardedTable(path, read_settings(path, options.model_name))
    try:
        table.probe()
    except BaseException:
        table.close()
        raise
    return table
