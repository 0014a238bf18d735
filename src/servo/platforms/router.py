"""The router by `model_platform`: a source adapter that turns version paths into loaders.

TFS's chain is file-system source -> router by platform -> platform adapter -> manager; here
the router and the platform adapters are one step: `PlatformRouter` looks up each model's
platform and makes a `ModelLoader` for the version directory. A platform module is imported
only when a version of that platform loads, so servo runs without the runtimes it does not use.

A version in object storage (its path an `s3://` or `gs://` URL) is copied into the local
cache (servo.sources.version_cache) when its load starts, and everything after that (the
platform, the wrappers, the warm-up) reads the copy; a load that fails, and the version's
unload, give the copy back.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import ModuleType

from servo import pip_install
from servo.core.loader import Loader, ResourceAllocation
from servo.core.servable_id import ServableId
from servo.core.source_adapter import UnarySourceAdapter
from servo.core.status import Code, ServoError
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import ModelServable
from servo.sources.version_cache import VersionCache
from servo.util import gfile, tensorflow_logs

log = logging.getLogger(__name__)

# TFS estimates a SavedModel's memory as 1.2 x its size on disk; servo does so for every
# platform.
RESOURCE_ESTIMATE_FACTOR = 1.2


@dataclass(frozen=True)
class PlatformInfo:
    module: str  # imported when a version of this platform loads
    extra: str | None  # the extra (see pip_install) that installs its runtime
    runtime: str | None  # the top-level module of that runtime
    files: tuple[str, ...] = ()  # files in a version directory that identify the platform


PLATFORMS: dict[str, PlatformInfo] = {
    "tensorflow": PlatformInfo(
        "servo.platforms.tensorflow",
        "tensorflow",
        "tensorflow",
        ("saved_model.pb", "saved_model.pbtxt"),
    ),
    # ai-edge-litert's interpreter, else TensorFlow's (servo.platforms.tflite).
    "tflite": PlatformInfo("servo.platforms.tflite", "tflite", "ai_edge_litert", ("model.tflite",)),
    "onnx": PlatformInfo("servo.platforms.onnx", "onnx", "onnxruntime", ("model.onnx",)),
    "python": PlatformInfo("servo.platforms.python", None, None, ("model.py",)),
    "lookup": PlatformInfo(
        "servo.platforms.lookup",
        None,
        None,
        ("vocab.txt", "embeddings.tsv", "table.json", "lookup.json"),
    ),
    "pipeline": PlatformInfo("servo.platforms.pipeline", None, None, ("pipeline.json",)),
    "composite": PlatformInfo("servo.platforms.composite", None, None, ("composite.json",)),
    "sharded": PlatformInfo("servo.platforms.sharded", None, None, ("sharded.json",)),
}


def platform_info(platform: str) -> PlatformInfo:
    info = PLATFORMS.get(platform)
    if info is None:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Unknown model_platform {platform!r}; servo serves: {', '.join(sorted(PLATFORMS))}",
        )
    return info


def import_platform(platform: str) -> ModuleType:
    """The platform's module; FAILED_PRECONDITION naming the extra when its runtime is missing."""
    info = platform_info(platform)
    try:
        if info.runtime == "tensorflow" or platform == "tflite":
            with tensorflow_logs.quiet_import():  # its libraries' start-up banner
                return importlib.import_module(info.module)
        return importlib.import_module(info.module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if info.runtime and missing.split(".")[0] == info.runtime:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"The {platform} platform needs {info.runtime}, which is not installed: "
                + pip_install(info.extra or "all"),
            ) from exc
        raise


def load_platform(platform: str, path: str, options: PlatformOptions) -> ModelServable:
    """A directory loaded by `platform` (a composite's part, as any version directory)."""
    servable: ModelServable = import_platform(platform).load(path, options)
    return servable


def detect_platform(version_dir: str) -> str | None:
    """The platform whose identifying file is in `version_dir` (a local directory or a
    version's URL in object storage), or None."""
    try:
        if gfile.is_remote(version_dir):
            names = {path.split("/", 1)[0] for path in gfile.list_objects(version_dir)}
        else:
            names = set(os.listdir(gfile.local_path(version_dir)))
    except (OSError, ServoError):
        return None
    for platform, info in PLATFORMS.items():
        if names.intersection(info.files):
            return platform
    return None


def disk_size(path: str) -> int:
    """Bytes under `path`, following no symlinks to directories."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


LoadHook = Callable[[ServableId, str, ModelServable], None]
# Raises (a ServoError) for a version directory the server may not read (outside the allowed
# roots once its symlinks are resolved): called when the version is aspired and at its load.
PathCheck = Callable[[ServableId, str], None]
# Wraps a freshly built servable (batching does); the wrapper's close() closes the inner one.
ServableWrapper = Callable[[ServableId, str, ModelServable], ModelServable]


class ModelLoader(Loader):
    """Loads one version directory with its platform's `load(path, options)`.

    `wrappers` then wrap the servable in order (batching), and `after_load` hooks run on the
    result before the version is AVAILABLE (warm-up uses this); a wrapper or hook that raises
    fails the load. `check_path` runs first, before anything is read. A `path` in object
    storage is fetched from `cache` first (no cache: FAILED_PRECONDITION).
    """

    def __init__(
        self,
        id: ServableId,
        path: str,
        platform: str,
        options: PlatformOptions | None = None,
        after_load: tuple[LoadHook, ...] = (),
        wrappers: tuple[ServableWrapper, ...] = (),
        check_path: PathCheck | None = None,
        cache: VersionCache | None = None,
    ) -> None:
        self.id = id
        self._cache = cache
        self._wrappers = wrappers
        self._check_path = check_path
        self.path = path
        self.platform = platform
        self.options = options or PlatformOptions()
        self._after_load = after_load
        self._servable: ModelServable | None = None
        self._estimate: ResourceAllocation | None = None
        self._estimate_lock = threading.Lock()

    def estimate_resources(self) -> ResourceAllocation:
        with self._estimate_lock:
            if self._estimate is None:
                if self._check_path is not None:
                    self._check_path(self.id, self.path)
                if gfile.is_remote(self.path):
                    size = self._remote_cache().size(self.path)
                else:
                    size = disk_size(self.path)
                self._estimate = ResourceAllocation(int(size * RESOURCE_ESTIMATE_FACTOR))
            return self._estimate

    def load(self) -> None:
        if self._check_path is not None:
            self._check_path(self.id, self.path)
        module = import_platform(self.platform)
        if not gfile.is_remote(self.path):
            self._load(module, self.path)
            return
        cache = self._remote_cache()
        local = cache.fetch(self.id, self.path)
        try:
            self._load(module, local)
        except BaseException:
            cache.release(self.id, self.path)
            raise

    def _load(self, module: ModuleType, path: str) -> None:
        if not os.path.isdir(path):
            raise ServoError(Code.NOT_FOUND, f"Version directory {self.path} does not exist")
        options = replace(self.options, model_name=self.id.name, load_platform=load_platform)
        servable: ModelServable = module.load(path, options)
        try:
            for wrap in self._wrappers:
                servable = wrap(self.id, path, servable)
            for hook in self._after_load:
                hook(self.id, path, servable)
        except BaseException:
            servable.close()
            raise
        self._servable = servable

    def _remote_cache(self) -> VersionCache:
        if self._cache is None:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"Version {self.path} is in object storage and this server has no model cache",
            )
        return self._cache

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        try:
            if servable is not None:
                servable.close()
        finally:
            if gfile.is_remote(self.path) and self._cache is not None:
                self._cache.release(self.id, self.path)

    @property
    def servable(self) -> ModelServable | None:
        return self._servable


class PlatformRouter(UnarySourceAdapter[str, Loader]):
    """Turns `(id, version path)` into a `ModelLoader` for the model's platform.

    `platforms` maps model name -> platform; it can be replaced (on config reload) with
    `set_platforms`. A model with no platform, or an unknown one, or a version path that
    `check_path` refuses, becomes an error item.
    """

    def __init__(
        self,
        platforms: Mapping[str, str],
        options: PlatformOptions | None = None,
        after_load: tuple[LoadHook, ...] = (),
        wrappers: tuple[ServableWrapper, ...] = (),
        check_path: PathCheck | None = None,
        cache: VersionCache | None = None,
    ) -> None:
        super().__init__()
        self._cache = cache
        self._platforms = dict(platforms)
        self._options = options or PlatformOptions()
        self._after_load = after_load
        self._wrappers = wrappers
        self._check_path = check_path

    def set_platforms(self, platforms: Mapping[str, str]) -> None:
        self._platforms = dict(platforms)

    def convert(self, id: ServableId, data: str) -> Loader:
        platform = self._platforms.get(id.name)
        if platform is None:
            raise ServoError(Code.NOT_FOUND, f"No model_platform configured for model {id.name}")
        platform_info(platform)
        if self._check_path is not None:
            self._check_path(id, data)
        return ModelLoader(
            id,
            data,
            platform,
            self._options,
            self._after_load,
            self._wrappers,
            self._check_path,
            self._cache,
        )
