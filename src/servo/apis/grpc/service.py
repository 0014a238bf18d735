"""TFS's gRPC services on grpcio's asyncio server, under TFS's full service names.

    tensorflow.serving.PredictionService: Predict, Classify, Regress, MultiInference,
                                          GetModelMetadata
    tensorflow.serving.ModelService:      GetModelStatus, HandleReloadConfigRequest
    grpc.health.v1.Health                 (with --enable_grpc_healthcheck_service)

The method paths are wire facts; the messages are servo's own classes with TFS's field numbers,
so TFS's clients and servo's server agree without sharing code. Handlers are registered by hand
(not generated from a .proto service) because a service generated in servo's proto package would
have servo's name on the wire. Errors carry TFS's codes and messages (cut at 1024 characters as
TFS cuts them); the client's deadline bounds the model call. Each method decodes its message
into the data plane's call (`servo.apis.messages`), and the data plane does the rest.

Bytes that are not the method's message in protobuf's wire format are answered
INVALID_ARGUMENT, saying so, and logged as one warning at most every
MALFORMED_WARNING_SECONDS (with the count of those seen since), never a traceback per request:
the request deserializers catch the parse error and hand the handler a `Malformed` in place of
the message.

HandleReloadConfigRequest is held to the operator's grants (`servo.server.model_management`)
before the server core sees the config; an empty `model_config_list` takes no action.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from servo.apis import messages
from servo.apis.data_plane import DataPlane, ModelSpec
from servo.core.status import Code, ServoError
from servo.decoded_size import DEFAULT_LIMITS, DecodeLimits
from servo.metrics import ServerMetrics
from servo.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)
from servo.server import config as configs
from servo.server.model_management import ModelManagementGrants, is_empty_model_list
from servo.util.own_thread import on_own_thread

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
MAX_MESSAGE_BYTES = 2**31 - 1  # TFS accepts messages up to 2 GB
# A request message is never much larger than its tensors decoded (each value's bytes and a
# few bytes of framing), so one past the decoded limit by more than this cannot succeed.
MESSAGE_SLACK_BYTES = 4 * 2**20
ERROR_MESSAGE_LIMIT = 1024
MALFORMED_WARNING_SECONDS = 60.0

T = TypeVar("T")

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    return _GRPC_CODES.get(int(code), grpc.StatusCode.UNKNOWN)


def _message(text: str) -> str:
    if len(text) > ERROR_MESSAGE_LIMIT:
        return text[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return text


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, text: str) -> NoReturn:
    """Ends the RPC with `code` and TFS's cut of `text` (grpc's abort raises AbortError)."""
    await context.abort(code, _message(text))
    raise AssertionError("grpc.aio's abort returned")


class Malformed:
    """What a request deserializer hands the handler for bytes that are not its message."""

    __slots__ = ("message", "reason")

    def __init__(self, message: str, reason: str) -> None:
        self.message = message  # TFS's name of the message expected
        self.reason = reason  # protobuf's


def deserializer(request_cls: Any) -> Callable[[bytes], Any]:
    parse = request_cls.FromString
    # servo's classes live in servo's proto package; clients know TFS's names.
    name = request_cls.DESCRIPTOR.full_name.removeprefix("servo.")

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:  # protobuf's words follow the message type it names
            return Malformed(name, str(exc).rpartition("': ")[2] or str(exc))
        except Exception as exc:  # whatever else the parser refuses is the client's bytes too
            return Malformed(name, f"{type(exc).__name__}: {exc}")

    return deserialize


class MalformedLog:
    """Warns of malformed requests at most once every `interval` seconds; a warning counts the
    ones seen since the last. `clock` is time.monotonic but in tests.

    Thread-safety: used on the gRPC server's event loop only."""

    def __init__(
        self,
        interval: float = MALFORMED_WARNING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.unreported = 0  # malformed requests since the last warning
        self._last: float | None = None

    def report(self, method: str, what: str) -> None:
        self.unreported += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return
        log.warning(
            "Refused a malformed gRPC request to %s, %s (and %d more since the last such "
            "warning; this warning is written at most every %g s)",
            method,
            what,
            self.unreported - 1,
            self.interval,
        )
        self._last, self.unreported = now, 0


class Services:
    """The handlers of both services: decode -> data plane -> encode, each RPC inside one error
    boundary (`_call`) that turns errors into TFS's status and records the request metrics.
    Request tensors and examples are decoded within `decode_limits`.

    Thread-safety: handlers run on the gRPC server's event loop.
    """

    def __init__(
        self,
        plane: DataPlane,
        *,
        tensor_content: bool = False,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
        malformed_log: MalformedLog | None = None,
        grants: ModelManagementGrants | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        """`metrics`: what a reload's `metric_names` read (the plane's when not given; none:
        every name reads 0)."""
        self.plane = plane
        self.metrics = metrics if metrics is not None else plane.metrics
        self.core = plane.core
        self.tensor_content = tensor_content
        self.decode_limits = decode_limits
        self.malformed_log = malformed_log or MalformedLog()
        self.grants = grants or ModelManagementGrants()

    # -- the error boundary ----------------------------------------------------------------

    async def _call(
        self,
        api: str,
        name: str,
        context: grpc.aio.ServicerContext,
        work: Callable[[float | None], Awaitable[T]],
    ) -> T:
        return await call_rpc(self.plane, api, name, context, work)

    # -- PredictionService -----------------------------------------------------------------

    async def predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        call = messages.PredictMessage(request, self.tensor_content, self.decode_limits)
        return await self._call(
            "Predict",
            request.model_spec.name,
            context,
            lambda timeout: self.plane.predict(_spec(request), call, timeout),
        )

    async def classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        call = messages.classify_message(request, self.decode_limits)
        return await self._call(
            "Classify",
            request.model_spec.name,
            context,
            lambda timeout: self.plane.classify(_spec(request), call, timeout),
        )

    async def regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        call = messages.regress_message(request, self.decode_limits)
        return await self._call(
            "Regress",
            request.model_spec.name,
            context,
            lambda timeout: self.plane.regress(_spec(request), call, timeout),
        )

    async def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        call = messages.MultiInferenceMessage(request, self.decode_limits)
        spec = call.model_spec
        return await self._call(
            "MultiInference",
            spec.name,
            context,
            lambda timeout: self.plane.multi_inference(spec, call, timeout),
        )

    async def get_model_metadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async def work(_: float | None) -> get_model_metadata_pb2.GetModelMetadataResponse:
            spec = _spec(request)
            messages.check_metadata_request(request)
            return self.plane.metadata(spec, messages.metadata_response)

        return await self._call("GetModelMetadata", request.model_spec.name, context, work)

    # -- ModelService ----------------------------------------------------------------------

    async def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async def work(_: float | None) -> get_model_status_pb2.GetModelStatusResponse:
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in self.plane.model_status(_spec(request)):
                entry = response.model_version_status.add()
                entry.version = v.version
                # protoc's stubs type enum fields as their enum class; protobuf takes numbers.
                entry.state = int(v.state)  # type: ignore[assignment]
                entry.status.error_code = int(v.status.code)  # type: ignore[assignment]
                entry.status.error_message = v.status.message
            return response

        return await self._call("GetModelStatus", request.model_spec.name, context, work)

    async def handle_reload_config_request(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        status = status_pb2.StatusProto()
        before = self._metric_values(request.metric_names)
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported",
                )
            for index, model in enumerate(request.config.model_config_list.config):
                log.info(
                    "Reload config entry %d: name %s, path %s, platform %s",
                    index,
                    model.name,
                    model.base_path,
                    model.model_platform,
                )
            self.grants.check_network_config(self.core.config, request.config)
            if is_empty_model_list(request.config):
                # It would unload every model: over the network it takes no action.
                log.info("Taking no action for an empty model_config_list over the network")
                self._record_metric_increases(before, request.metric_names, response)
                response.status.CopyFrom(status)
                return response
            # A reload waits for new models to load: off the event loop, on a thread of its
            # own (waiting reloads must not fill the loop's default executor).
            config = request.config
            await on_own_thread("servo-reload-rpc", lambda: self.core.reload_config(config))
        except configs.ConfigError as exc:
            status.error_code = int(Code.INVALID_ARGUMENT)  # type: ignore[assignment]
            status.error_message = str(exc)
        except ServoError as exc:
            status.error_code = int(exc.code)  # type: ignore[assignment]
            status.error_message = exc.message
        self._record_metric_increases(before, request.metric_names, response)
        response.status.CopyFrom(status)
        if status.error_code:
            log.error("ReloadConfig failed: %s", status.error_message)
            await _abort(context, grpc_code(Code(status.error_code)), status.error_message)
        return response

    def _metric_values(self, names: Sequence[str]) -> dict[str, int]:
        if self.metrics is None:
            return dict.fromkeys(names, 0)
        return self.metrics.int64_values(names)

    def _record_metric_increases(
        self,
        before: dict[str, int],
        names: Sequence[str],
        response: model_management_pb2.ReloadConfigResponse,
    ) -> None:
        """TFS's RecordMetricsIncrease: each named metric's increase over the reload (the
        value read after it less the value read before), one entry per name (in the
        request's order; TFS's come in a hash map's), an unknown name's 0. Filled on
        failure too, as TFS does, though a failed call's response never reaches the
        client."""
        for name, value in self._metric_values(names).items():
            response.metric.add(name=name, int64_value_increase=value - before.get(name, 0))

    # -- registration ----------------------------------------------------------------------

    def generic_handlers(self) -> Sequence[grpc.GenericRpcHandler]:
        def service(name: str, methods: Sequence[tuple[str, Any, Any, Any]]) -> Any:
            return unary_service(
                name, methods, self.plane, lambda api, what: self.malformed_log.report(api, what)
            )

        prediction = service(
            PREDICTION_SERVICE,
            [
                ("Predict", self.predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse),
                (
                    "Classify",
                    self.classify,
                    classification_pb2.ClassificationRequest,
                    classification_pb2.ClassificationResponse,
                ),
                (
                    "Regress",
                    self.regress,
                    regression_pb2.RegressionRequest,
                    regression_pb2.RegressionResponse,
                ),
                (
                    "MultiInference",
                    self.multi_inference,
                    inference_pb2.MultiInferenceRequest,
                    inference_pb2.MultiInferenceResponse,
                ),
                (
                    "GetModelMetadata",
                    self.get_model_metadata,
                    get_model_metadata_pb2.GetModelMetadataRequest,
                    get_model_metadata_pb2.GetModelMetadataResponse,
                ),
            ],
        )
        model_service = service(
            MODEL_SERVICE,
            [
                (
                    "GetModelStatus",
                    self.get_model_status,
                    get_model_status_pb2.GetModelStatusRequest,
                    get_model_status_pb2.GetModelStatusResponse,
                ),
                (
                    "HandleReloadConfigRequest",
                    self.handle_reload_config_request,
                    model_management_pb2.ReloadConfigRequest,
                    model_management_pb2.ReloadConfigResponse,
                ),
            ],
        )
        return [prediction, model_service]


async def call_rpc(
    plane: DataPlane,
    api: str,
    name: str,
    context: grpc.aio.ServicerContext,
    work: Callable[[float | None], Awaitable[T]],
) -> T:
    """Runs one RPC, `work(seconds left before the client's deadline)`: errors become
    TFS's status; the inference APIs' requests (`api` in INFERENCE_APIS) are counted by model
    name and status, and the latency of those that succeed is recorded."""
    started = time.perf_counter()
    code = Code.OK
    try:
        return await work(context.time_remaining())
    except ServoError as exc:
        code = exc.code
        await _abort(context, grpc_code(exc.code), exc.message)
    except asyncio.CancelledError:
        code = Code.CANCELLED
        raise
    except grpc.aio.AbortError:
        raise
    except Exception as exc:  # a bug: answer it, log it, keep serving
        code = Code.INTERNAL
        log.exception("gRPC %s failed", api)
        await _abort(context, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    finally:
        if api in INFERENCE_APIS:
            plane.record_request(name, api, "GRPC", code, started)


async def _answer_malformed(
    plane: DataPlane,
    report: Callable[[str, str], None],
    api: str,
    request: Malformed,
    context: grpc.aio.ServicerContext,
) -> NoReturn:
    """Answers bytes that are not the method's message: INVALID_ARGUMENT, and a warning
    (rate-limited) in the log."""
    report(api, f"not a {request.message}: {request.reason}")

    async def work(_: float | None) -> NoReturn:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"The request is not a {request.message} in protobuf's wire format: {request.reason}",
        )

    await call_rpc(plane, api, "", context, work)
    raise AssertionError("a malformed request was answered")


def unary_service(
    name: str,
    methods: Sequence[tuple[str, Any, Any, Any]],
    plane: DataPlane,
    report: Callable[[str, str], None],
) -> grpc.GenericRpcHandler:
    """The generic handler of service `name`: (method, handler, request class, response
    class) for each of its unary methods; bytes that are not a method's request are answered
    INVALID_ARGUMENT before its handler runs, and `report(method, what)`ed (`MalformedLog`)."""

    def unary(api: str, fn: Any, request_cls: Any, response_cls: Any) -> grpc.RpcMethodHandler:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if type(request) is Malformed:
                await _answer_malformed(plane, report, api, request, context)
            return await fn(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=deserializer(request_cls),
            response_serializer=response_cls.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        name, {method[0]: unary(*method) for method in methods}
    )


def count_refused(plane: DataPlane) -> Callable[[str, Any], None]:
    """What counts a call refused before it ran (servo.apis.grpc.message_budget: the bound
    on the messages held) in the request metrics, as `call_rpc` counts one of TFS's
    inference APIs: by its model's name, UNAVAILABLE."""
    prefix = f"/{PREDICTION_SERVICE}/"

    def count(method: str, message: Any) -> None:
        api = method.removeprefix(prefix)
        if api == method or api not in INFERENCE_APIS:
            return
        if api == "MultiInference":
            tasks = getattr(message, "tasks", None)
            spec = tasks[0].model_spec if tasks else None
        else:
            spec = getattr(message, "model_spec", None)
        name = spec.name if spec is not None else ""
        plane.record_request(name, api, "GRPC", Code.UNAVAILABLE, time.perf_counter())

    return count


def _spec(request: Any) -> ModelSpec:
    """A request's model spec; TFS's error when it has none."""
    if not request.HasField("model_spec"):
        raise ServoError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    return messages.model_spec(request.model_spec)


INFERENCE_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference"})


def channel_arguments(text: str) -> list[tuple[str, Any]]:
    """`--grpc_channel_arguments`: comma-separated key=value; integer values as ints."""
    options: list[tuple[str, Any]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        try:
            options.append((key, int(value)))
        except ValueError:
            options.append((key, value))
    return options


def max_receive_bytes(limits: DecodeLimits) -> int:
    """The largest request message worth receiving: the request's decoded limit and some
    framing, at most TFS's 2 GB. gRPC refuses larger ones before they are read whole
    (RESOURCE_EXHAUSTED "Received message larger than max")."""
    return min(limits.max_request_bytes + MESSAGE_SLACK_BYTES, MAX_MESSAGE_BYTES)


def received_bound(options: Sequence[tuple[str, Any]]) -> int | None:
    """The largest message a server with channel arguments `options` receives (the last
    grpc.max_receive_message_length given wins); None for no limit (a negative value)."""
    largest = MAX_MESSAGE_BYTES
    for key, value in options:
        if key == "grpc.max_receive_message_length" and isinstance(value, int):
            largest = value
    return None if largest < 0 else largest


def server_options(
    channel_args: str,
    connection: Sequence[tuple[str, Any]] = (),
    max_receive: int = MAX_MESSAGE_BYTES,
) -> list[tuple[str, Any]]:
    """The server's channel arguments: servo's (`max_receive`: the largest message received),
    then `connection` (the connection limits), then `--grpc_channel_arguments`, last, so they
    win.

    SO_REUSEPORT is off: with it (grpc's default) a second server started on a busy port
    would start and silently share the port's calls with the first; without it, it fails to
    start and says so. `--grpc_channel_arguments=grpc.so_reuseport=1` turns it back on."""
    return [
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        *connection,
        *channel_arguments(channel_args),
    ]
