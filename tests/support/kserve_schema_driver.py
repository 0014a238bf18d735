"""Run by the KServe venv's Python (tests/support/kserve_schema.py), never imported by the
suite: prints, as JSON, the fields of KServe's resources as KServe's Python SDK declares them.

The SDK's models (kserve.models, generated from KServe's OpenAPI, and the Kubernetes client's
models for the pod parts) each have `openapi_types` (attribute -> type, e.g.
"list[V1Container]") and `attribute_map` (attribute -> JSON field name). The output is, for
every class reachable from the roots, {JSON field name: type}; the names the SDK types as
scalars; and the protocol names of the SDK's PredictorProtocol.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version

import kserve.models
import kubernetes.client.models
from kserve.constants.constants import PredictorProtocol

ROOTS = ("V1alpha1ServingRuntime", "V1alpha1ClusterServingRuntime", "V1beta1InferenceService")
NAMES = re.compile(r"V\d\w*")


def model_class(name: str) -> type | None:
    """The model class `name`; None for a name the SDK types as a scalar (V1Time: a string)."""
    for module in (kserve.models, kubernetes.client.models):
        found = getattr(module, name, None)
        if isinstance(found, type) and hasattr(found, "openapi_types"):
            return found
    return None


def main() -> int:
    classes: dict[str, dict[str, str]] = {}
    scalars: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in classes or name in scalars:
            continue
        cls = model_class(name)
        if cls is None:
            scalars.add(name)
            continue
        fields = {cls.attribute_map[attr]: kind for attr, kind in cls.openapi_types.items()}
        classes[name] = fields
        todo.extend(n for kind in fields.values() for n in NAMES.findall(kind))
    json.dump(
        {
            "kserve_version": version("kserve"),
            "classes": classes,
            "scalars": sorted(scalars),
            "protocols": [p.value for p in PredictorProtocol],
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
