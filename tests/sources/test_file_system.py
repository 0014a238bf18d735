"""The file-system source: version directories appearing and disappearing under each policy."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from servo.core.source import ServableData
from servo.core.status import Code, ServoError
from servo.sources.file_system import (
    AllVersions,
    FileSystemStoragePathSource,
    FileSystemStoragePathSourceConfig,
    LatestVersions,
    ServableToMonitor,
    SpecificVersions,
    find_versions,
)


class Recorder:
    """An aspired-versions callback that records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[int, str]]] = []

    def __call__(self, name: str, versions: Sequence[ServableData[str]]) -> None:
        self.calls.append((name, {item.id.version: item.data for item in versions}))

    def last(self, name: str = "m") -> dict[int, str] | None:
        for called, versions in reversed(self.calls):
            if called == name:
                return versions
        return None

    def versions(self, name: str = "m") -> set[int] | None:
        last = self.last(name)
        return None if last is None else set(last)


def make_source(base: Path, policy=None, **kw) -> tuple[FileSystemStoragePathSource, Recorder]:
    servable = ServableToMonitor("m", str(base), policy or LatestVersions())
    config = FileSystemStoragePathSourceConfig((servable,), file_system_poll_wait_seconds=-1, **kw)
    source = FileSystemStoragePathSource(config)
    recorder = Recorder()
    source.set_aspired_versions_callback(recorder)
    source.poll_once()  # a negative poll wait: the test polls by hand
    return source, recorder


def mkversions(base: Path, *names: str) -> None:
    for name in names:
        (base / name).mkdir(parents=True)


def test_numeric_children_are_versions_others_ignored(tmp_path: Path) -> None:
    mkversions(tmp_path, "1", "7", "tmp", "3a", "-2")
    (tmp_path / "9").write_text("a file, not a version directory")
    assert find_versions(str(tmp_path)) == {1: str(tmp_path / "1"), 7: str(tmp_path / "7")}


def test_colliding_version_names_warn_and_pick_one(tmp_path: Path, caplog) -> None:
    mkversions(tmp_path, "00042", "42")
    with caplog.at_level(logging.WARNING):
        assert find_versions(str(tmp_path)) == {42: str(tmp_path / "00042")}
    assert "Duplicate version directories for version 42" in caplog.text


def test_latest_policy_follows_directories_as_they_come_and_go(tmp_path: Path) -> None:
    mkversions(tmp_path, "1")
    source, rec = make_source(tmp_path, LatestVersions(2))
    assert rec.last() == {1: str(tmp_path / "1")}
    mkversions(tmp_path, "2", "3")
    source.poll_once()
    assert rec.versions() == {2, 3}
    os.rmdir(tmp_path / "3")
    source.poll_once()
    assert rec.versions() == {1, 2}
    calls = len(rec.calls)
    source.poll_once()  # nothing changed: nothing emitted
    assert len(rec.calls) == calls


def test_all_policy(tmp_path: Path) -> None:
    mkversions(tmp_path, "1", "2")
    source, rec = make_source(tmp_path, AllVersions())
    assert rec.versions() == {1, 2}
    mkversions(tmp_path, "5")
    os.rmdir(tmp_path / "1")
    source.poll_once()
    assert rec.versions() == {2, 5}


def test_specific_policy_warns_about_missing_versions(tmp_path: Path, caplog) -> None:
    mkversions(tmp_path, "1", "2", "3")
    with caplog.at_level(logging.WARNING):
        source, rec = make_source(tmp_path, SpecificVersions(frozenset({2, 4})))
    assert rec.versions() == {2}
    assert "specific versions [4] not found" in caplog.text
    mkversions(tmp_path, "4")
    source.poll_once()
    assert rec.versions() == {2, 4}


def test_missing_base_path_emits_nothing_so_nothing_unloads(tmp_path: Path, caplog) -> None:
    base = tmp_path / "m"
    mkversions(base, "1")
    source, rec = make_source(base)
    assert rec.versions() == {1}
    os.rename(base, tmp_path / "elsewhere")
    calls = len(rec.calls)
    with caplog.at_level(logging.ERROR):
        source.poll_once()
        source.poll_once()
    assert len(rec.calls) == calls
    assert source.status("m").code == Code.NOT_FOUND
    assert caplog.text.count("Could not find base path") == 1  # logged once, not every poll
    os.rename(tmp_path / "elsewhere", base)
    source.poll_once()
    assert source.status("m").ok


def test_empty_base_path_warns_and_aspires_nothing(tmp_path: Path, caplog) -> None:
    mkversions(tmp_path, "1")
    source, rec = make_source(tmp_path)
    os.rmdir(tmp_path / "1")
    with caplog.at_level(logging.WARNING):
        source.poll_once()
    assert rec.last() == {}
    assert "Did you forget to name your leaf directory as a number (eg. '/1/')?" in caplog.text


def test_versions_always_present(tmp_path: Path) -> None:
    with pytest.raises(ServoError) as err:
        make_source(tmp_path, servable_versions_always_present=True)
    assert err.value.code == Code.NOT_FOUND
    mkversions(tmp_path, "1")
    source, rec = make_source(tmp_path, servable_versions_always_present=True)
    os.rmdir(tmp_path / "1")
    source.poll_once()
    assert rec.versions() == {1}  # kept: the empty directory is not taken as "unload all"


def test_versions_always_present_counts_the_versions_the_policy_picks(tmp_path: Path) -> None:
    mkversions(tmp_path, "1")
    with pytest.raises(ServoError) as err:  # a version exists, but not the one asked for
        make_source(
            tmp_path, SpecificVersions(frozenset({2})), servable_versions_always_present=True
        )
    assert err.value.code == Code.NOT_FOUND
    mkversions(tmp_path, "2")
    source, rec = make_source(
        tmp_path, SpecificVersions(frozenset({2})), servable_versions_always_present=True
    )
    assert rec.versions() == {2}
    os.rmdir(tmp_path / "2")  # version 1 is still there, but the policy does not pick it
    source.poll_once()
    assert rec.versions() == {2}  # kept, not "unload all"


def test_specific_versions_appear_and_disappear(tmp_path: Path) -> None:
    mkversions(tmp_path, "1", "2", "3")
    source, rec = make_source(tmp_path, SpecificVersions(frozenset({1, 3})))
    assert rec.versions() == {1, 3}
    os.rmdir(tmp_path / "3")
    source.poll_once()
    assert rec.versions() == {1}
    os.rmdir(tmp_path / "1")
    source.poll_once()
    assert rec.last() == {}  # without always-present, none left means unload them all
    mkversions(tmp_path, "3")
    source.poll_once()
    assert rec.versions() == {3}


def test_update_config_adds_and_removes_servables(tmp_path: Path) -> None:
    mkversions(tmp_path / "a", "1")
    mkversions(tmp_path / "b", "2")
    source = FileSystemStoragePathSource(
        FileSystemStoragePathSourceConfig(
            (ServableToMonitor("a", str(tmp_path / "a")),), file_system_poll_wait_seconds=-1
        )
    )
    rec = Recorder()
    source.set_aspired_versions_callback(rec)
    source.poll_once()
    assert rec.versions("a") == {1}
    source.update_config(
        FileSystemStoragePathSourceConfig(
            (ServableToMonitor("b", str(tmp_path / "b")),), file_system_poll_wait_seconds=-1
        )
    )
    source.poll_once()
    assert rec.last("a") == {}
    assert rec.versions("b") == {2}


def test_callback_can_be_set_only_once(tmp_path: Path) -> None:
    source, _ = make_source(tmp_path)
    with pytest.raises(RuntimeError):
        source.set_aspired_versions_callback(Recorder())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="more than once"):
        FileSystemStoragePathSourceConfig(
            (ServableToMonitor("m", "/a"), ServableToMonitor("m", "/b"))
        )
    with pytest.raises(ValueError):
        LatestVersions(0)
    with pytest.raises(ValueError):
        SpecificVersions(frozenset())


def test_a_model_directly_in_its_base_path_is_named_in_the_hint(tmp_path: Path, caplog) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")
    (tmp_path / "variables").mkdir()
    with caplog.at_level(logging.WARNING):
        source, rec = make_source(tmp_path)
        source.poll_once()
    assert rec.last() == {}
    hint = (
        f"No versions of servable m found under base path {tmp_path}. Did you forget to name "
        "your leaf directory as a number (eg. '/1/')? saved_model.pb is directly in the base "
        f"path: put the model into a numbered version directory, e.g. {tmp_path}/1/saved_model.pb"
    )
    assert [r.getMessage() for r in caplog.records].count(hint) == 1  # once, not every poll
    assert [r.levelname for r in caplog.records if r.getMessage() == hint] == ["WARNING"]
    assert source.status("m").message == hint  # what the still-waiting lines show
    # `variables` is no version either: warned about once, by name.
    ignoring = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert ignoring == [
        f"Servable m: ignoring {tmp_path / 'variables'} under its base path: a version "
        "directory is named by a number (e.g. 1 or 00042), and 'variables' is not one"
    ]
    with pytest.raises(ServoError, match=r"saved_model.pb is directly in the base path"):
        make_source(tmp_path, servable_versions_always_present=True)


def test_a_directory_that_is_no_version_number_is_warned_about_once(tmp_path: Path, caplog) -> None:
    mkversions(tmp_path, "1", "v2", "1.0", ".hidden")
    (tmp_path / "notes.txt").write_text("a file: not warned about")
    with caplog.at_level(logging.WARNING):
        source, rec = make_source(tmp_path)
        source.poll_once()
        source.poll_once()
    assert rec.versions() == {1}
    ignoring = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert [m.split(" under ")[0] for m in ignoring] == [
        f"Servable m: ignoring {tmp_path / '1.0'}",
        f"Servable m: ignoring {tmp_path / 'v2'}",
    ]
    assert ignoring[1].endswith("and 'v2' is not one")
    assert not any("Did you forget" in r.getMessage() for r in caplog.records)  # 1 is found
    mkversions(tmp_path, "v3")  # a new one is warned about in its turn
    with caplog.at_level(logging.WARNING):
        source.poll_once()
    assert sum("ignoring" in r.getMessage() for r in caplog.records) == 3
