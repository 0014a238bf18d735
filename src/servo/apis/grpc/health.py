"""grpc.health.v1.Health (with --enable_grpc_healthcheck_service) per service and per model.

    ""                                          the server: SERVING while it runs
    "PredictionService", "ModelService"         TFS's names for its services
    "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
    "inference.GRPCInferenceService"            the services' full names
    a model's name                              SERVING while the model has an AVAILABLE
                                                version, NOT_SERVING while it has none

`Check` answers a model from its states at the moment it is asked; `Watch` hears of a model's
change as its versions change state (the core's event bus), and of a model the config removed
as NOT_SERVING. Any other name is NOT_FOUND (`Check`) or SERVICE_UNKNOWN (`Watch`), as grpc's
servicer answers. During shutdown every name is NOT_SERVING.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from servo.apis import open_inference as v2
from servo.apis.data_plane import DataPlane, ModelSpec

SERVICES = (
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
    "inference.GRPCInferenceService",
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ModelHealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """Thread-safety: runs on the gRPC server's loop; `_changed` may be called from any
    thread (the event bus's publishers)."""

    def __init__(self, plane: DataPlane) -> None:
        super().__init__()
        self.plane = plane
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync_pending = False
        self._known: set[str] = set()  # the models given a status so far
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Every service SERVING, every model as it is; then follows the models' states."""
        self._loop = asyncio.get_running_loop()
        for service in SERVICES:
            await self.set(service, SERVING)
        self.plane.core.event_bus.subscribe(self._changed)
        await self._sync()

    def _status(self, name: str) -> Any:
        ready, _ = v2.model_ready(self.plane, ModelSpec(name))
        return SERVING if ready else NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service not in SERVICES and request.service in self.plane.model_names():
            if self._gracefully_shutting_down:
                return health_pb2.HealthCheckResponse(status=NOT_SERVING)
            return health_pb2.HealthCheckResponse(status=self._status(request.service))
        return await super().Check(request, context)

    def _changed(self, event: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._schedule_sync)

    def _schedule_sync(self) -> None:
        if not self._sync_pending:  # one sync covers every change before it runs
            self._sync_pending = True
            self._sync_task = asyncio.ensure_future(self._sync())

    async def _sync(self) -> None:
        self._sync_pending = False
        names = [n for n in self.plane.model_names() if n not in SERVICES]
        for name in names:
            await self.set(name, self._status(name))
        for gone in self._known - set(names):
            await self.set(gone, NOT_SERVING)
        self._known = set(names) | self._known
