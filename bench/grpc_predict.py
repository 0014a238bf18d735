"""gRPC Predict throughput: servo against a bare grpcio asyncio server, one run.

Writes the example ONNX MLP (16 float inputs), starts servo on it and a bare grpc.aio server
(the baseline: one generic Predict handler that parses the request, runs ONNX Runtime and
answers, nothing else) on loopback ports, and drives each from a separate load process with
16 calls in flight for a bounded time, in turns. The load process uses grpc.aio with
pre-serialized requests so that the client costs as little as possible. Prints calls/s and
p50/p99 per round and the medians. Every process it starts is stopped.

    python bench/grpc_predict.py [--seconds 10] [--rounds 2] [--concurrency 16]
                                 [--also-servo OTHER_CHECKOUT/src ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from rest_predict import (
    REPO,
    also_servo,
    free_port,
    other_servos,
    print_medians,
    print_round,
    process,
)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
WARM_UP = 200  # calls each load process makes before it measures


def request_bytes() -> bytes:
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np

    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    from_ndarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16), into=request.inputs["x"])
    return request.SerializeToString()


# -- the bare server (a process of its own) ---------------------------------------------------


async def bare_server(model: str, port: int) -> None:
    import grpc
    import numpy as np
    import onnxruntime as ort

    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray, to_ndarray

    # The session options servo uses by default (ONNX Runtime's own defaults).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    async def predict(request: predict_pb2.PredictRequest, context: object) -> bytes:
        x = to_ndarray(request.inputs["x"])
        y = session.run(None, {"x": x})[0]
        response = predict_pb2.PredictResponse()
        from_ndarray(np.asarray(y), into=response.outputs["y"])
        return response

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict,
                request_deserializer=predict_pb2.PredictRequest.FromString,
                response_serializer=predict_pb2.PredictResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- the load (a process of its own) ----------------------------------------------------------


async def load(
    target: str, seconds: float, concurrency: int, body: bytes, method: str = PREDICT
) -> dict[str, float]:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: no client-side protobuf
        for _ in range(WARM_UP):
            await call(body, timeout=10)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await call(body, timeout=10)
                    latencies.append(time.perf_counter() - started)
                except grpc.RpcError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "errors": float(errors),
        "requests": float(len(latencies)),
    }


def run_load(target: str, seconds: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            target,
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def wait_grpc(target: str, timeout: float = 120.0) -> None:
    import grpc

    body = request_bytes()
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT)
        while True:
            try:
                call(body, timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # polling a process that is starting up; not a measurement


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: be the load process
    parser.add_argument("--bare", nargs=2, help=argparse.SUPPRESS)  # internal: MODEL PORT
    also_servo(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.load:
        result = asyncio.run(load(args.load, args.seconds, args.concurrency, request_bytes()))
        print(json.dumps(result))
        return 0
    if args.bare:
        asyncio.run(bare_server(args.bare[0], int(args.bare[1])))
        return 0
    with tempfile.TemporaryDirectory(prefix="servo-bench-") as tmp:
        return bench(Path(tmp), args)


def bench(workdir: Path, args: argparse.Namespace) -> int:
    subprocess.run(
        [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", "mlp"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )

    def servo(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "servo",
            "serve",
            f"--port={port}",
            "--bind_address=127.0.0.1",
            "--model_name=mlp",
            f"--model_base_path={workdir / 'mlp'}",
            "--log_level=warning",
        ]

    servo_port, bare_port = free_port(), free_port()
    contenders: dict[str, tuple[list[str], dict[str, str], str]] = {
        "servo": (servo(servo_port), {}, f"127.0.0.1:{servo_port}"),
        "bare grpc.aio": (
            [
                sys.executable,
                __file__,
                "--bare",
                str(workdir / "mlp" / "1" / "model.onnx"),
                str(bare_port),
            ],
            {},
            f"127.0.0.1:{bare_port}",
        ),
    }
    for name, env in other_servos(args.also_servo).items():
        port = free_port()
        contenders[name] = (servo(port), env, f"127.0.0.1:{port}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    with ExitStack() as stack:
        for command, env, _ in contenders.values():
            stack.enter_context(process(command, env))
        for _, _, target in contenders.values():
            wait_grpc(target)
        for round_ in range(args.rounds):
            for name, (_, _, target) in contenders.items():
                result = run_load(target, args.seconds, args.concurrency)
                results[name].append(result)
                print_round(round_, name, result, "calls/s")
    print_medians(
        results,
        f"{args.rounds} rounds, {args.concurrency} calls in flight, {args.seconds} s each",
        "calls/s",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
