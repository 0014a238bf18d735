"""The op libraries TFS links into its binary, as servo brings them (servo.platforms.tensorflow's
OP_LIBRARIES): a SavedModel using their ops loads where the package is installed, and fails
naming the op and the extra where it is not. Where a package must be missing, a fresh Python
process hides it (`sys.modules[name] = None`, the import then failing as an absent package's
does) before TensorFlow has registered its ops; the test process itself has them all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import tensorflow as tfp
from servo.platforms.options import PlatformOptions
from tests.support.testdata import REPO, TfsModels


@pytest.fixture(scope="module")
def example_models(tmp_path_factory: pytest.TempPathFactory, example_script: ModuleType) -> Path:
    """The example repository's models that use op libraries, as the script writes them."""
    out = tmp_path_factory.mktemp("op-models")
    only = ["--only", "whitespace_tokenizer", "--only", "decision_forest"]
    assert example_script.main([str(out), *only]) == 0
    return out


def run_python(code: str) -> dict:
    """Runs `code` in a fresh interpreter that imports servo from this checkout; the JSON
    object it prints last."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


LOAD_AND_REPORT = """
    import json, logging
    logged = []
    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())
    logging.getLogger("servo").addHandler(Keep())
    from servo.core.status import ServoError
    from servo.platforms import tensorflow as tfp
    from servo.platforms.options import PlatformOptions
    try:
        tfp.load({path!r}, PlatformOptions()).close()
        print(json.dumps({{"loaded": True, "logged": logged}}))
    except ServoError as exc:
        print(json.dumps({{"code": exc.code.name, "message": exc.message, "logged": logged}}))
"""


def test_a_tf_text_saved_model_tokenizes(example_models: Path) -> None:
    servable = tfp.load(str(example_models / "whitespace_tokenizer" / "1"), PlatformOptions())
    try:
        sig = servable.signatures["serving_default"]
        assert {k: (v.dtype, v.shape) for k, v in sig.inputs.items()} == {
            "text": (DataType.DT_STRING, (-1,))
        }
        assert {k: (v.dtype, v.shape) for k, v in sig.outputs.items()} == {
            "tokens": (DataType.DT_STRING, (-1, -1)),
            "lengths": (DataType.DT_INT64, (-1,)),
        }
        texts = np.array([b"a model server", b" servo  serves\t", b""], dtype=object)
        out = servable.run(sig, {"text": texts})
    finally:
        servable.close()
    assert out["tokens"].tolist() == [
        [b"a", b"model", b"server"],
        [b"servo", b"serves", b""],
        [b"", b"", b""],
    ]
    assert out["lengths"].tolist() == [3, 2, 0]


def test_a_decision_forest_saved_model_answers_as_tensorflow_does(example_models: Path) -> None:
    import tensorflow as tf

    path = str(example_models / "decision_forest" / "1")
    x1 = np.array([0.9, 0.1, 0.5, 0.6, 0.3], dtype=np.float32)
    x2 = np.array([0.8, 0.2, 0.4, 0.6, 0.9], dtype=np.float32)
    servable = tfp.load(path, PlatformOptions())
    try:
        sig = servable.signatures["serving_default"]
        assert {k: (v.dtype, v.shape) for k, v in sig.inputs.items()} == {
            "x1": (DataType.DT_FLOAT, (-1,)),
            "x2": (DataType.DT_FLOAT, (-1,)),
        }
        assert {k: (v.dtype, v.shape) for k, v in sig.outputs.items()} == {
            "output": (DataType.DT_FLOAT, (-1,))
        }
        out = servable.run(sig, {"x1": x1, "x2": x2})["output"]
    finally:
        servable.close()
    # TensorFlow's own loader (TF2's object API, the ops registered by ydf_tf) agrees.
    expected = tf.saved_model.load(path).signatures["serving_default"](
        x1=tf.constant(x1), x2=tf.constant(x2)
    )["output"]
    np.testing.assert_array_equal(out, expected.numpy())
    assert out[0] > 0.9 and out[1] < 0.1  # far from the boundary x1 + x2 = 1, the forest is sure


@pytest.mark.parametrize(
    ("model", "module", "op", "package", "extra", "what"),
    [
        (
            "whitespace_tokenizer",
            "tensorflow_text",
            "TFText>WhitespaceTokenizeWithOffsetsV2",
            "tensorflow-text",
            "text",
            "TF Text",
        ),
        (
            "decision_forest",
            "ydf_tf",
            "SimpleMLCreateModelResource",
            "ydf-tf",
            "decision-forests",
            "TensorFlow Decision Forests",
        ),
    ],
)
def test_a_missing_op_library_fails_naming_the_op_and_the_extra(
    example_models: Path, model: str, module: str, op: str, package: str, extra: str, what: str
) -> None:
    path = str(example_models / model / "1")
    code = f"import sys; sys.modules[{module!r}] = None\n" + textwrap.dedent(
        LOAD_AND_REPORT.format(path=path)
    )
    report = run_python(code)
    assert report["code"] == "FAILED_PRECONDITION"
    assert report["message"] == (
        f"Failed to load SavedModel at {path}: it uses op {op}, one of the {what} ops, and "
        f"{package} is not installed: pip install 'servo-model-server[{extra}]' ({package}) "
        f"to serve models using {what} ops"
    )
    assert report["logged"] == []  # a package that is not installed is no warning


def test_an_installed_library_that_cannot_load_is_named(
    example_models: Path, tmp_path: Path
) -> None:
    # A build for another TensorFlow fails in tf.load_op_library with NotFoundError ("undefined
    # symbol", as tensorflow-decision-forests 1.12's does under TensorFlow 2.21): a stand-in
    # package raises that error the same way.
    stub = tmp_path / "site" / "tensorflow_text"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "import tensorflow as tf\n"
        "why = '_whitespace_tokenizer_v2.so: undefined symbol'\n"
        "raise tf.errors.NotFoundError(None, None, why)\n"
    )
    path = str(example_models / "whitespace_tokenizer" / "1")
    code = f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r})\n" + textwrap.dedent(
        LOAD_AND_REPORT.format(path=path)
    )
    report = run_python(code)
    assert report["code"] == "FAILED_PRECONDITION"
    assert report["message"] == (
        f"Failed to load SavedModel at {path}: it uses op TFText>WhitespaceTokenizeWithOffsetsV2, "
        "one of the TF Text ops, and tensorflow-text is installed but could not be loaded "
        "(NotFoundError: _whitespace_tokenizer_v2.so: undefined symbol): "
        "pip install 'servo-model-server[text]' (tensorflow-text) to serve models using TF Text ops"
    )
    assert report["logged"] == [
        "tensorflow-text is installed but its ops could not be registered; SavedModels using "
        "TF Text ops will not load: NotFoundError: _whitespace_tokenizer_v2.so: undefined symbol"
    ]


def test_an_op_of_no_known_library_keeps_tensorflows_error(
    tmp_path: Path, tfs_models: TfsModels
) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    version = tmp_path / "1"
    shutil.copytree(tfs_models.path("saved_model_half_plus_two_cpu", "00000123"), version)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version / "saved_model.pb").read_bytes())
    node = next(n for n in saved.meta_graphs[0].graph_def.node if n.op == "Mul")
    node.op = "ServoNoSuchOp"
    (version / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ServoError) as err:
        tfp.load(str(version), PlatformOptions())
    assert err.value.code == Code.NOT_FOUND  # TensorFlow's code, as TFS reports it
    assert err.value.message.startswith(
        f"Failed to load SavedModel at {version}: Op type not registered 'ServoNoSuchOp'"
    )


def test_the_op_lists_are_what_the_libraries_register() -> None:
    # Every op that importing a library registers is one OP_LIBRARIES attributes to it, and
    # every op it lists by name is registered: the lists are those of the versions installed.
    modules = [library.module for library in tfp.OP_LIBRARIES]
    report = run_python(
        f"""
        import importlib, json
        import tensorflow as tf
        from tensorflow.core.framework import op_def_pb2
        from tensorflow.python.client import pywrap_tf_session as c

        def registered():
            ops = op_def_pb2.OpList()
            ops.ParseFromString(c.TF_GetBuffer(c.TF_GetAllOpList()))
            return {{op.name for op in ops.op}}

        found = {{}}
        for module in {modules!r}:
            before = registered()
            importlib.import_module(module)
            found[module] = sorted(registered() - before)
        print(json.dumps(found))
        """
    )
    for library in tfp.OP_LIBRARIES:
        ops = report[library.module]
        assert ops, library.module
        assert [op for op in ops if not library.has(op)] == []
        assert sorted(library.ops - set(ops)) == []
