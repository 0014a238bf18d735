"""Open Inference Protocol (KServe v2) against TFS's APIs: one servo, five ways, one run.

Writes the example ONNX MLP (16 float inputs -> 64 ReLU units -> 4 outputs), starts one servo
on it (REST and gRPC on loopback ports) and asks it for the same one-row prediction five ways,
in turns (the five, then the five again, ...) so that all see the same noise:

    tfs rest        POST /v1/models/mlp:predict, {"instances": [[16 floats]]}
    v2 rest json    POST /v2/models/mlp/infer, the input as JSON "data"
    v2 rest binary  the same with Triton's binary tensor extension: the JSON (its length in
                    Inference-Header-Content-Length), then the input's 64 raw float32 bytes;
                    the output asked for in binary too
    tfs grpc        tensorflow.serving.PredictionService/Predict
    v2 grpc         inference.GRPCInferenceService/ModelInfer, the input in raw_input_contents

The REST ways with wrk (16 connections, one thread, a warm-up and then a measured run), the gRPC
ways with bench/grpc_predict.py's load process (pre-serialized requests, 16 calls in flight).
Before measuring, each way is asked once for one row and once for a batch of 8, and every
answer must be what ONNX Runtime gives for the model here (float32 tolerance), or the bench
fails. Prints requests/s, p50/p99 latency and servo's CPU seconds (user + system, from /proc)
per 1,000 requests per round, and the medians over rounds. Every process it starts is stopped.
Needs wrk (Debian package `wrk`; `make bench` installs it).

    python bench/open_inference.py [--seconds 10] [--rounds 3] [--connections 16]
                                   [--also-servo OTHER_CHECKOUT/src ...]

`--also-servo` adds a servo run from another checkout's sources (one that has the v2 APIs) to
the same rounds, its five ways measured after this checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_predict import PREDICT, WARM_UP, load, wait_grpc
from rest_predict import (
    CPU,
    REPO,
    also_servo,
    free_port,
    other_servos,
    print_medians,
    print_round,
    process,
    wait_http,
    wrk,
)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
ROW = [0.1 * i for i in range(16)]  # the row of rest_predict.py's BODY
BATCH = [[round(0.37 * r - 0.05 * c, 2) for c in range(16)] for r in range(8)]
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT = {"Content-Type": "application/octet-stream"}
WAYS = ("tfs rest", "v2 rest json", "v2 rest binary", "tfs grpc", "v2 grpc")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
Rows = list[list[float]]


# -- the requests ------------------------------------------------------------------------------


def float32_bytes(rows: Rows) -> bytes:
    import numpy as np

    return np.asarray(rows, dtype="<f4").tobytes()


def tfs_rest_body(rows: Rows) -> bytes:
    return json.dumps({"instances": rows}).encode()


def v2_json_body(rows: Rows) -> bytes:
    tensor = {
        "name": "x",
        "shape": [len(rows), 16],
        "datatype": "FP32",
        "data": [v for row in rows for v in row],
    }
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary_body(rows: Rows) -> tuple[bytes, dict[str, str]]:
    """The body (the JSON, then the raw input) and the headers that give the JSON's length."""
    raw = float32_bytes(rows)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(rows), 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, {**BINARY_CONTENT, HEADER_LENGTH: str(len(header))}


def tfs_grpc_request(rows: Rows) -> bytes:
    import numpy as np

    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    from_ndarray(np.asarray(rows, dtype=np.float32), into=request.inputs["x"])
    return request.SerializeToString()


def v2_grpc_request(rows: Rows) -> bytes:
    from servo.protos import open_inference_pb2 as pb

    request = pb.ModelInferRequest(
        model_name="mlp",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[len(rows), 16])
        ],
        raw_input_contents=[float32_bytes(rows)],
    )
    return request.SerializeToString()


GRPC_WAYS: dict[str, tuple[str, Callable[[Rows], bytes]]] = {
    "tfs grpc": (PREDICT, tfs_grpc_request),
    "v2 grpc": (MODEL_INFER, v2_grpc_request),
}


# -- one servo and its five ways ---------------------------------------------------------------


@dataclass
class Servo:
    name: str
    rest_port: int
    grpc_port: int
    env: dict[str, str]
    pid: int = 0

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, way: str) -> str:
        base = f"http://127.0.0.1:{self.rest_port}"
        return base + ("/v1/models/mlp:predict" if way == "tfs rest" else "/v2/models/mlp/infer")

    def label(self, way: str) -> str:
        return way if self.name == "servo" else f"{self.name} {way}"


def rest_request(way: str, rows: Rows) -> tuple[bytes, dict[str, str]]:
    if way == "tfs rest":
        return tfs_rest_body(rows), {}
    if way == "v2 rest json":
        return v2_json_body(rows), {}
    return v2_binary_body(rows)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def ask(servo: Servo, way: str, rows: Rows) -> Any:
    """The model's output for `rows` asked `way`, as an array (shape checked by the caller)."""
    import grpc
    import numpy as np

    from servo.protos import open_inference_pb2, predict_pb2
    from servo.tensor_codec import to_ndarray

    if way in GRPC_WAYS:
        method, build = GRPC_WAYS[way]
        with grpc.insecure_channel(servo.grpc_target) as channel:
            out = channel.unary_unary(method)(build(rows), timeout=30)
        if way == "tfs grpc":
            return to_ndarray(predict_pb2.PredictResponse.FromString(out).outputs["y"])
        answer = open_inference_pb2.ModelInferResponse.FromString(out)
        (output,) = answer.outputs
        if (output.name, output.datatype) != ("y", "FP32"):
            raise AssertionError(f"{way}: output {output.name} {output.datatype}")
        return np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(tuple(output.shape))
    headers, body = post(servo.url(way), *rest_request(way, rows))
    if way == "tfs rest":
        return np.asarray(json.loads(body)["predictions"], dtype=np.float32)
    if way == "v2 rest json":
        (output,) = json.loads(body)["outputs"]
        if (output["name"], output["datatype"]) != ("y", "FP32"):
            raise AssertionError(f"{way}: output {output['name']} {output['datatype']}")
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    length = int(headers[HEADER_LENGTH.lower()])
    (output,) = json.loads(body[:length])["outputs"]
    raw = body[length:]
    if (output["name"], output["datatype"]) != ("y", "FP32") or output["parameters"] != {
        "binary_data_size": len(raw)
    }:
        raise AssertionError(f"{way}: output {output} with {len(raw)} bytes after the JSON")
    return np.frombuffer(raw, "<f4").reshape(output["shape"])


def check_answers(servos: list[Servo], model: Path) -> None:
    """Every way of every servo must answer what ONNX Runtime answers here, for one row and for
    a batch of 8 (raises AssertionError naming the first that does not)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for rows in ([ROW], BATCH):
        (expected,) = session.run(["y"], {"x": np.asarray(rows, dtype=np.float32)})
        for servo in servos:
            for way in WAYS:
                got = ask(servo, way, rows)
                if got.shape != expected.shape or not np.allclose(got, expected, **TOLERANCE):
                    raise AssertionError(
                        f"{servo.label(way)} answers {got.tolist()} for {len(rows)} row(s); "
                        f"ONNX Runtime gives {expected.tolist()}"
                    )
        print(f"checked: all {len(WAYS)} ways answer {len(rows)} row(s) as ONNX Runtime does")


# -- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(servo: Servo, way: str, seconds: int, concurrency: int) -> dict[str, float]:
    """One measured run; the servo's CPU time over it per 1,000 requests it answered."""
    before = cpu_seconds(servo.pid)
    if way in GRPC_WAYS:
        result = run_load(servo.grpc_target, way, seconds, concurrency)
        answered = result["requests"] + WARM_UP
    else:
        result = wrk(servo.url(way), seconds, concurrency, *rest_request(way, [ROW]))
        answered = result["requests"]
    result[CPU] = (cpu_seconds(servo.pid) - before) / answered * 1000
    if result["errors"]:
        raise RuntimeError(f"{servo.label(way)}: {result['errors']:.0f} requests failed")
    return result


def run_load(target: str, way: str, seconds: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            target,
            way,
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=seconds + 120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="and gRPC calls in flight")
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)  # internal: TARGET WAY
    parser.add_argument("--concurrency", type=int, default=16, help=argparse.SUPPRESS)
    also_servo(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.load:
        target, way = args.load
        method, build = GRPC_WAYS[way]
        body = build([ROW])
        print(json.dumps(asyncio.run(load(target, args.seconds, args.concurrency, body, method))))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="servo-bench-") as tmp:
        return bench(Path(tmp), args)


def bench(workdir: Path, args: argparse.Namespace) -> int:
    subprocess.run(
        [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", "mlp"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # This checkout's servo, whatever the interpreter has installed.
    servos = [Servo("servo", free_port(), free_port(), {"PYTHONPATH": str(REPO / "src")})]
    for name, env in other_servos(args.also_servo).items():
        servos.append(Servo(name, free_port(), free_port(), env))
    results: dict[str, list[dict[str, float]]] = {
        servo.label(way): [] for servo in servos for way in WAYS
    }
    with ExitStack() as stack:
        for servo in servos:
            command = [
                sys.executable,
                "-m",
                "servo",
                "serve",
                f"--port={servo.grpc_port}",
                f"--rest_api_port={servo.rest_port}",
                "--bind_address=127.0.0.1",
                "--model_name=mlp",
                f"--model_base_path={workdir / 'mlp'}",
                "--log_level=warning",
            ]
            servo.pid = stack.enter_context(process(command, servo.env)).pid
        for servo in servos:
            wait_http(servo.url("tfs rest"))
            wait_grpc(servo.grpc_target)
        check_answers(servos, workdir / "mlp" / "1" / "model.onnx")
        for servo in servos:
            for way in WAYS:
                if way not in GRPC_WAYS:  # the load process warms up by itself
                    wrk(servo.url(way), 2, args.connections, *rest_request(way, [ROW]))
        for round_ in range(args.rounds):
            for servo in servos:
                for way in WAYS:
                    result = measure(servo, way, args.seconds, args.connections)
                    results[servo.label(way)].append(result)
                    print_round(round_, servo.label(way), result)
    print_medians(
        results,
        f"{args.rounds} rounds, {args.connections} connections or calls in flight, "
        f"{args.seconds} s each, {os.cpu_count()} CPUs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
