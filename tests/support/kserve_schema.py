"""KServe's resources' fields as KServe's Python SDK (`kserve`, generated from KServe's
OpenAPI) declares them, read by tests/support/kserve_schema_driver.py in a venv of its own
(`make test` makes .venv-kserve: the SDK pins a protobuf older than servo's).

    schema = kserve_schema()
    model_errors(obj, schema, "V1alpha1ServingRuntime")   # tests/support/manifests.py
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.testdata import REPO

DRIVER = Path(__file__).with_name("kserve_schema_driver.py")


def kserve_python() -> str:
    """The interpreter that has the KServe SDK: $SERVO_KSERVE_PYTHON (the Makefile sets it),
    or the repository's .venv-kserve."""
    python = os.environ.get("SERVO_KSERVE_PYTHON") or str(REPO / ".venv-kserve" / "bin" / "python")
    if not Path(python).exists():
        raise AssertionError(
            f"No KServe venv at {python}: run `make test` (it makes .venv-kserve) or set "
            "SERVO_KSERVE_PYTHON to a Python that has kserve"
        )
    return python


@functools.cache
def kserve_schema() -> dict[str, Any]:
    """{"kserve_version", "classes": {class: {JSON field: SDK type}}, "scalars", "protocols"}."""
    done = subprocess.run(
        [kserve_python(), "-I", str(DRIVER)],  # -I: not tests/support on the path
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the KServe schema driver failed:\n{done.stderr}"
    schema: dict[str, Any] = json.loads(done.stdout)
    return schema
