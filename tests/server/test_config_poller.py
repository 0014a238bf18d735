"""The --model_config_file poller: a file read whole and parsed before anything changes; an
empty or half-written file changes nothing; a refused file is logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from servo.core.status import Code, ServoError
from servo.server import config as configs
from servo.server.config_poller import ModelConfigFilePoller
from servo.util import gfile
from tests.support.s3 import S3Server

GOOD = 'model_config_list { config { name: "m" base_path: "/models/m" model_platform: "onnx" } }'


class Target:
    def __init__(self, error: ServoError | None = None) -> None:
        self.config = configs.ModelServerConfig()
        self.reloads: list[configs.ModelServerConfig] = []
        self.error = error

    def reload_config(self, config: configs.ModelServerConfig, *, wait: bool = True) -> None:
        assert not wait, "the poller must not wait for the models a config adds"
        self.reloads.append(config)
        if self.error is None:
            self.config = config
        else:
            raise self.error


def test_a_good_file_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(GOOD)
    target = Target()
    poller = ModelConfigFilePoller(str(path), target)
    poller.poll_once()
    poller.poll_once()
    assert len(target.reloads) == 1
    assert target.config.model_config_list.config[0].name == "m"


@pytest.mark.parametrize(
    "text", ["", "  \n# a comment\n", GOOD[: len(GOOD) // 2], GOOD[:-1], "\xff"]
)
def test_an_empty_or_half_written_file_changes_nothing(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.config"
    path.write_text(GOOD)
    target = Target()
    poller = ModelConfigFilePoller(str(path), target)
    poller.poll_once()
    path.write_bytes(text.encode("latin-1"))
    with caplog.at_level(logging.INFO):
        poller.poll_once()
        lines = [r.getMessage() for r in caplog.records]
        poller.poll_once()
    assert len(target.reloads) == 1
    assert target.config.model_config_list.config[0].name == "m"
    assert [r.getMessage() for r in caplog.records] == lines  # logged once, not at every poll
    if text.strip().startswith("#") or not text:
        assert lines == [f"Taking no action for empty config. ({path})"]
    elif text == "\xff":
        assert len(lines) == 1
        assert lines[0].startswith(f"Ignoring the new {path}; the running config stays: ")
    else:  # as TFS logs it: the parser's line, its own, then what servo does
        (parsed, failed, ignored) = lines
        assert parsed.startswith(
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:"
        )
        assert failed == f"Failed to read ModelServerConfig file: Invalid protobuf file: '{path}'"
        assert ignored == f"Ignoring the new {path}; the running config stays"
    path.write_text(GOOD.replace('"m"', '"n"'))
    poller.poll_once()
    assert target.config.model_config_list.config[0].name == "n"


def test_a_missing_file_changes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    poller = ModelConfigFilePoller(str(tmp_path / "nope"), target)
    with caplog.at_level(logging.ERROR):
        poller.poll_once()
        poller.poll_once()
    assert target.reloads == []
    assert len(caplog.records) == 1 and "Cannot read" in caplog.records[0].getMessage()


def test_a_refused_file_is_tried_again_only_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.config"
    path.write_text(GOOD)
    target = Target(ServoError(Code.PERMISSION_DENIED, "outside the allowed roots"))
    poller = ModelConfigFilePoller(str(path), target)
    with caplog.at_level(logging.ERROR):
        poller.poll_once()
        poller.poll_once()
    assert len(target.reloads) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"Config reload from {path}: outside the allowed roots"
    ]
    target.error = None
    path.write_text(GOOD.replace('"m"', '"n"'))
    poller.poll_once()
    assert target.config.model_config_list.config[0].name == "n"


def test_a_file_in_object_storage_is_read_whole_and_a_store_that_fails_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = S3Server()
    store.start()
    try:
        for name, value in store.env().items():
            monkeypatch.setenv(name, value)
        gfile.reset_file_systems()
        store.create_bucket("configs")
        store.put("configs", "models.config", GOOD)
        errors: list[tuple[str, Code]] = []
        target = Target()
        poller = ModelConfigFilePoller(
            "s3://configs/models.config", target, lambda p, c: errors.append((p, c))
        )
        poller.poll_once()
        assert target.config.model_config_list.config[0].name == "m"
        store.stop()
        with caplog.at_level(logging.ERROR):
            poller.poll_once()
            poller.poll_once()
        assert len(target.reloads) == 1  # the running config stays
        assert errors == [("s3://configs/models.config", Code.UNAVAILABLE)] * 2  # every poll
        assert caplog.text.count("Cannot read 's3://configs/models.config'") == 1  # logged once
    finally:
        store.stop()
        gfile.reset_file_systems()
