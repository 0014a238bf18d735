"""The cache of the generated stand-ins for TFS's test models (tests/support/testdata.py): one
generation per key, whole entries only, stale ones removed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import testdata


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replaces the generator's subprocess by one that writes a file; lists where it wrote."""
    calls: list[Path] = []

    def generate(out: Path) -> None:
        calls.append(out)
        (out / "model").write_text("written")

    monkeypatch.setattr(testdata, "_generate", generate)
    return calls


def test_an_entry_is_generated_once_and_then_reused(
    tmp_path: Path, generations: list[Path]
) -> None:
    first = testdata.generated_tfs_models(tmp_path)
    assert first == tmp_path / testdata.cache_key()
    assert (first / "model").read_text() == "written"
    assert first.stat().st_mode & 0o777 == 0o755
    assert testdata.generated_tfs_models(tmp_path) == first
    assert len(generations) == 1
    assert generations[0].parent == tmp_path and generations[0] != first  # staged aside
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_a_failed_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(out: Path) -> None:
        (out / "half").write_text("a model half written")
        raise subprocess.TimeoutExpired("generator", 1)

    monkeypatch.setattr(testdata, "_generate", fail)
    with pytest.raises(subprocess.TimeoutExpired):
        testdata.generated_tfs_models(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_stale_entries_and_dead_stagings_are_removed(
    tmp_path: Path, generations: list[Path]
) -> None:
    other_key = tmp_path / "0123456789abcdef"
    dead = tmp_path / f"{testdata.STAGING_PREFIX}999999999-x"
    live = tmp_path / f"{testdata.STAGING_PREFIX}{os.getpid()}-x"
    for directory in (other_key, dead, live):
        directory.mkdir()
    entry = testdata.generated_tfs_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([entry.name, live.name])


def test_the_key_follows_tensorflows_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = testdata.cache_key()
    assert testdata.cache_key() == key
    monkeypatch.setattr(testdata, "tensorflow_version", lambda: "tensorflow 0.0.1")
    assert testdata.cache_key() != key
