"""The KServe contender of bench/rest_predict.py: KServe's Python model server (its v1
protocol is TFS's `{"instances": ...}` -> `{"predictions": ...}`) running the same ONNX model
with ONNX Runtime. KServe is not a dependency of servo: run this with an interpreter that has
`kserve` and `onnxruntime` installed (bench/rest_predict.py --kserve-python PATH).

    python bench/kserve_model.py MODEL.onnx PORT
"""

from __future__ import annotations

import sys

import kserve
import numpy as np
import onnxruntime as ort


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.ready = False

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = self.session.run(None, {self.input: x})[0]
        return {"predictions": y.tolist()}


if __name__ == "__main__":
    model = OnnxModel("mlp", sys.argv[1])
    model.load()
    kserve.ModelServer(http_port=int(sys.argv[2]), grpc_port=0, workers=1).start([model])
