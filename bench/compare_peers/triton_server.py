"""Triton Inference Server on the ONNX MLP through PyTriton, for bench/compare.py: PyTriton
starts the `tritonserver` binary its wheel ships and binds the model to its Python backend,
which hands each (batch of) request(s) to the function below, in this process, where ONNX
Runtime runs at one intra-op thread; one model instance. With MAX_BATCH > 0 Triton's dynamic
batcher is on (dynamic_batching in the model's config.pbtxt, no queue delay), else requests
run one by one. Run with the interpreter of the bench's Triton venv (bench/.venvs/triton):

    python bench/compare_peers/triton_server.py MODEL.onnx WIDTH OUTPUTS HTTP GRPC METRICS MAX_BATCH
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    path, width, outputs, http, grpc, metrics, max_batch = sys.argv[1:8]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": session.run(None, {"x": x})[0]}

    batching = int(max_batch) > 0
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=int(http),
        grpc_address="127.0.0.1",
        grpc_port=int(grpc),
        metrics_address="127.0.0.1",
        metrics_port=int(metrics),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="mlp",
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(int(width),))],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(int(outputs),))],
            config=ModelConfig(
                max_batch_size=max(int(max_batch), 1),
                batcher=DynamicBatcher(max_queue_delay_microseconds=0) if batching else None,
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
