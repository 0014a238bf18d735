"""The v2 repository over a real server core: index, load (with a config, again as it was,
a failing one), unload, the grants, and one change at a time."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from servo.core.aspired_versions_manager import AspiredVersionsManagerOptions
from servo.core.status import Code, ServoError
from servo.server.model_management import ModelManagementGrants
from servo.server.model_repository import IndexEntry, ModelRepository
from servo.server.server_core import ServerCore, ServerCoreOptions
from tests.server.test_server_core import config, gated_model, make_model
from tests.support.lifecycle import WAIT
from tests.support.waiting import wait_until

PYTHON_GRANTED = ModelManagementGrants(allow_python_models_over_network=True)


@pytest.fixture
def core(tmp_path: Path) -> Iterator[ServerCore]:
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
            model_wait_timeout=WAIT,
        )
    )
    core.reload_config(config(("a", make_model(tmp_path / "a", 1, 2), "")), startup=True)
    yield core
    core.stop(drain_timeout=5)


def _json(base: str) -> str:
    return json.dumps({"base_path": base, "model_platform": "python"})


def test_the_index_lists_every_model_and_version(core: ServerCore, tmp_path: Path) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    assert repository.index() == [IndexEntry("a", "2", "READY", "")]
    broken = make_model(tmp_path / "broken", 1, broken=(1,))
    with pytest.raises(ServoError, match="this version is broken"):
        repository.load_now("broken", _json(broken))
    [entry] = [e for e in repository.index() if e.name == "broken"]
    assert (entry.version, entry.state) == ("1", "UNAVAILABLE")
    assert "this version is broken" in entry.reason
    assert repository.index(ready_only=True) == [IndexEntry("a", "2", "READY", "")]


def test_load_adds_or_replaces_a_model_and_unload_takes_it_out(
    core: ServerCore, tmp_path: Path
) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    b = make_model(tmp_path / "b", 7)
    repository.load_now("b", _json(b))
    assert core.model_names() == ["a", "b"]
    assert [(e.name, e.state) for e in repository.index()] == [("a", "READY"), ("b", "READY")]
    # Replacing a model's entry: a new base path.
    b2 = make_model(tmp_path / "b2", 9)
    repository.load_now("b", _json(b2))
    assert core.model_names() == ["a", "b"]
    assert core.config.model_config_list.config[1].base_path == b2
    repository.unload_now("b")
    assert core.model_names() == ["a"]
    assert IndexEntry("b", "", "UNAVAILABLE", "unloaded") in repository.index()
    # Loaded again as it was when it went.
    repository.load_now("b")
    assert core.config.model_config_list.config[1].base_path == b2
    assert IndexEntry("b", "", "UNAVAILABLE", "unloaded") not in repository.index()
    # The last model can go too (a repository unload means it, unlike an empty reload).
    repository.unload_now("a")
    repository.unload_now("b")
    assert core.model_names() == []


def test_loads_that_cannot_be_made_say_why(core: ServerCore, tmp_path: Path) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    with pytest.raises(ServoError) as err:
        repository.load_now("unknown")
    assert err.value.code == Code.NOT_FOUND
    assert "Model unknown is not in the repository; load it with its config" in err.value.message
    with pytest.raises(ServoError, match="is not a ModelConfig of TFS's model config in JSON"):
        repository.load_now("c", '{"base_path": 3}')
    with pytest.raises(ServoError, match="The config names model d, but the request loads c"):
        repository.load_now("c", json.dumps({"name": "d", "base_path": str(tmp_path)}))
    with pytest.raises(ServoError) as err:
        repository.unload_now("unknown")
    assert err.value.code == Code.NOT_FOUND
    assert core.model_names() == ["a"]


def test_a_load_of_a_model_in_the_config_says_when_it_is_not_ready(
    core: ServerCore, tmp_path: Path
) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    repository.load_now("a")  # nothing changes; it is ready
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServoError) as err:
        repository.load_now("e", _json(str(empty)))
    assert err.value.code == Code.UNAVAILABLE
    with pytest.raises(ServoError) as err:
        repository.load_now("e")
    assert err.value.code == Code.UNAVAILABLE
    assert "has no AVAILABLE version (nothing loaded yet)" in err.value.message


def test_the_grants_hold_for_repository_changes(core: ServerCore, tmp_path: Path) -> None:
    b = make_model(tmp_path / "b", 1)
    with pytest.raises(ServoError) as err:
        ModelRepository(core).load_now("b", _json(b))
    assert err.value.code == Code.PERMISSION_DENIED
    assert "--allow_python_models_over_network" in err.value.message
    closed = ModelRepository(core, ModelManagementGrants(allow_model_config_over_network=False))
    for change in (lambda: closed.unload_now("a"), lambda: closed.load_now("a")):
        with pytest.raises(ServoError, match="allow_model_config_over_network=false"):
            change()
    rooted = ModelRepository(
        core,
        ModelManagementGrants(
            allow_python_models_over_network=True,
            allowed_model_base_path_roots=(str(tmp_path / "elsewhere"),),
        ),
    )
    with pytest.raises(ServoError, match="outside the allowed roots"):
        rooted.load_now("b", _json(b))
    assert core.model_names() == ["a"]


def test_changes_are_applied_one_at_a_time(core: ServerCore, tmp_path: Path) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    bases = {f"m{i}": make_model(tmp_path / f"m{i}", 1) for i in range(6)}
    errors: list[BaseException] = []

    def load(name: str) -> None:
        try:
            repository.load_now(name, _json(bases[name]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(name,)) for name in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    # Each load read the config the one before it wrote: none is lost.
    assert sorted(core.model_names()) == ["a", *sorted(bases)]


def test_the_index_answers_while_a_load_waits_for_its_model(
    core: ServerCore, tmp_path: Path
) -> None:
    repository = ModelRepository(core, PYTHON_GRANTED)
    gate = tmp_path / "gate"
    slow = gated_model(tmp_path / "slow", gate)
    loading = threading.Thread(target=repository.load_now, args=("slow", _json(slow)))
    loading.start()
    try:
        wait_until(
            lambda: IndexEntry("slow", "1", "LOADING", "") in repository.index(),
            what="the loading model in the index",
        )
    finally:
        gate.write_text("")
        loading.join(WAIT)
    assert IndexEntry("slow", "1", "READY", "") in repository.index()
