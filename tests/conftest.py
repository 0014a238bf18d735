"""Suite-wide rules and the test models every directory shares."""

from __future__ import annotations

import pytest

from tests.support.testdata import (
    TfsModels,
    ci_requires_tfs_testdata,
    generated_tfs_models,
    tfs_testdata_place,
    tfs_testdata_present,
)

TFS_TESTDATA_MARK = "tfs_testdata"
_NOT_RUN = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def tfs_models() -> TfsModels:
    """servo's stand-ins for TFS's test models and config files, by TFS's names (written by
    tests/support/tfs_models.py, cached under build/tfs-models)."""
    return TfsModels(generated_tfs_models())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked tfs_testdata run when TFS's data is there and fail without it under
    CI=true; otherwise they are deselected (not skipped: see below) and counted."""
    if tfs_testdata_present() or ci_requires_tfs_testdata():
        return
    needing = [item for item in items if item.get_closest_marker(TFS_TESTDATA_MARK)]
    if not needing:
        return
    items[:] = [item for item in items if not item.get_closest_marker(TFS_TESTDATA_MARK)]
    config.hook.pytest_deselected(items=needing)
    config.stash[_NOT_RUN] = len(needing)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
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
