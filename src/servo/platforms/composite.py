"""The `composite` platform: one servable made of several parts that load together, from one
version directory, as one version with one state.

A version directory holds its parts, each a directory another platform loads, and
`composite.json`, which names them and runs them as a pipeline does its steps
(`servo.platforms.pipeline`):

    {
      "parts": {"vocab": {"platform": "lookup", "path": "vocab"},
                "classifier": {"platform": "onnx", "path": "model"}},
      "steps": [
        {"name": "ids", "part": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "scores", "part": "classifier", "inputs": {"x": "ids.ids"}}
      ],
      "outputs": {"scores": "scores.y"}
    }

The parts load one after the other when the version loads; a part that fails fails the version
(the parts loaded before it are closed), and the manager keeps the previous version serving
until this one is AVAILABLE, as for any version. The version's resource estimate is the
directory's size, every part's files together. A part's path is relative to the version
directory and must stay inside it; a part may be of any platform but `pipeline` and
`composite`. The steps, the derived signature and the checks are a pipeline's, made when the
version loads; a request runs the parts of its own version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.platforms.options import PlatformOptions
from servo.platforms.pipeline import Checked, PipelineServable, check, read_pipeline
from servo.platforms.servable import ModelServable

PLATFORM = "composite"
COMPOSITE_FILE = "composite.json"
_NOT_PARTS = frozenset({"pipeline", "composite"})


class _Part:
    """A part as a pipeline's step reaches a served model: a held handle (here, nothing to
    hold: the part lives as long as its composite)."""

    def __init__(self, name: str, servable: ModelServable) -> None:
        self.id = ServableId(name, 0)
        self.servable = servable

    def __enter__(self) -> _Part:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class CompositeServable(PipelineServable):
    """A pipeline over its own parts; closing it closes them."""

    platform = PLATFORM

    def __init__(self, path: str, checked: Checked, parts: Mapping[str, ModelServable]) -> None:
        self.parts = dict(parts)
        super().__init__(path, checked, self._part)
        self.may_run_inline = all(p.may_run_inline for p in self.parts.values())

    def _part(self, name: str, version: int | None, label: str | None) -> _Part:
        return _Part(name, self.parts[name])

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        _close_all(self.parts.values())


def _close_all(servables: Any) -> None:
    for servable in servables:
        servable.close()


def _bad(path: str, message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"{os.path.join(path, COMPOSITE_FILE)}: {message}")


def _part_specs(path: str, doc: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Each part's platform and directory, checked to lie inside the version directory."""
    parts = doc.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise _bad(path, '"parts" must map part names to {"platform": ..., "path": ...}')
    root = os.path.realpath(path)
    specs = {}
    for name, spec in parts.items():
        if not isinstance(spec, dict) or set(spec) - {"platform", "path"}:
            raise _bad(path, f'part {name!r} must be {{"platform": ..., "path": ...}}')
        platform, sub = spec.get("platform"), spec.get("path")
        if not isinstance(platform, str) or not platform:
            raise _bad(path, f"part {name!r} has no platform")
        if platform in _NOT_PARTS:
            raise _bad(path, f"part {name!r}: a part cannot be a {platform}")
        if not isinstance(sub, str) or not sub or os.path.isabs(sub):
            raise _bad(path, f'part {name!r}: "path" must be a directory in the version\'s')
        where = os.path.realpath(os.path.join(path, sub))
        if os.path.commonpath([root, where]) != root or where == root:
            raise _bad(path, f"part {name!r}: {sub} is not inside the version directory")
        specs[name] = (platform, where)
    return specs


def load(path: str, options: PlatformOptions) -> CompositeServable:
    steps, outputs, doc = read_pipeline(path, COMPOSITE_FILE, "part", extra=("parts",))
    specs = _part_specs(path, doc)
    for step in steps:
        if step.model not in specs:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{step.describe()}: the composite has no part {step.model!r} (its parts: "
                f"{', '.join(specs)})",
            )
    load_platform = options.load_platform
    if load_platform is None:
        raise ServoError(
            Code.FAILED_PRECONDITION, f"The composite at {path} needs the platform router"
        )
    parts: dict[str, ModelServable] = {}
    try:
        for name, (platform, where) in specs.items():
            try:
                parts[name] = load_platform(platform, where, options)
            except ServoError as exc:
                raise ServoError(
                    exc.code, f"Composite part {name!r} ({platform} at {where}): {exc.message}"
                ) from None
        checked = check(steps, outputs, lambda n, v, label: _Part(n, parts[n]))
        return CompositeServable(path, checked, parts)
    except BaseException:
        _close_all(parts.values())
        raise
