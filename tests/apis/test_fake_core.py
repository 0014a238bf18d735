"""The fake server core of the in-process API tests answers model specs as ServerCore does.

The API tests take their NOT_FOUND and label texts from FakeCore; these tests hold FakeCore to
a real ServerCore serving the same versions and labels, spec by spec, so that those texts are
ServerCore's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servo.core.aspired_versions_manager import AspiredVersionsManagerOptions
from servo.core.status import Code, ServoError
from servo.protos import model_server_config_pb2
from servo.server import config as configs
from servo.server.server_core import ServerCore, ServerCoreOptions
from tests.support.inprocess import FakeCore
from tests.support.models import SUM_MODEL, write_python_model
from tests.support.servables import echo
from tests.support.server import model_config

SPECS = [
    ("m", None, None),
    ("m", 1, None),
    ("m", 2, None),
    ("m", 9, None),
    ("m", None, "stable"),
    ("m", None, "nope"),
    ("m", 2, "stable"),  # a version wins over a label (a ModelSpec has one or the other)
    ("nope", None, None),
    ("nope", 1, None),
    ("nope", None, "stable"),
    ("", None, None),
    ("", 1, None),
    ("", None, "stable"),
]


@pytest.fixture(scope="module")
def real_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerCore]:
    base = tmp_path_factory.mktemp("fake_core") / "m"
    write_python_model(base, SUM_MODEL, version=1)
    write_python_model(base, SUM_MODEL, version=2)
    text = model_config(
        [
            (
                "m",
                base,
                "python",
                'model_version_policy { all {} } version_labels { key: "stable" value: 1 }',
            )
        ]
    )
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=0,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
        )
    )
    core.reload_config(configs.parse_text(text, configs.ModelServerConfig(), "test"))
    yield core
    core.stop()


@pytest.fixture
def fake_core() -> FakeCore:
    core = FakeCore().add("m", echo(), 1).add("m", echo(), 2)
    core.labels["m"] = {"stable": 1}
    return core


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ServoError as exc:
        return (exc.code, exc.message)


@pytest.mark.parametrize(("name", "version", "label"), SPECS)
def test_handles_of_a_spec_are_those_of_server_core(
    real_core: ServerCore, fake_core: FakeCore, name: str, version: int | None, label: str | None
) -> None:
    def handle(core: Any) -> Any:
        with core.servable_handle(name, version, label) as held:
            return held.id

    real = outcome(lambda: handle(real_core))
    assert outcome(lambda: handle(fake_core)) == real
    fake_core.assert_released()


@pytest.mark.parametrize(("name", "version", "label"), SPECS)
def test_status_of_a_spec_is_that_of_server_core(
    real_core: ServerCore, fake_core: FakeCore, name: str, version: int | None, label: str | None
) -> None:
    real = outcome(lambda: real_core.model_status(name, version, label))
    assert outcome(lambda: fake_core.model_status(name, version, label)) == real


def test_reloads_check_configs_as_server_core_does(
    real_core: ServerCore, fake_core: FakeCore, tmp_path: Path
) -> None:
    """The fake runs ServerCore's own checks of a config and of the change from the last one."""
    twice = model_server_config_pb2.ModelServerConfig()
    for _ in range(2):
        entry = twice.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = "m", str(tmp_path), "python"
    other_platform = model_server_config_pb2.ModelServerConfig()
    other_platform.CopyFrom(real_core.config)
    other_platform.model_config_list.config[0].model_platform = "onnx"
    fake_core.config.CopyFrom(real_core.config)
    for config in (twice, other_platform):
        with pytest.raises(configs.ConfigError) as real:
            real_core.reload_config(config)
        with pytest.raises(configs.ConfigError) as fake:
            fake_core.reload_config(config)
        assert str(fake.value) == str(real.value)
    assert fake_core.reloads == []
    fake_core.reload_error = ServoError(Code.UNKNOWN, "the load failed")
    with pytest.raises(ServoError, match="the load failed"):
        fake_core.reload_config(real_core.config)
    assert fake_core.reloads == [real_core.config]
