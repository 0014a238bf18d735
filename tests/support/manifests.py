"""servo's deployment manifests (deploy/), rendered and checked offline.

- `kustomize(dir)`: the objects `kubectl kustomize` renders (kustomize itself, built into
  kubectl 1.21 on; every machine of this project has kubectl).
- `kubernetes_errors(obj, version)`: the object against the Kubernetes API's schemas of that
  version, strictly (an unknown field is an error): kubernetes-validate, which ships the
  schemas made from each release's OpenAPI.
- `model_errors(obj, schema, root)`: an object against a resource's fields as a generated SDK
  declares them (KServe's Python SDK: tests/support/kserve_schema.py): every field known to its
  class, and of its type.
- `pydantic_errors(obj, model)`: the same against models generated from a CRD's OpenAPI as
  pydantic classes (cloudcoil's prometheus-operator models, for the ServiceMonitor): pydantic's
  validation, and every field known (the models themselves ignore unknown ones).
- `servo_flags(args)`: servo's own flag parser on a container's arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import subprocess
import types
import typing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import yaml

from servo.cli.flags import build_parser
from tests.support.testdata import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
# The oldest release the manifests need (the preStop hook's sleep action is 1.30's), and the
# newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (1.21 or later, for its built-in kustomize) is not on PATH"
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}:\n{done.stderr}"
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def documents(path: Path) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def kubernetes_errors(obj: dict[str, Any], version: str) -> list[str]:
    """What the Kubernetes API's schemas of `version` (strict) find wrong with `obj`."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        return [f"{obj['kind']} {obj['metadata'].get('name')}: {where}: {e.message}"]
    return []


# The SDK's type strings: "str", "list[V1Container]", "List[V1Container]",
# "dict(str, str)", "Dict[str, str]", a class name, "object".
_LIST = re.compile(r"[lL]ist\[(.+)\]$")
_DICT = re.compile(r"[dD]ict[\[(]str, (.+)[\])]$")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


def model_errors(value: Any, schema: dict[str, Any], kind: str, where: str = "") -> list[str]:
    """What is wrong with `value` as the SDK's type `kind` (see `_LIST`), where `schema` is
    tests/support/kserve_schema.py's {"classes": {name: {field: type}}, "scalars": [...]}."""
    if value is None or kind == "object" or kind in schema["scalars"]:
        return []
    if m := _LIST.match(kind):
        if not isinstance(value, list):
            return [f"{where}: a list expected, not {value!r}"]
        return [
            e for i, v in enumerate(value) for e in model_errors(v, schema, m[1], f"{where}[{i}]")
        ]
    if m := _DICT.match(kind):
        if not isinstance(value, dict):
            return [f"{where}: a map expected, not {value!r}"]
        return [e for k, v in value.items() for e in model_errors(v, schema, m[1], f"{where}.{k}")]
    if kind in _SCALARS:
        ok = isinstance(value, _SCALARS[kind]) and not (kind != "bool" and isinstance(value, bool))
        return [] if ok else [f"{where}: {kind} expected, not {value!r}"]
    fields = schema["classes"][kind]
    if not isinstance(value, dict):
        return [f"{where}: an object ({kind}) expected, not {value!r}"]
    errors = []
    for key, v in value.items():
        if key not in fields:
            errors.append(f"{where}.{key}: no such field in {kind}")
        else:
            errors.extend(model_errors(v, schema, fields[key], f"{where}.{key}"))
    return errors


def pydantic_errors(value: dict[str, Any], model: type[pydantic.BaseModel]) -> list[str]:
    """pydantic's errors for `value` as `model`, and every field it does not know."""
    try:
        model.model_validate(value)
    except pydantic.ValidationError as e:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
    return _unknown_fields(value, model, "")


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    """The pydantic model classes an annotation (Optional, list, dict, Annotated...) names."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict, typing.Literal):
        args = typing.get_args(annotation)
        return [m for a in (args[1:] if origin is dict else args) for m in _models_in(a)]
    return []


def _unknown_fields(value: Any, model: type[pydantic.BaseModel], where: str) -> list[str]:
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _unknown_fields(v, model, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return []
    if issubclass(model, pydantic.RootModel):
        models = _models_in(model.model_fields["root"].annotation)
        if not models:
            return []
        # A map of models (RootModel[Dict[str, M]]) or one model.
        if set(value) <= set(_aliases(models[0])):
            return _unknown_fields(value, models[0], where)
        return [e for k, v in value.items() for e in _unknown_fields(v, models[0], f"{where}.{k}")]
    fields = _aliases(model)
    errors = []
    for key, v in value.items():
        if key not in fields:
            errors.append(f"{where}.{key}: no such field in {model.__name__}".lstrip("."))
            continue
        for inner in _models_in(fields[key]):
            errors.extend(_unknown_fields(v, inner, f"{where}.{key}"))
            break
    return errors


def _aliases(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def servo_flags(args: list[str]) -> argparse.Namespace | str:
    """servo's flags from `args` (as `servo serve` parses them), or the error it exits with."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_flags(args)
    except SystemExit:
        return stderr.getvalue().strip()


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def http_get_paths(obj: Any) -> list[tuple[str, Any]]:
    """Every probe's (path, port) in `obj` (httpGet actions, at any depth)."""
    if isinstance(obj, list):
        return [p for v in obj for p in http_get_paths(v)]
    if not isinstance(obj, dict):
        return []
    found = [(obj["httpGet"]["path"], obj["httpGet"]["port"])] if "httpGet" in obj else []
    return found + [p for k, v in obj.items() if k != "httpGet" for p in http_get_paths(v)]
