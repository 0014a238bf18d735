"""The model server process: flags -> server core -> models loaded -> APIs serving -> signals.

Start-up follows TFS: the config's models load first, and the ports open once every model's
newest version is AVAILABLE; a model that fails makes the process exit non-zero with its error.
SIGTERM and SIGINT turn readiness to not ready and, after `--shutdown_drain_seconds` of
serving on (0 by default, as TFS), stop the APIs from accepting, let requests in flight
finish, unload the models and exit 0; whatever still runs when
`--shutdown_grace_period_seconds` have passed (a request, a model call, a load or a reload
that never returns) is left behind and the process exits with EXIT_DRAIN_INCOMPLETE. A second
signal exits at once, with that code too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from servo import __version__
from servo.apis.data_plane import DataPlane
from servo.apis.rest.app import RestApi, RestOptions
from servo.apis.rest.http_server import HttpServer as RestHttpServer
from servo.apis.runner import Runner
from servo.cli.connections import ConnectionCaps, connection_caps, grpc_arguments
from servo.cli.flags import build_parser, ineffective_flags_set
from servo.cli.workers import WorkerMetrics, WorkerRole, supervise
from servo.core.aspired_versions_manager import AspiredVersionsManagerOptions
from servo.core.loader import ResourceAllocation
from servo.core.resource_tracker import ResourceTracker
from servo.core.status import ServoError
from servo.decoded_size import DecodeLimits
from servo.metrics import ServerMetrics
from servo.platforms import python, python_worker
from servo.platforms.options import PlatformOptions
from servo.platforms.router import import_platform
from servo.protos.text_format import InvalidProtobufFile
from servo.server import config as configs
from servo.server.model_management import ModelManagementGrants
from servo.server.model_repository import ModelRepository
from servo.server.server_core import ServerCore, ServerCoreOptions
from servo.sources.version_cache import VersionCache, default_cache_dir
from servo.util import gfile, tensorflow_logs
from servo.util import log_format as log_format_module
from servo.util.own_thread import on_own_thread

if TYPE_CHECKING:
    from servo.apis.grpc.health import ModelHealthServicer
    from servo.apis.grpc.profiler import ProfilerServices
    from servo.apis.rest.access import AccessLogged
    from servo.batching.batching_servable import BatchingWrapper
    from servo.server.request_logger import ServerRequestLogger

log = logging.getLogger("servo.server")

EXIT_OK = 0
EXIT_FAILED = 1  # a bad config file or a model that failed at start
# An unknown flag or a bad value exits with 2, argparse's convention.
EXIT_DRAIN_INCOMPLETE = 3  # stopped by a signal with work still running at the grace period


class StartupError(Exception):
    """The server cannot start; the message says why."""


def rest_protocol_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The REST port's HTTP limits from their flags, as servo.apis.rest.http_server takes
    them (the connection cap aside: it is fitted to the open-file limit first)."""
    return {
        "idle_timeout": args.rest_api_idle_timeout_seconds,
        "max_head_bytes": args.rest_api_max_request_head_bytes,
        "max_pipelined": args.rest_api_max_pipelined_requests,
        "max_read_ahead_bytes": args.rest_api_max_read_ahead_bytes,
        "max_buffered_body_bytes": args.rest_api_max_buffered_body_bytes,
        "close_linger": args.rest_api_close_linger_seconds,
    }


def startup_error(exc: Exception) -> StartupError:
    """The start-up failure of a config problem; a file protobuf's parser refused (its lines
    logged) fails as TFS's start fails: `Failed to start server. Error: INVALID_ARGUMENT:
    Invalid protobuf file: '<path>'` (TFS aborts on a bad --ssl_config_file instead)."""
    if isinstance(exc, InvalidProtobufFile):
        return StartupError(f"Failed to start server. Error: {exc.status}")
    return StartupError(str(exc))


class HttpServer(Protocol):
    """The HTTP server's part that the process drives (servo.apis.rest.http_server's)."""

    async def serve(self) -> None: ...

    def stop(self) -> None: ...


class GrpcServer(Protocol):
    """The gRPC server's part that the process drives (grpc.aio's)."""

    async def stop(self, grace: float | None) -> Any: ...


@dataclass
class Servers:
    """What `start` brought up, for `stop`."""

    rest: HttpServer | None = None
    rest_task: asyncio.Task[None] | None = None
    grpc: GrpcServer | None = None


class ModelServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Always recorded from the event bus (model loads and states; warm-ups), so that a
        # reload's metric_names can read them as TFS's always-on metrics; the request path
        # records into it only when --monitoring_config_file enables Prometheus
        # (`request_metrics`).
        self.metrics = ServerMetrics()
        self.prometheus = configs.PrometheusSettings()
        self.core: ServerCore | None = None
        self.runner: Runner | None = None
        self.plane: DataPlane | None = None
        self.repository: ModelRepository | None = None
        self.servers = Servers()
        self.health: ModelHealthServicer | None = None
        self.profiler: ProfilerServices | None = None
        self.request_logger: ServerRequestLogger | None = None
        self.batching: BatchingWrapper | None = None
        self._stopping = asyncio.Event()
        self.caps = ConnectionCaps(args.rest_api_max_connections, args.grpc_max_connections)
        self._config_poller: threading.Thread | None = None
        self._stop_polling = threading.Event()
        # One of --workers N's processes (servo.cli.workers), or None for a lone server.
        self.role = WorkerRole.from_env() if args.workers == 1 else None
        self.worker_metrics: WorkerMetrics | None = None
        if self.role is not None:
            from servo.apis import access_log

            access_log.WORKER_PID = os.getpid()
            self.worker_metrics = WorkerMetrics(self.role, self.metrics)

    # -- start-up --------------------------------------------------------------------------

    def build_core(self) -> ServerCore:
        a = self.args
        tracker = None
        if a.total_model_memory_bytes > 0:
            tracker = ResourceTracker(ResourceAllocation(a.total_model_memory_bytes))
        intra = a.tensorflow_intra_op_parallelism or a.tensorflow_session_parallelism
        inter = a.tensorflow_inter_op_parallelism or a.tensorflow_session_parallelism
        metrics = self.metrics
        options = ServerCoreOptions(
            file_system_poll_wait_seconds=a.file_system_poll_wait_seconds,
            # Made now, used (its directory created and locked) when a version in object
            # storage first loads.
            version_cache=VersionCache(
                self.cache_dir(),
                download_threads=a.model_download_threads,
                max_bytes_per_second=a.model_download_max_bytes_per_second,
                on_download=metrics.download if metrics is not None else None,
            ),
            version_marker=a.model_version_complete_marker,
            poll_errors=metrics.poll_error if metrics is not None else None,
            model_wait_timeout=a.model_config_reload_wait_seconds,
            grants=self.grants(),
            allow_version_labels_for_unavailable_models=a.allow_version_labels_for_unavailable_models,
            manager=AspiredVersionsManagerOptions(
                num_load_threads=max(0, a.num_load_threads),
                num_unload_threads=max(0, a.num_unload_threads),
                max_num_load_retries=max(0, a.max_num_load_retries),
                load_retry_interval=max(0, a.load_retry_interval_micros) / 1e6,
                resource_tracker=tracker,
            ),
            platform=PlatformOptions(
                saved_model_tags=tuple(t.strip() for t in a.saved_model_tags.split(",") if t),
                intra_op_parallelism=max(0, intra),
                inter_op_parallelism=max(0, inter),
                saved_model_loads=metrics.saved_model_load,
                extra={
                    "tflite_num_interpreters": max(1, a.num_tflite_pools)
                    * max(1, a.num_tflite_interpreters_per_pool),
                    "prefer_tflite_model": a.prefer_tflite_model,
                    python.ISOLATION_KEY: a.python_model_isolation,
                },
            ),
        )
        from servo.apis.messages import replay
        from servo.server.request_logger import ServerRequestLogger
        from servo.server.warmup import WarmupHook

        check, limits = a.enable_signature_method_name_check, self.decode_limits()
        options.load_hooks = (
            WarmupHook(
                lambda servable, log: replay(servable, log, check, limits),
                enabled=a.enable_model_warmup,
                iterations=a.num_request_iterations_for_warmup,
                metrics=self.metrics,
            ),
        )
        self.request_logger = options.request_logger = ServerRequestLogger(
            metrics=self.request_metrics
        )
        if a.enable_batching:
            options.servable_wrappers = (self._batching_wrapper(),)
        elif a.batching_parameters_file or a.enable_per_model_batching_parameters:
            raise StartupError(
                "--batching_parameters_file and --enable_per_model_batching_parameters need "
                "--enable_batching"
            )
        return ServerCore(options)

    def cache_dir(self) -> str:
        """--model_cache_dir; a worker's own beside it (`<dir>-worker-<i>`): a cache is one
        process's (locked), so each worker downloads its own copies."""
        directory = self.args.model_cache_dir or default_cache_dir()
        if self.role is not None:
            directory = f"{directory.rstrip('/')}-worker-{self.role.index}"
        return directory

    @property
    def request_metrics(self) -> ServerMetrics | None:
        """The metrics the request path records into: none without Prometheus (recording
        costs every request a little, and nothing would read it)."""
        return self.metrics if self.prometheus.enabled else None

    def grants(self) -> ModelManagementGrants:
        a = self.args
        return ModelManagementGrants(
            allow_model_config_over_network=a.allow_model_config_over_network,
            allow_python_models_over_network=a.allow_python_models_over_network,
            allowed_model_base_path_roots=a.allowed_model_base_path_roots,
            allowed_request_log_roots=a.allowed_request_log_roots,
            workers=self.role.count if self.role is not None else 1,
        )

    def _batching_wrapper(self) -> BatchingWrapper:
        from servo.batching.batching_servable import BatchingWrapper
        from servo.batching.parameters import BatchingConfigError, load_config

        try:
            config = load_config(self.args.batching_parameters_file or None)
        except BatchingConfigError as exc:
            raise startup_error(exc) from None
        self.batching = BatchingWrapper(
            config,
            per_model=self.args.enable_per_model_batching_parameters,
            metrics=self.request_metrics,
        )
        log.info(
            "Batching enabled: %d threads shared by every model%s",
            config.num_batch_threads,
            " (per-model parameters)" if self.args.enable_per_model_batching_parameters else "",
        )
        return self.batching

    def read_configs(self) -> configs.ModelServerConfig:
        a = self.args
        if a.monitoring_config_file:
            self.prometheus = configs.prometheus_settings(
                configs.read_monitoring_config(a.monitoring_config_file)
            )
        if a.model_config_file:
            if a.model_base_path:
                raise configs.ConfigError(
                    "Use either --model_config_file or --model_base_path, not both"
                )
            return configs.read_model_server_config(a.model_config_file)
        if not a.model_base_path:
            raise configs.ConfigError(
                "Nothing to serve: set --model_base_path (with --model_name) or --model_config_file"
            )
        return configs.single_model_config(
            a.model_name, a.model_base_path, a.model_platform or None
        )

    def load_models(self) -> None:
        """Reads the configs, imports the preloaded platforms and loads the models (blocking);
        raises StartupError."""
        try:
            config = self.read_configs()
        except configs.ConfigError as exc:
            raise startup_error(exc) from None
        for platform in self.args.preload_platforms:
            started = time.perf_counter()
            try:
                import_platform(platform)
            except ServoError as exc:
                raise StartupError(f"--preload_platforms: {exc.message}") from None
            log.info("Preloaded the %s platform in %.2f s", platform, time.perf_counter() - started)
        self.core = self.build_core()
        # Before any reload subscribes its wait: the bus calls subscribers in order, so a
        # reload's loads are counted before it wakes, and its metric_names see them.
        self.metrics.watch(self.core.event_bus)
        try:
            self.core.reload_config(config, startup=True)
        except (configs.ConfigError, ServoError) as exc:
            raise StartupError(f"Failed to start server. Error: {exc}") from None
        if self.core.options.version_cache is not None:
            try:
                self.core.options.version_cache.prune()  # copies no version of this run uses
            except OSError as exc:
                log.warning("Cannot prune the model cache: %s", exc)

    def build_plane(self) -> DataPlane:
        """The runner and the data plane over the loaded core, as the APIs use them."""
        a = self.args
        assert self.core is not None
        # A version's default share: --rest_api_num_threads (at most 4 per CPU), and never
        # more than an eighth of the shared threads, so that a few hung models cannot take
        # them all.
        threads = min(
            max(1, a.rest_api_num_threads),
            4 * (os.cpu_count() or 1),
            max(1, a.max_model_call_threads // 8),
        )
        concurrency, queued = a.max_concurrent_calls_per_model, a.max_queued_calls_per_model
        self.runner = Runner(
            threads=a.max_model_call_threads,
            concurrency=lambda name: concurrency.get(name) or threads,
            queue=queued.get,
            metrics=self.request_metrics,
        )
        self.plane = DataPlane(
            self.core,
            self.runner,
            metrics=self.request_metrics,
            request_logger=self.request_logger,
            method_name_check=a.enable_signature_method_name_check,
            access_log=a.access_log,
        )
        return self.plane

    async def start_apis(self) -> None:
        a = self.args
        self.build_plane()
        assert self.core is not None
        self.repository = ModelRepository(self.core, self.grants())
        if self.worker_metrics is not None:
            await self.worker_metrics.start()  # before the page can ask the siblings
        await self._start_grpc()
        if a.rest_api_port:
            if a.rest_api_port == a.port:
                raise StartupError(
                    "--rest_api_port cannot be same as --port. Please use a different port "
                    "for HTTP/REST API."
                )
            await self._start_rest()

    def decode_limits(self) -> DecodeLimits:
        """--max_decoded_bytes_per_tensor and --max_decoded_bytes_per_request."""
        a = self.args
        return DecodeLimits(a.max_decoded_bytes_per_tensor, a.max_decoded_bytes_per_request)

    async def _start_grpc(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2_grpc

        from servo.apis.grpc.health import ModelHealthServicer
        from servo.apis.grpc.message_budget import MessageBudget
        from servo.apis.grpc.open_inference import InferenceServices
        from servo.apis.grpc.registrar import Registrar
        from servo.apis.grpc.service import (
            Services,
            count_refused,
            max_receive_bytes,
            server_options,
        )

        a = self.args
        assert self.plane is not None
        connection = grpc_arguments(
            self.caps,
            idle=a.grpc_max_connection_idle_seconds,
            handshake=a.grpc_handshake_timeout_seconds,
            keepalive=a.grpc_keepalive_time_seconds,
        )
        try:
            options = server_options(
                a.grpc_channel_arguments, connection, max_receive_bytes(self.decode_limits())
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        if self.role is not None:  # the workers share the port (the supervisor checked it)
            options = [o for o in options if o[0] != "grpc.so_reuseport"]
            options.append(("grpc.so_reuseport", 1))
        # No maximum_concurrent_rpcs from --grpc_max_threads: TFS's flag sizes a thread pool
        # that queues calls, while grpc.aio's limit would refuse them (RESOURCE_EXHAUSTED).
        server = grpc.aio.server(options=options)
        # Every service registers through the registrar: each method held to the bound on the
        # request messages held at once and, under --access_log, logged.
        budget = MessageBudget(
            a.grpc_max_buffered_message_bytes, on_refused=count_refused(self.plane)
        )
        registrar = Registrar(server, budget, log=a.access_log)
        services = Services(
            self.plane,
            tensor_content=a.enable_serialization_as_tensor_content,
            decode_limits=self.decode_limits(),
            grants=self.grants(),
            metrics=self.metrics,
        )
        registrar.add_generic_rpc_handlers(services.generic_handlers())
        inference = InferenceServices(
            self.plane, decode_limits=self.decode_limits(), repository=self.repository
        )
        registrar.add_generic_rpc_handlers(inference.generic_handlers())
        if a.enable_profiler:
            self._add_profiler(registrar)
        if a.enable_grpc_healthcheck_service:
            self.health = ModelHealthServicer(self.plane)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        credentials = self._grpc_credentials()
        addresses = [f"{a.bind_address}:{a.port}"]
        if a.grpc_socket_path:
            addresses.append(f"unix:{a.grpc_socket_path}")
        for address in addresses:
            try:
                bound = (
                    server.add_secure_port(address, credentials)
                    if credentials is not None
                    else server.add_insecure_port(address)
                )
            except RuntimeError as exc:
                raise StartupError(f"Failed to start gRPC server at {address}: {exc}") from None
            if not bound:
                raise StartupError(f"Failed to start gRPC server at {address}")
        await server.start()
        if self.health is not None:
            await self.health.start()  # the server, its services, and each model
        self.servers.grpc = server
        if self.role is not None:
            log.info("%s: gRPC at %s", self._worker_name(), " and ".join(addresses))
        else:
            log.info("Running gRPC ModelServer at %s ...", " and ".join(addresses))

    def _worker_name(self) -> str:
        assert self.role is not None
        return f"Worker {self.role.index} of {self.role.count} (pid {os.getpid()})"

    def _add_profiler(self, server: Any) -> None:
        """tensorflow.ProfilerService, when TensorFlow is installed (imported at the first
        Profile, not here)."""
        from servo.apis.grpc.profiler import ProfilerServices, roots_check, tensorflow_installed

        assert self.plane is not None
        if not tensorflow_installed():
            log.info(
                "--enable_profiler: TensorFlow is not installed, so tensorflow.ProfilerService "
                "is not served"
            )
            return
        self.profiler = ProfilerServices(
            self.plane, check_path=roots_check(self.args.allowed_profile_roots)
        )
        server.add_generic_rpc_handlers(self.profiler.generic_handlers())
        log.info("Serving tensorflow.ProfilerService (--enable_profiler)")

    def _grpc_credentials(self) -> Any:
        import grpc

        path = self.args.ssl_config_file
        if not path:
            return None
        try:
            ssl = configs.read_ssl_config(path)
        except configs.ConfigError as exc:
            raise startup_error(exc) from None
        if not ssl.server_key or not ssl.server_cert:
            raise StartupError(f"{path}: server_key and server_cert are required")
        return grpc.ssl_server_credentials(
            [(ssl.server_key.encode(), ssl.server_cert.encode())],
            root_certificates=ssl.custom_ca.encode() or None,
            require_client_auth=ssl.client_verify,
        )

    def fit_connection_caps(self) -> None:
        """Raises the open-file limit and fits the connection caps under it (before the
        models load: they and the polling need descriptors too)."""
        self.caps = connection_caps(self.caps, self.args.open_files_reserve)

    def rest_app(self) -> RestApi | AccessLogged:
        """The REST port's app (servo.apis.rest.app) over the data plane, as the HTTP server
        runs it: under the access log when --access_log is on."""
        a = self.args
        assert self.plane is not None
        timeout = a.rest_api_timeout_in_ms / 1000 if a.rest_api_timeout_in_ms > 0 else None
        app: RestApi | AccessLogged = RestApi(
            self.plane,
            RestOptions(
                timeout=timeout,
                enable_cors=a.rest_api_enable_cors_support,
                max_body_bytes=a.rest_api_max_body_bytes,
                metrics_path=self.prometheus.path if self.prometheus.enabled else None,
                decode_limits=self.decode_limits(),
                read_timeout=a.rest_api_read_timeout_seconds or None,
                status_page=a.enable_status_page,
                metrics_page=self.worker_metrics.page if self.worker_metrics else None,
            ),
            self.repository,
        )
        if a.access_log:
            from servo.apis.rest.access import AccessLogged

            metrics_path = self.prometheus.path if self.prometheus.enabled else None
            app = AccessLogged(app, metrics_path)
        return app

    async def _start_rest(self) -> None:
        a = self.args
        app = self.rest_app()
        # HTTP/1.1 only, as TFS's REST API. The idle timeout runs from a connection's start
        # and between its requests; past the connection cap, clients wait in the listen
        # backlog. Workers share the port (SO_REUSEPORT); a single server on a busy port
        # fails to start, as TFS's does.
        server = RestHttpServer(
            app,
            a.bind_address,
            a.rest_api_port,
            max_connections=self.caps.rest,
            **rest_protocol_limits(a),
            backlog=1024,
            reuse_port=self.role is not None,
        )
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(
                f"Failed to start HTTP Server at {a.bind_address}:{a.rest_api_port}: {exc}"
            ) from None
        task = asyncio.create_task(server.serve())
        self.servers.rest, self.servers.rest_task = server, task
        if self.role is not None:
            log.info("%s: HTTP/REST at %s:%d", self._worker_name(), a.bind_address, a.rest_api_port)
        else:
            log.info("Exporting HTTP/REST API at:%s:%d ...", a.bind_address, a.rest_api_port)
        task.add_done_callback(self._on_rest_exit)

    def _on_rest_exit(self, task: asyncio.Task[None]) -> None:
        if not self._stopping.is_set():
            log.error("The HTTP server stopped unexpectedly: %s", task.exception())
            self._stopping.set()

    # -- config file polling ---------------------------------------------------------------

    def start_config_polling(self) -> None:
        a = self.args
        if not a.model_config_file or a.model_config_file_poll_wait_seconds <= 0:
            return
        self._config_poller = threading.Thread(
            target=self._poll_config, name="servo-config-poll", daemon=True
        )
        self._config_poller.start()

    def _poll_config(self) -> None:
        from servo.server.config_poller import ModelConfigFilePoller

        assert self.core is not None
        metrics = self.metrics
        poller = ModelConfigFilePoller(
            self.args.model_config_file,
            self.core,
            poll_errors=metrics.poll_error if metrics is not None else None,
        )
        while not self._stop_polling.wait(self.args.model_config_file_poll_wait_seconds):
            try:
                poller.poll_once()
            except Exception:
                log.exception("Polling %s failed; polling goes on", poller.path)

    # -- running and stopping --------------------------------------------------------------

    async def serve(self) -> None:
        """Serves until a signal (or the HTTP server's end), then stops. When the stop was
        not complete within the grace period this does not return: the process exits with
        EXIT_DRAIN_INCOMPLETE, leaving behind the threads that still run."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await self.start_apis()
        self.start_config_polling()
        if self.role is not None:
            self.role.report_ready()
        await self._stopping.wait()
        if not await self.stop():
            exit_now(EXIT_DRAIN_INCOMPLETE)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.warning("Received %s while stopping: exiting now", sig.name)
            exit_now(EXIT_DRAIN_INCOMPLETE)
        log.info(
            "Received %s: stopping (drain %gs, then grace period %gs)",
            sig.name,
            self.args.shutdown_drain_seconds,
            self.args.shutdown_grace_period_seconds,
        )
        self._stopping.set()

    async def stop(self) -> bool:
        """Stops accepting, lets requests in flight finish, then stops the model calls, the
        models and the batch threads, all within one grace period. True when everything
        ended within it; False when something still runs (left to its thread)."""
        self._stopping.set()
        self._stop_polling.set()
        if self.plane is not None:
            self.plane.stopping = True  # readiness: not ready from now on
        if self.health is not None:
            await self.health.enter_graceful_shutdown()  # every service NOT_SERVING
        drain = float(self.args.shutdown_drain_seconds)
        serving = self.servers.rest is not None or self.servers.grpc is not None
        if drain > 0 and serving:  # not when a start failed before the ports opened
            log.info(
                "Draining for %gs: readiness says not ready, requests are still served "
                "(--shutdown_drain_seconds)",
                drain,
            )
            await asyncio.sleep(drain)  # the drain itself: the time a balancer is given
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.args.shutdown_grace_period_seconds)

        def left() -> float:
            return max(0.0, deadline - loop.time())

        complete = True
        if self.profiler is not None:
            self.profiler.end_all()  # captures in flight answer what they have
        if self.servers.rest is not None:
            self.servers.rest.stop()  # stops accepting; requests in flight finish
        if self.servers.grpc is not None:
            # Calls still running at the grace period are cancelled (their clients get
            # CANCELLED); work they started in threads goes on, bounded below.
            complete &= await _within(
                left(), "the gRPC calls in flight", self.servers.grpc.stop(grace=left())
            )
        if self.servers.rest_task is not None:
            rest_task = self.servers.rest_task
            complete &= await _within(
                left(),
                "the REST requests in flight",
                asyncio.gather(asyncio.shield(rest_task), return_exceptions=True),
            )
        python_worker.stop_busy_workers()  # a call still running now ends with its worker
        if self.runner is not None:
            runner = self.runner
            complete &= await _on_thread(left(), "the model calls", lambda: runner.close(left()))
        if self.core is not None:
            core = self.core
            complete &= await _on_thread(left(), "the models' unloads", lambda: core.stop(left()))
        if self.batching is not None:
            batching = self.batching
            complete &= await _on_thread(left(), "the batch threads", batching.stop)
        if self.request_logger is not None:
            self.request_logger.close()
        # Any worker left by a load still running; on a thread, as a worker may be slow to
        # let go (it waits a few seconds for each).
        complete &= await _on_thread(
            max(left(), 1.0), "the Python worker processes", python_worker.stop_all_workers
        )
        if complete:
            log.info("Server stopped")
        else:
            log.warning(
                "Server stopped with work still running after the grace period of %gs "
                "(--shutdown_grace_period_seconds); exiting with code %d",
                self.args.shutdown_grace_period_seconds,
                EXIT_DRAIN_INCOMPLETE,
            )
        return complete


async def _within(seconds: float, what: str, work: Awaitable[Any]) -> bool:
    """Awaits `work` at most `seconds`; False (with a warning naming `what`) when it did not
    end by then."""
    try:
        # At least a moment: work that is already done, or ends at once, is not given up.
        await asyncio.wait_for(work, max(seconds, 0.05))
    except TimeoutError:
        log.warning("Stopping: %s did not end within the grace period", what)
        return False
    return True


async def _on_thread(seconds: float, what: str, work: Callable[[], object]) -> bool:
    """Runs `work()` on a daemon thread of its own (servo.util.own_thread: one that never
    returns must not keep the process alive) and waits at most `seconds` for it. False when
    it did not end in time, or returned False (it gave something up)."""

    def logged() -> object:
        try:
            return work()
        except Exception:
            log.exception("Stopping %s failed", what)
            return True

    ended = asyncio.ensure_future(on_own_thread("servo-stop", logged))
    if not await _within(seconds, what, asyncio.shield(ended)):
        return False
    return ended.result() is not False


def exit_now(code: int) -> NoReturn:
    """Ends the process at once with `code`, after flushing the logs: without the
    interpreter's exit, which joins every executor's threads (a stuck model call, load or
    reload would keep the process alive)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def configure_logging(
    level: str, log_format: str = "text", access_log: bool = False, access_log_file: str = ""
) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise StartupError(f"--log_level: unknown level {level!r}")
    # No line holds a credential servo knows of (the stores' keys and tokens), whatever a
    # message or a traceback quotes.
    try:
        log_format_module.configure(
            numeric, log_format, access_log=access_log, access_log_file=access_log_file
        )
    except OSError as exc:
        raise StartupError(f"--access_log_file: cannot open {access_log_file}: {exc}") from None
    gfile.quiet_client_loggers()  # they write signed requests at DEBUG


class _Interrupted(Exception):
    """A signal arrived while the models were loading at start."""


def _interrupt_start(signum: int, frame: object) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _stop_starting_core(core: ServerCore | None, grace: float) -> bool:
    """Stops a core whose start was interrupted, waiting at most `grace` seconds (its loads
    may never return); True when everything ended."""
    if core is None:
        return True
    result: list[bool] = []
    stopper = threading.Thread(
        target=lambda: result.append(core.stop(grace)), name="servo-stop", daemon=True
    )
    stopper.start()
    stopper.join(grace + 1.0)  # core.stop keeps to `grace`; the second is its last unload's
    return result == [True]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_flags(argv)  # exits with 2 on bad usage, in one line
    if args.version:
        print(f"servo {__version__} (TensorFlow Serving APIs)")
        return EXIT_OK
    if args.workers > 1:
        try:
            configure_logging(args.log_level, args.log_format)
        except StartupError as exc:
            log.error("%s", exc)
            return EXIT_FAILED
        return supervise(args, argv)
    grace = args.shutdown_grace_period_seconds
    try:
        configure_logging(args.log_level, args.log_format, args.access_log, args.access_log_file)
        # Before anything imports TensorFlow: its C++ logger reads the level once.
        tensorflow_logs.configure(args.tensorflow_cpp_min_log_level)
        for name in ineffective_flags_set(args):
            log.warning("--%s has no effect in servo", name)
        server = ModelServer(args)
        server.fit_connection_caps()
        # A signal while the models load at start stops them within the grace period (the
        # event loop's handlers take over once it runs).
        previous = {sig: signal.signal(sig, _interrupt_start) for sig in _SIGNALS}
        try:
            server.load_models()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except _Interrupted as exc:
        log.info("Received %s while loading the models: stopping (grace period %gs)", exc, grace)
        for sig in _SIGNALS:  # a second signal exits at once
            signal.signal(sig, lambda *_: exit_now(EXIT_DRAIN_INCOMPLETE))
        complete = _stop_starting_core(server.core, grace)
        if not complete:
            log.warning(
                "Loads still running after the grace period; exiting with code %d",
                EXIT_DRAIN_INCOMPLETE,
            )
        exit_now(EXIT_OK if complete else EXIT_DRAIN_INCOMPLETE)
    try:
        import uvloop

        uvloop.run(server.serve())
    except StartupError as exc:
        log.error("%s", exc)
        if server.core is not None:
            _stop_starting_core(server.core, grace)
        return EXIT_FAILED
    return EXIT_OK


_SIGNALS = (signal.SIGTERM, signal.SIGINT)
