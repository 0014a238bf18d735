"""The tflite platform as the slim container image has it: ai-edge-litert, no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.support.testdata import REPO, TfsModels

# What the slim container image has: ai-edge-litert and no TensorFlow. A process that cannot
# import TensorFlow loads both TF Lite stand-ins through the router and runs them.
_WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # as if not installed: `import tensorflow` fails
import numpy as np
from servo.platforms import router
from servo.platforms.options import PlatformOptions
module = router.import_platform("tflite")
assert module.RUNTIME == "ai_edge_litert", module.RUNTIME
for path in sys.argv[1:]:
    servable = router.load_platform("tflite", path, PlatformOptions())
    sig = servable.signatures["serving_default"]
    y = servable.run(sig, {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})["y"]
    assert y.ravel().tolist() == [2.5, 3.0, 4.5], y
    servable.close()
loaded = sorted(n for n, m in sys.modules.items() if m and n.split(".")[0] == "tensorflow")
assert not loaded, loaded
print("served", len(sys.argv) - 1)
"""


def test_tflite_platform_runs_without_tensorflow(tfs_models: TfsModels) -> None:
    paths = [
        tfs_models.path(name, "00000123")
        for name in (
            "saved_model_half_plus_two_tflite",
            "saved_model_half_plus_two_tflite_with_sigdef",
        )
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WITHOUT_TENSORFLOW), *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served 2"
