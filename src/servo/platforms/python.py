"""The python platform: a model written as a Python class in the version directory.

**This runs the model directory's code as the server's user.** Serve only model directories
you trust as much as the server itself.

Where it runs is the model's isolation (`--python_model_isolation`, per model): `process` loads
and runs each version in a worker process of its own
(servo.platforms.python_worker: a crash or a hung call of the model's code fails its calls,
never the server); `thread` (the server's default) imports it into the server and runs it on
the server's threads
(servo.platforms.python_model; a library caller's `load` without the setting).

A version directory holds `model.py` (and any helper modules or data it needs). Helper modules
are importable while `model.py` is imported (import them at its top level) and each version
gets its own: two versions' `helper.py` never mix. `model.py` defines a class `Model`, made
with no arguments, with this interface:

    class Model:
        # Optional: the signatures, as a dict (or a method returning one). Without it, the
        # model has one signature, serving_default, with a DT_FLOAT input "inputs" and a
        # DT_FLOAT output "outputs", both of unknown shape.
        signatures = {
            "serving_default": {
                "inputs": {"x": {"dtype": "float32", "shape": [-1, 3]}},
                "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
                "method_name": "tensorflow/serving/predict",   # optional, the default
            },
        }
        # Optional: set to False and servo runs one predict at a time.
        thread_safe = True

        def load(self, path: str) -> None:          # optional: read weights from `path`
            ...

        def predict(self, inputs: dict[str, np.ndarray], signature_name: str
                    ) -> dict[str, np.ndarray]:     # required
            ...

        def unload(self) -> None:                   # optional: free what load() took
            ...

`predict` gets every input of the signature as a numpy array of its dtype (strings are object
arrays of bytes), of the signature's shape where it gives one (its rank, and its size in every
dim that is not -1), and returns a dict with every output of the signature (or, for a signature
with one output, the array itself). servo refuses any other call with INVALID_ARGUMENT before
`predict` runs: a signature the model does not have, a missing or extra input, another dtype or
shape, an output alias the signature does not have (ModelServable's contract).

An exception raised by `predict` becomes an INTERNAL error for that request; raise
`servo.core.status.ServoError` to choose the code (INVALID_ARGUMENT for bad inputs).

Dtypes are names such as "float32", "int64", "string", "bool" or TensorFlow's ("DT_FLOAT"); a
shape is a list with -1 for an unknown dim, or null for an unknown rank.
"""

from __future__ import annotations

import os

from servo.core.status import Code, ServoError
from servo.platforms.options import PlatformOptions
from servo.platforms.python_model import (
    CLASS_NAME,
    MODULE_FILE,
    PythonServable,
    load_in_process,
    parse_signatures,
)
from servo.platforms.python_worker import WorkerServable
from servo.platforms.servable import ModelServable

__all__ = [
    "CLASS_NAME",
    "ISOLATIONS",
    "ISOLATION_KEY",
    "MODULE_FILE",
    "PROCESS",
    "THREAD",
    "PythonServable",
    "WorkerServable",
    "isolation",
    "load",
    "load_in_process",
    "parse_signatures",
]

ISOLATION_KEY = "python_model_isolation"  # options.extra: "thread" / "process", per model
THREAD, PROCESS = "thread", "process"
ISOLATIONS = (THREAD, PROCESS)


def isolation(options: PlatformOptions) -> str:
    """Where `options.model_name`'s versions run: `options.extra[ISOLATION_KEY]` is a name
    from ISOLATIONS or a per-model setting (anything with `get(model_name)`); THREAD without
    it (a library caller's `load`)."""
    setting = options.extra.get(ISOLATION_KEY, THREAD)
    value = setting if isinstance(setting, str) else setting.get(options.model_name)
    if value not in ISOLATIONS:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"{ISOLATION_KEY} of model {options.model_name!r} is {value!r}; "
            f"expected one of {', '.join(ISOLATIONS)}",
        )
    return str(value)


def load(path: str, options: PlatformOptions) -> ModelServable:
    """Loads version directory `path`: in a worker process of its own when the model's
    isolation is PROCESS (servo.platforms.python_worker), else in this process."""
    if isolation(options) == PROCESS:
        if not os.path.isfile(os.path.join(path, MODULE_FILE)):
            raise ServoError(Code.NOT_FOUND, f"{path}: a python model needs {MODULE_FILE}")
        name = options.model_name or os.path.basename(os.path.dirname(os.path.abspath(path)))
        return WorkerServable.load(path, name)
    return load_in_process(path, options)
