"""PlatformOptions: the settings a platform's `load(path, options)` may read.

The server's flags fill them in (`--saved_model_tags`, `--tensorflow_intra_op_parallelism`,
...); each platform reads the fields it has a use for and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlatformOptions:
    """Settings every platform may read; each field says who uses it."""

    saved_model_tags: tuple[str, ...] = ("serve",)  # tensorflow
    # tensorflow, tflite, onnx: threads in one op; 0 = runtime's choice
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0  # tensorflow, onnx: ops run at once; 0 = runtime's choice
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything else, by platform
    # the model whose version loads (ModelLoader sets it), for settings made per model
    model_name: str = ""
    # pipeline: the served models, as requests reach them: (name, version, label) -> a held
    # ServableHandle (a context manager with `.id` and `.servable`); the server core sets it
    servables: Callable[[str, int | None, str | None], Any] | None = None
    # composite: loads a part, (platform, path, options) -> its ModelServable, as the router
    # loads any version directory; the router sets it
    load_platform: Callable[[str, str, PlatformOptions], Any] | None = None
    # tensorflow: told each SavedModel load attempt, as TensorFlow's loader counts them:
    # (version directory, whether it loaded, wall time in microseconds)
    saved_model_loads: Callable[[str, bool, float], None] | None = None
