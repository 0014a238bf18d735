"""Config files: TFS's samples (their texts, as tests/support/tfs_models.py writes them) parse
with protobuf's text-format parser into servo's messages; what TFS refuses, servo refuses with a
clear message."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from servo.batching.parameters import read_file as read_batching_file
from servo.server import config as configs
from servo.sources.file_system import AllVersions, LatestVersions, SpecificVersions
from tests.support.testdata import TfsModels


def write(tmp_path: Path, text: str, name: str = "models.config") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_tfs_sample_config_parses(tmp_path: Path, tfs_models: TfsModels) -> None:
    text = Path(tfs_models.path("good_model_config.txt")).read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", "/models/h2").replace(
        "${TEST_HALF_PLUS_THREE_DIR}", "/models/h3"
    )
    config = configs.read_model_server_config(write(tmp_path, text))
    models = config.model_config_list.config
    assert [(m.name, m.base_path, configs.model_platform(m)) for m in models] == [
        ("half_plus_two", "/models/h2", "tensorflow"),
        ("half_plus_three", "/models/h3", "tensorflow"),
    ]


def test_tfs_bad_sample_is_refused_in_tfs_words(
    tfs_models: TfsModels, caplog: pytest.LogCaptureFixture
) -> None:
    """protobuf's C++ parser logs its error (where it stopped: the token after the unknown
    name), then TFS's ParseProtoTextFile answers INVALID_ARGUMENT."""
    path = tfs_models.path("bad_model_config.txt")  # "improperly formatted file"
    with caplog.at_level(logging.ERROR), pytest.raises(configs.ConfigError) as err:
        configs.read_model_server_config(path)
    assert str(err.value) == f"Invalid protobuf file: '{path}'"
    assert isinstance(err.value, configs.InvalidConfigFile)
    assert err.value.status == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    # TFS's message names, not the package servo's copies of them live in
    line = (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:12: Message type "
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly".'
    )
    assert err.value.lines == [line]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [line]


@pytest.mark.parametrize(
    ("read", "message_type"),
    [
        (configs.read_model_server_config, "tensorflow.serving.ModelServerConfig"),
        (configs.read_monitoring_config, "tensorflow.serving.MonitoringConfig"),
        (configs.read_ssl_config, "tensorflow.serving.SSLConfig"),
    ],
)
def test_each_config_file_kind_is_refused_in_tfs_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, read: Any, message_type: str
) -> None:
    path = write(tmp_path, "\tnope {\n")
    with caplog.at_level(logging.ERROR), pytest.raises(configs.InvalidConfigFile) as err:
        read(path)
    line = (
        f"Error parsing text-format {message_type}: 1:14: Message type "
        f'"{message_type}" has no field named "nope".'
    )  # a tab is 8 columns wide, as protobuf's tokenizer counts it
    assert (str(err.value), err.value.lines) == (f"Invalid protobuf file: '{path}'", [line])
    assert line in caplog.messages


def test_monitoring_and_batching_samples_parse(tfs_models: TfsModels) -> None:
    monitoring = configs.read_monitoring_config(tfs_models.path("monitoring_config.txt"))
    settings = configs.prometheus_settings(monitoring)
    assert settings == configs.PrometheusSettings(True, "/monitoring/prometheus/metrics")
    batching = read_batching_file(tfs_models.path("batching_config.txt"))
    assert batching.max_batch_size.value == 128
    assert batching.num_batch_threads.value == 8


def test_version_policies_and_labels(tmp_path: Path) -> None:
    config = configs.read_model_server_config(
        write(
            tmp_path,
            """
            model_config_list {
              config { name: "a" base_path: "/m/a" model_platform: "onnx"
                       model_version_policy { all {} } }
              config { name: "b" base_path: "/m/b" model_platform: "onnx"
                       model_version_policy { specific { versions: 42 versions: 43 } }
                       version_labels { key: "stable" value: 42 }
                       version_labels { key: "canary" value: 43 } }
              config { name: "c" base_path: "/m/c" model_platform: "onnx"
                       model_version_policy { latest { num_versions: 2 } } }
              config { name: "d" base_path: "/m/d" model_type: TENSORFLOW }
            }
            """,
        )
    )
    a, b, c, d = config.model_config_list.config
    assert configs.version_policy(a) == AllVersions()
    assert configs.version_policy(b) == SpecificVersions(frozenset({42, 43}))
    assert dict(b.version_labels) == {"stable": 42, "canary": 43}
    assert configs.version_policy(c) == LatestVersions(2)
    assert configs.version_policy(d) == LatestVersions(1)
    assert configs.model_platform(d) == "tensorflow"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'model_config_list { config { name: "m" base_path: "/a" model_platform: "onnx" } '
            'config { name: "m" base_path: "/b" model_platform: "onnx" } }',
            "Illegal to list model m multiple times in config list",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/a" } }',
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/a" model_platform: "caffe" } }',
            "Model m requests unsupported platform caffe",
        ),
        (
            'model_config_list { config { name: "m" base_path: "rel/a" model_platform: "onnx" } }',
            "Expected model m to have an absolute path or URI; got base_path()=rel/a",
        ),
        (
            'model_config_list { config { base_path: "/a" model_platform: "onnx" } }',
            "has no name",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/a" model_platform: "onnx" '
            "model_version_policy { latest { num_versions: 0 } } } }",
            "",  # num_versions 0 means the default, 1, as in TFS
        ),
        ("custom_model_config { }", "does not support custom_model_config"),
        (
            'model_config_list { config { name: "m" base_path: "http://host/m" '
            'model_platform: "onnx" } }',
            "Model m: base_path: the scheme http:// is not one servo reads",
        ),
        (
            'model_config_list { config { name: "m" base_path: "s3://key:secret@b/m" '
            'model_platform: "onnx" } }',
            "may not carry credentials",
        ),
        (
            'model_config_list { config { name: "m" base_path: "file://rel/a" '
            'model_platform: "onnx" } }',
            "absolute path or URI",
        ),
    ],
)
def test_invalid_configs(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    if not message:
        configs.read_model_server_config(path)
        return
    with pytest.raises(configs.ConfigError) as err:
        configs.read_model_server_config(path)
    assert message in str(err.value)


def test_a_model_keeps_its_platform_across_reloads(tmp_path: Path) -> None:
    old = configs.single_model_config("m", str(tmp_path), "onnx")
    new = configs.single_model_config("m", str(tmp_path), "python")
    with pytest.raises(configs.ConfigError, match="Illegal to change a model's platform"):
        configs.validate_transition(old, new)


def test_single_model_config_finds_the_platform(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "model.onnx").write_bytes(b"")
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    config = configs.single_model_config("m", str(tmp_path), None)
    assert configs.model_platform(config.model_config_list.config[0]) == "onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    config = configs.single_model_config("m", str(empty), None)
    assert configs.model_platform(config.model_config_list.config[0]) == "tensorflow"
