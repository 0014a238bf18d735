"""servo: a model server with TensorFlow Serving's architecture and wire protocols."""

from __future__ import annotations

__version__ = "0.1.0"

# The name the package index knows servo by (pyproject's [project] name): `servo` there is an
# unrelated project. The import name and the command stay `servo`.
DISTRIBUTION = "servo-model-server"


def pip_install(extra: str) -> str:
    """The command that installs servo with one of its extras, e.g. the ONNX runtime."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
