"""The local copies of model versions in object storage: downloaded whole or not at all.

Loaders read local files, so a version whose base path is in a store (`s3://`, `gs://`) is
copied into `--model_cache_dir` when its load starts (`fetch`, on the manager's load thread,
never the event loop), and its platform loads the copy. The rules:

- Whole or nothing. A version is downloaded into `<key>.partial-<pid>-<n>/<version>/` (the
  version's directory name kept: `.../m/00042` is copied to `<key>/00042`), each object
  checked against the listing it was downloaded for (size and ETag; S3 reads ask for that
  ETag), the version listed again once every object is in (it must be unchanged), then
  renamed to `<key>/`, and only then is `<key>.complete` written (the listing, as JSON): the
  completion marker, written last. A download that fails removes its partial directory and
  fails the load, which the manager retries as any failed load.
- Reuse. A `<key>/` whose marker holds the version's current listing, and whose files are all
  there at their listed sizes, is loaded without downloading anything: a restart reuses its
  copies (the server's stop keeps them). Anything else under that key is removed first.
- Removal. When a version unloads (or its load fails) its copy goes, marker first. Partial
  directories left by a killed server are removed when the cache is first used, and copies
  no version loaded are removed by `prune` (the server calls it once its first config has
  loaded).
- Retries. An object whose download fails for a reason that may pass (UNAVAILABLE: the
  store unreachable or answering 5xx, a read cut short) is downloaded again from its start,
  up to 3 tries in all; then the version's load fails.
- Bounds. At most `download_threads` objects download at once, server-wide, and all of them
  together at most `max_bytes_per_second` (0: no bound). A version of 64 MiB or more logs
  its progress every 10 seconds.
- One server per cache directory: the directory is created private to the server's user
  (0700); one that another user owns, or that others may write to, is refused, as is one
  another servo process holds (an exclusive lock on `<dir>/.lock`). A key is a hash of the
  model's name and the version's URL, and every object's path below the version must be
  plain relative segments (no `..`), so nothing is written outside the entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import IO

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.util import gfile

log = logging.getLogger(__name__)

Listing = tuple[gfile.ObjectInfo, ...]
# Told each fetch's outcome: (model name, "downloaded" | "reused" | an error code's name,
# bytes downloaded).
DownloadObserver = Callable[[str, str, int], None]

CHUNK = 1 << 20  # bytes read from a store at a time
OBJECT_ATTEMPTS = 3  # tries of one object's download (the store unreachable a moment)
RETRY_SECONDS = 0.5  # before the second try, doubled before each further one
LARGE = 64 << 20  # versions this large log their progress
PROGRESS_SECONDS = 10.0
LOCK_FILE = ".lock"
COMPLETE = ".complete"
PARTIAL = ".partial-"


def default_cache_dir() -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"servo-model-cache-{os.geteuid()}")


def _safe_relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..") for p in parts) and "\x00" not in path


def _listing_json(listing: Listing) -> list[list[object]]:
    return [[o.path, o.size, o.etag] for o in listing]


class _RateLimit:
    """Bytes per second shared by every download (0: no limit)."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def take(self, n: int, stop: threading.Event) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._free_at, now)
            self._free_at = start + n / self.rate
        if start > now:
            stop.wait(start - now)


class _Progress:
    def __init__(self, url: str, total: int) -> None:
        self.url, self.total = url, total
        self.done = 0
        self.started = time.monotonic()
        self._next_log = self.started + PROGRESS_SECONDS
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self.total < LARGE or now < self._next_log:
                return
            self._next_log = now + PROGRESS_SECONDS
            done, total, seconds = self.done, self.total, now - self.started
        log.info(
            "Downloading %s: %.1f of %.1f MiB (%d%%), %.1f MiB/s",
            self.url,
            done / 2**20,
            total / 2**20,
            100 * done // max(1, total),
            done / 2**20 / max(seconds, 1e-6),
        )


class VersionCache:
    """Thread-safety: every method may be called from any thread; each version (model name
    and URL) is fetched by one load at a time, as the manager loads it."""

    def __init__(
        self,
        directory: str,
        *,
        download_threads: int = 4,
        max_bytes_per_second: int = 0,
        on_download: DownloadObserver | None = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self._threads = max(1, download_threads)
        self._rate = _RateLimit(max_bytes_per_second)
        self._on_download = on_download
        self._lock = threading.Lock()
        self._opened = False
        self._lock_fd: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._held: set[str] = set()  # keys of the copies loaded versions use
        self._listings: dict[str, Listing] = {}  # url -> listing found complete by the source
        self._keep = False  # the server stops: copies stay for the next start
        self._stop = threading.Event()
        self._partials = itertools.count()

    # -- what the source and the loaders ask -----------------------------------------------

    def observe(self, url: str, listing: Listing) -> None:
        """The source found the version at `url` complete with `listing`."""
        with self._lock:
            self._listings[url] = listing

    def size(self, url: str) -> int:
        """Bytes of the version at `url`: from the source's listing when it has one (no
        request), else listed now."""
        with self._lock:
            listing = self._listings.get(url)
        if listing is None:
            listing = self._list(url)
        return sum(o.size for o in listing)

    def has_complete(self, name: str, url: str, listing: Listing) -> bool:
        """Whether the cache holds a complete copy of this very listing (read-only)."""
        key = self._key(name, url)
        return self._marker_matches(key, listing) and self._files_match(key, url, listing)

    def fetch(self, id: ServableId, url: str) -> str:
        """The local directory holding the version at `url`: a complete copy reused, or a
        download; raises a ServoError (nothing left behind) when that fails."""
        key = self._key(id.name, url)
        try:
            self._open()
            listing = self._list(url)
            local = self._local(key, url)
            if self._marker_matches(key, listing) and self._files_match(key, url, listing):
                log.info("Reusing the cached copy of %s (%s) at %s", id, url, local)
                self._held_add(key)
                self._observe(id.name, "reused", 0)
                return local
            self._remove(key)
            self._download(id, url, key, listing)
        except ServoError as exc:
            self._observe(id.name, exc.code.name, 0)
            raise ServoError(exc.code, gfile.redact(exc.message)) from None
        except Exception as exc:
            error = gfile.storage_error(exc, f"Downloading {url} failed")
            self._observe(id.name, error.code.name, 0)
            raise error from None
        self._held_add(key)
        self._observe(id.name, "downloaded", sum(o.size for o in listing))
        return local

    def release(self, id: ServableId, url: str) -> None:
        """The version's copy is no longer used: removed, unless the server is stopping."""
        key = self._key(id.name, url)
        with self._lock:
            self._held.discard(key)
            self._listings.pop(url, None)
            keep = self._keep
        if keep:
            return
        try:
            self._remove(key)
        except OSError as exc:
            log.warning("Cannot remove the cached copy of %s at %s: %s", id, self._path(key), exc)

    def stop(self) -> None:
        """The server stops: copies stay for the next start, downloads in flight end, and
        the directory is let go (another server may use it)."""
        with self._lock:
            self._keep = True
            fd, self._lock_fd = self._lock_fd, None
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if fd is not None:
            os.close(fd)  # the lock goes with it

    def prune(self) -> None:
        """Removes the copies no loaded version uses (left by an earlier run)."""
        with self._lock:
            if not self._opened:
                return
            held = set(self._held)
        for name in os.listdir(self.directory):
            key = name.split(".", 1)[0]
            if name == LOCK_FILE or key in held:
                continue
            log.info("Removing the unused cached copy %s", os.path.join(self.directory, name))
            self._remove_path(os.path.join(self.directory, name))

    # -- the directory -----------------------------------------------------------------------

    def _open(self) -> None:
        with self._lock:
            if self._opened:
                return
            if self._stop.is_set():
                raise ServoError(Code.UNAVAILABLE, "The server is stopping")
            self._check_directory()
            fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ServoError(
                        Code.FAILED_PRECONDITION,
                        f"The model cache {self.directory} is in use by another servo process; "
                        "give each server its own --model_cache_dir",
                    ) from None
                raise
            self._lock_fd = fd
            for name in os.listdir(self.directory):
                if PARTIAL in name:
                    log.info("Removing an unfinished download: %s", name)
                    self._remove_path(os.path.join(self.directory, name))
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="servo-download")
            self._opened = True

    def _check_directory(self) -> None:
        """Creates the cache directory private to this user, or checks that an existing one
        is this user's and that no one else may write to it."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError as exc:
            raise ServoError(
                Code.FAILED_PRECONDITION, f"Cannot use --model_cache_dir {self.directory}: {exc}"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            problem = "it is not a directory (or is a symbolic link)"
        elif info.st_uid != os.geteuid():
            problem = f"it belongs to user {info.st_uid}, not to this server's user"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = "others may write to it (a copy there would be loaded as a model)"
        else:
            return
        raise ServoError(
            Code.FAILED_PRECONDITION,
            f"Refusing --model_cache_dir {self.directory}: {problem}; give the server a "
            "directory of its own",
        )

    def _key(self, name: str, url: str) -> str:
        return hashlib.sha256(f"{name}\0{gfile.normalize(url)}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key)

    def _local(self, key: str, url: str) -> str:
        """Where the version's files are: `<key>/<its directory's name>`, so that the copy
        is named as the version directory is (a model may read its version there)."""
        return os.path.join(self._path(key), _version_name(url))

    def _held_add(self, key: str) -> None:
        with self._lock:
            self._held.add(key)

    def _observe(self, name: str, outcome: str, nbytes: int) -> None:
        if self._on_download is not None:
            self._on_download(name, outcome, nbytes)

    def _marker_matches(self, key: str, listing: Listing) -> bool:
        try:
            with open(self._path(key) + COMPLETE, encoding="utf-8") as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(marker, dict) and marker.get("objects") == _listing_json(listing)

    def _files_match(self, key: str, url: str, listing: Listing) -> bool:
        root = self._local(key, url)
        for o in listing:
            try:
                info = os.lstat(os.path.join(root, o.path))
            except OSError:
                return False
            if not stat.S_ISREG(info.st_mode) or info.st_size != o.size:
                return False
        return True

    def _remove(self, key: str) -> None:
        """The marker first: a copy half removed is never taken for a complete one."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(key) + COMPLETE)
        self._remove_path(self._path(key))

    @staticmethod
    def _remove_path(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    # -- downloading -------------------------------------------------------------------------

    def _list(self, url: str) -> Listing:
        objects = gfile.list_objects(url)
        if not objects:
            raise ServoError(Code.NOT_FOUND, f"Version directory {url} does not exist")
        for path in objects:
            if not _safe_relative(path):
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{url} holds an object named {path!r}, which is not a plain relative "
                    "path; refusing to download the version",
                )
        return tuple(sorted(objects.values()))

    def _download(self, id: ServableId, url: str, key: str, listing: Listing) -> None:
        total = sum(o.size for o in listing)
        partial = f"{self._path(key)}{PARTIAL}{os.getpid()}-{next(self._partials)}"
        log.info(
            "Downloading %s (%s): %d objects, %.1f MiB, into %s",
            id,
            url,
            len(listing),
            total / 2**20,
            self.directory,
        )
        progress = _Progress(url, total)
        try:
            os.mkdir(partial, 0o700)
            files = os.path.join(partial, _version_name(url))
            os.mkdir(files, 0o700)
            assert self._pool is not None
            futures: list[Future[None]] = [
                self._pool.submit(self._download_object, url, o, files, progress) for o in listing
            ]
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                for f in not_done:
                    f.cancel()
                wait(not_done)
                failed.result()  # raises its exception
            if self._stop.is_set():
                raise ServoError(Code.UNAVAILABLE, "The server is stopping")
            again = self._list(url)
            if again != listing:
                raise ServoError(
                    Code.UNAVAILABLE,
                    f"{url} changed while it was downloaded; it is downloaded again at the "
                    "next try",
                )
            os.rename(partial, self._path(key))
            self._write_marker(key, id, url, listing)
        except BaseException:
            self._remove_path(partial)
            self._remove(key)
            raise
        seconds = time.monotonic() - progress.started
        log.info(
            "Downloaded %s (%.1f MiB) in %.2f s (%.1f MiB/s)",
            url,
            total / 2**20,
            seconds,
            total / 2**20 / max(seconds, 1e-6),
        )

    def _download_object(
        self, url: str, info: gfile.ObjectInfo, partial: str, progress: _Progress
    ) -> None:
        for attempt in range(OBJECT_ATTEMPTS):
            try:
                self._download_once(url, info, partial, progress)
                return
            except ServoError as exc:
                last = attempt == OBJECT_ATTEMPTS - 1
                if last or exc.code != Code.UNAVAILABLE or self._stop.is_set():
                    raise
                log.warning("Downloading %s/%s: %s; trying again", url, info.path, exc.message)
                if self._stop.wait(RETRY_SECONDS * 2**attempt):
                    raise

    def _download_once(
        self, url: str, info: gfile.ObjectInfo, partial: str, progress: _Progress
    ) -> None:
        target = os.path.join(partial, info.path)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(target)  # what an earlier try wrote
        written = 0
        try:
            with (
                gfile.open_object(f"{url}/{info.path}", info) as source,
                open(target, "xb") as out,
            ):
                while written < info.size:
                    if self._stop.is_set():
                        raise ServoError(Code.UNAVAILABLE, "The server is stopping")
                    self._rate.take(min(CHUNK, info.size - written), self._stop)
                    chunk = _read(source, min(CHUNK, info.size - written))
                    if not chunk:
                        raise ServoError(
                            Code.UNAVAILABLE,
                            f"{url}/{info.path}: {written} bytes read of {info.size}",
                        )
                    out.write(chunk)
                    written += len(chunk)
                    progress.add(len(chunk))
        except BaseException:
            progress.add(-written)  # a try again counts its bytes again
            raise

    def _write_marker(self, key: str, id: ServableId, url: str, listing: Listing) -> None:
        marker = self._path(key) + COMPLETE
        temporary = f"{marker}{PARTIAL}{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump({"model": id.name, "url": url, "objects": _listing_json(listing)}, f)
        os.rename(temporary, marker)


def _version_name(url: str) -> str:
    name = gfile.normalize(url).rsplit("/", 1)[-1]
    return name if _safe_relative(name) else "version"


def _read(source: IO[bytes], n: int) -> bytes:
    try:
        return source.read(n)
    except ServoError:
        raise
    except Exception as exc:
        raise gfile.storage_error(exc, "Reading failed") from None
