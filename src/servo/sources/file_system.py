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
  emits nothing (and startup fails with NOT_FOUND when no such version exists). With no
  numeric child, TFS's hint is logged ("Did you forget to name your leaf directory as a
  number (eg. '/1/')?"), naming a model's file found directly in the base path
  (`saved_model.pb`, `model.onnx`, ...): the model is there, its version directory missing.
- A child directory whose name is not a version number (`v1`, `1.0`) is ignored, as in TFS;
  servo warns once per servable and directory, naming it (TFS says nothing).

A base path may also be `file://...` (a local path) or in object storage, `s3://bucket/prefix`
or `gs://bucket/prefix` (servo.util.gfile). There every poll lists the objects under the base
path (one listing, every version's objects with their sizes and ETags); a version is a
numeric first segment (`prefix/7/...`), and its emitted data is its URL, which the loader
copies into the local cache (servo.sources.version_cache). An object store has no directory
to rename into place, so a version counts as found, for every version policy, only once it
is complete:

- with a marker name (`version_marker`, `--model_version_complete_marker`), once the version
  holds that object (the uploader writes it last);
- otherwise once its listing (every object's path, size and ETag) is the same in two
  consecutive polls and no upload under it is in progress (S3's multipart uploads, which
  the AWS tools use for files over 8 MiB and which are listed only once they end), or at
  once when the cache holds a complete copy with that very listing (a restart).

A version still incomplete is left out (the versions before it stay) and logged once per
change. At a config change, and at start, a base path with versions seen for the first time
is listed again a second later, so that a new model's versions load without waiting for the
next poll. Once complete, a version stays found as long as it is listed (versions are
immutable: a version changed in place is warned about, not reloaded). No object under the
base path at all is NOT_FOUND, as a missing local base path: nothing unloads. A listing that
fails (the store unreachable, refusing, throttling) fails that poll only: nothing changes,
the error is logged once per change (a poll that succeeds again says so) and every failed
poll is counted (`poll_errors`, the `servo_storage_poll_errors` metric).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from servo.core.servable_id import ServableId
from servo.core.source import AspiredVersionsCallback, CallbackHolder, ServableData, Source
from servo.core.status import OK, Code, ServoError, Status
from servo.util import gfile

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^[0-9]+$")
_MAX_VERSION = 2**63 - 1
SETTLE_SECONDS = 1.0  # the second listing of versions first seen at a config change

# The objects of one version in a store, sorted: what two polls compare.
Listing = tuple[gfile.ObjectInfo, ...]
# Told the base path and the code of every poll that fails.
PollErrors = Callable[[str, Code], None]


class CompleteCopies(Protocol):
    """What the source asks the local cache (servo.sources.version_cache)."""

    def has_complete(self, name: str, url: str, listing: Listing) -> bool: ...

    def observe(self, url: str, listing: Listing) -> None: ...


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
    # In object storage: a version is complete once it holds this object (empty: once its
    # listing is the same in two consecutive polls).
    version_marker: str = ""

    def __post_init__(self) -> None:
        names = [s.name for s in self.servables]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"servable {name!r} is listed more than once")


def find_versions(base_path: str, ignored: list[str] | None = None) -> dict[int, str]:
    """Version number -> directory path of every numeric child directory of `base_path`.

    Raises `ServoError(NOT_FOUND)` when `base_path` does not exist or is not a directory. When
    two names give one number (`00042` and `42`), the first in sorted order wins. In object
    storage: every version listed, complete or not (see `find_remote_versions`). `ignored`,
    when given, is told the path of each child directory whose name is no version number
    (hidden ones, `.name`, aside).
    """
    if gfile.is_remote(base_path):
        found = find_remote_versions(base_path, ignored)
        return {v: url for v, (url, _) in found.items()}
    base_path = gfile.local_path(base_path)
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
            if ignored is not None and not entry.name.startswith(".") and _is_dir(entry):
                ignored.append(entry.path)
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


def find_remote_versions(
    base_url: str, ignored: list[str] | None = None, top_files: list[str] | None = None
) -> dict[int, tuple[str, Listing]]:
    """Version -> (its URL, its objects) of every numeric first segment under `base_url`.
    NOT_FOUND when nothing at all is under it; the store's errors as ServoErrors. `ignored`,
    when given, is told the URL of each "directory" (a first segment with objects below it)
    that is no version number; `top_files` the names of the objects directly under
    `base_url`."""
    objects = gfile.list_objects(base_url)
    if not objects:
        raise ServoError(Code.NOT_FOUND, f"Could not find base path {base_url}")
    by_name: dict[str, list[gfile.ObjectInfo]] = {}
    others: set[str] = set()
    for info in objects.values():
        first, sep, rest = info.path.partition("/")
        if sep and rest and _VERSION_DIR.match(first):
            by_name.setdefault(first, []).append(gfile.ObjectInfo(rest, info.size, info.etag))
        elif sep and rest and not first.startswith("."):
            others.add(first)
        elif not sep and top_files is not None:
            top_files.append(first)
    if ignored is not None:
        ignored.extend(gfile.join(base_url, name) for name in sorted(others))
    versions: dict[int, tuple[str, Listing]] = {}
    for name in sorted(by_name):
        version = int(name)
        url = gfile.join(base_url, name)
        if version > _MAX_VERSION:
            log.warning("Ignoring %s: the version number does not fit in int64", url)
            continue
        if version in versions:
            log.warning(
                "Duplicate version directories for version %d under %s: using %s, ignoring %s",
                version,
                base_url,
                versions[version][0],
                url,
            )
            continue
        versions[version] = (url, tuple(sorted(by_name[name])))
    return versions


# The files that make a directory a model (each platform's), for the hint about a model put
# directly in its base path.
MODEL_FILES = (
    "saved_model.pb",
    "saved_model.pbtxt",
    "model.onnx",
    "model.tflite",
    "model.py",
    "vocab.txt",
    "embeddings.tsv",
    "table.json",
    "pipeline.json",
    "composite.json",
    "sharded.json",
)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def no_versions_hint(name: str, base_path: str, model_files: Iterable[str] = ()) -> str:
    """TFS's warning for a base path with no version directory, and what is there instead."""
    message = (
        f"No versions of servable {name} found under base path {base_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )
    files = sorted(model_files)
    if files:
        join = gfile.join if gfile.is_remote(base_path) else os.path.join
        message += (
            f" {', '.join(files)} {'is' if len(files) == 1 else 'are'} directly in the base "
            f"path: put the model into a numbered version directory, e.g. "
            f"{join(base_path, '1', files[0])}"
        )
    return message


def model_files_in(base_path: str) -> list[str]:
    """The model files (MODEL_FILES) directly in the local directory `base_path`."""
    local = gfile.local_path(base_path)
    return [n for n in MODEL_FILES if os.path.isfile(os.path.join(local, n))]


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

    Base paths in object storage: see the module docstring; `cache` (the local copies)
    makes a version whose complete copy is cached complete at once, and is told each
    complete version's listing; `poll_errors` is told every failed poll.

    Thread-safety: every method may be called from any thread; polls never overlap.
    """

    def __init__(
        self,
        config: FileSystemStoragePathSourceConfig,
        *,
        cache: CompleteCopies | None = None,
        poll_errors: PollErrors | None = None,
    ) -> None:
        if config.servable_versions_always_present:
            check_versions_present(config.servables)
        self._config = config
        self._cache = cache
        self._poll_errors = poll_errors
        self._callback: CallbackHolder[str] = CallbackHolder()
        self._poll_lock = threading.Lock()  # one poll at a time
        self._emitted: dict[str, tuple[tuple[int, str], ...]] = {}
        self._status: dict[str, Status] = {}
        self._warned: dict[str, str] = {}
        # Per servable: the directories ignored (no version number) already warned about.
        self._ignored: dict[str, set[str]] = {}
        # Object storage, per servable: each version's listing in the last poll, the
        # versions found complete (with their listing then), why the others are not.
        self._listings: dict[str, dict[int, Listing]] = {}
        self._complete: dict[str, dict[int, Listing]] = {}
        self._pending: dict[str, dict[int, str]] = {}
        self._first_seen = False  # the last poll saw a store's version for the first time
        self._base_paths = {s.name: s.base_path for s in config.servables}
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
            self._settle()
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
            bases = {s.name: s.base_path for s in config.servables}
            for name in list(self._listings):
                if bases.get(name) != self._base_paths.get(name):
                    self._forget_store(name)  # removed, or moved to another base path
            self._base_paths = bases
            for name in removed:
                self._status.pop(name, None)
                self._warned.pop(name, None)
                self._ignored.pop(name, None)
                if self._callback.is_set:
                    log.info("Servable %s is no longer monitored: unloading its versions", name)
                    self._callback.call(name, [])
        if self._callback.is_set:
            self.poll_once()  # as TFS: a new config is looked at now, whatever the poll wait
            self._settle()

    def _settle(self) -> None:
        """When the last poll saw versions in a store for the first time, polls again a
        second later, so that complete ones are found now rather than at the next poll."""
        if self._first_seen and not self._stop.wait(SETTLE_SECONDS):
            self.poll_once()

    def _forget_store(self, name: str) -> None:
        self._listings.pop(name, None)
        self._complete.pop(name, None)
        self._pending.pop(name, None)

    def aspired_versions(self, name: str) -> tuple[int, ...] | None:
        """The versions of `name` last emitted (None before its first list)."""
        emitted = self._emitted.get(name)
        return None if emitted is None else tuple(v for v, _ in emitted)

    def status(self, name: str) -> Status:
        """The outcome of the last poll of servable `name` (OK before the first)."""
        return self._status.get(name, OK)

    def pending(self, name: str) -> dict[int, str]:
        """Versions of `name` in object storage not complete yet, with why."""
        return dict(self._pending.get(name, {}))

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
            self._first_seen = False
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
        ignored: list[str] = []
        top_files: list[str] = []
        try:
            if gfile.is_remote(servable.base_path):
                found = self._complete_versions(servable, ignored, top_files)
            else:
                found = find_versions(servable.base_path, ignored)
        except ServoError as exc:
            self._set_status(name, exc.status, f"Servable {name}: {exc.message}; nothing changes")
            if self._poll_errors is not None:
                self._poll_errors(servable.base_path, exc.code)
            return None
        self._warn_ignored(name, ignored)
        if not found and self._pending.get(name):
            self._set_status(name, OK, None)  # versions are on their way: logged as pending
            return None if always_present else {}
        if not found:
            if gfile.is_remote(servable.base_path):
                model_files = [f for f in top_files if f in MODEL_FILES]
            else:
                model_files = model_files_in(servable.base_path)
            message = no_versions_hint(name, servable.base_path, model_files)
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

    def _complete_versions(
        self, servable: ServableToMonitor, ignored: list[str], top_files: list[str]
    ) -> dict[int, str]:
        """The complete versions (version -> URL) of a base path in object storage; records
        and logs (once per change) the versions not complete yet. `ignored` and `top_files`
        as for `find_remote_versions`."""
        name, marker = servable.name, self._config.version_marker
        found = find_remote_versions(servable.base_path, ignored, top_files)
        previous = self._listings.get(name, {})
        complete = self._complete.setdefault(name, {})
        pending: dict[int, str] = {}
        result: dict[int, str] = {}
        for version, (url, listing) in sorted(found.items()):
            known = complete.get(version)
            if known is not None:
                if known != listing:
                    self._warn_once(
                        f"{name}/{version}",
                        f"Version {version} of servable {name} ({url}) changed after it was "
                        "found complete; versions are immutable: the copy loaded stays, "
                        "upload a new version number instead",
                    )
                result[version] = url
                continue
            why = self._incomplete(name, url, listing, previous.get(version), marker)
            if why is None:
                complete[version] = listing
                if self._cache is not None:
                    self._cache.observe(url, listing)
                result[version] = url
            else:
                pending[version] = why
                self._first_seen |= version not in previous
        for version in set(complete) - found.keys():
            del complete[version]
        self._listings[name] = {v: listing for v, (_, listing) in found.items()}
        old = self._pending.get(name, {})
        for version, why in sorted(pending.items()):
            if old.get(version) != why:
                log.info(
                    "Version %d of servable %s (%s) is not complete yet: %s; it loads once "
                    "complete",
                    version,
                    name,
                    found[version][0],
                    why,
                )
        self._pending[name] = pending
        return result

    def _incomplete(
        self, name: str, url: str, listing: Listing, previous: Listing | None, marker: str
    ) -> str | None:
        """Why a version in object storage is not complete yet; None when it is."""
        if marker:
            if any(o.path == marker for o in listing):
                return None
            return f"it has no {marker} object yet (--model_version_complete_marker)"
        if self._cache is not None and self._cache.has_complete(name, url, listing):
            return None
        if previous is None:
            return "first seen in this poll; complete once the next poll lists the same objects"
        if previous != listing:
            return "its objects changed since the last poll"
        if gfile.uploads_in_progress(url):
            return "an upload under it is in progress"
        return None

    def _set_status(self, name: str, status: Status, message: str | None) -> None:
        """Records a poll's outcome; logs it only when it differs from the last poll's."""
        before = self._status.get(name)
        if before != status and message is not None:
            log.log(logging.WARNING if "Did you forget" in message else logging.ERROR, message)
        elif before is not None and not before.ok and status.ok:
            log.info("Servable %s: its base path answers again; polling goes on", name)
        self._status[name] = status

    def _warn_ignored(self, name: str, ignored: list[str]) -> None:
        """Warns once about each directory of `name`'s base path that is no version."""
        seen = self._ignored.setdefault(name, set())
        for path in ignored:
            if path not in seen:
                seen.add(path)
                log.warning(
                    "Servable %s: ignoring %s under its base path: a version directory is "
                    "named by a number (e.g. 1 or 00042), and %r is not one",
                    name,
                    path,
                    path.rstrip("/").rsplit("/", 1)[-1],
                )

    def _warn_once(self, name: str, message: str) -> None:
        if self._warned.get(name) != message:
            self._warned[name] = message
            log.warning("%s", message)


def check_versions_present(servables: Iterable[ServableToMonitor]) -> None:
    """Raises NOT_FOUND unless every servable has at least one version directory that its
    version policy aspires."""
    for servable in servables:
        found = find_versions(servable.base_path)
        aspired, _ = select_versions(found, servable.version_policy)
        if not aspired:
            hint = ""
            if not found and not gfile.is_remote(servable.base_path):
                files = model_files_in(servable.base_path)
                if files:
                    hint = f" ({no_versions_hint(servable.name, servable.base_path, files)})"
            raise ServoError(
                Code.NOT_FOUND,
                f"Unable to find a numerical version path for servable {servable.name} at: "
                f"{servable.base_path}{hint}",
            )
