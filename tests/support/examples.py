"""The example repository's script (scripts/make_example_models.py) as a module, for tests
that write its models."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.testdata import REPO


def example_script() -> ModuleType:
    """scripts/make_example_models.py, imported once (scripts/ is not a package)."""
    name = "servo_make_example_models"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "scripts" / "make_example_models.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return module
