"""KServe's Python model server on the ONNX MLP, for bench/compare.py: its v1 protocol (TFS's
`{"instances": ...}`) and v2 (Open Inference Protocol) over REST, and v2 over gRPC, one
worker, ONNX Runtime at one intra-op thread. Run with the interpreter of the bench's KServe
venv (bench/.venvs/kserve):

    python bench/compare_peers/kserve_server.py MODEL.onnx HTTP_PORT GRPC_PORT
"""

from __future__ import annotations

import sys
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


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

    def predict(self, payload: Any, headers: dict | None = None) -> Any:
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            y = self.session.run(None, {self.input: x})[0]
            output = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
            output.set_data_from_numpy(y, binary_data=False)
            return InferResponse(
                model_name=self.name, infer_outputs=[output], response_id=payload.id or ""
            )
        x = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": self.session.run(None, {self.input: x})[0].tolist()}


if __name__ == "__main__":
    model = OnnxModel("mlp", sys.argv[1])
    model.load()
    kserve.ModelServer(
        http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), enable_grpc=True, workers=1
    ).start([model])
