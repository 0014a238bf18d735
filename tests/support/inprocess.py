"""The APIs in process, over a fake server core: the REST app and the gRPC services called as
servo's HTTP server and grpc.aio call them, with no socket and no server process.

    core = FakeCore().add("m", servable)          # any ModelServable, as version 1
    plane = data_plane(core)                      # DataPlane over the core (Runner, metrics...)
    rest = RestClient(plane)                      # RestApi over the data plane
    answer = rest.post("/v1/models/m:predict", {"instances": [1.0]})   # .status, .json()
    grpc_ = GrpcClient(plane)                     # TFS's two services over the same plane
    response = grpc_.call("Predict", request)     # raises Aborted(code, details) on error
    grpc_.call_bytes("Predict", b"\x00")          # the request's bytes, as on the wire
    with clients(core) as (rest, grpc_): ...      # both, closed, the core's handles checked

The fake core resolves model specs as ServerCore does, with its messages (tests/apis/
test_fake_core.py holds the two to the same answers), checks configs as ServerCore does before
it records a reload, counts the handles it gives out, and fails `assert_released` when one was
never released. The gRPC client calls a method through the handlers the services register,
with the request and the answer serialized as on the wire: a request of the official client's
classes (tensorflow_serving.apis) is answered in those classes.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from servo.apis.data_plane import DataPlane, RequestLogger
from servo.apis.grpc import open_inference as v2_grpc
from servo.apis.grpc.service import MODEL_SERVICE, PREDICTION_SERVICE, Services
from servo.apis.rest.app import RestApi, RestOptions
from servo.apis.runner import Runner
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState
from servo.core.status import OK, Code, ServoError, Status
from servo.decoded_size import DEFAULT_LIMITS, DecodeLimits
from servo.metrics import ServerMetrics
from servo.platforms.servable import ModelServable
from servo.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_server_config_pb2,
    predict_pb2,
    regression_pb2,
)
from servo.protos import open_inference_pb2 as v2_pb
from servo.server import config as configs
from servo.server.model_management import ModelManagementGrants
from servo.server.server_core import VersionStatus
from tests.support.requests import tfs_class


class FakeHandle:
    """A counted reference to one servable, as ServableHandle is."""

    def __init__(self, core: FakeCore, id: ServableId, servable: ModelServable) -> None:
        self._core: FakeCore | None = core
        self.id = id
        self.servable: ModelServable | None = servable
        with core.lock:
            core.held += 1

    def share(self) -> FakeHandle:
        assert self._core is not None and self.servable is not None, "share after release"
        return FakeHandle(self._core, self.id, self.servable)

    def release(self) -> None:
        core, self._core = self._core, None
        if core is not None:
            self.servable = None
            with core.lock:
                core.held -= 1
                core.released.notify_all()

    def __enter__(self) -> FakeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class FakeCore:
    """Models by name and version, labels, and the states `model_status` reports; the configs
    reloads were given, and the error the next reloads raise (`reload_error`)."""

    models: dict[str, dict[int, ModelServable]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    states: dict[str, dict[int, tuple[ManagerState, Status]]] = field(default_factory=dict)
    reloads: list[Any] = field(default_factory=list)
    reload_error: Exception | None = None
    config: model_server_config_pb2.ModelServerConfig = field(
        default_factory=model_server_config_pb2.ModelServerConfig
    )
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.released = threading.Condition(self.lock)

    def add(self, name: str, servable: ModelServable, version: int = 1) -> FakeCore:
        """Serves `servable` as an AVAILABLE version of `name`."""
        self.models.setdefault(name, {})[version] = servable
        self.states.setdefault(name, {})[version] = (ManagerState.AVAILABLE, OK)
        return self

    def set_state(self, name: str, version: int, state: ManagerState, status: Status = OK) -> None:
        """A version's published state; only AVAILABLE versions are served."""
        self.states.setdefault(name, {})[version] = (state, status)
        if state != ManagerState.AVAILABLE:
            self.models.get(name, {}).pop(version, None)

    # -- what the data plane asks of ServerCore ---------------------------------------------

    def _labelled(self, name: str, version: int | None, label: str | None) -> int | None:
        """ServerCore.servable_request's rules: a name first, then the label's version."""
        if not name:
            raise ServoError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if version is None and label is not None:
            version = self.labels.get(name, {}).get(label)
            if version is None:
                raise ServoError(
                    Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                )
        return version

    def servable_handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> FakeHandle:
        version = self._labelled(name, version, label)
        versions = self.models.get(name, {})
        if version is None:
            request = ServableRequest.latest(name)
            version = max(versions, default=None)
        else:
            request = ServableRequest.specific(name, version)
        if version is None or version not in versions:
            raise ServoError(Code.NOT_FOUND, f"Servable not found for request: {request}")
        return FakeHandle(self, ServableId(name, version), versions[version])

    def version_labels(self, name: str) -> dict[str, int]:
        return dict(self.labels.get(name, {}))

    def model_names(self) -> list[str]:
        """The models with a published state, in the order they were added (the config's)."""
        return list(self.states)

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        if label is not None:
            version = self._labelled(name, version, label)
        states = self.states.get(name, {})
        if version is not None:
            if version not in states:
                raise ServoError(
                    Code.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            chosen = [version]
        else:
            if not states:
                raise ServoError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
            chosen = sorted(states, reverse=True)
        return [VersionStatus(v, *states[v]) for v in chosen]

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """ServerCore's checks of a config (ConfigError), then `reload_error` if set; the
        config is recorded, and kept unless it is invalid."""
        configs.validate_model_server_config(config)
        configs.validate_transition(self.config, config)
        self.reloads.append(config)
        self.config = config
        if self.reload_error is not None:
            raise self.reload_error

    # -- checks ------------------------------------------------------------------------------

    def assert_released(self, timeout: float = 10.0) -> None:
        """Every handle given out was released (calls still running may take `timeout`)."""
        with self.lock:
            done = self.released.wait_for(lambda: self.held == 0, timeout)
            assert done, f"{self.held} handles were never released"


class RecordingLogger:
    """A RequestLogger that logs every request and keeps (kind, model, request, response)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, Any, Any]] = []

    def should_log(self, model_name: str) -> bool:
        return True

    def log_predict(self, model_name: str, request: Any, response: Any) -> None:
        self.records.append(("predict", model_name, request, response))

    def log_classify(self, model_name: str, request: Any, response: Any) -> None:
        self.records.append(("classify", model_name, request, response))

    def log_regress(self, model_name: str, request: Any, response: Any) -> None:
        self.records.append(("regress", model_name, request, response))

    def log_multi_inference(self, model_name: str, request: Any, response: Any) -> None:
        self.records.append(("multi_inference", model_name, request, response))


def data_plane(
    core: FakeCore,
    *,
    metrics: ServerMetrics | None = None,
    request_logger: RequestLogger | None = None,
    method_name_check: bool = False,
    inline_seconds: float = 0.0002,
) -> DataPlane:
    return DataPlane(
        core,  # type: ignore[arg-type]  # a fake of ServerCore's request half
        Runner(concurrency=lambda name: 2, inline_seconds=inline_seconds, metrics=metrics),
        metrics=metrics,
        request_logger=request_logger,
        method_name_check=method_name_check,
    )


# -- REST ------------------------------------------------------------------------------------


@dataclass
class _Scope:
    method: str
    path: str
    headers: Mapping[str, str]
    proto: str = "http"


class _Protocol:
    """The RSGI HTTP protocol object, as servo's HTTP server hands it: the body in (whole, or in
    chunks of `chunk` bytes when iterated), one answer out."""

    def __init__(self, body: bytes, chunk: int) -> None:
        self._body = body
        self._chunk = chunk
        self.reads = 0  # chunks (or whole bodies) the app read
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    async def __call__(self) -> bytes:
        self.reads += 1
        return self._body

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(self._body), self._chunk):
                self.reads += 1
                yield self._body[start : start + self._chunk]

        return chunks()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        assert self.answer is None, "answered twice"
        self.answer = (status, headers, body)


@dataclass
class RestAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    reads: int = 0  # how many times the app read the body (a chunk, or the whole)

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def error(self) -> str:
        doc = self.json()
        assert list(doc) == ["error"], doc
        return doc["error"]  # type: ignore[no-any-return]


class _Loop:
    """One event loop per client, as a server has one: calls still running on the pool after
    their deadline answered finish on it."""

    plane: DataPlane

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        """Closes the loop and the plane's runner (waiting for its calls; closing a runner
        twice, for two clients of one plane, is harmless)."""
        self.plane.runner.close()
        self.loop.close()


class RestClient(_Loop):
    """Calls a RestApi as the HTTP server would; every answer is checked to be JSON (but the
    metrics page and the status page's HTML). Paths are given as the HTTP server hands them
    over: URL-decoded already."""

    def __init__(self, plane: DataPlane, options: RestOptions | None = None) -> None:
        super().__init__()
        self.plane = plane
        self.app = RestApi(plane, options)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | object = b"",
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        chunk: int = 1000,
    ) -> RestAnswer:
        """`body`: bytes, text, or a document written as JSON (NaN and Infinity allowed).
        A body has a Content-Length unless `chunked` (then it comes in `chunk`-byte pieces) or
        `headers` gives its own."""
        return self.run(self.send(method, path, body, headers, chunked=chunked, chunk=chunk))  # type: ignore[no-any-return]

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | str | object = b"",
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        chunk: int = 1000,
    ) -> RestAnswer:
        """`request`, awaited on the client's loop (for tests that run several at once)."""
        if not isinstance(body, bytes | str):
            body = jsonlib.dumps(body)
        raw = body.encode() if isinstance(body, str) else body
        heads = {k.lower(): v for k, v in (headers or {}).items()}
        if not chunked:
            heads.setdefault("content-length", str(len(raw)))
        protocol = _Protocol(raw, chunk)
        await self.app.__rsgi__(_Scope(method, path, heads), protocol)
        assert protocol.answer is not None, f"{method} {path} was not answered"
        status, answer_headers, answer = protocol.answer
        names = dict(answer_headers)
        assert len(names) == len(answer_headers), f"a header given twice: {answer_headers}"
        if "inference-header-content-length" in names:  # v2's binary tensors: JSON, then data
            assert names["content-type"] == "application/octet-stream", (method, path, names)
        elif path == "/" and status == 200:  # the status page
            assert names["content-type"] == "text/html; charset=utf-8", (method, path, names)
        elif path != self.app.options.metrics_path:
            assert names["content-type"] == "application/json", (method, path, names)
        return RestAnswer(status, names, answer, protocol.reads)

    def get(self, path: str, **kwargs: Any) -> RestAnswer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: bytes | str | object = b"", **kwargs: Any) -> RestAnswer:
        return self.request("POST", path, body, **kwargs)

    def options(self, path: str, **kwargs: Any) -> RestAnswer:
        return self.request("OPTIONS", path, **kwargs)


# -- gRPC ------------------------------------------------------------------------------------


class Aborted(grpc.aio.AbortError):
    """What the fake context's abort raises: the status the client would have got."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class _Context:
    def __init__(self, timeout: float | None) -> None:
        self._timeout = timeout

    def time_remaining(self) -> float | None:
        return self._timeout

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class _CallDetails(NamedTuple):
    """grpc.HandlerCallDetails, as the server looks a method's handler up by."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


# TFS's methods: their service and their response message.
RPCS: dict[str, tuple[str, type]] = {
    "Predict": (PREDICTION_SERVICE, predict_pb2.PredictResponse),
    "Classify": (PREDICTION_SERVICE, classification_pb2.ClassificationResponse),
    "Regress": (PREDICTION_SERVICE, regression_pb2.RegressionResponse),
    "MultiInference": (PREDICTION_SERVICE, inference_pb2.MultiInferenceResponse),
    "GetModelMetadata": (PREDICTION_SERVICE, get_model_metadata_pb2.GetModelMetadataResponse),
    "GetModelStatus": (MODEL_SERVICE, get_model_status_pb2.GetModelStatusResponse),
    "HandleReloadConfigRequest": (MODEL_SERVICE, model_management_pb2.ReloadConfigResponse),
    # The Open Inference Protocol's.
    **{
        method: (v2_grpc.SERVICE, getattr(v2_pb, f"{method}Response"))
        for method in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        )
    },
}


class GrpcClient(_Loop):
    """Calls TFS's methods (and the Open Inference Protocol's) as a client over grpc.aio would:
    by the method's path, through the handlers `Services.generic_handlers()` (and
    `InferenceServices`') register, the request and the answer serialized."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        tensor_content: bool = False,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
        grants: ModelManagementGrants | None = None,
    ) -> None:
        super().__init__()
        self.plane = plane
        self.services = Services(
            plane, tensor_content=tensor_content, decode_limits=decode_limits, grants=grants
        )
        self.inference = v2_grpc.InferenceServices(plane, decode_limits=decode_limits)
        self.handlers = [*self.services.generic_handlers(), *self.inference.generic_handlers()]

    def handler(self, path: str) -> grpc.RpcMethodHandler | None:
        """The handler the server would find for a method path, if any."""
        for generic in self.handlers:
            found = generic.service(_CallDetails(path))  # type: ignore[arg-type]
            if found is not None:
                return found
        return None

    def call(self, method: str, request: Any, timeout: float | None = 30.0) -> Any:
        """`method`'s answer (of the request's family of classes: servo's or the official
        client's); raises Aborted with the call's status when it fails."""
        wire = self.call_bytes(method, request.SerializeToString(), timeout)
        response_class = RPCS[method][1]
        if type(request).__module__.startswith("tensorflow_serving."):
            response_class = tfs_class(response_class)
        return response_class.FromString(wire)  # type: ignore[attr-defined]

    def call_bytes(self, method: str, data: bytes, timeout: float | None = 30.0) -> bytes:
        """`method` called with the bytes a client sent; the answer's bytes (or Aborted)."""
        service = RPCS[method][0]
        handler = self.handler(f"/{service}/{method}")
        assert handler is not None, f"no handler for {service}/{method}"
        assert handler.request_deserializer is not None
        assert handler.response_serializer is not None
        decoded = handler.request_deserializer(data)
        answer = self.run(handler.unary_unary(decoded, _Context(timeout)))
        return handler.response_serializer(answer)  # type: ignore[no-any-return]

    def call_together(self, method: str, requests: list[Any], timeout: float = 30.0) -> list[Any]:
        """`method` called with every request at once, as concurrent clients would; the
        answers in order (an Aborted where a call failed)."""
        handler = self.handler(f"/{RPCS[method][0]}/{method}")
        assert handler is not None and handler.unary_unary is not None
        call = handler.unary_unary

        async def together() -> list[Any]:
            calls = [call(request, _Context(timeout)) for request in requests]
            return await asyncio.gather(*calls, return_exceptions=True)

        return self.run(together())  # type: ignore[no-any-return]

    def error(self, method: str, request: Any, timeout: float | None = 30.0) -> Aborted:
        """The status a call that must fail ends with."""
        try:
            answer = self.call(method, request, timeout)
        except Aborted as exc:
            return exc
        raise AssertionError(f"{method} answered instead of failing: {answer}")

    def status(self, method: str, request: Any, timeout: float | None = 30.0) -> tuple[Any, str]:
        """(code, details) of a call that must fail."""
        error = self.error(method, request, timeout)
        return error.code, error.details


@contextmanager
def clients(
    core: FakeCore,
    *,
    rest_options: RestOptions | None = None,
    tensor_content: bool = False,
    **plane: Any,
) -> Iterator[tuple[RestClient, GrpcClient]]:
    """A REST and a gRPC client of one data plane over `core` (`plane`: data_plane's
    options); both closed after, and every handle checked to be released."""
    shared = data_plane(core, **plane)
    rest = RestClient(shared, rest_options)
    grpc_ = GrpcClient(shared, tensor_content=tensor_content)
    try:
        yield rest, grpc_
    finally:
        rest.close()
        grpc_.close()
    core.assert_released()
