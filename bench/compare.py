"""servo against the other model servers and the bare ceilings, on one model, in one run.

Writes the example ONNX MLP (16 -> 64 -> 4; with --batching the large one, 512 -> 4 x 2048
-> 10) and serves it, on loopback ports, with ONNX Runtime at one intra-op thread and one
worker everywhere, by:

    servo     REST (TFS's predict route and v2 infer), gRPC (TFS Predict and v2 ModelInfer)
    servo-w2  the same with --workers=2 (two server processes sharing the ports)
    kserve    KServe's Python model server (REST v1 and v2, gRPC v2)
    mlserver  MLServer with a custom runtime calling ONNX Runtime (REST and gRPC v2)
    triton    Triton through PyTriton (its Python backend; REST and gRPC v2)
    granian   the bare RSGI app of bench/bare_asgi.py on granian (REST, TFS's JSON)
    uvicorn   the bare ASGI app of bench/bare_asgi.py on uvicorn (REST, TFS's JSON)
    grpc-aio  a bare grpc.aio server doing the same work (gRPC TFS Predict)
    grpc-sync the same on grpcio's thread-pool server (one worker thread runs the calls)
    grpclib   the same on grpclib (asyncio over the h2 package, no C core)

The peers are installed into venvs of their own under bench/.venvs/ when missing (pinned
versions, PEERS below). Before measuring, every endpoint is asked once and its answer must be
what ONNX Runtime, called here, gives for the same input (allclose); a server that answers
wrong, or does not start, is not measured and its row says why. REST is driven by wrk, gRPC by
h2load (a raw length-prefixed gRPC body), with --connections connections, server after server
in each round so that all see the same drift of the machine. Per endpoint: requests/s, p50 and
p99 latency, server CPU seconds per 1,000 requests (utime + stime of the server's process and
its descendants, from /proc), the load generator's CPU seconds per 1,000 requests (wrk's or
h2load's, from its rusage), how busy the machine's CPUs were over the run (from /proc/stat)
and the server's peak RSS (VmHWM summed over its processes), medians over rounds, and the
ratio of requests/s to servo's on the same protocol. Server and load generator share the
CPUs: with the CPUs all busy, N CPUs / (server + load CPU per request) is the rate the machine
allows at those costs, and a target rate above it needs a cheaper server. Prints the
table and writes it as Markdown and a bar chart (PNG) into bench/results/. Every process it
starts is stopped by its PID, on errors and Ctrl-C too.

    python bench/compare.py [--servers servo,kserve,...] [--seconds 10] [--rounds 3]
                            [--connections 16] [--batching] [--port-base N]

--batching: the large MLP at 64 connections, with each server's own dynamic batching on
(servo's --enable_batching, Triton's dynamic_batching, MLServer's adaptive batching; KServe's
Python server has none and runs without). --port-base: the ports from N on instead of free
ones the system picks; a port in use is refused, never shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
PEERS_DIR = BENCH / "compare_peers"
# The peers and their pins; the same ONNX Runtime as servo's venv, so that every
# server runs the model with the same library.
ONNXRUNTIME = "onnxruntime==1.32.0"
NUMPY = "numpy"
PEERS: dict[str, list[str]] = {
    "kserve": ["kserve==0.21.0"],
    # uvloop 0.21 on raises where MLServer 1.7.1's inference workers ask for an event loop.
    "mlserver": ["mlserver==1.7.1", "uvloop<0.21"],
    "triton": ["nvidia-pytriton==0.7.0"],
}
BARE_GRPC = ("grpc-aio", "grpc-sync", "grpclib")
ALL_SERVERS = (
    "servo",
    "servo-w2",
    "kserve",
    "mlserver",
    "triton",
    "granian",
    "uvicorn",
    *BARE_GRPC,
)
BATCHING_SERVERS = ("servo", "kserve", "mlserver", "triton")
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
# Batching: servo's parameters are bench/batching.py's; the peers get the same batch size and
# their shortest wait for a batch to fill.
MAX_BATCH = 32
SERVO_BATCHING = f"""\
max_batch_size {{ value: {MAX_BATCH} }}
batch_timeout_micros {{ value: 0 }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: 1 }}
"""
MLSERVER_BATCH_TIME = 0.001  # seconds; MLServer's adaptive batching waits at most this long


class PortBusy(RuntimeError):
    """A port the bench was to start a server on is already in use."""


@dataclass(frozen=True)
class Model:
    example: str  # its name in scripts/make_example_models.py
    width: int
    outputs: int

    def row(self) -> list[float]:
        """The one input row every server is asked for."""
        step = 0.1 if self.width <= 16 else 0.001
        return [round(step * i, 3) for i in range(self.width)]


SMALL = Model("mlp", 16, 4)
LARGE = Model("mlp_large", 512, 10)


@dataclass
class Endpoint:
    protocol: str  # "REST tfs", "REST v2", "gRPC tfs", "gRPC v2"
    address: str  # a URL for REST, host:port for gRPC

    @property
    def grpc(self) -> bool:
        return self.protocol.startswith("gRPC")


@dataclass
class Server:
    name: str
    command: list[str]
    ports: list[int]
    endpoints: list[Endpoint]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    skip: str = ""  # why it is not measured
    pid: int = 0
    peak_rss_mb: float = 0.0


@dataclass
class Row:
    server: str
    protocol: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_s_per_1k: float | None = None
    load_cpu_s_per_1k: float | None = None
    busy: float | None = None  # the share of every CPU's time busy over the run
    rss_mb: float | None = None
    ratio: float | None = None
    note: str = ""


# -- ports and processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_free(port: int) -> None:
    """Raises PortBusy unless nothing listens on 127.0.0.1:`port` and it can be bound."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise PortBusy(f"port {port} is in use: refusing to start a server on it")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortBusy(f"port {port} is in use: refusing to start a server on it") from exc


class Ports:
    """Ports for the servers: from `base` on (each checked free) or, with base 0, free ones."""

    def __init__(self, base: int = 0) -> None:
        self.next = base

    def take(self) -> int:
        if not self.next:
            return free_port()
        port, self.next = self.next, self.next + 1
        check_free(port)
        return port


def children(pid: int) -> list[int]:
    """Every living descendant of `pid` (from /proc/*/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its living descendants, and of those they have waited for."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User and system CPU of this process's children that ended and were waited for (the
    load generators: the servers are still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_ticks(stat: str | None = None) -> tuple[int, int]:
    """(busy, total) ticks of every CPU since boot, from /proc/stat's `cpu` line: idle and
    iowait are not busy; guest time is already in user time and is not counted twice."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    line = next(row for row in text.splitlines() if row.startswith("cpu "))
    ticks = [int(field) for field in line.split()[1:9]]  # user .. steal
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of `pid` and its descendants, summed, in MB."""
    total = 0
    for p in [pid, *children(pid)]:
        with suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the server's PID (SIGKILL after `timeout`), then the same to any of its
    descendants still running (Triton's server and backend processes), each by its PID."""
    left = children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            left = [p for p in left if Path(f"/proc/{p}").exists() and not _zombie(p)]
            if left:
                time.sleep(0.1)  # waiting for processes to exit; not a measurement


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@contextmanager
def started(server: Server, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    for port in server.ports:
        check_free(port)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server.command,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **server.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    server.pid = proc.pid
    try:
        yield proc
    finally:
        stop(proc)


# -- the peers' venvs --------------------------------------------------------------------------


def venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def ensure_peer(peer: str) -> str:
    """Installs `peer` into bench/.venvs/<peer> when it is missing; '' or why it failed."""
    python = venv_python(peer)
    stamp = VENVS / peer / ".installed"
    wanted = " ".join([*PEERS[peer], ONNXRUNTIME, NUMPY])
    if stamp.exists() and stamp.read_text() == wanted:
        return ""
    print(f"installing {wanted} into {python.parent.parent} ...", flush=True)
    try:
        if not python.exists():
            subprocess.run(["python3.11", "-m", "venv", str(VENVS / peer)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *wanted.split()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"{peer} did not install: {exc}"
    stamp.write_text(wanted)
    return ""


def python_libdir(python: Path) -> str:
    """Where `python`'s libpython is. Triton's Python backend stub links libpython3.11 by its
    soname and would find the system's (Debian's 3.11.2) before the venv's own interpreter's
    (3.11.7 here), whose standard library it then runs on and fails; pointed at the venv's
    interpreter's library directory it loads the matching one."""
    if not python.exists():
        return ""
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- the servers -------------------------------------------------------------------------------


def http(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


V1 = "/v1/models/mlp:predict"
V2 = "/v2/models/mlp/infer"


def make_servers(
    names: list[str], model: Model, onnx: Path, workdir: Path, ports: Ports, batching: bool
) -> list[Server]:
    servers = []
    for name in names:
        if name in ("servo", "servo-w2"):
            rest, grpc = ports.take(), ports.take()
            flags = ["--workers=2"] if name == "servo-w2" else []
            note = "2 worker processes" if name == "servo-w2" else ""
            if batching:
                params = workdir / "servo_batching.config"
                params.write_text(SERVO_BATCHING)
                flags.extend(["--enable_batching", f"--batching_parameters_file={params}"])
                batches = f"batching: max_batch_size {MAX_BATCH}, batch_timeout_micros 0"
                note = f"{note}; {batches}" if note else batches
            servers.append(
                Server(
                    name,
                    [
                        sys.executable,
                        "-m",
                        "servo",
                        "serve",
                        f"--port={grpc}",
                        f"--rest_api_port={rest}",
                        "--bind_address=127.0.0.1",
                        "--model_name=mlp",
                        f"--model_base_path={onnx.parent.parent}",
                        "--tensorflow_intra_op_parallelism=1",
                        "--log_level=warning",
                        *flags,
                    ],
                    [rest, grpc],
                    [
                        Endpoint("REST tfs", http(rest, V1)),
                        Endpoint("REST v2", http(rest, V2)),
                        Endpoint("gRPC tfs", f"127.0.0.1:{grpc}"),
                        Endpoint("gRPC v2", f"127.0.0.1:{grpc}"),
                    ],
                    env={"PYTHONPATH": str(REPO / "src")},
                    note=note,
                )
            )
        elif name == "kserve":
            rest, grpc = ports.take(), ports.take()
            servers.append(
                Server(
                    "kserve",
                    [
                        str(venv_python("kserve")),
                        str(PEERS_DIR / "kserve_server.py"),
                        str(onnx),
                        str(rest),
                        str(grpc),
                    ],
                    [rest, grpc],
                    [
                        Endpoint("REST tfs", http(rest, V1)),
                        Endpoint("REST v2", http(rest, V2)),
                        Endpoint("gRPC v2", f"127.0.0.1:{grpc}"),
                    ],
                    note="no dynamic batching in KServe's Python server" if batching else "",
                )
            )
        elif name == "mlserver":
            rest, grpc, metrics = ports.take(), ports.take(), ports.take()
            root = workdir / "mlserver"
            (root / "mlp").mkdir(parents=True, exist_ok=True)
            settings = {
                "host": "127.0.0.1",
                "http_port": rest,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "parallel_workers": 1,
                "debug": False,
            }
            (root / "settings.json").write_text(json.dumps(settings))
            model_settings: dict[str, Any] = {
                "name": "mlp",
                "implementation": "mlserver_onnx.OnnxModel",
                "parameters": {"uri": str(onnx)},
            }
            note = "one inference worker process (parallel_workers 1, MLServer's default)"
            if batching:
                model_settings["max_batch_size"] = MAX_BATCH
                model_settings["max_batch_time"] = MLSERVER_BATCH_TIME
                note += f"; adaptive batching: max_batch_size {MAX_BATCH}, max_batch_time 1 ms"
            (root / "mlp" / "model-settings.json").write_text(json.dumps(model_settings))
            servers.append(
                Server(
                    "mlserver",
                    [str(venv_python("mlserver").parent / "mlserver"), "start", str(root)],
                    [rest, grpc, metrics],
                    [
                        Endpoint("REST v2", http(rest, V2)),
                        Endpoint("gRPC v2", f"127.0.0.1:{grpc}"),
                    ],
                    env={"PYTHONPATH": str(PEERS_DIR)},
                    note=note,
                )
            )
        elif name == "triton":
            rest, grpc, metrics = ports.take(), ports.take(), ports.take()
            servers.append(
                Server(
                    "triton",
                    [
                        str(venv_python("triton")),
                        str(PEERS_DIR / "triton_server.py"),
                        str(onnx),
                        str(model.width),
                        str(model.outputs),
                        str(rest),
                        str(grpc),
                        str(metrics),
                        str(MAX_BATCH if batching else 0),
                    ],
                    [rest, grpc, metrics],
                    [
                        Endpoint("REST v2", http(rest, V2)),
                        Endpoint("gRPC v2", f"127.0.0.1:{grpc}"),
                    ],
                    env={"LD_LIBRARY_PATH": python_libdir(venv_python("triton"))},
                    note=(
                        f"dynamic_batching: max_batch_size {MAX_BATCH}, no queue delay"
                        if batching
                        else "PyTriton: tritonserver, its Python backend, the model in Python"
                    ),
                )
            )
        elif name in ("granian", "uvicorn"):
            port = ports.take()
            if name == "granian":
                command = [
                    sys.executable,
                    "-m",
                    "granian",
                    "--interface",
                    "rsgi",
                    "--loop",
                    "uvloop",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--no-ws",
                    "--log-level",
                    "warning",
                    "bare_asgi:rsgi_app",
                ]
            else:
                command = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_asgi:app",
                    "--app-dir",
                    str(BENCH),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ]
            servers.append(
                Server(
                    name,
                    command,
                    [port],
                    [Endpoint("REST tfs", http(port, "/"))],
                    env={"SERVO_BENCH_MODEL": str(onnx), "PYTHONPATH": str(BENCH)},
                    note="bare app: no batching" if batching else "",
                )
            )
        elif name in BARE_GRPC:
            port = ports.take()
            servers.append(
                Server(
                    name,
                    [sys.executable, __file__, "--bare-grpc", name, str(onnx), str(port)],
                    [port],
                    [Endpoint("gRPC tfs", f"127.0.0.1:{port}")],
                    env={"PYTHONPATH": str(REPO / "src")},
                    note="bare server: no batching" if batching else "",
                )
            )
        else:
            raise SystemExit(f"unknown server {name!r}; choose from {', '.join(ALL_SERVERS)}")
    return servers


# -- requests and answers ----------------------------------------------------------------------


def rest_request(protocol: str, rows: list[list[float]]) -> bytes:
    if protocol == "REST tfs":
        return json.dumps({"instances": rows}).encode()
    tensor = {
        "name": "x",
        "shape": [len(rows), len(rows[0])],
        "datatype": "FP32",
        "data": [v for row in rows for v in row],
    }
    return json.dumps({"inputs": [tensor]}).encode()


def grpc_request(protocol: str, rows: list[list[float]]) -> bytes:
    """The serialized protobuf request (servo's generated modules: the messages are TFS's and
    the Open Inference Protocol's own)."""
    import numpy as np

    x = np.asarray(rows, dtype=np.float32)
    if protocol == "gRPC tfs":
        from servo.protos import predict_pb2
        from servo.tensor_codec import from_ndarray

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        from_ndarray(x, into=request.inputs["x"])
        return request.SerializeToString()
    from servo.protos import open_inference_pb2 as pb

    message = pb.ModelInferRequest(
        model_name="mlp",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.astype("<f4").tobytes()],
    )
    return message.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: no compression (0), its length (4 bytes, big-endian),
    the message: the raw request body h2load sends."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_method(protocol: str) -> str:
    return PREDICT if protocol == "gRPC tfs" else MODEL_INFER


def decode_rest(protocol: str, body: bytes) -> Any:
    import numpy as np

    doc = json.loads(body)
    if protocol == "REST tfs":
        return np.asarray(doc["predictions"], dtype=np.float32)
    (output,) = doc["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def decode_grpc(protocol: str, body: bytes) -> Any:
    import numpy as np

    if protocol == "gRPC tfs":
        from servo.protos import predict_pb2
        from servo.tensor_codec import to_ndarray

        return to_ndarray(predict_pb2.PredictResponse.FromString(body).outputs["y"])
    from servo.protos import open_inference_pb2 as pb

    answer = pb.ModelInferResponse.FromString(body)
    (output,) = answer.outputs
    shape = tuple(output.shape)
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(shape)
    return np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(shape)


def ask(endpoint: Endpoint, rows: list[list[float]], timeout: float = 10.0) -> Any:
    """The model's output for `rows` as `endpoint` answers it, as an array."""
    if endpoint.grpc:
        import grpc

        with grpc.insecure_channel(endpoint.address) as channel:
            call = channel.unary_unary(grpc_method(endpoint.protocol))
            return decode_grpc(endpoint.protocol, call(grpc_request(endpoint.protocol, rows)))
    request = urllib.request.Request(
        endpoint.address,
        data=rest_request(endpoint.protocol, rows),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return decode_rest(endpoint.protocol, answer.read())


def expected(onnx: Path, rows: list[list[float]]) -> Any:
    """What ONNX Runtime, called here, gives for `rows`."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.asarray(rows, dtype=np.float32)})[0]


def wrong_answer(got: Any, want: Any) -> str:
    """'' when `got` is `want` within float32 tolerance, else what differs."""
    import numpy as np

    got = np.asarray(got)
    if got.shape != want.shape:
        return f"answer's shape {list(got.shape)}, ONNX Runtime's {list(want.shape)}"
    if not np.allclose(got, want, **TOLERANCE):
        return f"answer {got.tolist()} is not ONNX Runtime's {want.tolist()}"
    return ""


def wait_ready(server: Server, proc: subprocess.Popen[bytes], rows: list[list[float]]) -> None:
    """Waits until every endpoint answers (any answer; checked afterwards), or raises."""
    deadline = time.monotonic() + 180
    for endpoint in server.endpoints:
        while True:
            try:
                ask(endpoint, rows, timeout=5)
                break
            except Exception as exc:
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode} before it served") from exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{endpoint.protocol} never answered: {exc}") from exc
                time.sleep(0.3)  # polling a process that is starting up; not a measurement


# -- the load ----------------------------------------------------------------------------------


def run_wrk(endpoint: Endpoint, body: bytes, seconds: float, connections: int) -> dict[str, float]:
    from rest_predict import wrk

    return wrk(endpoint.address, seconds, connections, body)


def run_h2load(
    endpoint: Endpoint, body_file: Path, seconds: float, connections: int
) -> dict[str, float]:
    """h2load POSTing the gRPC body file over `connections` connections (one call in flight
    each) for `seconds`: calls/s, p50/p99 from its per-request log, failures."""
    log = body_file.with_suffix(".log")
    command = [
        "h2load",
        f"-c{connections}",
        "-t1",
        "-m1",
        f"-D{max(1, round(seconds))}",
        "-d",
        str(body_file),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log}",
        f"http://{endpoint.address}{grpc_method(endpoint.protocol)}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    try:
        result = parse_h2load(out, log.read_text())
    finally:
        log.unlink(missing_ok=True)
    return result


def parse_h2load(out: str, log: str) -> dict[str, float]:
    """h2load's summary and its per-request log (start, status, microseconds) as a result."""
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    done, succeeded = int(counts.group(1)), int(counts.group(2))  # type: ignore[union-attr]
    micros = sorted(int(line.split("\t")[2]) for line in log.splitlines() if line.strip())
    if not micros:
        raise RuntimeError("h2load logged no request")
    return {
        "rps": rps,
        "p50_ms": micros[len(micros) // 2] / 1e3,
        "p99_ms": micros[min(len(micros) - 1, int(len(micros) * 0.99))] / 1e3,
        "errors": float(done - succeeded),
        "requests": float(done),
    }


def measure(
    server: Server, endpoint: Endpoint, body: bytes | Path, seconds: float, connections: int
) -> dict[str, float]:
    before, load_before = cpu_seconds(server.pid), children_cpu_seconds()
    busy_before, total_before = cpu_ticks()
    if isinstance(body, Path):
        result = run_h2load(endpoint, body, seconds, connections)
    else:
        result = run_wrk(endpoint, body, seconds, connections)
    used = cpu_seconds(server.pid) - before
    load = children_cpu_seconds() - load_before
    busy_after, total_after = cpu_ticks()
    busy, total = busy_after - busy_before, total_after - total_before
    requests = max(result["requests"], 1)
    result["cpu_s_per_1k"] = used / requests * 1000
    result["load_cpu_s_per_1k"] = load / requests * 1000
    result["busy"] = busy / total if total else 0.0
    return result


# -- the table ---------------------------------------------------------------------------------


def summarize(
    servers: list[Server], results: dict[tuple[str, str], list[dict[str, float]]]
) -> list[Row]:
    """One row per server and protocol: medians over rounds, the ratio to servo's requests/s
    on the same protocol; a server not measured gets one row that says why."""
    rows = []
    for server in servers:
        if server.skip:
            rows.append(Row(server.name, "-", note=server.skip))
            continue
        for endpoint in server.endpoints:
            runs = results.get((server.name, endpoint.protocol), [])
            if not runs:
                rows.append(Row(server.name, endpoint.protocol, note=server.skip or "no run"))
                continue
            errors = sum(r["errors"] for r in runs)
            note = server.note + (f"; {errors:.0f} failed requests" if errors else "")
            rows.append(
                Row(
                    server.name,
                    endpoint.protocol,
                    rps=statistics.median(r["rps"] for r in runs),
                    p50_ms=statistics.median(r["p50_ms"] for r in runs),
                    p99_ms=statistics.median(r["p99_ms"] for r in runs),
                    cpu_s_per_1k=statistics.median(r["cpu_s_per_1k"] for r in runs),
                    load_cpu_s_per_1k=statistics.median(r["load_cpu_s_per_1k"] for r in runs),
                    busy=statistics.median(r["busy"] for r in runs),
                    rss_mb=server.peak_rss_mb or None,
                    note=note.strip("; "),
                )
            )
    servo = {r.protocol: r.rps for r in rows if r.server == "servo" and r.rps}
    for row in rows:
        if row.rps and servo.get(row.protocol):
            row.ratio = row.rps / servo[row.protocol]
    return rows


HEADER = (
    "server",
    "protocol",
    "req/s",
    "p50 ms",
    "p99 ms",
    "CPU s / 1k req",
    "load CPU s / 1k req",
    "CPUs busy %",
    "peak RSS MB",
    "x servo",
    "note",
)


def cells(row: Row) -> list[str]:
    def num(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    return [
        row.server,
        row.protocol,
        num(row.rps, ",.0f"),
        num(row.p50_ms, ".2f"),
        num(row.p99_ms, ".2f"),
        num(row.cpu_s_per_1k, ".3f"),
        num(row.load_cpu_s_per_1k, ".3f"),
        num(None if row.busy is None else row.busy * 100, ".0f"),
        num(row.rss_mb, ",.0f"),
        num(row.ratio, ".2f"),
        row.note,
    ]


def text_table(rows: list[Row]) -> str:
    table = [list(HEADER), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER) - 1)]
    lines = []
    for line in table:
        lead = "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=False))
        )
        lines.append(f"{lead}  {line[-1]}".rstrip())
    return "\n".join(lines)


def markdown(rows: list[Row], title: str, settings: str) -> str:
    out = [f"# {title}", "", settings, ""]
    out.append("| " + " | ".join(HEADER) + " |")
    last = len(HEADER) - 1
    aligns = ("---" if i < 2 or i == last else "---:" for i in range(len(HEADER)))
    out.append("|" + "|".join(aligns) + "|")
    for row in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
    return "\n".join(out) + "\n"


def bar_chart(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.rps]
    labels = [f"{r.server}\n{r.protocol}" for r in measured]
    colors = ["tab:blue" if r.server.startswith("servo") else "tab:gray" for r in measured]
    figure, axes = plt.subplots(figsize=(max(6, 0.9 * len(measured) + 2), 4.5))
    bars = axes.bar(range(len(measured)), [r.rps for r in measured], color=colors)
    axes.bar_label(bars, labels=[f"{r.rps:,.0f}" for r in measured], fontsize=8)
    axes.set_xticks(range(len(measured)), labels, fontsize=8, rotation=45, ha="right")
    axes.set_ylabel("requests/s (median of rounds)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- the bare gRPC servers (a process of their own) -------------------------------------------


def bare_grpc(kind: str, model: str, port: int) -> None:
    """TFS Predict on one ONNX Runtime session, on the gRPC stack `kind` (BARE_GRPC)."""
    import asyncio

    import numpy as np
    import onnxruntime as ort

    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray, to_ndarray

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def predict(request: Any) -> Any:
        y = session.run(None, {"x": to_ndarray(request.inputs["x"])})[0]
        response = predict_pb2.PredictResponse()
        from_ndarray(np.asarray(y), into=response.outputs["y"])
        return response

    if kind == "grpclib":
        grpclib_server(predict, port)
        return

    import grpc

    def handler(method: Any) -> Any:
        return grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {
                "Predict": grpc.unary_unary_rpc_method_handler(
                    method,
                    request_deserializer=predict_pb2.PredictRequest.FromString,
                    response_serializer=predict_pb2.PredictResponse.SerializeToString,
                )
            },
        )

    if kind == "grpc-sync":
        from concurrent.futures import ThreadPoolExecutor

        server = grpc.server(ThreadPoolExecutor(max_workers=1))
        server.add_generic_rpc_handlers([handler(lambda request, context: predict(request))])
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def predict_aio(request: Any, context: Any) -> Any:
        return predict(request)

    async def serve() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([handler(predict_aio)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def grpclib_server(predict: Any, port: int) -> None:
    import asyncio

    import grpclib.const
    import grpclib.server

    from servo.protos import predict_pb2

    class Service:
        async def Predict(self, stream: Any) -> None:  # gRPC's method name
            request = await stream.recv_message()
            await stream.send_message(predict(request))

        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            return {
                PREDICT: grpclib.const.Handler(
                    self.Predict,
                    grpclib.const.Cardinality.UNARY_UNARY,
                    predict_pb2.PredictRequest,
                    predict_pb2.PredictResponse,
                )
            }

    async def serve() -> None:
        server = grpclib.server.Server([Service()])
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    asyncio.run(serve())


# -- the run -----------------------------------------------------------------------------------


def ensure_tools() -> None:
    """wrk and h2load from Debian's packages, installed when missing (apt-get, through sudo
    unless root)."""
    missing = [
        p for tool, p in (("wrk", "wrk"), ("h2load", "nghttp2-client")) if not shutil.which(tool)
    ]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True)


def bench(args: argparse.Namespace, workdir: Path) -> list[Row]:
    model = LARGE if args.batching else SMALL
    subprocess.run(
        [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", model.example],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    onnx = workdir / model.example / "1" / "model.onnx"
    skips = {name: ensure_peer(name) for name in args.servers if name in PEERS}
    servers = make_servers(args.servers, model, onnx, workdir, Ports(args.port_base), args.batching)
    for server in servers:
        server.skip = skips.get(server.name, "")
    rows = [model.row()]
    want = expected(onnx, rows)
    bodies: dict[tuple[str, str], bytes | Path] = {}
    for server in servers:
        for endpoint in server.endpoints:
            if endpoint.grpc:
                path = workdir / f"{endpoint.protocol.replace(' ', '_')}.bin"
                path.write_bytes(grpc_frame(grpc_request(endpoint.protocol, rows)))
                bodies[server.name, endpoint.protocol] = path
            else:
                bodies[server.name, endpoint.protocol] = rest_request(endpoint.protocol, rows)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    live: list[Server] = []
    with ExitStack() as stack:
        for server in servers:
            if server.skip:
                print(f"{server.name}: not measured: {server.skip}", flush=True)
                continue
            log = workdir / f"{server.name}.log"
            try:
                proc = stack.enter_context(started(server, log))
                wait_ready(server, proc, rows)
            except PortBusy:
                raise
            except Exception as exc:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                server.skip = f"did not serve: {exc}" + (f" ({' / '.join(tail)})" if tail else "")
                print(f"{server.name}: {server.skip}", flush=True)
                continue
            for endpoint in server.endpoints:
                wrong = wrong_answer(ask(endpoint, rows), want)
                if wrong:
                    server.skip = f"refused: {endpoint.protocol} {wrong}"
                    break
            if server.skip:
                print(f"{server.name}: {server.skip}", flush=True)
                continue
            print(f"{server.name}: every endpoint answers as ONNX Runtime does", flush=True)
            live.append(server)
        for server in live:  # warm-up
            for endpoint in server.endpoints:
                measure(
                    server, endpoint, bodies[server.name, endpoint.protocol], 2, args.connections
                )
        for round_ in range(args.rounds):
            for server in live:
                for endpoint in server.endpoints:
                    result = measure(
                        server,
                        endpoint,
                        bodies[server.name, endpoint.protocol],
                        args.seconds,
                        args.connections,
                    )
                    results.setdefault((server.name, endpoint.protocol), []).append(result)
                    print(
                        f"round {round_ + 1} {server.name:9s} {endpoint.protocol:9s} "
                        f"{result['rps']:9.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                        f"p99 {result['p99_ms']:.2f} ms  cpu {result['cpu_s_per_1k']:.3f} s/1k"
                        f"  load {result['load_cpu_s_per_1k']:.3f} s/1k"
                        f"  busy {result['busy'] * 100:.0f}%"
                        + (f"  errors {result['errors']:.0f}" if result["errors"] else ""),
                        flush=True,
                    )
        for server in live:
            server.peak_rss_mb = peak_rss_mb(server.pid)
    return summarize(servers, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", help=f"a comma-separated subset of {','.join(ALL_SERVERS)}")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, help="16; with --batching 64")
    parser.add_argument("--batching", action="store_true", help="the large MLP, batching on")
    parser.add_argument("--port-base", type=int, default=0, help="ports from here on")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the table")
    parser.add_argument("--bare-grpc", nargs=3, help=argparse.SUPPRESS)  # KIND MODEL PORT
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(BENCH))
    if args.bare_grpc:
        bare_grpc(args.bare_grpc[0], args.bare_grpc[1], int(args.bare_grpc[2]))
        return 0
    default = BATCHING_SERVERS if args.batching else ALL_SERVERS
    args.servers = args.servers.split(",") if args.servers else list(default)
    args.connections = args.connections or (64 if args.batching else 16)
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="servo-compare-") as tmp:
        try:
            rows = bench(args, Path(tmp))
        except PortBusy as exc:
            print(f"compare: {exc}", file=sys.stderr)
            return 2
    kind = "batching" if args.batching else "compare"
    model = "mlp_large (512 -> 4 x 2048 -> 10)" if args.batching else "mlp (16 -> 64 -> 4)"
    settings = (
        f"{model}, ONNX Runtime at 1 intra-op thread, 1 worker per server; "
        f"{args.connections} connections (wrk for REST, h2load for gRPC), "
        f"{args.rounds} rounds of {args.seconds:g} s, medians; {os.cpu_count()} CPUs shared "
        f"with the load generators; {time.strftime('%Y-%m-%d')}."
    )
    print(f"\n{settings}\n")
    print(text_table(rows))
    args.output.mkdir(parents=True, exist_ok=True)
    title = f"servo against other model servers ({kind})"
    (args.output / f"{kind}.md").write_text(markdown(rows, title, settings))
    bar_chart(
        rows, args.output / f"{kind}.png", f"{title}: {model}, {args.connections} connections"
    )
    print(f"\nwrote {args.output / f'{kind}.md'} and {args.output / f'{kind}.png'}")
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
