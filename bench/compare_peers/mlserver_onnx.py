"""MLServer's custom runtime for the ONNX MLP, for bench/compare.py (MLServer ships no ONNX
runtime of its own: this one calls ONNX Runtime at one intra-op thread). bench/compare.py
writes the settings that name it (`implementation: mlserver_onnx.OnnxModel`) and puts this
folder on the PYTHONPATH of `mlserver start`, run from the bench's MLServer venv."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        path = await get_model_uri(self._settings)
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        y = self._session.run(None, {self._input: x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
