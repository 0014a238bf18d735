"""ServerCore: the lifecycle core wired for a model server, driven by a ModelServerConfig.

It owns the event bus, the state monitor, the manager, the file-system source and the platform
router, and turns a request's model spec into a servable request: a version -> Specific, a
label -> Specific(the labelled version), neither -> Latest.

Config reloads follow TFS: the new config replaces the old one whole (models left out unload;
a model keeps its platform); the reload returns once the models it adds have loaded or failed.
Unlike TFS, a reload after the first waits at most `model_wait_timeout`, does not wait for a
model with nothing to load yet (it is added and loads its versions when they appear), and holds
no lock while it waits, so later reloads, the pollers and shutdown never queue behind it. The
config file's poller does not wait at all (`wait=False`): its reload's wait runs on a thread
of its own, which a later config ends (nobody waits for its answer, and the later config's
reload covers what it waited for), so the poller sees the next edit of the file at its next
poll however long a load takes. An empty config (nothing set) takes no action, as in TFS.
Labels: unlike TFS, which checks labels before it loads the models of the same config (so a
first config that labels its own versions cannot start), servo applies a config's labels once
the models it adds have loaded; a label must still point at an AVAILABLE version unless
`allow_version_labels_for_unavailable_models` lets a new label point anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
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
from servo.server.model_management import ModelManagementGrants
from servo.sources.file_system import (
    FileSystemStoragePathSource,
    FileSystemStoragePathSourceConfig,
    PollErrors,
    ServableToMonitor,
)
from servo.sources.version_cache import VersionCache

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


def _version_progress(version: int, state: ServableState) -> str:
    """`version 2 LOADING, last attempt failed: NOT_FOUND: ... (retry 1 of 5 in 60 s)`."""
    text = f"version {version} {state.manager_state.name}"
    if state.manager_state == ManagerState.START:
        return f"{text} (queued: waiting for a load thread or for resources)"
    if state.health.ok:
        return text
    if state.manager_state == ManagerState.LOADING:
        return f"{text}, last attempt failed: {state.health}"
    return f"{text}: {state.health}"


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
    # Seconds a config reload (but the first) waits for its new models; None waits as long
    # as it takes.
    model_wait_timeout: float | None = None
    # What a config may name (allowed roots); None allows everything.
    grants: ModelManagementGrants | None = None
    # Told each config's per-model logging_config (servo.server.request_logger).
    request_logger: LoggingConfigs | None = None
    # The local copies of versions in object storage; None serves local base paths only.
    version_cache: VersionCache | None = None
    # In object storage, the object that makes a version complete (empty: a stable listing).
    version_marker: str = ""
    # Told the base path and code of every failed poll (the poll-error metric).
    poll_errors: PollErrors | None = None


@dataclass
class _WaitPlan:
    """What a reload waits for: the new models' versions, and the new models with nothing
    to load yet (as they are reported)."""

    requests: list[ServableRequest] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    nothing_to_load: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ManagerState
    status: Status


class ServerCore:
    """Thread-safety: every public method may be called from any thread; config reloads are
    applied one at a time, and their waits for models overlap."""

    def __init__(self, options: ServerCoreOptions | None = None) -> None:
        self.options = options = options or ServerCoreOptions()
        self.event_bus: EventBus[ServableState] = EventBus()
        options.manager.event_bus = self.event_bus
        self.monitor = ServableStateMonitor(self.event_bus)
        self.manager = AspiredVersionsManager(options.manager)
        grants = options.grants
        self._router = PlatformRouter(
            {},
            replace(options.platform, servables=self.servable_handle),  # for pipelines' steps
            options.load_hooks,
            options.servable_wrappers,
            grants.check_version_path if grants and grants.allowed_model_base_path_roots else None,
            options.version_cache,
        )
        self._source = FileSystemStoragePathSource(
            self._source_config(()),
            cache=options.version_cache,
            poll_errors=options.poll_errors,
        )
        connect_source_to_target(self._router, self.manager)
        connect_source_to_target(self._source, self._router)
        self._config = ModelServerConfig()
        self._labels: dict[str, dict[str, int]] = {}
        self._latest: dict[str, ServableRequest] = {}  # requests are immutable: made once
        self._reload_lock = threading.Lock()
        self._generation = 0  # configs applied; a reload's labels apply if still the last
        self._stopped = threading.Event()
        self._waits: set[Callable[..., None]] = set()  # reloads' waits, woken by stop()
        self._waits_lock = threading.Lock()

    def _source_config(
        self, servables: tuple[ServableToMonitor, ...]
    ) -> FileSystemStoragePathSourceConfig:
        return FileSystemStoragePathSourceConfig(
            servables,
            self.options.file_system_poll_wait_seconds,
            self.options.servable_versions_always_present,
            self.options.version_marker,
        )

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> ModelServerConfig:
        config = ModelServerConfig()
        config.CopyFrom(self._config)
        return config

    def model_names(self) -> list[str]:
        return [m.name for m in self._config.model_config_list.config]

    def reload_config(
        self, config: ModelServerConfig, *, startup: bool = False, wait: bool = True
    ) -> None:
        """Applies `config` (see the module docstring). Raises `ConfigError` for an invalid
        config and `ServoError` for one the grants refuse (nothing changes), and `ServoError`
        when a new model fails to load or is not available when the wait ends (the config
        and its labels are applied all the same) or a label cannot be applied (the models
        are applied, the old labels stay).

        A config with nothing set (an empty file) takes no action, as in TFS. `startup`:
        the first config waits as long as it takes for every new model, as TFS's start-up
        does; any other waits at most `model_wait_timeout` and not at all for a model with
        nothing to load yet (answered UNAVAILABLE, naming the model and its path: it is
        added and loads its versions when they appear). The wait holds no lock: later
        reloads, polls and `stop` go on meanwhile (`stop` ends it).

        `wait=False` returns once the config is applied (raising only what refuses it): the
        wait for its models and its labels runs on a thread of its own, which logs what the
        waiting reload would have raised, and ends early when a later config is applied."""
        if config.WhichOneof("config") is None:
            log.info("Taking no action for empty config.")
            return
        # A monitor of its own: a re-added model's old END states must not count.
        fresh = ServableStateMonitor(self.event_bus)
        try:
            with self._reload_lock:
                plan = self._apply(config, startup)
                if plan is None:
                    fresh.close()
                    return
                self._generation += 1
                generation = self._generation
            self._wake_waits()  # waits of earlier reloads that did not wait end now
        except BaseException:
            fresh.close()
            raise
        if wait:
            self._finish_reload(config, plan, fresh, startup, generation, replaceable=False)
            return
        threading.Thread(
            target=self._finish_reload_logged,
            args=(config, plan, fresh, startup, generation),
            name="servo-reload-wait",
            daemon=True,
        ).start()

    def _finish_reload_logged(
        self,
        config: ModelServerConfig,
        plan: _WaitPlan,
        fresh: ServableStateMonitor,
        startup: bool,
        generation: int,
    ) -> None:
        try:
            self._finish_reload(config, plan, fresh, startup, generation, replaceable=True)
        except ServoError as exc:
            log.error("Config reload: %s", exc.message)
        except Exception:
            log.exception("Config reload failed")

    def _finish_reload(
        self,
        config: ModelServerConfig,
        plan: _WaitPlan,
        fresh: ServableStateMonitor,
        startup: bool,
        generation: int,
        replaceable: bool,
    ) -> None:
        """Waits for the models `config` (the `generation`th) added (`plan`), then applies
        its labels unless a later config replaced it; raises as `reload_config` says. A
        `replaceable` wait also ends when a later config is applied."""
        failure: ServoError | None = None
        try:
            self._wait_for_models(config, plan, fresh, startup, generation if replaceable else None)
        except ServoError as exc:
            failure = exc
        finally:
            fresh.close()
        with self._reload_lock:
            if self._generation != generation:
                log.info("A later config replaced this one while its models loaded")
            elif failure is not None:
                # The config stands (it is not retried), so its labels must apply now to
                # the models that did load; a label that cannot apply is logged.
                try:
                    self._labels = self._label_map(config)
                except ServoError as exc:
                    log.error("Version labels not applied: %s", exc.message)
            else:
                self._labels = self._label_map(config)
        if failure is not None:
            raise failure
        log.info("Finished reloading config: %d models", len(config.model_config_list.config))

    def _apply(self, config: ModelServerConfig, startup: bool) -> _WaitPlan | None:
        """Checks `config` and hands it to the source and router (under the reload lock);
        None when it is the running config."""
        validate_model_server_config(config)
        validate_transition(self._config, config)
        if self.options.grants is not None:
            self.options.grants.check_config(config)
        if config == self._config:
            log.info("The config is unchanged; nothing to do")
            return None
        if self.options.request_logger is not None:
            self.options.request_logger.update(
                {
                    m.name: m.logging_config
                    for m in config.model_config_list.config
                    if m.HasField("logging_config")
                }
            )
        old_names = set(self.model_names())
        new_models = [m.name for m in config.model_config_list.config if m.name not in old_names]
        removed = old_names - {m.name for m in config.model_config_list.config}
        platforms = {m.name: model_platform(m) for m in config.model_config_list.config}
        # Old routes stay until the source has told the manager to unload old models.
        self._router.set_platforms(
            {
                **{m.name: model_platform(m) for m in self._config.model_config_list.config},
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
        # What the source found for the new models, now: a model with nothing to load yet
        # is not waited for (but at start-up).
        plan = _WaitPlan()
        paths = {m.name: m.base_path for m in config.model_config_list.config}
        for name in new_models:
            versions = self._source.aspired_versions(name)
            if versions:
                plan.requests.extend(ServableRequest.specific(name, v) for v in versions)
                plan.models.append(name)
            elif startup:  # nothing found yet: wait for the first version to show up
                plan.requests.append(ServableRequest.latest(name))
                plan.models.append(name)
            else:
                plan.nothing_to_load.append(
                    f"{{{name}: nothing to load yet at base path {paths[name]}: "
                    f"{self._nothing_to_load(name)}}}"
                )
        return plan

    def _nothing_to_load(self, name: str) -> str:
        status = self._source.status(name)
        if not status.ok:
            return status.message
        pending = self._source.pending(name)
        if pending:
            return "; ".join(
                f"version {v} is not complete yet: {why}" for v, why in sorted(pending.items())
            )
        return "no version found there matches its version policy"

    def _wait_for_models(
        self,
        config: ModelServerConfig,
        plan: _WaitPlan,
        fresh: ServableStateMonitor,
        startup: bool,
        generation: int | None,
    ) -> None:
        """Waits until every version the new models aspire to has loaded or failed (or the
        wait's bound, or a config after `generation` when one is given), and the versions
        this config labels have too; raises when a new model's newest version failed (TFS's
        message and code) or a new model is not available yet."""
        timeout = None if startup else self.options.model_wait_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        failed: list[str] = []
        loading: list[str] = []
        if plan.requests:
            log.info("Waiting for models to load: %s", ", ".join(plan.models))
            states = self._wait(fresh, plan.requests, deadline, generation)
            if self._stopped.is_set():
                why = "the server is stopping"
            elif generation is not None and self._generation != generation:
                why = "a later config replaced this one"
            else:
                why = "its wait ended"
            for name in plan.models:
                mine = {id: st for id, st in states.items() if id.name == name}
                if not mine:
                    loading.append(f"{{{name}: {self._progress(name)} (still loading: {why})}}")
                    continue
                newest = max(mine, key=lambda i: i.version)
                current = fresh.get_state(newest)
                if mine[newest] == ManagerState.END and current and current.health.ok:
                    loading.append(f"{{{name}: unloaded before it became available}}")
                elif mine[newest] == ManagerState.END:
                    error = f" due to error: {current.health}" if current else ""
                    failed.append(f"{{{newest}{error}}}")
                elif mine[newest] != ManagerState.AVAILABLE:
                    loading.append(f"{{{name}: {self._progress(name)} (still loading: {why})}}")
        if failed:
            raise ServoError(
                Code.UNKNOWN,
                f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}, }}",
            )
        if loading or plan.nothing_to_load:
            parts = [*plan.nothing_to_load, *loading]
            raise ServoError(
                Code.UNAVAILABLE,
                f"{len(parts)} model(s) added but not available yet; each loads its versions "
                f"as they appear: {', '.join(parts)}",
            )
        # Labels of models already served may name versions that are loading now.
        labelled = [
            ServableRequest.specific(m.name, v)
            for m in config.model_config_list.config
            if m.name not in plan.models
            for v in set(m.version_labels.values())
            if v in (self._source.aspired_versions(m.name) or ())
        ]
        if labelled:
            self._wait(self.monitor, labelled, deadline, generation)

    def _wake_waits(self) -> None:
        with self._waits_lock:
            waits = list(self._waits)
        for wake in waits:
            wake()

    def _wait(
        self,
        monitor: ServableStateMonitor,
        requests: list[ServableRequest],
        deadline: float | None,
        generation: int | None,
    ) -> dict[ServableId, ManagerState]:
        """Waits until each request's version is AVAILABLE or END, the `deadline` passes,
        a config after `generation` (when given) is applied or the core stops, logging what
        it waits for every WAIT_LOG_INTERVAL seconds; returns the states the requests'
        versions are in."""
        changed = threading.Condition()

        def wake(_: object = None) -> None:
            with changed:
                changed.notify_all()

        # Subscribed after `monitor`, so it wakes this wait once the monitor has the event.
        with self.event_bus.subscribe(wake):
            with self._waits_lock:
                self._waits.add(wake)
            try:
                began = time.monotonic()
                next_log = began + WAIT_LOG_INTERVAL
                with changed:
                    while True:
                        _, states = monitor.wait_until_servables_reach_state(
                            requests, ManagerState.AVAILABLE, 0
                        )
                        settled = [r for r in requests if _settled(r, states)]
                        now = time.monotonic()
                        if (
                            len(settled) == len(requests)
                            or self._stopped.is_set()
                            or (generation is not None and self._generation != generation)
                            or (deadline is not None and now >= deadline)
                        ):
                            return states
                        if now >= next_log:
                            next_log = now + WAIT_LOG_INTERVAL
                            for name in sorted({r.name for r in requests if r not in settled}):
                                log.warning(
                                    "Still waiting for model %s after %.0f s: %s",
                                    name,
                                    now - began,
                                    self._progress(name),
                                )
                        until = next_log if deadline is None else min(next_log, deadline)
                        changed.wait(max(0.0, until - now))
            finally:
                with self._waits_lock:
                    self._waits.discard(wake)

    def _progress(self, name: str) -> str:
        source_status = self._source.status(name)
        if not source_status.ok:
            return source_status.message
        states = self.monitor.get_version_states(name)
        if not states:
            aspired = self._source.aspired_versions(name)
            if aspired:
                return f"version {', '.join(map(str, sorted(aspired)))} found, not loading yet"
            if self._source.pending(name):
                return self._nothing_to_load(name)
            return "no version found yet"
        return ", ".join(_version_progress(v, e.state) for v, e in sorted(states.items()))

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

    def version_labels(self, name: str) -> Mapping[str, int]:
        """The model's labels as the running config set them (label -> version)."""
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
        """Ends the reloads' waits, stops polling, then unloads every version once its
        requests are done, waiting at most `drain_timeout` seconds in all; True when nothing
        was still running then (see `AspiredVersionsManager.stop`)."""
        self._stopped.set()
        self._wake_waits()
        self._source.stop()
        if self.options.version_cache is not None:
            self.options.version_cache.stop()  # copies stay for the next start
        complete = self.manager.stop(drain_timeout)
        self.monitor.close()
        return complete
