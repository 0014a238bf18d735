"""Where TensorFlow Serving's own test models live: `../shared/testdata/tfs` beside the
checkout (as in CI), or wherever SERVO_TFS_TESTDATA points. Missing data fails the tests that
need it; it never skips them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TFS_TESTDATA = Path(
    os.environ.get("SERVO_TFS_TESTDATA", REPO.parent / "shared" / "testdata" / "tfs")
)


def tfs_path(*parts: str) -> str:
    """The path of an item of TFS's test data; fails the test when it is absent."""
    path = TFS_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"TFS test data not found at {path}: put it beside the checkout "
            "(../shared/testdata/tfs) or set SERVO_TFS_TESTDATA"
        )
    return str(path)
