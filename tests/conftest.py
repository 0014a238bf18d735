"""Suite-wide rules and the test models every directory shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servo.util import gfile
from tests.support.container import engine_problem
from tests.support.s3 import S3Server, s3_server
from tests.support.testdata import (
    TfsModels,
    ci_requires_tfs_testdata,
    generated_tfs_models,
    tfs_testdata_place,
    tfs_testdata_present,
)

TFS_TESTDATA_MARK = "tfs_testdata"
CONTAINER_MARK = "container"
_NOT_RUN = pytest.StashKey[int]()
_NO_ENGINE = pytest.StashKey[tuple[int, str]]()


@pytest.fixture(scope="session")
def tfs_models() -> TfsModels:
    """servo's stand-ins for TFS's test models and config files, by TFS's names (written by
    tests/support/tfs_models.py, cached under build/tfs-models)."""
    return TfsModels(generated_tfs_models())


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, for the session (tests/support/s3.py); each
    test uses buckets of its own. A test that stops its store starts one of its own."""
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """This process reads `s3` through servo.util.gfile (its environment variables set)."""
    for name in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    gfile.reset_file_systems()
    yield s3
    gfile.reset_file_systems()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked tfs_testdata run when TFS's data is there and fail without it under
    CI=true; otherwise they are deselected (not skipped: see below) and counted. Tests marked
    container likewise need a usable podman."""
    containers = [item for item in items if item.get_closest_marker(CONTAINER_MARK)]
    if containers and not ci_requires_tfs_testdata():
        problem = engine_problem()
        if problem is not None:
            items[:] = [item for item in items if not item.get_closest_marker(CONTAINER_MARK)]
            config.hook.pytest_deselected(items=containers)
            config.stash[_NO_ENGINE] = (len(containers), problem)
    if tfs_testdata_present() or ci_requires_tfs_testdata():
        return
    needing = [item for item in items if item.get_closest_marker(TFS_TESTDATA_MARK)]
    if not needing:
        return
    items[:] = [item for item in items if not item.get_closest_marker(TFS_TESTDATA_MARK)]
    config.hook.pytest_deselected(items=needing)
    config.stash[_NOT_RUN] = len(needing)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    no_engine = terminalreporter.config.stash.get(_NO_ENGINE, None)
    if no_engine:
        terminalreporter.write_line(
            f"{no_engine[0]} tests need a container engine: not run ({no_engine[1]})",
            yellow=True,
        )
    not_run = terminalreporter.config.stash.get(_NOT_RUN, 0)
    if not_run:
        terminalreporter.write_line(
            f"{not_run} tests need TFS's test data ({tfs_testdata_place()}): not run",
            yellow=True,
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a test that did not run: the suite fails when any test skips."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} tests skipped; every test must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
