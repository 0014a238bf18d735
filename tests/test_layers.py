"""Imports run down the layers the README's architecture section names, and never sideways
between two packages of one layer.

Every module of src/servo is read (not imported); an import counts wherever it is written
(inside functions and `if TYPE_CHECKING:` blocks too), and so does a string that names a servo
module, as `importlib.import_module` takes one (the router loads platforms that way).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the group of the longest prefix that names it; it may
# import its own group and any group of a lower layer, nothing else. Packages' __init__
# modules import no servo module: they sit at the bottom.
LAYERS: list[list[str]] = [
    ["servo.core.status"],  # error codes: what every layer raises
    ["servo.protos", "servo.dtypes", "servo.util"],
    ["servo.decoded_size"],
    ["servo.tensor_codec"],  # TensorProto <-> numpy: the APIs' and a remote shard's codec
    ["servo.core"],
    [
        "servo.sources",
        "servo.metrics",
        "servo.platforms.options",
        "servo.platforms.servable",
        "servo.platforms.sharding",
    ],
    ["servo.platforms.table_file"],  # the binary table format, keyed by the shard hash
    [
        "servo.platforms.tensorflow",
        "servo.platforms.tflite",
        "servo.platforms.onnx",
        "servo.platforms.lookup",
        "servo.platforms.python_model",
        "servo.platforms.pipeline",
        "servo.platforms.sharded",
    ],
    ["servo.platforms.composite"],  # a pipeline over its own parts
    ["servo.platforms.python_worker"],
    ["servo.platforms.python"],
    ["servo.platforms.router"],
    ["servo.batching"],
    ["servo.server"],
    ["servo.apis.access_log", "servo.apis.request_checks", "servo.apis.runner"],
    ["servo.apis.data_plane"],
    ["servo.apis.messages"],
    ["servo.apis.open_inference"],
    ["servo.apis.rest", "servo.apis.grpc"],
    ["servo.cli"],
    ["servo.__main__"],
]

_MODULE_NAME = re.compile(r"servo(\.[A-Za-z_][A-Za-z0-9_]*)+")


def module_name(path: Path) -> str:
    """The dotted name; a package's __init__ keeps its `.__init__`."""
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py")) if not p.name.endswith("_pb2.py")}


def group_of(module: str) -> tuple[int, str]:
    """(layer index, group prefix) of a module."""
    if module.endswith(".__init__"):
        return 0, module
    best: tuple[int, str] | None = None
    for index, groups in enumerate(LAYERS):
        for prefix in groups:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (index, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the README)")
    return best


def imported(path: Path, known: set[str]) -> set[str]:
    """The servo modules `path` imports, or names in a string."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_NAME.fullmatch(node.value)
        ):
            found.add(node.value)
    packages = {name if name in known else f"{name}.__init__" for name in found}
    return {name for name in packages if name in known}


def edges() -> list[tuple[str, str]]:
    known = modules()
    return sorted(
        (name, target)
        for name, path in known.items()
        for target in imported(path, set(known))
        if target != name
    )


def test_every_module_has_a_layer() -> None:
    for name in modules():
        group_of(name)


def test_package_inits_import_no_servo_module() -> None:
    known = modules()
    for name, path in known.items():
        if name.endswith(".__init__"):
            assert not imported(path, set(known)), f"{path} imports servo modules"


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for source, target in edges():
        (low, group), (high, target_group) = group_of(target), group_of(source)
        if group == target_group or low < high:
            continue
        direction = "up" if low > high else "sideways"
        wrong.append(f"{source} -> {target} ({direction}: {target_group} -> {group})")
    assert not wrong, "imports that do not run down the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("servo.batching.batching_servable", "servo.server.server_core"),  # up
        ("servo.apis.rest.app", "servo.apis.grpc.service"),  # sideways
        ("servo.platforms.onnx", "servo.platforms.router"),  # up, inside a package
    ],
)
def test_the_check_sees_a_wrong_edge(source: str, target: str) -> None:
    (low, group), (high, source_group) = group_of(target), group_of(source)
    assert group != source_group and low >= high


def test_the_walk_finds_imports_in_functions_and_module_strings() -> None:
    pairs = set(edges())
    # model_server imports the gRPC service inside a method; the router names platforms.
    assert ("servo.cli.model_server", "servo.apis.grpc.service") in pairs
    assert ("servo.platforms.router", "servo.platforms.onnx") in pairs
