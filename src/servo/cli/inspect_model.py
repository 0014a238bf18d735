"""`servo inspect DIR`: a model directory's platform, versions and signatures, without a
server, as `saved_model_cli show --all` shows a SavedModel, for every platform servo serves.

Each version is loaded as the server would load it (its platform found from its files, as
--model_platform is when empty) and its signatures printed: method name, then each input and
output with its dtype and shape (-1: any size; "unknown rank"). Pipelines and sharded fronts
run other models or servers, so their declared structure is printed instead (the steps and
what feeds each; the shard servers' addresses), and said so. A directory that is not one, that
has no versions, or a version whose platform is unknown, is one line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from servo.core.status import ServoError
from servo.platforms import pipeline, sharded
from servo.platforms.options import PlatformOptions
from servo.platforms.router import PLATFORMS, detect_platform, load_platform
from servo.platforms.servable import Signature, TensorSpec
from servo.sources.file_system import find_versions


class InspectError(Exception):
    """What stops the inspection; the message is its one line."""


def describe_tensor(spec: TensorSpec) -> dict[str, Any]:
    shape: Any = "unknown rank" if spec.shape is None else list(spec.shape)
    return {"dtype": spec.dtype.name, "shape": shape, "name": spec.tensor_name}


def describe_signatures(signatures: Mapping[str, Signature]) -> dict[str, Any]:
    return {
        name: {
            "method_name": sig.method_name,
            "inputs": {k: describe_tensor(v) for k, v in sig.inputs.items()},
            "outputs": {k: describe_tensor(v) for k, v in sig.outputs.items()},
        }
        for name, sig in sorted(signatures.items())
    }


def describe_version(path: str, platform: str, model_name: str) -> dict[str, Any]:
    """One version: its platform and signatures, or the declared structure of a pipeline or a
    sharded front (which need other models or servers to load)."""
    if platform == "pipeline":
        steps, outputs, _ = pipeline.read_pipeline(path)
        return {
            "platform": platform,
            "note": "a pipeline runs other served models: its declared steps, not loaded",
            "steps": [
                {
                    "name": s.name,
                    "model": s.model,
                    "version": s.version,
                    "label": s.label,
                    "signature": s.signature,
                    "inputs": {k: str(v) for k, v in s.inputs.items()},
                }
                for s in steps
            ],
            "outputs": None if outputs is None else {k: str(v) for k, v in outputs.items()},
        }
    if platform == "sharded":
        settings = sharded.read_settings(path, model_name)
        return {
            "platform": platform,
            "note": "a sharded front asks shard servers: its declared shards, not contacted",
            "model": settings.model,
            "version": settings.version,
            "shards": list(settings.shards),
        }
    # A composite loads its parts through the router, as the server's loader passes it.
    options = PlatformOptions(model_name=model_name, load_platform=load_platform)
    servable = load_platform(platform, path, options)
    try:
        return {"platform": platform, "signatures": describe_signatures(servable.signatures)}
    finally:
        servable.close()


def inspect_directory(base_path: str, platform: str = "") -> dict[str, Any]:
    if not os.path.isdir(base_path):
        raise InspectError(f"{base_path} is not a directory")
    try:
        versions = find_versions(base_path)
    except ServoError as exc:
        raise InspectError(exc.message) from None
    if not versions:
        found = detect_platform(base_path)
        hint = (
            f" (it holds the files of a {found} model itself: versions go in numbered "
            f"directories, e.g. {os.path.join(base_path, '1')})"
            if found
            else ""
        )
        raise InspectError(f"No versions found under {base_path}{hint}")
    model_name = os.path.basename(os.path.normpath(os.path.abspath(base_path)))
    described: dict[str, Any] = {}
    for version, path in sorted(versions.items()):
        found = platform or detect_platform(path)
        if found is None:
            files = sorted({f for info in PLATFORMS.values() for f in info.files})
            raise InspectError(
                f"Version {version} at {path}: unknown platform (none of {', '.join(files)})"
            )
        try:
            described[str(version)] = describe_version(path, found, model_name)
        except ServoError as exc:
            raise InspectError(f"Version {version} at {path}: {exc.message}") from None
    return {"base_path": base_path, "versions": described}


def _shape(shape: Any) -> str:
    return shape if isinstance(shape, str) else "(" + ", ".join(str(d) for d in shape) + ")"


def text(report: Mapping[str, Any]) -> str:
    lines = [f"Model directory {report['base_path']}: versions {', '.join(report['versions'])}"]
    for version, info in report["versions"].items():
        lines.append(f"\nVersion {version}: platform {info['platform']}")
        if "note" in info:
            lines.append(f"  ({info['note']})")
        for step in info.get("steps", ()):
            which = (
                f" version {step['version']}"
                if step["version"] is not None
                else f" label {step['label']}"
                if step["label"]
                else ""
            )
            feeds = ", ".join(f"{k} <- {v}" for k, v in step["inputs"].items())
            lines.append(
                f"  step '{step['name']}': model {step['model']}{which}, signature "
                f"{step['signature']}; inputs: {feeds}"
            )
        if info.get("outputs"):
            outs = ", ".join(f"{k} <- {v}" for k, v in info["outputs"].items())
            lines.append(f"  outputs: {outs}")
        if "shards" in info:
            which = "" if info["version"] is None else f" version {info['version']}"
            lines.append(f"  model {info['model']}{which}, {len(info['shards'])} shards:")
            lines.extend(f"    shard {i}: {addr}" for i, addr in enumerate(info["shards"]))
        for name, sig in info.get("signatures", {}).items():
            lines.append(f"  signature_def['{name}']:")
            lines.append(f"    method name: {sig['method_name']}")
            for part in ("inputs", "outputs"):
                lines.append(f"    {part}:")
                for alias, tensor in sig[part].items():
                    lines.append(
                        f"      {alias}: {tensor['dtype']} shape {_shape(tensor['shape'])}"
                        + (f" ({tensor['name']})" if tensor["name"] else "")
                    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="servo inspect",
        description="Print a model directory's platform, versions and signatures without "
        "starting a server.",
    )
    parser.add_argument("dir", help="a model's base path: the directory of its versions")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--model_platform",
        default="",
        choices=["", *sorted(PLATFORMS)],
        help="the platform, as --model_platform (default: found from each version's files)",
    )
    args = parser.parse_args(argv)
    try:
        report = inspect_directory(args.dir, args.model_platform)
    except InspectError as exc:
        print(f"servo inspect: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(text(report), end="")
    return 0
