"""TFS's gRPC services on grpcio's asyncio server, under TFS's full service names.

    tensorflow.serving.PredictionService: Predict, Classify, Regress, MultiInference,
                                          GetModelMetadata
    tensorflow.serving.ModelService:      GetModelStatus, HandleReloadConfigRequest
    grpc.health.v1.Health                 (with --enable_grpc_healthcheck_service)

The method paths are wire facts; the messages are servo's own classes with TFS's field numbers,
so TFS's clients and servo's server agree without sharing code. Handlers are registered by hand
(not generated from a .proto service) because a service generated in servo's proto package would
have servo's name on the wire. Errors carry TFS's codes and messages (cut at 1024 characters as
TFS cuts them); the client's deadline bounds the model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from servo.apis.grpc import handlers
from servo.apis.inference import Runner
from servo.core.servable_handle import ServableHandle
from servo.core.status import Code, ServoError
from servo.platforms import servable as model
from servo.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)
from servo.server import config as configs
from servo.server.metrics import ServerMetrics
from servo.server.server_core import ServerCore

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
MAX_MESSAGE_BYTES = 2**31 - 1  # TFS accepts messages up to 2 GB
ERROR_MESSAGE_LIMIT = 1024

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    return _GRPC_CODES.get(int(code), grpc.StatusCode.UNKNOWN)


def _message(text: str) -> str:
    if len(text) > ERROR_MESSAGE_LIMIT:
        return text[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return text


class Services:
    """The handlers of both services, over one server core.

    Thread-safety: handlers run on the gRPC server's event loop.
    """

    def __init__(
        self,
        core: ServerCore,
        runner: Runner,
        metrics: ServerMetrics | None = None,
        *,
        tensor_content: bool = False,
        request_logger: Any = None,
    ) -> None:
        self.core = core
        self.runner = runner
        self.metrics = metrics
        self.tensor_content = tensor_content
        self.request_logger = request_logger

    # -- plumbing --------------------------------------------------------------------------

    async def _call(
        self,
        api: str,
        name: str,
        context: grpc.aio.ServicerContext,
        work: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Runs one RPC: errors become TFS's status, metrics are recorded."""
        started = time.perf_counter()
        code = Code.OK
        try:
            return await work()
        except ServoError as exc:
            code = exc.code
            await context.abort(grpc_code(exc.code), _message(exc.message))
        except asyncio.CancelledError:
            code = Code.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # a bug: answer it, log it, keep serving
            code = Code.INTERNAL
            log.exception("gRPC %s failed", api)
            await context.abort(grpc.StatusCode.INTERNAL, _message(f"{type(exc).__name__}: {exc}"))
        finally:
            if self.metrics is not None and api in _INFERENCE_APIS:
                self.metrics.request_count.inc(name, code.name)
                if code is Code.OK:  # as TFS (and servo's REST side): successes are timed
                    self.metrics.request_latency.observe(
                        (time.perf_counter() - started) * 1e6, name, api, "GRPC"
                    )

    def _handle(self, request: Any) -> ServableHandle:
        """The handle for `request.model_spec`, with TFS's error for a missing spec."""
        if not request.HasField("model_spec"):
            raise ServoError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        return self._spec_handle(request.model_spec)

    def _spec_handle(self, spec: Any) -> ServableHandle:
        if not spec.name:
            raise ServoError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        return self.core.servable_handle(*handlers.spec_fields(spec))

    async def _run(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        key: str,
        context: grpc.aio.ServicerContext,
        api: str,
    ) -> Any:
        return await self.runner.run(handle, call, key, context.time_remaining(), api)

    # -- PredictionService -----------------------------------------------------------------

    async def predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        async def work() -> predict_pb2.PredictResponse:
            handle = self._handle(request)
            try:
                servable, id = handle.servable, handle.id
                prepared = handlers.prepare_predict(servable, request)
            except BaseException:
                handle.release()
                raise
            outputs = await self.runner.predict(
                handle,
                prepared.signature,
                prepared.inputs,
                prepared.outputs,
                context.time_remaining(),
            )
            response = handlers.predict_response(
                request, id, prepared, outputs, self.tensor_content
            )
            if self.request_logger is not None and self.request_logger.should_log(id.name):
                self.request_logger.log_predict(id.name, request, response)
            return response

        return await self._call("Predict", request.model_spec.name, context, work)

    async def classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        return await self._on_examples(
            "Classify", request, context, model.classify, handlers.classify_response
        )

    async def regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        return await self._on_examples(
            "Regress", request, context, model.regress, handlers.regress_response
        )

    async def _on_examples(
        self,
        api: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        run: Callable[[Any, Any, list[bytes]], Any],
        respond: Callable[[Any, Any, Any], Any],
    ) -> Any:
        """Classify and Regress: the same steps around their own model call and answer."""

        async def work() -> Any:
            handle = self._handle(request)
            try:
                servable, id = handle.servable, handle.id
                signature = handlers.example_signature(servable, request.model_spec.signature_name)
                examples = handlers.serialized_examples(request.input)
            except BaseException:
                handle.release()
                raise
            self._count_examples(id.name, len(examples))
            results = await self._run(
                handle, lambda: run(servable, signature, examples), signature.name, context, api
            )
            response = respond(request, id, results)
            logger = self.request_logger
            if logger is not None and logger.should_log(id.name):
                getattr(logger, f"log_{api.lower()}")(id.name, request, response)
            return response

        return await self._call(api, request.model_spec.name, context, work)

    async def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        name = request.tasks[0].model_spec.name if request.tasks else ""

        async def work() -> inference_pb2.MultiInferenceResponse:
            # Without tasks TFS looks up an empty ModelSpec: "ModelSpec has no name specified."
            spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
            handle = self._spec_handle(spec)
            try:
                servable, id = handle.servable, handle.id
                tasks = handlers.prepare_multi_inference(servable, request)
                examples = handlers.serialized_examples(request.input)
            except BaseException:
                handle.release()
                raise
            self._count_examples(id.name, len(examples))
            results = await self._run(
                handle,
                lambda: handlers.run_multi_inference(servable, tasks, examples),
                "MultiInference",
                context,
                "MultiInference",
            )
            response = handlers.multi_inference_response(id, tasks, results)
            if self.request_logger is not None and self.request_logger.should_log(id.name):
                self.request_logger.log_multi_inference(id.name, request, response)
            return response

        return await self._call("MultiInference", name, context, work)

    async def get_model_metadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise ServoError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            handlers.check_metadata_request(request)
            with self._handle(request) as handle:
                return handlers.metadata_response(handle.servable, handle.id)

        return await self._call("GetModelMetadata", request.model_spec.name, context, work)

    def _count_examples(self, name: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.request_example_count_total.inc(name, amount=count)

    # -- ModelService ----------------------------------------------------------------------

    async def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise ServoError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in self.core.model_status(*handlers.spec_fields(request.model_spec)):
                entry = response.model_version_status.add()
                entry.version = v.version
                entry.state = int(v.state)
                entry.status.error_code = int(v.status.code)
                entry.status.error_message = v.status.message
            return response

        return await self._call("GetModelStatus", request.model_spec.name, context, work)

    async def handle_reload_config_request(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        status = status_pb2.StatusProto()
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
            # A reload waits for new models to load: off the event loop.
            await asyncio.get_running_loop().run_in_executor(
                None, self.core.reload_config, request.config
            )
        except configs.ConfigError as exc:
            status.error_code = int(Code.INVALID_ARGUMENT)
            status.error_message = str(exc)
        except ServoError as exc:
            status.error_code = int(exc.code)
            status.error_message = exc.message
        response.status.CopyFrom(status)
        if status.error_code:
            log.error("ReloadConfig failed: %s", status.error_message)
            await context.abort(grpc_code(Code(status.error_code)), _message(status.error_message))
        return response

    # -- registration ----------------------------------------------------------------------

    def generic_handlers(self) -> Sequence[grpc.GenericRpcHandler]:
        def unary(fn: Any, request_cls: Any, response_cls: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )

        prediction = grpc.method_handlers_generic_handler(
            PREDICTION_SERVICE,
            {
                "Predict": unary(
                    self.predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse
                ),
                "Classify": unary(
                    self.classify,
                    classification_pb2.ClassificationRequest,
                    classification_pb2.ClassificationResponse,
                ),
                "Regress": unary(
                    self.regress,
                    regression_pb2.RegressionRequest,
                    regression_pb2.RegressionResponse,
                ),
                "MultiInference": unary(
                    self.multi_inference,
                    inference_pb2.MultiInferenceRequest,
                    inference_pb2.MultiInferenceResponse,
                ),
                "GetModelMetadata": unary(
                    self.get_model_metadata,
                    get_model_metadata_pb2.GetModelMetadataRequest,
                    get_model_metadata_pb2.GetModelMetadataResponse,
                ),
            },
        )
        model_service = grpc.method_handlers_generic_handler(
            MODEL_SERVICE,
            {
                "GetModelStatus": unary(
                    self.get_model_status,
                    get_model_status_pb2.GetModelStatusRequest,
                    get_model_status_pb2.GetModelStatusResponse,
                ),
                "HandleReloadConfigRequest": unary(
                    self.handle_reload_config_request,
                    model_management_pb2.ReloadConfigRequest,
                    model_management_pb2.ReloadConfigResponse,
                ),
            },
        )
        return [prediction, model_service]


_INFERENCE_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference"})


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


def server_options(channel_args: str) -> list[tuple[str, Any]]:
    """The server's channel arguments; `--grpc_channel_arguments` come last, so they win.

    SO_REUSEPORT is off: with it (grpc's default) a second server started on a busy port
    would start and silently share the port's calls with the first; without it, it fails to
    start and says so. `--grpc_channel_arguments=grpc.so_reuseport=1` turns it back on."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        *channel_arguments(channel_args),
    ]
