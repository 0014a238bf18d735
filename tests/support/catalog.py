"""The models the API tests serve, by the names they serve them under, in one list for both
kinds of test: loaded in process into a fake core (`load_into`), or written into a server
process's config file (`config_text`).

    catalog = api_models(tfs_models, write_model_dirs(tmp))
    core = load_into(FakeCore(), catalog, load_servables(catalog))   # every version, labels
    config.write_text(config_text(catalog))        # the same models, for `servo serve`
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servo.platforms.options import PlatformOptions
from servo.platforms.router import import_platform
from servo.platforms.servable import ModelServable
from tests.support.models import (
    CUSTOM_METHOD_MODEL,
    SLOW_MODEL,
    SUM_MODEL,
    TWO_IO_MODEL,
    write_example_models,
    write_python_model,
)
from tests.support.server import model_config
from tests.support.testdata import TfsModels

PYTHON_MODELS = {
    "two_io": TWO_IO_MODEL,
    "slow": SLOW_MODEL,
    "summer": SUM_MODEL,
    "custom": CUSTOM_METHOD_MODEL,
}


@dataclass(frozen=True)
class ServedModel:
    name: str
    base_path: Path
    platform: str
    labels: Mapping[str, int] = field(default_factory=dict)
    all_versions: bool = False  # model_version_policy { all {} }; else the latest only

    def versions(self) -> list[int]:
        """The versions a server serves: numbered directories, all or the latest."""
        found = sorted(int(d) for d in os.listdir(self.base_path) if d.isdigit())
        return found if self.all_versions else found[-1:]

    def version_dir(self, version: int) -> Path:
        return next(
            self.base_path / d
            for d in os.listdir(self.base_path)
            if d.isdigit() and int(d) == version
        )

    def config_fields(self) -> str:
        """The fields of its config entry beyond name, base path and platform."""
        policy = " model_version_policy { all {} }" if self.all_versions else ""
        labels = "".join(
            f' version_labels {{ key: "{k}" value: {v} }}' for k, v in self.labels.items()
        )
        return policy + labels


def write_model_dirs(out: Path) -> dict[str, Path]:
    """The example models and the Python ones, under `out`: name -> base path."""
    write_example_models(out / "examples")
    dirs = {name: out / "examples" / name for name in ("mlp", "vocab", "word_count")}
    for name, source in PYTHON_MODELS.items():
        dirs[name] = write_python_model(out / "python" / name, source)
    return dirs


def api_models(tfs_models: TfsModels, dirs: Mapping[str, Path]) -> list[ServedModel]:
    """TFS's test models (servo's stand-ins), the example models and the Python ones."""

    def tfs(name: str) -> Path:
        return Path(tfs_models.path(name))

    return [
        ServedModel("half_plus_two", tfs("saved_model_half_plus_two_cpu"), "tensorflow"),
        ServedModel("half_plus_three", tfs("saved_model_half_plus_three"), "tensorflow"),
        ServedModel("tf2", tfs("saved_model_half_plus_two_tf2_cpu"), "tensorflow"),
        ServedModel(
            "two_versions",
            tfs("saved_model_half_plus_two_2_versions"),
            "tensorflow",
            labels={"stable": 123, "canary": 124},
            all_versions=True,
        ),
        ServedModel("counter", tfs("saved_model_counter"), "tensorflow"),
        ServedModel("tflite", tfs("saved_model_half_plus_two_tflite"), "tflite"),
        ServedModel("tflite_sigdef", tfs("saved_model_half_plus_two_tflite_with_sigdef"), "tflite"),
        ServedModel("mlp", dirs["mlp"], "onnx"),
        ServedModel("vocab", dirs["vocab"], "lookup"),
        ServedModel("word_count", dirs["word_count"], "python"),
        *(ServedModel(name, dirs[name], "python") for name in PYTHON_MODELS),
    ]


def pick(catalog: Iterable[ServedModel], *names: str) -> list[ServedModel]:
    """The catalog's entries of these names, in that order."""
    by_name = {m.name: m for m in catalog}
    return [by_name[n] for n in names]


def config_text(models: Sequence[ServedModel]) -> str:
    """A model config file serving `models`."""
    return model_config([(m.name, m.base_path, m.platform, m.config_fields()) for m in models])


def load_servables(models: Iterable[ServedModel]) -> dict[str, dict[int, ModelServable]]:
    """Every version a server would serve, loaded in process with its platform."""
    options = PlatformOptions()
    loaded: dict[str, dict[int, ModelServable]] = {}
    for model in models:
        module = import_platform(model.platform)
        for version in model.versions():
            servable = module.load(str(model.version_dir(version)), options)
            loaded.setdefault(model.name, {})[version] = servable
    return loaded


def load_into(
    core: Any,
    models: Iterable[ServedModel],
    servables: Mapping[str, Mapping[int, ModelServable]],
) -> Any:
    """`core` (a FakeCore) serving `models`' loaded `servables`, with their labels."""
    for model in models:
        for version, servable in servables[model.name].items():
            core.add(model.name, servable, version)
        if model.labels:
            core.labels[model.name] = dict(model.labels)
    return core
