"""The suite's test models: servo's stand-ins for TFS's test models, and TFS's own.

The stand-ins are what tests use (the `tfs_models` fixture of tests/conftest.py): written by
tests/support/tfs_models.py, by TFS's names, in a subprocess (so that graph-mode TensorFlow
state stays out of the test process), and cached in `build/tfs-models/<key>` (git-ignored),
where the key hashes the generator's source and the versions of TensorFlow and flatbuffers.
An entry is written in a staging directory beside it and renamed into place whole, so that an
interrupted run leaves no half entry; entries of other keys and staging directories of dead
processes are removed.

TFS's own test data is `../shared/testdata/tfs` beside the checkout (CI lays it there), or
wherever SERVO_TFS_TESTDATA points. Only tests marked `tfs_testdata` read it, through
`tfs_path`: they check servo, and the stand-ins, against TFS's real artefacts. When the data is
there they run; when it is missing they fail under CI=true (CI requires them) and are
deselected otherwise, with one line in the run's summary saying so (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TFS_TESTDATA = REPO.parent / "shared" / "testdata" / "tfs"
TFS_TESTDATA = Path(os.environ.get("SERVO_TFS_TESTDATA", DEFAULT_TFS_TESTDATA))

GENERATOR = Path(__file__).with_name("tfs_models.py")
GENERATOR_MODULE = "tests.support.tfs_models"
MODEL_CACHE = REPO / "build" / "tfs-models"
STAGING_PREFIX = ".staging-"
GENERATION_TIMEOUT = 600  # seconds; a cold generation takes about ten


# -- TFS's own test data ---------------------------------------------------------------------


def tfs_testdata_present() -> bool:
    return TFS_TESTDATA.is_dir()


def tfs_testdata_place() -> str:
    """Where TFS's data is looked for, as a user would write it."""
    if TFS_TESTDATA == DEFAULT_TFS_TESTDATA:
        return "../shared/testdata/tfs"
    return str(TFS_TESTDATA)


def ci_requires_tfs_testdata() -> bool:
    return os.environ.get("CI") == "true"


def tfs_path(*parts: str) -> str:
    """The path of an item of TFS's own test data, for tests marked `tfs_testdata`; fails the
    test when it is absent."""
    path = TFS_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"TFS test data not found at {path}: put it beside the checkout "
            "(../shared/testdata/tfs) or set SERVO_TFS_TESTDATA; with CI=true, tests marked "
            "tfs_testdata require it"
        )
    return str(path)


# -- servo's stand-ins -----------------------------------------------------------------------


@dataclass(frozen=True)
class TfsModels:
    """The generated stand-ins, laid out as TFS's test data (models and config texts)."""

    root: Path

    def path(self, *parts: str) -> str:
        """The path of one item, by TFS's name; fails the test when there is no such item."""
        path = self.root.joinpath(*parts)
        if not path.exists():
            pytest.fail(f"{path}: {GENERATOR_MODULE} writes no such item")
        return str(path)


def tensorflow_version() -> str:
    for dist in ("tensorflow-cpu", "tensorflow", "tf-nightly"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return f"{dist} {importlib.metadata.version(dist)}"
    return "no tensorflow"


def cache_key() -> str:
    """Changes with the generator and with what writes the files: TensorFlow, and flatbuffers
    (the TF Lite models)."""
    digest = hashlib.sha256(GENERATOR.read_bytes())
    digest.update(tensorflow_version().encode())
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        digest.update(importlib.metadata.version("flatbuffers").encode())
    return digest.hexdigest()[:16]


def generated_tfs_models(cache: Path = MODEL_CACHE) -> Path:
    """The directory of the stand-ins: the cache entry of the current key, written first if
    missing."""
    key = cache_key()
    entry = cache / key
    if entry.is_dir():
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale(cache, key)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=cache))
    try:
        _generate(staging)
        staging.chmod(0o755)  # mkdtemp's is 0700
        try:
            os.rename(staging, entry)
        except OSError:
            if not entry.is_dir():  # not a concurrent run that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _generate(out: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, "-m", GENERATOR_MODULE, str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATION_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{GENERATOR_MODULE} failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
        )


def _remove_stale(cache: Path, key: str) -> None:
    """Removes entries of other keys and staging directories whose process is gone."""
    for child in cache.iterdir():
        if child.name == key:
            continue
        if child.name.startswith(STAGING_PREFIX):
            pid = child.name[len(STAGING_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
        shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def saved_signature_map_json(version_dir: str | Path) -> dict:
    """The SignatureDefs in a SavedModel's saved_model.pb as TFS's metadata JSON writes them
    (`{"signature_def": {...}}`), read with TensorFlow's and TFS's own messages."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel.FromString(
        (Path(version_dir) / "saved_model.pb").read_bytes()
    )
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in saved.meta_graphs[0].signature_def.items():
        signature_map.signature_def[name].CopyFrom(signature)
    return json_format.MessageToDict(
        signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
