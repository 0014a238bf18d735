"""A pipeline's cost over calling its steps directly: one servo, four ways, one run.

Writes the example composite as three served models into a temp dir: `vocab` (the example
lookup table, platform `lookup`: word -> id, unknown words -> -1, written by
scripts/make_example_models.py's `write_vocab`), `classifier` (ONNX: id -> an embedding row ->
the example MLP's layers, 16 -> 64 ReLU -> 4, built by the script's `mlp_model` -> softmax
"scores"; ONNX as in the README's composite, a lookup table feeding an ONNX model) and
`pipeline` (platform `pipeline`: vocab -> classifier, answering "scores"). One servo serves
the three (REST and gRPC on loopback ports), and the same request (six words) is answered
four ways, in turns (the four, then the four again, ...) so that all see the same noise:

    rest steps     a client's glue: POST /v1/models/vocab:predict, then the ids it answers
                   to /v1/models/classifier:predict (two calls, one after the other, on one
                   connection; the first answer decoded and re-encoded as a client would)
    rest pipeline  one POST /v1/models/pipeline:predict
    grpc steps     the same glue over tensorflow.serving.PredictionService/Predict (the
                   vocab's "ids" tensor copied into the classifier's request)
    grpc pipeline  one Predict of `pipeline`

A request of a "steps" way is the pair: its latency runs from the first call's start to the
second's answer, and its rate counts pairs. Every way is driven by one closed-loop client
here (a load process of its own: `--connections` asyncio tasks, each sending its sequence
and waiting for each answer before the next call, REST over one keep-alive HTTP/1.1
connection per task, gRPC over one channel). Neither wrk nor bench/grpc_predict.py's load
can do a dependent pair (they send one fixed request again and again: the second call's body
is the first's answer), so the single-call ways use the same client too, for the comparison
to be fair: the same client costs, on the same two CPUs, each way. Every final answer is
decoded and compared with the one expected (the pipeline's, which the steps' must equal).

Added latency (printed per protocol) = p50(pipeline) - p50(steps): what a client's request
takes longer (positive) or shorter (negative) when it calls the pipeline instead of gluing
the steps itself. It nets what the pipeline adds in the server (its steps' handles, the hop to
the thread pool: a pipeline never runs on the event loop, while steps this small, called
directly, soon run inline there) against what it saves (a second round trip: the ids encoded
into an answer, decoded and encoded again by the client, and a second request parsed,
routed and answered). It is taken per round (the two ways of one round saw the same noise) and the
median over rounds is printed, as are the differences in p99 and in servo's CPU per request.
With many connections the p50 is mostly queueing (about connections / rate); `--connections
1` gives the unloaded latency.

In-process overhead: `PipelineServable.run` against the two step servables' `run` one after
the other (the same outputs asked for; the same six words), no server: microseconds per
request, timed in batches of 200 calls, the two contenders' batches in turns for 2 s per
round (the median batch of each), and the added microseconds (the median of the paired
batches' differences). The steps are the loaded servables the pipeline runs, reached through
a fake `servables` callable (as in tests/platforms/test_pipeline.py) whose handles are made
once and cost next to nothing: this is the pipeline's own code (its handles taken and
released, the checks of its signature and of its steps', the feeds built), not the server
core's handle lookup.

Before measuring, the pipeline's answer must equal the direct steps' answer (exactly, per
protocol and in process) and what ONNX Runtime answers for the classifier here (float32
tolerance; for the six words and for a batch with unknown words), or the bench fails.
Prints requests/s, p50/p99 latency and servo's CPU seconds (user + system, from /proc) per
1,000 requests per round, the medians over rounds, the added latency and the in-process
figures. Every process it starts (servo and the load processes) is stopped by its PID.

    python bench/pipeline.py [--seconds 5] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from open_inference import cpu_seconds
from rest_predict import CPU, REPO, print_medians, print_round
from servo_process import Servo

PREDICT = "/tensorflow.serving.PredictionService/Predict"
WAYS = ("rest steps", "rest pipeline", "grpc steps", "grpc pipeline")
PAIRS = (("rest steps", "rest pipeline"), ("grpc steps", "grpc pipeline"))
WORDS = ["the", "servo", "server", "serves", "a", "model"]  # all in the vocabulary
CHECK_WORDS = ["tensor", "unknown", "flow", "servo", "", "model", "words", "a"]
EMBEDDING_WIDTH = 16
EMBEDDING_SEED = 20240613
WARM_UP = 1.0  # seconds each load process runs before it measures
IN_PROCESS_SECONDS = 2.0  # per round, the two contenders' batches in turns
IN_PROCESS_BATCH = 200  # calls timed together
RTOL, ATOL = 1e-5, 1e-6  # float32 against ONNX Runtime here
PIPELINE = {
    "steps": [
        {"name": "ids", "model": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "classes", "model": "classifier", "inputs": {"ids": "ids.ids"}},
    ],
    "outputs": {"scores": "classes.scores"},
}


# -- the models ----------------------------------------------------------------------------------


def example_script() -> ModuleType:
    """scripts/make_example_models.py as a module (scripts/ is not a package)."""
    name = "servo_make_example_models"
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "make_example_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def classifier_model(script: ModuleType) -> Any:
    """ids (int64 [batch]; -1 for unknown words) -> a row of an embedding table (row 0 for
    unknown) -> the example MLP's layers (16 -> 64 ReLU -> 4) -> softmax: "scores" [batch, 4]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = EMBEDDING_WIDTH
    mlp = script.mlp_model([width, 64, 4], script.MLP_SEED, input_name="row", output_name="logits")
    rows = len(script.VOCAB) + 1
    table = np.random.default_rng(EMBEDDING_SEED).standard_normal((rows, width))
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["ids", "one"], ["index"]),
            helper.make_node("Gather", ["table", "index"], ["row"], axis=0),
            *mlp.graph.node,
            helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
        ],
        "classifier",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            *mlp.graph.initializer,
            numpy_helper.from_array(table.astype(np.float32), "table"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
        ],
    )
    model = helper.make_model(
        graph,
        producer_name="servo-bench",
        opset_imports=[helper.make_opsetid("", script.ONNX_OPSET)],
    )
    model.ir_version = script.ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_models(workdir: Path) -> Path:
    """vocab/1, classifier/1 and pipeline/1 under `workdir`, and the models.config serving
    them (the steps first: a pipeline's load checks it against its steps); returns that."""
    script = example_script()
    script.write_vocab(workdir / "vocab")
    (workdir / "classifier" / "1").mkdir(parents=True)
    model = classifier_model(script)
    (workdir / "classifier" / "1" / "model.onnx").write_bytes(model.SerializeToString())
    (workdir / "pipeline" / "1").mkdir(parents=True)
    (workdir / "pipeline" / "1" / "pipeline.json").write_text(json.dumps(PIPELINE))
    models = (("vocab", "lookup"), ("classifier", "onnx"), ("pipeline", "pipeline"))
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{workdir / name}" '
        f'model_platform: "{platform}" }}\n'
        for name, platform in models
    )
    config = workdir / "models.config"
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    return config


# -- the requests --------------------------------------------------------------------------------


def rest_body(instances: Sequence[Any]) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


def grpc_request(model: str, words: Sequence[str]) -> bytes:
    import numpy as np

    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    alias = "keys" if model == "vocab" else "text"  # the lookup table's input, the pipeline's
    from_ndarray(np.array([w.encode() for w in words], dtype=object), into=request.inputs[alias])
    return request.SerializeToString()


def glue_request(vocab_answer: Any) -> bytes:
    """The classifier's gRPC request made from the vocab's answer (its "ids" tensor)."""
    from servo.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "classifier"
    request.inputs["ids"].CopyFrom(vocab_answer.outputs["ids"])
    return request.SerializeToString()


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`: POSTs JSON, reads answers
    with a Content-Length (the client as light as it can be, as wrk is)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"an answer without a Content-Length: {head!r}")
        answer = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"{path}: {head.splitlines()[0]!r} {answer[:200]!r}")
        return answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- the load (a process of its own) -------------------------------------------------------------


async def load(
    rest_port: int, grpc_target: str, way: str, seconds: float, concurrency: int
) -> dict[str, float]:
    """`concurrency` closed-loop clients doing `way` for WARM_UP s, then for `seconds` s
    measured; prints "measuring" when the measured part starts (the parent reads servo's CPU
    then) and returns the rate, p50/p99 of the requests (pairs) and the errors."""
    import grpc

    from servo.protos import predict_pb2

    expected: Any = None
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        call = channel.unary_unary(PREDICT)  # bytes in, bytes out
        vocab_grpc, pipeline_grpc = grpc_request("vocab", WORDS), grpc_request("pipeline", WORDS)
        words = rest_body(WORDS)

        async def rest_steps(http: Http) -> Any:
            ids = json.loads(await http.post("/v1/models/vocab:predict", words))["predictions"]
            answer = await http.post("/v1/models/classifier:predict", rest_body(ids))
            return json.loads(answer)["predictions"]

        async def rest_pipeline(http: Http) -> Any:
            answer = await http.post("/v1/models/pipeline:predict", words)
            return json.loads(answer)["predictions"]

        async def grpc_steps(http: Http) -> Any:
            ids = predict_pb2.PredictResponse.FromString(await call(vocab_grpc, timeout=30))
            answer = await call(glue_request(ids), timeout=30)
            return predict_pb2.PredictResponse.FromString(answer).outputs["scores"]

        async def grpc_pipeline(http: Http) -> Any:
            answer = await call(pipeline_grpc, timeout=30)
            return predict_pb2.PredictResponse.FromString(answer).outputs["scores"]

        sends = {
            "rest steps": rest_steps,
            "rest pipeline": rest_pipeline,
            "grpc steps": grpc_steps,
            "grpc pipeline": grpc_pipeline,
        }
        send = sends[way]
        # The answer every request must get: the pipeline's, which the steps' must equal.
        (other,) = (o for pair in PAIRS if way in pair for o in pair if o != way)
        http = Http(rest_port)
        try:
            expected, also = await send(http), await sends[other](http)
        finally:
            http.close()
        if expected != also:
            raise AssertionError(f"{way} answers {expected}; {other} {also}")
        measuring = asyncio.Event()

        async def client() -> None:
            nonlocal errors
            http = Http(rest_port)
            try:
                while not measuring.is_set():
                    await send(http)
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        ok = await send(http) == expected
                    except (OSError, RuntimeError, ValueError, KeyError, grpc.RpcError):
                        ok = False
                        http.close()
                        http = Http(rest_port)
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1
            finally:
                http.close()

        deadline = float("inf")
        clients = [asyncio.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(WARM_UP)
        print("measuring", flush=True)
        started = time.perf_counter()
        deadline = started + seconds
        measuring.set()
        await asyncio.gather(*clients)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "errors": float(errors),
        "requests": float(len(latencies)),
    }


class LoadProcess:
    """`python bench/pipeline.py --load ...`, stopped by its PID when left."""

    def __init__(self, servo: Servo, way: str, seconds: int, concurrency: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--load",
                str(servo.rest_port),
                servo.grpc_target,
                way,
                "--seconds",
                str(seconds),
                "--connections",
                str(concurrency),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.timeout = seconds + WARM_UP + 120

    def line(self) -> str:
        assert self.process.stdout is not None
        text = self.process.stdout.readline()
        if not text:
            self.process.wait(self.timeout)
            raise RuntimeError(f"the load process exited ({self.process.returncode})")
        return text.strip()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None and kind is not None:
            self.process.kill()
        self.process.wait(self.timeout)
        assert self.process.stdout is not None
        self.process.stdout.close()


def measure(servo: Servo, way: str, seconds: int, concurrency: int) -> dict[str, float]:
    """One measured run; servo's CPU time over it per 1,000 requests (pairs) answered."""
    with LoadProcess(servo, way, seconds, concurrency) as load_process:
        if load_process.line() != "measuring":
            raise RuntimeError(f"{way}: the load process did not start measuring")
        before = cpu_seconds(servo.pid)
        result: dict[str, float] = json.loads(load_process.line())
        result[CPU] = (cpu_seconds(servo.pid) - before) / result["requests"] * 1000
    if result["errors"]:
        raise RuntimeError(f"{way}: {result['errors']:.0f} requests failed or answered wrong")
    return result


# -- answers checked before measuring --------------------------------------------------------------


def ask(servo: Servo, way: str, words: Sequence[str]) -> Any:
    """The scores for `words` asked `way`, as a float32 array."""
    import grpc
    import numpy as np

    from servo.protos import predict_pb2
    from servo.tensor_codec import to_ndarray

    if way.startswith("grpc"):
        with grpc.insecure_channel(servo.grpc_target) as channel:
            call = channel.unary_unary(PREDICT)
            if way == "grpc steps":
                ids = predict_pb2.PredictResponse.FromString(
                    call(grpc_request("vocab", words), timeout=30)
                )
                out = call(glue_request(ids), timeout=30)
            else:
                out = call(grpc_request("pipeline", words), timeout=30)
        return to_ndarray(predict_pb2.PredictResponse.FromString(out).outputs["scores"])

    def post(model: str, instances: Sequence[Any]) -> Any:
        request = urllib.request.Request(
            f"{servo.rest}/v1/models/{model}:predict",
            data=rest_body(instances),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["predictions"]

    if way == "rest steps":
        scores = post("classifier", post("vocab", words))
    else:
        scores = post("pipeline", words)
    return np.asarray(scores, dtype=np.float32)


def check_answers(servo: Servo, steps: Steps) -> None:
    """For WORDS and CHECK_WORDS: the pipeline's scores equal the steps' (exactly, per
    protocol), and are what ONNX Runtime computes here (float32 tolerance); raises
    AssertionError naming the first way that differs."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(steps.classifier_path), providers=["CPUExecutionProvider"])
    for words in (WORDS, CHECK_WORDS):
        ids = np.array([steps.vocabulary.get(w, -1) for w in words], dtype=np.int64)
        (expected,) = session.run(["scores"], {"ids": ids})
        got = {way: ask(servo, way, words) for way in WAYS}
        for steps_way, pipeline_way in PAIRS:
            if not np.array_equal(got[steps_way], got[pipeline_way]):
                raise AssertionError(
                    f"{pipeline_way} answers {got[pipeline_way].tolist()} for {words}; "
                    f"{steps_way} {got[steps_way].tolist()}"
                )
        for way, scores in got.items():
            if scores.shape != expected.shape or not np.allclose(
                scores, expected, rtol=RTOL, atol=ATOL
            ):
                raise AssertionError(
                    f"{way} answers {scores.tolist()} for {words}; ONNX Runtime gives "
                    f"{expected.tolist()}"
                )
        print(
            f"checked: {len(words)} words: the pipeline answers as the steps do "
            f"(REST, gRPC), and as ONNX Runtime does",
            flush=True,
        )


# -- in process ----------------------------------------------------------------------------------


class Handle:
    """A held servable, as the server core's handles are (`.id`, `.servable`, a context);
    made once per step and given out again, so that it costs the pipeline next to nothing."""

    def __init__(self, id: Any, servable: Any) -> None:
        self.id = id
        self.servable = servable

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Steps:
    """The two steps and the pipeline loaded in this process, from the models on disk."""

    def __init__(self, workdir: Path) -> None:
        from servo.core.servable_id import ServableId
        from servo.platforms import lookup, onnx, pipeline
        from servo.platforms.options import PlatformOptions

        self.classifier_path = workdir / "classifier" / "1" / "model.onnx"
        lines = (workdir / "vocab" / "1" / "vocab.txt").read_text(encoding="utf-8")
        self.vocabulary = {word: i for i, word in enumerate(lines.splitlines())}
        self.vocab = lookup.load(str(workdir / "vocab" / "1"), PlatformOptions())
        self.classifier = onnx.load(str(workdir / "classifier" / "1"), PlatformOptions())
        handles = {
            name: Handle(ServableId(name, 1), servable)
            for name, servable in (("vocab", self.vocab), ("classifier", self.classifier))
        }

        def servables(name: str, version: int | None, label: str | None) -> Handle:
            return handles[name]

        self.pipeline = pipeline.load(
            str(workdir / "pipeline" / "1"), PlatformOptions(servables=servables)
        )

    def contenders(self, words: Sequence[str]) -> dict[str, Callable[[], Any]]:
        """The direct steps and the pipeline, each a call answering the scores for `words`."""
        import numpy as np

        keys = {"text": np.array([w.encode() for w in words], dtype=object)}
        vocab, classifier, pipeline = self.vocab, self.classifier, self.pipeline
        vocab_signature = vocab.signatures["serving_default"]
        classifier_signature = classifier.signatures["serving_default"]
        pipeline_signature = pipeline.signatures["serving_default"]
        ids_only, scores_only = ("ids",), ("scores",)  # what the pipeline asks its steps for

        def direct() -> Any:
            ids = vocab.run(vocab_signature, {"keys": keys["text"]}, ids_only)["ids"]
            return classifier.run(classifier_signature, {"ids": ids}, scores_only)["scores"]

        def piped() -> Any:
            return pipeline.run(pipeline_signature, keys)["scores"]

        return {"direct steps": direct, "pipeline": piped}


def in_process(steps: Steps, rounds: int) -> dict[str, float]:
    """Microseconds per request of the direct steps and of the pipeline, and the pipeline's
    added microseconds: each round alternates batches of the two for IN_PROCESS_SECONDS
    (so that both see the same noise) and takes the median batch of each and the median of
    the paired differences; printed per round, the medians over rounds returned. The
    pipeline's answer is checked against the steps' first."""
    import numpy as np

    for words in (WORDS, CHECK_WORDS):
        answers = {name: run() for name, run in steps.contenders(words).items()}
        if not np.array_equal(answers["direct steps"], answers["pipeline"]):
            raise AssertionError(f"in process, the pipeline answers otherwise for {words}")
    contenders = steps.contenders(WORDS)
    results: dict[str, list[float]] = {**{name: [] for name in contenders}, "added": []}
    for round_ in range(rounds):
        batches: dict[str, list[float]] = {name: [] for name in contenders}
        end = time.perf_counter() + IN_PROCESS_SECONDS
        while time.perf_counter() < end:
            for name, run in contenders.items():
                started = time.perf_counter()
                for _ in range(IN_PROCESS_BATCH):
                    run()
                batches[name].append((time.perf_counter() - started) / IN_PROCESS_BATCH * 1e6)
        for name, times in batches.items():
            results[name].append(statistics.median(times))
        results["added"].append(
            statistics.median(
                p - d for d, p in zip(batches["direct steps"], batches["pipeline"], strict=True)
            )
        )
        line = "  ".join(f"{name} {us[-1]:.1f} us" for name, us in results.items())
        print(f"round {round_ + 1} in process  {line}", flush=True)
    return {name: statistics.median(us) for name, us in results.items()}


# -- the run -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8, help="clients, each closed-loop")
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)  # internal: REST GRPC WAY
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.load:
        rest_port, target, way = args.load
        result = asyncio.run(load(int(rest_port), target, way, args.seconds, args.connections))
        print(json.dumps(result), flush=True)
        return 0
    # This checkout's servo, whatever the interpreter has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryDirectory(prefix="servo-bench-") as tmp:
        return bench(Path(tmp), args)


def bench(workdir: Path, args: argparse.Namespace) -> int:
    config = write_models(workdir)
    steps = Steps(workdir)
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with Servo([f"--model_config_file={config}"], log=workdir / "servo.log") as servo:
        for model in ("vocab", "classifier", "pipeline"):
            servo.wait_state(model, 1, "AVAILABLE")
        check_answers(servo, steps)
        for round_ in range(args.rounds):
            for way in WAYS:
                result = measure(servo, way, args.seconds, args.connections)
                results[way].append(result)
                print_round(round_, way, result)
    in_process_us = in_process(steps, args.rounds)
    print_medians(
        results,
        f"{args.rounds} rounds, {args.connections} closed-loop clients, {args.seconds} s each, "
        f"{os.cpu_count()} CPUs; a steps request is the pair of calls",
    )
    print("\nthe pipeline over the steps (pipeline - steps, per round, median over rounds):")
    for steps_way, pipeline_way in PAIRS:

        def added(key: str, s: str = steps_way, p: str = pipeline_way) -> float:
            return statistics.median(
                pr[key] - sr[key] for sr, pr in zip(results[s], results[p], strict=True)
            )

        rate = statistics.median(
            pr["rps"] / sr["rps"]
            for sr, pr in zip(results[steps_way], results[pipeline_way], strict=True)
        )
        print(
            f"  {pipeline_way.split()[0]:5s} added latency p50 {added('p50_ms'):+.2f} ms  "
            f"p99 {added('p99_ms'):+.2f} ms  servo cpu {added(CPU):+.3f} s/1k req  "
            f"rate x{rate:.2f}"
        )
    print(
        f"  in process: pipeline {in_process_us['pipeline']:.1f} us, direct steps "
        f"{in_process_us['direct steps']:.1f} us per request: added "
        f"{in_process_us['added']:+.1f} us (median of {args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
