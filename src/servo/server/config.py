"""TFS's configuration files, read with protobuf's text-format parser into servo's messages.

- `--model_config_file`: a `ModelServerConfig` (a `model_config_list` of `config` entries).
- `--monitoring_config_file`: a `MonitoringConfig` (`prometheus_config { enable path }`).
- `--batching_parameters_file` and per-model `batching_params.pbtxt`: `BatchingParameters`.
- `--ssl_config_file`: an `SSLConfig`.

Each file may be local, `file://` or in object storage (`s3://`, `gs://`), as in TFS: every
one is read whole through servo.util.gfile. Every problem is a `ConfigError` whose message
names the file and says what is wrong. Text that protobuf's parser refuses is refused as TFS
refuses it (`servo.protos.text_format`): the parser's lines logged (`Error parsing text-format
tensorflow.serving.ModelServerConfig: 1:12: ...`), then an `InvalidConfigFile` with TFS's
status text, `Invalid protobuf file: '<path>'`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from servo.platforms.router import PLATFORMS, detect_platform
from servo.protos import (
    batching_parameters_pb2,
    file_system_storage_path_source_pb2,
    model_server_config_pb2,
    monitoring_config_pb2,
    ssl_config_pb2,
)
from servo.protos.text_format import InvalidProtobufFile, parse_file_text
from servo.sources.file_system import (
    AllVersions,
    LatestVersions,
    ServableToMonitor,
    ServableVersionPolicy,
    SpecificVersions,
    find_versions,
)
from servo.util import gfile

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
MonitoringConfig = monitoring_config_pb2.MonitoringConfig
BatchingParameters = batching_parameters_pb2.BatchingParameters
SSLConfig = ssl_config_pb2.SSLConfig
_VersionPolicyProto = (
    file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
)

M = TypeVar("M", bound=Message)

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A configuration file or setting that servo cannot use; the message says why."""


class InvalidConfigFile(ConfigError, InvalidProtobufFile):
    """A config file whose text protobuf's parser refused (its lines are logged): the
    message is TFS's, `Invalid protobuf file: '<path>'`."""


def parse_text(text: str, message: M, source: str) -> M:
    """Parses protobuf text format into `message`; `source` names the file in errors."""
    try:
        return parse_file_text(text, message, source)
    except InvalidProtobufFile as exc:
        raise InvalidConfigFile(exc.path, exc.error) from None


def read_text(path: str) -> str:
    """The whole text of a config file, local or in object storage; OSError (a redacted
    message for a store) or UnicodeDecodeError when it cannot be read."""
    return gfile.read_file(path).decode("utf-8")


def read_text_proto(path: str, message: M) -> M:
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read '{path}': {exc}") from None
    return parse_text(text, message, path)


def read_model_server_config(path: str) -> ModelServerConfig:
    config = read_text_proto(path, ModelServerConfig())
    validate_model_server_config(config)
    return config


def read_monitoring_config(path: str) -> MonitoringConfig:
    return read_text_proto(path, MonitoringConfig())


def read_ssl_config(path: str) -> SSLConfig:
    return read_text_proto(path, SSLConfig())


def model_platform(model: ModelConfig) -> str:
    """The platform of a model config entry, with TFS's rules for the deprecated model_type."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ConfigError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type == model_server_config_pb2.TENSORFLOW:
            return "tensorflow"
        raise ConfigError(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
    if not model.model_platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return model.model_platform


def validate_model_server_config(config: ModelServerConfig) -> None:
    """Raises `ConfigError` for what TFS would refuse (and what servo cannot serve): the first
    of `model_server_config_problems`."""
    problems = model_server_config_problems(config)
    if problems:
        raise ConfigError(problems[0])


def model_server_config_problems(config: ModelServerConfig) -> list[str]:
    """Every problem of a config that TFS would refuse (and that servo cannot serve), in the
    config's order; none when it can be served."""
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        return ["servo does not support custom_model_config; use model_config_list"]
    problems: list[str] = []
    names: set[str] = set()
    for model in config.model_config_list.config:
        problems.extend(_model_problems(model, names))
        names.add(model.name)
    return problems


def _model_problems(model: ModelConfig, names_before: set[str]) -> list[str]:
    problems: list[str] = []
    if not model.name:
        problems.append("A model config entry has no name")
    elif model.name in names_before:
        problems.append(f"Illegal to list model {model.name} multiple times in config list")
    if not model.base_path:
        problems.append(f"Model {model.name} has no base_path")
    else:
        local = gfile.local_path(model.base_path)
        if not os.path.isabs(local) and "://" not in local:
            problems.append(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}"
            )
        try:
            gfile.check_url(model.base_path)
        except ValueError as exc:
            problems.append(f"Model {model.name}: base_path: {exc}")
    try:
        platform = model_platform(model)
    except ConfigError as exc:
        problems.append(str(exc))
    else:
        if platform not in PLATFORMS:
            problems.append(
                f"Model {model.name} requests unsupported platform {platform}; servo "
                f"serves: {', '.join(sorted(PLATFORMS))}"
            )
    try:
        version_policy(model)
    except ConfigError as exc:
        problems.append(str(exc))
    for label, version in model.version_labels.items():
        if version < 0:
            problems.append(f"Model {model.name}: label {label!r} has negative version")
    return problems


def validate_transition(old: ModelServerConfig, new: ModelServerConfig) -> None:
    """TFS's rule for reloads: a model keeps its platform."""
    before = {m.name: model_platform(m) for m in old.model_config_list.config}
    for model in new.model_config_list.config:
        old_platform = before.get(model.name)
        new_platform = model_platform(model)
        if old_platform is not None and old_platform != new_platform:
            raise ConfigError(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old_platform} and new platform requested is {new_platform}"
            )


def version_policy(model: ModelConfig) -> ServableVersionPolicy:
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    try:
        if choice == "all":
            return AllVersions()
        if choice == "specific":
            return SpecificVersions(frozenset(policy.specific.versions))
        if choice == "latest":
            return LatestVersions(policy.latest.num_versions or 1)
    except ValueError as exc:
        raise ConfigError(f"Model {model.name}: model_version_policy: {exc}") from None
    return LatestVersions()


def servables_to_monitor(config: ModelServerConfig) -> tuple[ServableToMonitor, ...]:
    return tuple(
        ServableToMonitor(m.name, m.base_path, version_policy(m))
        for m in config.model_config_list.config
    )


def single_model_config(name: str, base_path: str, platform: str | None) -> ModelServerConfig:
    """The config TFS builds from `--model_name` / `--model_base_path`; the platform is found
    from the newest version directory's files unless `platform` is given."""
    base_path = os.path.abspath(base_path) if "://" not in base_path else base_path
    if platform is None:
        platform = guess_platform(base_path)
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = platform
    validate_model_server_config(config)
    return config


def guess_platform(base_path: str) -> str:
    """The platform of the newest version under `base_path` (tensorflow when none is found,
    as TFS assumes)."""
    try:
        versions = find_versions(base_path)
    except Exception:
        return "tensorflow"
    for version in sorted(versions, reverse=True):
        found = detect_platform(versions[version])
        if found:
            return found
    return "tensorflow"


@dataclass(frozen=True)
class PrometheusSettings:
    enabled: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


def prometheus_settings(config: MonitoringConfig | None) -> PrometheusSettings:
    if config is None or not config.prometheus_config.enable:
        return PrometheusSettings()
    path = config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/"):
        raise ConfigError(f"prometheus_config.path must start with '/': {path!r}")
    return PrometheusSettings(True, path)
