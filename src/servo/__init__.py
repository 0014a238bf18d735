"""servo: a model server with TensorFlow Serving's architecture and wire protocols."""

from __future__ import annotations

__version__ = "0.1.0"
