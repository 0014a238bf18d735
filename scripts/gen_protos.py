"""Regenerate the Python modules for servo's own .proto files.

    python scripts/gen_protos.py          # rewrite src/servo/protos/*_pb2.py and *_pb2.pyi
    python scripts/gen_protos.py --check  # exit 1 if the committed modules are stale

The generated modules are committed so that running servo never needs grpcio-tools; this script
and its --check mode (run by the tests) keep them in step with the .proto files.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PROTO_DIR = SRC / "servo" / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")


def _is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def generate(out_dir: Path) -> dict[str, bytes]:
    """Run protoc over every .proto file into `out_dir`; returns {file name: contents}."""
    from grpc_tools import protoc  # only this script needs grpcio-tools

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    # Paths relative to src, in a fixed order, so that the output does not depend on the
    # directory listing order or on where the repository is checked out.
    protos = sorted(p.relative_to(SRC).as_posix() for p in PROTO_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files in {PROTO_DIR}")
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    produced = out_dir / "servo" / "protos"
    return {p.name: p.read_bytes() for p in sorted(produced.iterdir()) if _is_generated(p)}


def committed() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(PROTO_DIR.iterdir()) if _is_generated(p)}


def stale_files() -> list[str]:
    """Names of generated files that are missing, outdated or orphaned in the source tree."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    current = committed()
    names = fresh.keys() | current.keys()
    return sorted(name for name in names if fresh.get(name) != current.get(name))


def write() -> list[str]:
    """Regenerate in place; returns the names of files that changed or were removed."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    changed = []
    for name, old in committed().items():
        if name not in fresh:
            # The .proto it came from is gone: an orphan would still import and mislead.
            (PROTO_DIR / name).unlink()
            changed.append(name)
        elif old != fresh[name]:
            changed.append(name)
    for name, data in fresh.items():
        path = PROTO_DIR / name
        if not path.exists():
            changed.append(name)
        path.write_bytes(data)
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report whether the generated files are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated files (run scripts/gen_protos.py):", *stale, sep="\n  ")
            return 1
        print("generated protos are up to date")
        return 0
    changed = write()
    print(f"regenerated {len(changed)} file(s)", *changed, sep="\n  " if changed else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
