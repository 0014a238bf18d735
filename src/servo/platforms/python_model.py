"""A Python model in this process: `model.py` imported under a name of its own, its `Model`
made and loaded, its calls run on the caller's thread (`PythonServable`).

The python platform (servo.platforms.python, which documents the `Model` interface) uses it
for `--python_model_isolation=thread`, and a worker process (servo.platforms.python_worker)
uses it for `process`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, parse, to_numpy
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    ModelServable,
    Signature,
    TensorSpec,
    check_inputs,
    check_outputs,
    unknown_signature,
    unloaded,
)

MODULE_FILE = "model.py"
CLASS_NAME = "Model"

_DEFAULT_SIGNATURES = {
    DEFAULT_SIGNATURE: Signature(
        DEFAULT_SIGNATURE,
        {"inputs": TensorSpec(DataType.DT_FLOAT, None, "inputs")},
        {"outputs": TensorSpec(DataType.DT_FLOAT, None, "outputs")},
    )
}
_import_lock = threading.Lock()
_module_count = 0


def _spec(where: str, alias: str, raw: Any) -> TensorSpec:
    if not isinstance(raw, Mapping) or "dtype" not in raw:
        raise ServoError(Code.INVALID_ARGUMENT, f"{where}: {alias!r} needs a dtype")
    try:
        dtype = parse(raw["dtype"])
        to_numpy(dtype)
    except (ValueError, ServoError) as exc:
        raise ServoError(Code.INVALID_ARGUMENT, f"{where}: {alias!r}: {exc}") from None
    shape = raw.get("shape")
    if shape is not None:
        if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and d >= -1 for d in shape
        ):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{where}: {alias!r}: a shape is a list of ints >= -1 (or null), got {shape!r}",
            )
        shape = tuple(shape)
    return TensorSpec(dtype, shape, str(raw.get("name", alias)))


def parse_signatures(raw: Any, where: str) -> dict[str, Signature]:
    """Signatures from the dict form the docstring above describes."""
    if not isinstance(raw, Mapping) or not raw:
        raise ServoError(Code.INVALID_ARGUMENT, f"{where}: signatures must be a non-empty dict")
    signatures = {}
    for name, sig in raw.items():
        if not isinstance(sig, Mapping):
            raise ServoError(Code.INVALID_ARGUMENT, f"{where}: signature {name!r} is not a dict")
        inputs = sig.get("inputs", {})
        outputs = sig.get("outputs", {})
        if not isinstance(inputs, Mapping) or not isinstance(outputs, Mapping) or not outputs:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{where}: signature {name!r} needs dicts 'inputs' and 'outputs' (non-empty)",
            )
        signatures[str(name)] = Signature(
            str(name),
            {str(k): _spec(f"{where}: {name}.inputs", k, v) for k, v in inputs.items()},
            {str(k): _spec(f"{where}: {name}.outputs", k, v) for k, v in outputs.items()},
            str(sig.get("method_name", PREDICT_METHOD)),
        )
    return signatures


def _import_model_module(path: str) -> Any:
    """Imports `path/model.py` under a name of its own, with `path` importable meanwhile."""
    global _module_count
    module_path = os.path.join(path, MODULE_FILE)
    if not os.path.isfile(module_path):
        raise ServoError(Code.NOT_FOUND, f"{path}: a python model needs {MODULE_FILE}")
    with _import_lock:
        _module_count += 1
        name = f"servo_python_model_{_module_count}"
        spec = importlib.util.spec_from_file_location(name, module_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        before = set(sys.modules)
        # Registered under its name while loaded, as dataclasses, pickle and typing expect.
        sys.modules[name] = module
        sys.path.insert(0, path)  # so model.py can import the helpers next to it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{module_path} failed to import: {type(exc).__name__}: {exc}",
            ) from exc
        finally:
            sys.path.remove(path)
            _forget_helpers(path, before, keep=name)
    return module


def _forget_helpers(path: str, before: set[str], keep: str) -> None:
    """Takes the modules an import loaded from `path` (the helpers next to model.py) out of
    `sys.modules`, so that another version's `import helper` reads its own helper.py; the
    model module keeps its references to them."""
    root = os.path.join(os.path.abspath(path), "")
    for key in set(sys.modules) - before:
        file = getattr(sys.modules.get(key), "__file__", None)
        if key != keep and file and os.path.abspath(file).startswith(root):
            del sys.modules[key]


class PythonServable(ModelServable):
    """Wraps a user's `Model` object.

    Thread-safety: `run` may be called from many threads; when the model sets
    `thread_safe = False`, calls to its `predict` are serialized.
    """

    platform = "python"
    may_run_inline = False  # user code: it may block, so it never runs on the event loop

    def __init__(
        self,
        path: str,
        model: Any,
        signatures: dict[str, Signature],
        module_name: str | None = None,
    ) -> None:
        self.path = path
        self._closed = False
        self._model = model
        self._module_name = module_name  # model.py's entry in sys.modules, dropped at close
        self._predict = model.predict
        self._signatures = signatures
        self._lock = None if getattr(model, "thread_safe", True) else threading.Lock()

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def model(self) -> Any:
        return self._model

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:  # the model's unload() ran: predict may find nothing to use
            raise unloaded(f"Python model {self.path}")
        own = self._signatures.get(signature.name)
        if own is None:
            raise unknown_signature(signature.name)
        check_inputs(own, inputs)
        check_outputs(own, output_names)
        signature = own
        try:
            if self._lock is None:
                result = self._predict(dict(inputs), signature.name)
            else:
                with self._lock:
                    result = self._predict(dict(inputs), signature.name)
        except ServoError:
            raise
        except Exception as exc:
            raise ServoError(
                Code.INTERNAL, f"Model.predict raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, Mapping):
            if len(signature.outputs) != 1:
                raise ServoError(
                    Code.INTERNAL,
                    f"Model.predict must return a dict for signature {signature.name!r}, "
                    "which has several outputs",
                )
            result = {next(iter(signature.outputs)): result}
        wanted = signature.outputs.keys() if output_names is None else output_names
        outputs = {}
        for alias in wanted:
            if alias not in result:
                raise ServoError(Code.INTERNAL, f"Model.predict did not return output {alias!r}")
            spec = signature.outputs[alias]
            outputs[alias] = _as_array(result[alias], spec.dtype)
        return outputs

    def close(self) -> None:
        """Calls the model's unload() once, however often it is called."""
        if self._closed:
            return
        self._closed = True
        try:
            unload = getattr(self._model, "unload", None)
            if callable(unload):
                unload()
        finally:
            if self._module_name is not None:
                sys.modules.pop(self._module_name, None)


def _as_array(value: Any, dtype: DataType) -> np.ndarray:
    array = np.asarray(value)
    if dtype == DataType.DT_STRING:
        if array.dtype != object:
            array = array.astype(object)
        return array
    return array.astype(to_numpy(dtype), copy=False)


def load_in_process(path: str, options: PlatformOptions) -> PythonServable:
    """Imports `model.py` from version directory `path`, makes its `Model` and loads it."""
    module = _import_model_module(path)
    try:
        return _make(module, path)
    except BaseException:
        sys.modules.pop(module.__name__, None)
        raise


def _make(module: Any, path: str) -> PythonServable:
    cls = getattr(module, CLASS_NAME, None)
    if not isinstance(cls, type):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"{os.path.join(path, MODULE_FILE)} must define a class named {CLASS_NAME}",
        )
    where = f"{os.path.join(path, MODULE_FILE)}: {CLASS_NAME}"
    try:
        model = cls()
        if not callable(getattr(model, "predict", None)):
            raise ServoError(Code.INVALID_ARGUMENT, f"{where} has no predict method")
        loader = getattr(model, "load", None)
        if callable(loader):
            loader(path)
    except ServoError:
        raise
    except Exception as exc:
        raise ServoError(
            Code.INTERNAL, f"{where} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    servable = PythonServable(path, model, _DEFAULT_SIGNATURES, module.__name__)
    try:
        raw = getattr(model, "signatures", None)
        if callable(raw):
            raw = raw()
        if raw is not None:
            signatures = parse_signatures(raw, where)
            servable = PythonServable(path, model, signatures, module.__name__)
    except BaseException:
        servable.close()  # load() succeeded: give back what it took
        raise
    return servable
