"""ServerCore: configs applied, labels, model specs, status, failures."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from servo.core.aspired_versions_manager import AspiredVersionsManagerOptions
from servo.core.servable_id import ServableId
from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError
from servo.server import config as configs
from servo.server.model_management import ModelManagementGrants
from servo.server.server_core import ServerCore, ServerCoreOptions
from servo.sources.version_cache import VersionCache
from tests.support.lifecycle import WAIT
from tests.support.s3 import S3Server
from tests.support.waiting import wait_until

MODEL = """
import os
class Model:
    def load(self, path):
        self.version = int(os.path.basename(path))
        if os.path.exists(os.path.join(path, "broken")):
            raise RuntimeError("this version is broken")
    def predict(self, inputs, signature_name):
        return inputs["inputs"] * 0 + self.version
"""


def make_model(base: Path, *versions: int, broken: tuple[int, ...] = ()) -> str:
    for v in versions:
        d = base / str(v)
        d.mkdir(parents=True)
        (d / "model.py").write_text(MODEL)
        if v in broken:
            (d / "broken").write_text("")
    return str(base)


def config(*models: tuple[str, str, str]) -> configs.ModelServerConfig:
    """models: (name, base_path, extra text-format fields)"""
    body = "".join(
        f'config {{ name: "{n}" base_path: "{p}" model_platform: "python" {extra} }} '
        for n, p, extra in models
    )
    cfg = configs.parse_text(f"model_config_list {{ {body} }}", configs.ModelServerConfig(), "t")
    configs.validate_model_server_config(cfg)
    return cfg


@pytest.fixture
def core():
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
            model_wait_timeout=WAIT,
        )
    )
    yield core
    core.stop(drain_timeout=5)


def test_reload_waits_for_new_models_and_applies_their_labels(core, tmp_path: Path) -> None:
    base = make_model(tmp_path / "m", 1, 2)
    core.reload_config(
        config(
            (
                "m",
                base,
                "model_version_policy { all {} } "
                'version_labels { key: "stable" value: 1 } '
                'version_labels { key: "canary" value: 2 }',
            )
        )
    )
    assert [(s.version, s.state) for s in core.model_status("m")] == [
        (2, ManagerState.AVAILABLE),
        (1, ManagerState.AVAILABLE),
    ]
    with core.servable_handle("m") as h:
        assert h.id == ServableId("m", 2)
    with core.servable_handle("m", label="stable") as h:
        assert h.id == ServableId("m", 1)
    with core.servable_handle("m", version=1) as h:
        assert h.id == ServableId("m", 1)
    assert core.model_status("m", label="canary")[0].version == 2
    with pytest.raises(ServoError) as err:
        core.servable_request("m", label="beta")
    assert (err.value.code, err.value.message) == (
        Code.INVALID_ARGUMENT,
        "Unrecognized servable version label: beta",
    )


def test_label_on_an_unavailable_version_is_refused(core, tmp_path: Path) -> None:
    base = make_model(tmp_path / "m", 1)
    with pytest.raises(ServoError) as err:
        core.reload_config(config(("m", base, 'version_labels { key: "x" value: 7 }')))
    assert err.value.code == Code.FAILED_PRECONDITION
    assert err.value.message == (
        "Request to assign label to version 7 of model m, which is not currently available "
        "for inference"
    )
    # The models were applied; the label was not.
    assert core.model_status("m")[0].state == ManagerState.AVAILABLE
    assert core.version_labels("m") == {}


def test_new_labels_may_point_anywhere_when_allowed(tmp_path: Path) -> None:
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1, allow_version_labels_for_unavailable_models=True
        )
    )
    try:
        base = make_model(tmp_path / "m", 1)
        core.reload_config(config(("m", base, 'version_labels { key: "next" value: 2 }')))
        assert core.version_labels("m") == {"next": 2}
        # Moving an existing label to an unavailable version is still refused.
        with pytest.raises(ServoError, match="version 3 of model m"):
            core.reload_config(config(("m", base, 'version_labels { key: "next" value: 3 }')))
    finally:
        core.stop()


def test_reload_removes_and_adds_models(core, tmp_path: Path) -> None:
    a = make_model(tmp_path / "a", 1)
    b = make_model(tmp_path / "b", 5)
    core.reload_config(config(("a", a, "")))
    core.reload_config(config(("b", b, "")))
    assert core.model_names() == ["b"]
    assert core.monitor.wait_for_state(ServableId("a", 1), ManagerState.END, WAIT) == (
        ManagerState.END
    )
    with core.servable_handle("b") as h:
        assert h.id == ServableId("b", 5)
    with pytest.raises(ServoError, match=r"Servable not found for request: Latest\(a\)"):
        core.servable_handle("a")


def test_a_new_model_that_fails_fails_the_reload(core, tmp_path: Path) -> None:
    bad = make_model(tmp_path / "bad", 3, broken=(3,))
    with pytest.raises(ServoError) as err:
        core.reload_config(config(("bad", bad, "")))
    assert err.value.code == Code.UNKNOWN
    assert err.value.message.startswith("1 model(s) did not become available: {{{name: bad ")
    assert "this version is broken" in err.value.message


def test_labels_move_even_when_a_model_added_with_them_fails(core, tmp_path: Path) -> None:
    good = make_model(tmp_path / "m", 1, 2)
    every = "model_version_policy { all {} } "
    core.reload_config(config(("m", good, every + 'version_labels { key: "stable" value: 1 }')))
    bad = make_model(tmp_path / "bad", 3, broken=(3,))
    with pytest.raises(ServoError, match="did not become available"):
        core.reload_config(
            config(
                ("m", good, every + 'version_labels { key: "stable" value: 2 }'),
                ("bad", bad, ""),
            )
        )
    # The config stands (a poll would not apply it again): its label move must have applied.
    assert core.version_labels("m") == {"stable": 2}
    with core.servable_handle("m", label="stable") as h:
        assert h.id == ServableId("m", 2)


def test_status_errors(core, tmp_path: Path) -> None:
    core.reload_config(config(("m", make_model(tmp_path / "m", 1), "")))
    with pytest.raises(ServoError) as err:
        core.model_status("nope")
    assert (err.value.code, err.value.message) == (
        Code.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    with pytest.raises(ServoError) as err:
        core.model_status("m", version=9)
    assert err.value.message == "Could not find version 9 of model m"


def test_invalid_config_changes_nothing(core, tmp_path: Path) -> None:
    base = make_model(tmp_path / "m", 1)
    core.reload_config(config(("m", base, "")))
    changed = configs.single_model_config("m", base, "onnx")
    with pytest.raises(configs.ConfigError):
        core.reload_config(changed)
    assert configs.model_platform(core.config.model_config_list.config[0]) == "python"


# -- reloads that cannot hurt --------------------------------------------------------------


def test_an_empty_config_takes_no_action(core, tmp_path: Path) -> None:
    core.reload_config(config(("m", make_model(tmp_path / "m", 1), "")))
    core.reload_config(configs.ModelServerConfig())  # an empty file: nothing set
    assert core.model_names() == ["m"]
    with core.servable_handle("m") as h:
        assert h.id == ServableId("m", 1)


@pytest.mark.parametrize("what", ["missing", "empty", "a file", "no numeric child"])
def test_a_reload_with_nothing_to_load_adds_the_model_and_answers(
    core, tmp_path: Path, what: str
) -> None:
    core.reload_config(config(("m", make_model(tmp_path / "m", 1), "")))
    base = tmp_path / "new"
    if what == "empty":
        base.mkdir()
    elif what == "a file":
        base.write_text("")
    elif what == "no numeric child":
        (base / "latest").mkdir(parents=True)
    with pytest.raises(ServoError) as err:
        core.reload_config(config(("m", str(tmp_path / "m"), ""), ("new", str(base), "")))
    assert err.value.code == Code.UNAVAILABLE
    assert err.value.message.startswith(
        "1 model(s) added but not available yet; each loads its versions as they appear: "
        f"{{new: nothing to load yet at base path {base}: "
    )
    assert core.model_names() == ["m", "new"]
    # The next reload is not held up, and the model loads once a version appears.
    if what == "a file":
        base.unlink()
    make_model(base, 3)
    core.reload_config(config(("new", str(base), "")))
    state = core.monitor.wait_for_state(ServableId("new", 3), ManagerState.AVAILABLE, WAIT)
    assert state == ManagerState.AVAILABLE
    assert core.model_names() == ["new"]


def gated_model(base: Path, gate: Path) -> str:
    """A python model whose load waits until the file `gate` exists."""
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.py").write_text(
        "import os, time\n"
        "class Model:\n"
        "    def load(self, path):\n"
        f"        while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        "    def predict(self, inputs, signature_name):\n"
        "        return inputs['inputs']\n"
    )
    return str(base)


def test_a_later_reload_goes_on_while_an_earlier_one_waits(tmp_path: Path) -> None:
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(num_load_threads=2),  # one for each model
            model_wait_timeout=WAIT,
        )
    )
    gate = tmp_path / "gate"
    slow = gated_model(tmp_path / "slow", gate)
    other = make_model(tmp_path / "other", 1)
    outcome: list[object] = []

    def first() -> None:
        try:
            core.reload_config(config(("slow", slow, "")))
            outcome.append("ok")
        except ServoError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=first)
    waiter.start()
    try:
        core.monitor.wait_until(lambda: bool(core.monitor.get_version_states("slow")), WAIT)
        core.reload_config(config(("slow", slow, ""), ("other", other, "")))
        assert waiter.is_alive()  # still waiting for its model, which cannot load yet
        with core.servable_handle("other") as h:
            assert h.id == ServableId("other", 1)
    finally:
        gate.write_text("")
        waiter.join(WAIT)
        core.stop(drain_timeout=5)
    assert outcome == ["ok"]


def test_a_reload_waits_at_most_its_bound_and_stop_ends_the_wait(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gated_model(tmp_path / "slow", gate)
    core = ServerCore(ServerCoreOptions(file_system_poll_wait_seconds=-1, model_wait_timeout=0.0))
    try:
        with pytest.raises(ServoError) as err:
            core.reload_config(config(("slow", str(tmp_path / "slow"), "")))
        assert err.value.code == Code.UNAVAILABLE
        message = err.value.message
        assert message.startswith("1 model(s) added but not available yet; each loads its ")
        assert "{slow: version 1 " in message and "(still loading: its wait ended)" in message
        # An unbounded wait (as at start-up) ends when the core stops.
        core.options.model_wait_timeout = None
        errors: list[ServoError] = []

        def reload() -> None:
            try:
                core.reload_config(config(("slow2", str(tmp_path / "slow"), "")))
            except ServoError as exc:
                errors.append(exc)

        waiter = threading.Thread(target=reload)
        waiter.start()
        core.monitor.wait_until(lambda: bool(core.monitor.get_version_states("slow2")), WAIT)
        stopper = threading.Thread(target=core.stop, kwargs={"drain_timeout": 5})
        stopper.start()
        waiter.join(WAIT)  # ended by stop, with the version still loading
        assert not waiter.is_alive()
        [error] = errors
        assert error.code == Code.UNAVAILABLE
        assert "(still loading: the server is stopping)" in error.message
    finally:
        gate.write_text("")
    stopper.join(WAIT)


def test_a_reload_that_does_not_wait_returns_and_its_wait_ends_at_a_later_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The config file's poller reloads with wait=False: the call returns at once while the
    model it adds still loads; its labels apply once the model is available; a later config
    ends the wait (logged), the later config's own wait going on."""
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(num_load_threads=2),
            model_wait_timeout=None,  # a waiting reload would wait as long as it takes
        )
    )
    gate = tmp_path / "gate"
    slow = gated_model(tmp_path / "slow", gate)
    other = make_model(tmp_path / "other", 1)
    try:
        core.reload_config(
            config(("slow", slow, 'version_labels { key: "stable" value: 1 }')), wait=False
        )
        assert core.model_names() == ["slow"]
        assert core.monitor.get_state(ServableId("slow", 1)) != ManagerState.AVAILABLE
        gate.write_text("")
        wait_until(lambda: core.version_labels("slow") == {"stable": 1}, what="the label applied")
        # A second gated model; a later config ends the first wait, which logs why.
        gate.unlink()
        (tmp_path / "slow2").mkdir()
        slow2 = gated_model(tmp_path / "slow2" / "m", gate)
        with caplog.at_level("ERROR", logger="servo.server.server_core"):
            core.reload_config(config(("slow", slow, ""), ("slow2", slow2, "")), wait=False)
            waiting = [t for t in threading.enumerate() if t.name == "servo-reload-wait"]
            assert len(waiting) == 1
            core.reload_config(
                config(("slow", slow, ""), ("slow2", slow2, ""), ("other", other, ""))
            )
            waiting[0].join(WAIT)
            assert not waiting[0].is_alive()
        [record] = [r for r in caplog.records if "slow2" in r.getMessage()]
        assert "(still loading: a later config replaced this one)" in record.getMessage()
    finally:
        gate.write_text("")
        core.stop(drain_timeout=5)


MARKING_MODEL = """
import os
open(os.path.join(os.path.dirname(__file__), "ran"), "w").close()
class Model:
    def predict(self, inputs, signature_name):
        return inputs["inputs"]
"""


def test_version_directories_are_confined_to_the_allowed_roots_when_they_load(
    tmp_path: Path,
) -> None:
    """A version directory that is a link out of the allowed roots, or a base path replaced
    by a link after the config was applied, fails its version: nothing of it runs."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    base = Path(make_model(root / "m", 1))
    (outside / "2").mkdir(parents=True)
    (outside / "2" / "model.py").write_text(MARKING_MODEL)
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
            model_wait_timeout=WAIT,
            grants=ModelManagementGrants(allowed_model_base_path_roots=(str(root),)),
        )
    )
    try:
        core.reload_config(config(("m", str(base), "")))
        (base / "2").symlink_to(outside / "2")
        core._source.poll_once()
        state = core.monitor.wait_for_state(ServableId("m", 2), ManagerState.END, WAIT)
        assert state == ManagerState.END
        [status] = [v.status for v in core.model_status("m") if v.version == 2]
        assert status.code == Code.PERMISSION_DENIED
        assert f"resolves to {outside / '2'}, outside the allowed roots ({root})" in (
            status.message
        )
        assert "--allowed_model_base_path_roots" in status.message
        with core.servable_handle("m") as handle:
            assert handle.id == ServableId("m", 1)
        # The base path swapped for a link out of the root after the config was applied.
        os.rename(base, root / "old")
        (outside / "3").mkdir()
        (outside / "3" / "model.py").write_text(MARKING_MODEL)
        base.symlink_to(outside)
        core._source.poll_once()
        state = core.monitor.wait_for_state(ServableId("m", 3), ManagerState.END, WAIT)
        assert state == ManagerState.END
        assert not (outside / "2" / "ran").exists() and not (outside / "3" / "ran").exists()
    finally:
        core.stop(drain_timeout=5)


def test_versions_in_object_storage_load_from_their_copies_and_swap(
    s3_env: S3Server, tmp_path: Path
) -> None:
    """A base path in a bucket: each version is copied into the cache before it loads, a new
    version swaps in, and the copy of a version goes when it unloads (but not at stop)."""
    bucket = f"core-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(bucket)
    s3_env.put(bucket, "m/1/model.py", MODEL)
    cache_dir = tmp_path / "cache"
    downloads: list[tuple[str, str, int]] = []
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
            model_wait_timeout=WAIT,
            version_cache=VersionCache(str(cache_dir), on_download=lambda *a: downloads.append(a)),
        )
    )
    try:
        core.reload_config(config(("m", f"s3://{bucket}/m", "")))  # listed twice, then loaded
        assert [(s.version, s.state) for s in core.model_status("m")] == [
            (1, ManagerState.AVAILABLE)
        ]
        with core.servable_handle("m") as handle:
            assert handle.servable.path.startswith(str(cache_dir))  # type: ignore[attr-defined]
        s3_env.put(bucket, "m/2/model.py", MODEL)
        core._source.poll_once()
        core._source.poll_once()
        wait_until(
            lambda: (
                [(s.version, s.state) for s in core.model_status("m")]
                == [(2, ManagerState.AVAILABLE), (1, ManagerState.END)]
            ),
            WAIT,
            "version 2 AVAILABLE, version 1 END",
        )
        assert [d[:2] for d in downloads] == [("m", "downloaded"), ("m", "downloaded")]
        assert len([n for n in os.listdir(cache_dir) if n.endswith(".complete")]) == 1
    finally:
        core.stop(drain_timeout=5)
    assert len([n for n in os.listdir(cache_dir) if n.endswith(".complete")]) == 1  # kept


def test_a_version_being_retried_shows_its_error_in_its_status_and_the_wait_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("servo.server.server_core.WAIT_LOG_INTERVAL", 0.05)
    base = make_model(tmp_path / "m", 123, broken=(123,))
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=5, load_retry_interval=60),
        )
    )
    errors: list[ServoError] = []

    def reload() -> None:
        try:
            core.reload_config(config(("m", base, "")))
        except ServoError as exc:
            errors.append(exc)

    caplog.set_level("WARNING", logger="servo.server.server_core")
    waiter = threading.Thread(target=reload)
    waiter.start()
    try:
        retrying = "RuntimeError: this version is broken (retry 1 of 5 in 60 s)"
        wait_until(
            lambda: any(retrying in r.getMessage() for r in caplog.records),
            what="a waiting line with the failure",
        )
        [status] = core.model_status("m")
        assert (status.version, status.state) == (123, ManagerState.LOADING)
        assert status.status.code == Code.INTERNAL
        assert status.status.message.endswith(f"Model failed to load: {retrying}")
        [line, *_] = [r.getMessage() for r in caplog.records if retrying in r.getMessage()]
        assert line.startswith("Still waiting for model m after ")
        assert " s: version 123 LOADING, last attempt failed: INTERNAL: " in line
        assert line.endswith(retrying)
    finally:
        core.stop(drain_timeout=5)  # ends the retries' wait, and the reload's
        waiter.join(WAIT)
    assert not waiter.is_alive()
    [status] = core.model_status("m")
    assert status.state == ManagerState.END
    assert status.status.message.endswith(
        "Model failed to load: RuntimeError: this version is broken"
    )
