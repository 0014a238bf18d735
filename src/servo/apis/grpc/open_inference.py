"""The Open Inference Protocol's gRPC service, `inference.GRPCInferenceService`, on the same
port and data plane as TFS's services:

    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata   health and metadata
    ModelInfer                                 a TFS predict on the same model (typed
                                               `contents` or `raw_input_contents` in; answered
                                               in `raw_output_contents`, as Triton answers)
    RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload   the repository extension

Readiness is an answer (`ready: false`), not an error; the other methods answer errors with
the status of their code, as TFS's services do. A `model_version` of digits is a version,
any other a version label (servo's extension). ModelInfer is counted and timed as TFS's
Predict, which it is. The methods servo lacks (streaming, shared memory, statistics, model
config, trace) answer UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

import servo
from servo.apis import open_inference as v2
from servo.apis.data_plane import DataPlane, Prediction
from servo.apis.grpc.service import MalformedLog, call_rpc, unary_service
from servo.core.status import Code, ServoError
from servo.decoded_size import DEFAULT_LIMITS, DecodeLimits
from servo.protos import open_inference_pb2 as pb

if TYPE_CHECKING:
    from servo.server.model_repository import ModelRepository

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "servo"
EXTENSIONS = ("model_repository",)
# Parameters of extensions servo lacks, and what to do instead.
_UNSUPPORTED = {
    "shared_memory_region": "servo has no shared-memory extension; send the tensor in the request",
    "classification": "servo has no classification extension; use the model's classify "
    "signature through TFS's Classify",
}


class InferenceServices:
    """Thread-safety: handlers run on the gRPC server's event loop."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
        repository: ModelRepository | None = None,
        malformed_log: MalformedLog | None = None,
    ) -> None:
        self.plane = plane
        self.decode_limits = decode_limits
        self.repository = repository
        self.malformed_log = malformed_log or MalformedLog()

    # -- health and metadata ---------------------------------------------------------------

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not v2.server_not_ready(self.plane))

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def work(_: float | None) -> pb.ModelReadyResponse:
            ready, _why = v2.model_ready(self.plane, v2.model_spec(request.name, request.version))
            return pb.ModelReadyResponse(ready=ready)

        return await call_rpc(self.plane, "ModelReady", request.name, context, work)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        extensions = EXTENSIONS if self.repository is not None else ()
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=servo.__version__, extensions=extensions
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def work(_: float | None) -> pb.ModelMetadataResponse:
            spec = v2.model_spec(request.name, request.version)
            metadata = v2.model_metadata_of(self.plane, spec)
            response = pb.ModelMetadataResponse(
                name=metadata.name, versions=metadata.versions, platform=metadata.platform
            )
            for into, tensors in (
                (response.inputs, metadata.inputs),
                (response.outputs, metadata.outputs),
            ):
                for t in tensors:
                    into.add(name=t.name, datatype=t.datatype, shape=t.shape)
            return response

        return await call_rpc(self.plane, "ModelMetadata", request.name, context, work)

    # -- infer -----------------------------------------------------------------------------

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def work(timeout: float | None) -> pb.ModelInferResponse:
            spec = v2.model_spec(request.model_name, request.model_version)
            call = infer_call(request, self.decode_limits)
            return await self.plane.predict(spec, call, timeout)

        return await call_rpc(self.plane, "Predict", request.model_name, context, work)

    # -- the repository extension --------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        async def work(_: float | None) -> pb.RepositoryIndexResponse:
            repository = self._repository()
            response = pb.RepositoryIndexResponse()
            for entry in repository.index(ready_only=request.ready):
                response.models.add(
                    name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
                )
            return response

        return await call_rpc(self.plane, "RepositoryIndex", "", context, work)

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        async def work(_: float | None) -> pb.RepositoryModelLoadResponse:
            repository = self._repository()
            config = None
            for key, value in request.parameters.items():
                if key != "config":
                    raise v2.invalid(
                        f'Unsupported load parameter {key!r}; servo takes "config" (the '
                        "model's entry of TFS's model config, as JSON)"
                    )
                if value.WhichOneof("parameter_choice") != "string_param":
                    raise v2.invalid('The "config" parameter must be a string_param')
                config = value.string_param
            await repository.load(request.model_name, config)
            return pb.RepositoryModelLoadResponse()

        return await call_rpc(self.plane, "RepositoryModelLoad", request.model_name, context, work)

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        async def work(_: float | None) -> pb.RepositoryModelUnloadResponse:
            await self._repository().unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await call_rpc(
            self.plane, "RepositoryModelUnload", request.model_name, context, work
        )

    def _repository(self) -> ModelRepository:
        if self.repository is None:
            raise ServoError(Code.UNIMPLEMENTED, "This server has no model repository")
        return self.repository

    # -- registration ----------------------------------------------------------------------

    def generic_handlers(self) -> Sequence[grpc.GenericRpcHandler]:
        methods: list[tuple[str, Any, Any, Any]] = [
            ("ServerLive", self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            ("ServerReady", self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            ("ModelReady", self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            (
                "ServerMetadata",
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            (
                "ModelMetadata",
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            ("ModelInfer", self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            (
                "RepositoryIndex",
                self.repository_index,
                pb.RepositoryIndexRequest,
                pb.RepositoryIndexResponse,
            ),
            (
                "RepositoryModelLoad",
                self.repository_model_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            (
                "RepositoryModelUnload",
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        ]
        return [
            unary_service(
                SERVICE, methods, self.plane, lambda api, what: self.malformed_log.report(api, what)
            )
        ]


def _check_parameters(parameters: Any, what: str) -> None:
    for key, instead in _UNSUPPORTED.items():
        if key in parameters:
            raise v2.invalid(f"{what}: {instead}")


def infer_call(
    request: pb.ModelInferRequest, limits: DecodeLimits
) -> v2.InferCall[pb.ModelInferResponse]:
    """A ModelInferRequest as the data plane's call."""
    _check_parameters(request.parameters, "The request")
    signature_name = ""
    if v2.SIGNATURE_PARAMETER in request.parameters:
        value = request.parameters[v2.SIGNATURE_PARAMETER]
        if value.WhichOneof("parameter_choice") != "string_param":
            raise v2.invalid(f'The "{v2.SIGNATURE_PARAMETER}" parameter must be a string_param')
        signature_name = value.string_param
    if not request.inputs:
        raise v2.invalid("The request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise v2.invalid(
            f"The request has {len(request.inputs)} input(s) but {len(raw)} "
            "raw_input_contents: give one for each input, in the order of the inputs"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        what = f"Input '{tensor.name}'"
        _check_parameters(tensor.parameters, what)
        shape = tuple(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise v2.invalid(
                    f"{what} has contents while the request has raw_input_contents: use one"
                )
            decode = _raw(tensor.name, tensor.datatype, shape, raw[index])
        else:
            decode = _typed(tensor.name, tensor.datatype, shape, tensor.contents)
        inputs.append(v2.InferInput(tensor.name, tensor.datatype, shape, decode))
    outputs = []
    for output in request.outputs:
        _check_parameters(output.parameters, f"Output '{output.name}'")
        outputs.append(output.name)
    model_name, request_id = request.model_name, request.id

    def respond(prediction: Prediction) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(
            model_name=model_name, model_version=str(prediction.id.version), id=request_id
        )
        for name, array in v2.output_arrays(prediction):
            response.outputs.add(name=name, datatype=v2.datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(v2.to_raw(array))
        return response

    return v2.InferCall(inputs, outputs, signature_name, limits.budget(), respond)


def _raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Any:
    return lambda budget: v2.from_raw(name, datatype, shape, raw, budget)


def _typed(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> Any:
    return lambda budget: v2.from_contents(name, datatype, shape, contents, budget)
