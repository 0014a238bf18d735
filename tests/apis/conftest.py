"""The API tests' models: the catalog's (tests/support/catalog.py), loaded in process once per
session, and a fake core serving them all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servo.platforms.servable import ModelServable
from tests.support.catalog import (
    ServedModel,
    api_models,
    load_into,
    load_servables,
    write_model_dirs,
)
from tests.support.inprocess import FakeCore
from tests.support.testdata import TfsModels


@pytest.fixture(scope="session")
def api_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_model_dirs(tmp_path_factory.mktemp("api_models"))


@pytest.fixture(scope="session")
def api_catalog(tfs_models: TfsModels, api_model_dirs: dict[str, Path]) -> list[ServedModel]:
    return api_models(tfs_models, api_model_dirs)


@pytest.fixture(scope="session")
def api_servables(
    api_catalog: list[ServedModel],
) -> Iterator[dict[str, dict[int, ModelServable]]]:
    """Every version of the catalog, loaded in this process (closed at the session's end)."""
    servables = load_servables(api_catalog)
    yield servables
    for versions in servables.values():
        for servable in versions.values():
            servable.close()


@pytest.fixture
def served(
    api_catalog: list[ServedModel], api_servables: dict[str, dict[int, ModelServable]]
) -> FakeCore:
    """A fake core serving the catalog: half_plus_two (version 123), two_versions (123 and
    124, labelled stable and canary), two_io, mlp, vocab, ... as a test server would."""
    return load_into(FakeCore(), api_catalog, api_servables)
