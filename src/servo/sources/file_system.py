"""FileSystemStoragePathSource: finds model versions as numbered directories under base paths.

For each monitored servable (a name and a base path), every child directory of the base path
whose name is a non-negative integer is a version (`/models/m/1`, `/models/m/00042`). A
version policy picks which of them to aspire: the latest N (default 1), all, or specific ones.
The source polls every `file_system_poll_wait_seconds` and emits a servable's aspired
versions (version -> directory path) whenever they change.

- Base path missing: that poll is an error for the servable; it emits nothing, so nothing is
  unloaded.
- Base path with no numeric child, or none the version policy picks: an empty aspired list
  (every version unloads), unless `servable_versions_always_present` is set, in which case it
  emits nothing (and startup fails with NOT_FOUND when no such version exists).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from servo.core.servable_id import ServableId
from servo.core.source import AspiredVersionsCallback, CallbackHolder, ServableData, Source
from servo.core.status import OK, Code, ServoError, Status

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^[0-9]+$")
_MAX_VERSION = 2**63 - 1


@dataclass(frozen=True)
class LatestVersions:
    """Aspire the `num_versions` highest versions."""

    num_versions: int = 1

    def __post_init__(self) -> None:
        if self.num_versions < 1:
            raise ValueError(f"latest num_versions must be >= 1, got {self.num_versions}")


@dataclass(frozen=True)
class AllVersions:
    """Aspire every version found."""


@dataclass(frozen=True)
class SpecificVersions:
    """Aspire exactly these versions (those not found are warned about)."""

    versions: frozenset[int]

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("specific versions must name at least one version")


ServableVersionPolicy = LatestVersions | AllVersions | SpecificVersions


@dataclass(frozen=True)
class ServableToMonitor:
    name: str
    base_path: str
    version_policy: ServableVersionPolicy = field(default_factory=LatestVersions)


@dataclass(frozen=True)
class FileSystemStoragePathSourceConfig:
    """`file_system_poll_wait_seconds`: > 0 polls at that interval, 0 polls once, < 0 never
    polls by itself (`poll_once()` still works)."""

    servables: tuple[ServableToMonitor, ...] = ()
    file_system_poll_wait_seconds: float = 1.0
    servable_versions_always_present: bool = False

    def __post_init__(self) -> None:
        names = [s.name for s in self.servables]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"servable {name!r} is listed more than once")


def find_versions(base_path: str) -> dict[int, str]:
    """Version number -> directory path of every numeric child directory of `base_path`.

    Raises `ServoError(NOT_FOUND)` when `base_path` does not exist or is not a directory. When
    two names give one number (`00042` and `42`), the first in sorted order wins.
    """
    try:
        entries = sorted(os.scandir(base_path), key=lambda e: e.name)
    except FileNotFoundError:
        raise ServoError(Code.NOT_FOUND, f"Could not find base path {base_path}") from None
    except NotADirectoryError:
        raise ServoError(
            Code.INVALID_ARGUMENT, f"Base path {base_path} is not a directory"
        ) from None
    except OSError as exc:
        raise ServoError(Code.UNAVAILABLE, f"Cannot list base path {base_path}: {exc}") from None
    versions: dict[int, str] = {}
    for entry in entries:
        if not _VERSION_DIR.match(entry.name):
            continue
        version = int(entry.name)
        if version > _MAX_VERSION:
            log.warning("Ignoring %s: the version number does not fit in int64", entry.path)
            continue
        try:
            if not entry.is_dir():
                continue
        except OSError:
            continue
        if version in versions:
            log.warning(
                "Duplicate version directories for version %d under %s: using %s, ignoring %s",
                version,
                base_path,
                versions[version],
                entry.path,
            )
            continue
        versions[version] = entry.path
    return versions


def select_versions(
    found: dict[int, str], policy: ServableVersionPolicy
) -> tuple[dict[int, str], set[int]]:
    """The versions `policy` aspires among `found`, and the specific versions missing."""
    if isinstance(policy, AllVersions):
        return dict(found), set()
    if isinstance(policy, SpecificVersions):
        return {v: p for v, p in found.items() if v in policy.versions}, set(
            policy.versions - found.keys()
        )
    latest = sorted(found, reverse=True)[: policy.num_versions]
    return {v: found[v] for v in latest}, set()


class FileSystemStoragePathSource(Source[str]):
    """Polls base paths and emits each servable's aspired version paths.

    Emits a servable's list when it differs from the last one emitted, and for every servable
    after `update_config`. Servables dropped by `update_config` get an empty list (unload).

    Thread-safety: every method may be called from any thread; polls never overlap.
    """

    def __init__(self, config: FileSystemStoragePathSourceConfig) -> None:
        if config.servable_versions_always_present:
            check_versions_present(config.servables)
        self._config = config
        self._callback: CallbackHolder[str] = CallbackHolder()
        self._poll_lock = threading.Lock()  # one poll at a time
        self._emitted: dict[str, tuple[tuple[int, str], ...]] = {}
        self._status: dict[str, Status] = {}
        self._warned: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> FileSystemStoragePathSourceConfig:
        return self._config

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[str]) -> None:
        self._callback.set(callback)
        wait = self._config.file_system_poll_wait_seconds
        if wait >= 0:
            self.poll_once()
        if wait > 0:
            self._thread = threading.Thread(
                target=self._poll_loop, name="servo-fs-source", daemon=True
            )
            self._thread.start()

    def update_config(self, config: FileSystemStoragePathSourceConfig) -> None:
        """Monitors `config`'s servables from now on, polling them at once (when a callback
        is set). The poll wait of `config` is not applied to the running poll loop."""
        if config.servable_versions_always_present:
            check_versions_present(config.servables)
        with self._poll_lock:
            removed = {s.name for s in self._config.servables} - {s.name for s in config.servables}
            self._config = config
            self._emitted.clear()  # every servable is emitted again on the next poll
            for name in removed:
                self._status.pop(name, None)
                self._warned.pop(name, None)
                if self._callback.is_set:
                    log.info("Servable %s is no longer monitored: unloading its versions", name)
                    self._callback.call(name, [])
        if self._callback.is_set:
            self.poll_once()  # as TFS: a new config is looked at now, whatever the poll wait

    def aspired_versions(self, name: str) -> tuple[int, ...] | None:
        """The versions of `name` last emitted (None before its first list)."""
        emitted = self._emitted.get(name)
        return None if emitted is None else tuple(v for v, _ in emitted)

    def status(self, name: str) -> Status:
        """The outcome of the last poll of servable `name` (OK before the first)."""
        return self._status.get(name, OK)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll_loop(self) -> None:
        wait = self._config.file_system_poll_wait_seconds  # fixed for the loop's life
        while not self._stop.wait(wait):
            try:
                self.poll_once()
            except Exception:
                log.exception("Polling the file system failed; polling goes on")

    def poll_once(self) -> None:
        """Looks at every base path once and emits what changed."""
        with self._poll_lock:
            config = self._config
            for servable in config.servables:
                versions = self._poll_servable(servable, config.servable_versions_always_present)
                if versions is None:
                    continue
                key = tuple(sorted(versions.items()))
                if self._emitted.get(servable.name) == key:
                    continue
                self._emitted[servable.name] = key
                self._callback.call(
                    servable.name,
                    [ServableData(ServableId(servable.name, v), p) for v, p in key],
                )

    def _poll_servable(
        self, servable: ServableToMonitor, always_present: bool
    ) -> dict[int, str] | None:
        name = servable.name
        try:
            found = find_versions(servable.base_path)
        except ServoError as exc:
            self._set_status(name, exc.status, f"Servable {name}: {exc.message}; nothing changes")
            return None
        if not found:
            message = (
                f"No versions of servable {name} found under base path {servable.base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?"
            )
            self._set_status(name, Status(Code.NOT_FOUND, message), message)
            return None if always_present else {}
        aspired, missing = select_versions(found, servable.version_policy)
        if missing:
            self._warn_once(
                name,
                f"Servable {name}: specific versions {sorted(missing)} not found under "
                f"{servable.base_path}",
            )
        else:
            self._warned.pop(name, None)
        if not aspired and always_present:
            self._warn_once(
                name,
                f"Refusing to unload all versions of servable {name}: none of the versions "
                f"found matches its version policy and servable_versions_always_present is set",
            )
            return None
        self._set_status(name, OK, None)
        return aspired

    def _set_status(self, name: str, status: Status, message: str | None) -> None:
        """Records a poll's outcome; logs it only when it differs from the last poll's."""
        if self._status.get(name) != status and message is not None:
            log.log(logging.WARNING if "Did you forget" in message else logging.ERROR, message)
        self._status[name] = status

    def _warn_once(self, name: str, message: str) -> None:
        if self._warned.get(name) != message:
            self._warned[name] = message
            log.warning("%s", message)


def check_versions_present(servables: Iterable[ServableToMonitor]) -> None:
    """Raises NOT_FOUND unless every servable has at least one version directory that its
    version policy aspires."""
    for servable in servables:
        aspired, _ = select_versions(find_versions(servable.base_path), servable.version_policy)
        if not aspired:
            raise ServoError(
                Code.NOT_FOUND,
                f"Unable to find a numerical version path for servable {servable.name} at: "
                f"{servable.base_path}",
            )
