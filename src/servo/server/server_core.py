"""ServerCore: the lifecycle core wired for a model server, driven by a ModelServerConfig.

It owns the event bus, the state monitor, the manager, the file-system source and the platform
router, and turns a request's model spec into a servable request: a version -> Specific, a
label -> Specific(the labelled version), neither -> Latest.

Config reloads follow TFS: the new config replaces the old one whole (models left out unload;
a model keeps its platform); the reload returns once the models it adds have loaded or failed.
Labels: unlike TFS, which checks labels before it loads the models of the same config (so a
first config that labels its own versions cannot start), servo applies a config's labels once
the models it adds have loaded; a label must still point at an AVAILABLE version unless
`allow_version_labels_for_unavailable_models` lets a new label point anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from servo.core.aspired_versions_manager import (
    AspiredVersionsManager,
    AspiredVersionsManagerOptions,
)
from servo.core.event_bus import EventBus
from servo.core.servable_handle import ServableHandle
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState, ServableState
from servo.core.servable_state_monitor import ServableStateMonitor
from servo.core.source import connect_source_to_target
from servo.core.status import Code, ServoError, Status
from servo.platforms.options import PlatformOptions
from servo.platforms.router import LoadHook, PlatformRouter, ServableWrapper
from servo.protos.logging_config_pb2 import LoggingConfig
from servo.server.config import (
    ModelServerConfig,
    model_platform,
    servables_to_monitor,
    validate_model_server_config,
    validate_transition,
)
from servo.sources.file_system import (
    FileSystemStoragePathSource,
    FileSystemStoragePathSourceConfig,
    ServableToMonitor,
)

log = logging.getLogger(__name__)

WAIT_LOG_INTERVAL = 10.0  # seconds between "still waiting" lines while models load
_SETTLED = (ManagerState.AVAILABLE, ManagerState.END)


def _settled(request: ServableRequest, states: Mapping[ServableId, ManagerState]) -> bool:
    return any(
        id.name == request.name
        and state in _SETTLED
        and (request.version is None or request.version == id.version)
        for id, state in states.items()
    )


class LoggingConfigs(Protocol):
    """What takes each config's per-model `logging_config` (the request logger)."""

    def update(self, configs: Mapping[str, LoggingConfig]) -> None: ...


@dataclass
class ServerCoreOptions:
    # Seconds between polls of the model base paths; 0 = once, < 0 = never.
    file_system_poll_wait_seconds: float = 1.0
    # Keep the last versions when a base path is empty (and fail at start without versions).
    servable_versions_always_present: bool = False
    # Let a new label point at a version that is not (yet) available.
    allow_version_labels_for_unavailable_models: bool = False
    manager: AspiredVersionsManagerOptions = field(default_factory=AspiredVersionsManagerOptions)
    platform: PlatformOptions = field(default_factory=PlatformOptions)
    # Wrap a version's servable once built (batching), then run on it before it is AVAILABLE
    # (warm-up).
    servable_wrappers: tuple[ServableWrapper, ...] = ()
    load_hooks: tuple[LoadHook, ...] = ()
    # Seconds a config (re)load waits for its new models; None waits as long as it takes.
    model_wait_timeout: float | None = None
    # Told each config's per-model logging_config (servo.server.request_logger).
    request_logger: LoggingConfigs | None = None


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ManagerState
    status: Status


class ServerCore:
    """Thread-safety: every public method may be called from any thread; config reloads are
    serialized."""

    def __init__(self, options: ServerCoreOptions | None = None) -> None:
        self.options = options = options or ServerCoreOptions()
        self.event_bus: EventBus[ServableState] = EventBus()
        options.manager.event_bus = self.event_bus
        self.monitor = ServableStateMonitor(self.event_bus)
        self.manager = AspiredVersionsManager(options.manager)
        self._router = PlatformRouter(
            {}, options.platform, options.load_hooks, options.servable_wrappers
        )
        self._source = FileSystemStoragePathSource(self._source_config(()))
        connect_source_to_target(self._router, self.manager)
        connect_source_to_target(self._source, self._router)
        self._config = ModelServerConfig()
        self._labels: dict[str, dict[str, int]] = {}
        self._latest: dict[str, ServableRequest] = {}  # requests are immutable: made once
        self._reload_lock = threading.Lock()

    def _source_config(
        self, servables: tuple[ServableToMonitor, ...]
    ) -> FileSystemStoragePathSourceConfig:
        return FileSystemStoragePathSourceConfig(
            servables,
            self.options.file_system_poll_wait_seconds,
            self.options.servable_versions_always_present,
        )

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> ModelServerConfig:
        config = ModelServerConfig()
        config.CopyFrom(self._config)
        return config

    def model_names(self) -> list[str]:
        return [m.name for m in self._config.model_config_list.config]

    def reload_config(self, config: ModelServerConfig) -> None:
        """Applies `config` (see the module docstring). Raises `ConfigError` for an invalid
        config (nothing changes) and `ServoError` when a new model fails to load (the config
        and its labels are applied all the same) or a label cannot be applied (the models
        are applied, the old labels stay)."""
        with self._reload_lock:
            validate_model_server_config(config)
            validate_transition(self._config, config)
            if config == self._config:
                log.info("The config is unchanged; nothing to do")
                return
            if self.options.request_logger is not None:
                self.options.request_logger.update(
                    {
                        m.name: m.logging_config
                        for m in config.model_config_list.config
                        if m.HasField("logging_config")
                    }
                )
            old_names = set(self.model_names())
            new_models = [
                m.name for m in config.model_config_list.config if m.name not in old_names
            ]
            removed = old_names - {m.name for m in config.model_config_list.config}
            # A monitor of its own: a re-added model's old END states must not count.
            fresh = ServableStateMonitor(self.event_bus)
            try:
                platforms = {m.name: model_platform(m) for m in config.model_config_list.config}
                # Old routes stay until the source has told the manager to unload old models.
                self._router.set_platforms(
                    {
                        **{
                            m.name: model_platform(m) for m in self._config.model_config_list.config
                        },
                        **platforms,
                    }
                )
                for model in config.model_config_list.config:
                    log.info(
                        "(Re-)adding model: %s (%s at %s)",
                        model.name,
                        platforms[model.name],
                        model.base_path,
                    )
                for name in sorted(removed):
                    log.info("Removing model: %s", name)
                self._source.update_config(self._source_config(servables_to_monitor(config)))
                self._router.set_platforms(platforms)
                self._config = config
                try:
                    self._wait_for_models(config, new_models, fresh)
                except ServoError:
                    # The config stands (it is not retried), so its labels must apply now
                    # to the models that did load; a label that cannot apply is logged.
                    try:
                        self._labels = self._label_map(config)
                    except ServoError as exc:
                        log.error("Version labels not applied: %s", exc.message)
                    raise
            finally:
                fresh.close()
            self._labels = self._label_map(config)
            log.info("Finished reloading config: %d models", len(config.model_config_list.config))

    def _wait_for_models(
        self, config: ModelServerConfig, new_models: list[str], fresh: ServableStateMonitor
    ) -> None:
        """Waits until every version the new models aspire to has loaded or failed, and the
        versions this config labels have too; raises when a new model's newest version
        failed (TFS's message and code)."""
        requests: list[ServableRequest] = []
        for name in new_models:
            versions = self._source.aspired_versions(name)
            if versions:
                requests.extend(ServableRequest.specific(name, v) for v in versions)
            else:  # nothing found yet: wait for the first version to show up
                requests.append(ServableRequest.latest(name))
        if requests:
            log.info("Waiting for models to load: %s", ", ".join(new_models))
            states = self._wait(fresh, requests)
            failed = []
            for name in new_models:
                mine = {id: st for id, st in states.items() if id.name == name}
                if not mine:
                    failed.append(f"{{{name}: {self._progress(name)}}}")
                    continue
                newest = max(mine, key=lambda i: i.version)
                if mine[newest] != ManagerState.AVAILABLE:
                    current = fresh.get_state(newest)
                    why = f" due to error: {current.health}" if current else ""
                    failed.append(f"{{{newest}{why}}}")
            if failed:
                raise ServoError(
                    Code.UNKNOWN,
                    f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}, }}",
                )
        # Labels of models already served may name versions that are loading now.
        labelled = [
            ServableRequest.specific(m.name, v)
            for m in config.model_config_list.config
            if m.name not in new_models
            for v in set(m.version_labels.values())
            if v in (self._source.aspired_versions(m.name) or ())
        ]
        if labelled:
            self._wait(self.monitor, labelled)

    def _wait(
        self, monitor: ServableStateMonitor, requests: list[ServableRequest]
    ) -> dict[ServableId, ManagerState]:
        """Waits until each request's version is AVAILABLE or END (or the core's model wait
        timeout), logging what it waits for every WAIT_LOG_INTERVAL seconds."""
        timeout = self.options.model_wait_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = WAIT_LOG_INTERVAL
            if deadline is not None:
                chunk = min(chunk, max(0.0, deadline - time.monotonic()))
            _, states = monitor.wait_until_servables_reach_state(
                requests, ManagerState.AVAILABLE, chunk
            )
            settled = [r for r in requests if _settled(r, states)]
            if len(settled) == len(requests):
                return states
            if deadline is not None and time.monotonic() >= deadline:
                return states
            for name in sorted({r.name for r in requests if r not in settled}):
                log.warning("Still waiting for model %s: %s", name, self._progress(name))

    def _progress(self, name: str) -> str:
        source_status = self._source.status(name)
        if not source_status.ok:
            return source_status.message
        states = self.monitor.get_version_states(name)
        if not states:
            return "no version found yet"
        return ", ".join(
            f"version {v} {e.state.manager_state.name}" for v, e in sorted(states.items())
        )

    def _label_map(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        allow = self.options.allow_version_labels_for_unavailable_models
        for model in config.model_config_list.config:
            states = self.monitor.get_version_states(model.name)
            for label, version in model.version_labels.items():
                existing = self._labels.get(model.name, {}).get(label)
                may_point_anywhere = allow and (existing is None or existing == version)
                entry = states.get(version)
                available = (
                    entry is not None and entry.state.manager_state == ManagerState.AVAILABLE
                )
                if not available and not may_point_anywhere:
                    raise ServoError(
                        Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference",
                    )
                labels.setdefault(model.name, {})[label] = version
        return labels

    # -- requests --------------------------------------------------------------------------

    def servable_request(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableRequest:
        """A model spec as a servable request (TFS's ServableRequestFromModelSpec)."""
        if not name:
            raise ServoError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if version is not None:
            return ServableRequest.specific(name, version)
        if label is not None:
            found = self._labels.get(name, {}).get(label)
            if found is None:
                raise ServoError(
                    Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                )
            return ServableRequest.specific(name, found)
        request = self._latest.get(name)
        if request is None:
            if len(self._latest) >= 4096:  # clients may ask for any name: stay bounded
                self._latest.clear()
            request = self._latest[name] = ServableRequest.latest(name)
        return request

    def servable_handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableHandle:
        return self.manager.get_servable_handle(self.servable_request(name, version, label))

    def labels(self, name: str) -> Mapping[str, int]:
        return dict(self._labels.get(name, {}))

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """TFS's GetModelStatus: every version the monitor has seen, newest first; or one.
        (An empty name is a model with no versions, as in TFS; a label, which TFS ignores
        here, picks its version.)"""
        if version is None and label is not None:
            version = self.servable_request(name, None, label).version
        states = self.monitor.get_version_states(name)
        if version is not None:
            entry = states.get(version)
            if entry is None:
                raise ServoError(
                    Code.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            chosen: Iterable[int] = [version]
        else:
            if not states:
                raise ServoError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
            chosen = sorted(states, reverse=True)
        return [
            VersionStatus(v, states[v].state.manager_state, states[v].state.health) for v in chosen
        ]

    # -- shutting down ---------------------------------------------------------------------

    def stop(self, drain_timeout: float | None = 30.0) -> bool:
        """Stops polling, then unloads every version once its requests are done, waiting at
        most `drain_timeout` seconds in all; True when nothing was still running then (see
        `AspiredVersionsManager.stop`)."""
        self._source.stop()
        complete = self.manager.stop(drain_timeout)
        self.monitor.close()
        return complete
