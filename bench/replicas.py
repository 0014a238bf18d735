"""Replicas on one bucket behind a load balancer: versions pushed while clients keep sending.

Starts, all on loopback ports and each stopped by its PID at the end (on errors and Ctrl-C too):

    store      moto's S3 API server (`moto[server]`), or --s3-endpoint for a store of your own
               (its credentials from the usual AWS_* variables)
    replicas   --replicas servo processes, each serving model `m` from s3://<bucket>/m,
               polling every --poll-seconds, each with a cache directory of its own
    HAProxy    from Debian's packages: one REST frontend and one gRPC frontend (HTTP/2),
               round robin over the replicas, each replica health-checked through
               GET /v2/health/ready (servo's readiness), and a stats page read at the end

Version v of `m` is an ONNX model that answers y = x + v (and carries --model-mib of weights,
so each version is a real download): every answer says which version computed it. Version 1
is uploaded and loaded everywhere first; then --rest-clients and --grpc-clients threads send
TFS REST and gRPC Predicts through HAProxy in closed loops while the bench uploads version 2,
3, ... (--pushes of them) one at a time. After each upload it asks every replica directly,
until each answers with the new version and lists no other version that is not END (the old
one unloaded): the push's time to converge is from the upload's end to the last replica's
getting there. After the pushes, the newest version is deleted and the replicas must
converge back on the one before (a deletion is a push too).

Reports each push (time to converge, first and last replica), the requests sent and failed
by protocol, answers from an older version among requests sent after their push converged
(must be none), and HAProxy's own counts per replica (requests, 5xx, retries, health-check
failures). Exits 1 if any request failed, a push did not converge within --converge-timeout,
or an older version answered after convergence. --json writes the figures for the suite's
test of this scenario.

    python bench/replicas.py [--replicas 3] [--pushes 10] [--poll-seconds 1]
                             [--rest-clients 4] [--grpc-clients 2] [--model-mib 4]
                             [--complete-marker NAME] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servo_process import Servo, free_port

MODEL = "m"
CREDENTIALS = {  # moto accepts any; a store of your own uses the environment's
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
}
CHECK = 0.02  # seconds between two looks at a replica's answer while a push converges
START_TIMEOUT = 120.0


# -- the model -------------------------------------------------------------------------------


def onnx_model(version: int, weight_mib: float) -> bytes:
    """y = x + version, x float32 [batch, 4]; `weight_mib` MiB of weights folded in as 0 x sum."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    count = max(1, int(weight_mib * 2**20 / 4))
    weights = np.random.default_rng(version).standard_normal(count).astype(np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["w"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "v"], ["offset"]),
        helper.make_node("Add", ["x", "offset"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "version",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array(float(version), np.float32), "v"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


# -- processes -------------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Until `check()` holds (a state: a port open, a replica's answer), or RuntimeError."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(CHECK)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def started(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """A process, its output in `log`; its PID, SIGTERM then SIGKILL at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            yield proc.pid
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with started(args, workdir / "moto.log", CREDENTIALS):
        wait_for(lambda: port_open(port), START_TIMEOUT, f"moto's S3 server on port {port}")
        yield f"http://127.0.0.1:{port}"


def haproxy_config(replicas: list[Servo], rest: int, grpc: int, stats: int) -> str:
    rest_servers = "\n".join(
        f"    server r{i} 127.0.0.1:{s.rest_port} check" for i, s in enumerate(replicas)
    )
    grpc_servers = "\n".join(
        f"    server r{i} 127.0.0.1:{s.grpc_port} proto h2 check port {s.rest_port} check-proto h1"
        for i, s in enumerate(replicas)
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    # A replica is taken out after 2 failed checks (0.5 s apart) and back after 2 good ones.
    # gRPC replicas are checked through their REST port's readiness, over HTTP/1.1.
    default-server inter 500ms fall 2 rise 2

frontend rest
    bind 127.0.0.1:{rest}
    default_backend rest_replicas

frontend grpc
    bind 127.0.0.1:{grpc} proto h2
    default_backend grpc_replicas

frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats

backend rest_replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
{rest_servers}

backend grpc_replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
{grpc_servers}
"""


def haproxy_stats(port: int) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats;csv", timeout=10) as answer:
        text = answer.read().decode().lstrip("# ")
    return list(csv.DictReader(io.StringIO(text)))


def all_up(port: int, count: int) -> bool:
    try:
        rows = haproxy_stats(port)
    except OSError:
        return False
    servers = [r for r in rows if r["svname"].startswith("r")]
    return len(servers) == 2 * count and all(r["status"] == "UP" for r in servers)


# -- clients ---------------------------------------------------------------------------------


@dataclass
class Answer:
    protocol: str
    sent: float  # monotonic time the request was sent
    version: int | None  # None: the request failed
    error: str = ""


@dataclass
class Load:
    """Closed-loop clients through the load balancer, every answer recorded."""

    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, args: argparse.Namespace) -> bool:
        """Each protocol has answered 10 requests per client."""
        with self.lock:
            rest = sum(1 for a in self.answers if a.protocol == "rest")
        return rest >= 10 * args.rest_clients and (
            len(self.answers) - rest >= 10 * args.grpc_clients
        )

    def record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def rest_client(self, url: str) -> None:
        import httpx

        body = {"instances": [[0.0, 0.0, 0.0, 0.0]]}
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    reply = client.post(f"{url}/v1/models/{MODEL}:predict", json=body)
                    if reply.status_code != 200:
                        self.record(Answer("rest", sent, None, f"{reply.status_code} {reply.text}"))
                        continue
                    version = round(reply.json()["predictions"][0][0])
                    self.record(Answer("rest", sent, version))
                except Exception as exc:  # every failure counts, whatever it is
                    self.record(Answer("rest", sent, None, repr(exc)))

    def grpc_client(self, target: str) -> None:
        import grpc  # the official client's modules, imported once by run() before the load
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        x = request.inputs["x"]
        x.dtype = 1  # DT_FLOAT
        x.tensor_shape.dim.add(size=1)
        x.tensor_shape.dim.add(size=4)
        x.float_val.extend([0.0] * 4)
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    reply = stub.Predict(request, timeout=30)
                    self.record(Answer("grpc", sent, round(reply.outputs["y"].float_val[0])))
                except grpc.RpcError as exc:
                    self.record(Answer("grpc", sent, None, f"{exc.code()} {exc.details()}"))


def replica_answer(servo: Servo) -> int | None:
    body = json.dumps({"instances": [[0.0, 0.0, 0.0, 0.0]]}).encode()
    url = f"{servo.rest}/v1/models/{MODEL}:predict"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as answer:
            return round(json.loads(answer.read())["predictions"][0][0])
    except OSError:
        return None


# -- the scenario ----------------------------------------------------------------------------


@dataclass
class Push:
    action: str  # "upload v" or "delete v"
    version: int  # the version every replica must answer once converged
    begun: float  # monotonic: the upload (deletion) began
    upload_seconds: float
    converged_at: float  # monotonic
    seconds: list[float]  # per replica, from the upload's (deletion's) end to its first answer

    @property
    def converge_seconds(self) -> float:
        return max(self.seconds)


def serving_only(servo: Servo, version: int) -> bool:
    """The replica answers with `version`, and its status lists no other version that is not
    END (the old one is unloaded, or the one deleted)."""
    if replica_answer(servo) != version:
        return False
    url = f"{servo.rest}/v1/models/{MODEL}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        states = json.loads(answer.read())["model_version_status"]
    return {(int(s["version"]), s["state"]) for s in states if s["state"] != "END"} == {
        (version, "AVAILABLE")
    }


def converge(replicas: list[Servo], version: int, since: float, timeout: float) -> list[float]:
    """Seconds from `since` until each replica serves `version` only."""
    seconds: list[float | None] = [None] * len(replicas)

    def every_one_answers() -> bool:
        for i, servo in enumerate(replicas):
            if seconds[i] is None and serving_only(servo, version):
                seconds[i] = time.monotonic() - since
        return all(s is not None for s in seconds)

    wait_for(every_one_answers, timeout, f"every replica answering version {version}")
    return [s for s in seconds if s is not None]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import boto3

    with ExitStack() as stack:
        if args.s3_endpoint:
            endpoint, env = args.s3_endpoint, {"AWS_ENDPOINT_URL": args.s3_endpoint}
        else:
            endpoint = stack.enter_context(moto_server(workdir))
            env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        s3 = boto3.client("s3", endpoint_url=endpoint, **_client_credentials(env))
        bucket = args.bucket or f"servo-replicas-{uuid.uuid4().hex[:8]}"
        if not args.bucket:
            s3.create_bucket(Bucket=bucket)

        def upload(version: int) -> float:
            body, prefix = onnx_model(version, args.model_mib), f"{MODEL}/{version}"
            begun = time.monotonic()
            s3.put_object(Bucket=bucket, Key=f"{prefix}/model.onnx", Body=body)
            if args.complete_marker:
                s3.put_object(Bucket=bucket, Key=f"{prefix}/{args.complete_marker}", Body=b"")
            return time.monotonic() - begun

        def delete(version: int) -> float:
            begun = time.monotonic()
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{MODEL}/{version}/")
            for item in listed.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
            return time.monotonic() - begun

        upload(1)
        flags = [
            f"--model_name={MODEL}",
            f"--model_base_path=s3://{bucket}/{MODEL}",
            f"--file_system_poll_wait_seconds={args.poll_seconds:g}",
        ]
        if args.complete_marker:
            flags.append(f"--model_version_complete_marker={args.complete_marker}")
        replicas = []
        for i in range(args.replicas):
            cache = workdir / f"cache-{i}"
            replica = Servo(
                [*flags, f"--model_cache_dir={cache}"], workdir / f"replica-{i}.log", env=env
            )
            stack.callback(replica.stop)
            replicas.append(replica)
        for replica in replicas:
            replica.wait_state(MODEL, 1, "AVAILABLE", timeout=START_TIMEOUT)

        rest_port, grpc_port, stats_port = free_port(), free_port(), free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(replicas, rest_port, grpc_port, stats_port))
        stack.enter_context(started([args.haproxy, "-db", "-f", str(config)], workdir / "lb.log"))
        wait_for(lambda: all_up(stats_port, len(replicas)), START_TIMEOUT, "HAProxy: replicas UP")

        # The official TFS client imports TensorFlow's protos (and TensorFlow): once, here,
        # not in every client thread while the load runs.
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: F401

        load = Load()
        clients = [
            threading.Thread(target=load.rest_client, args=(f"http://127.0.0.1:{rest_port}",))
            for _ in range(args.rest_clients)
        ] + [
            threading.Thread(target=load.grpc_client, args=(f"127.0.0.1:{grpc_port}",))
            for _ in range(args.grpc_clients)
        ]
        for client in clients:
            client.start()
        stack.callback(load.stop.set)  # on errors too: the threads end at their next answer
        wait_for(lambda: load.answered(args), START_TIMEOUT, "every client's first answers")

        pushes: list[Push] = []
        started_load = time.monotonic()
        steps = [("upload", v, v) for v in range(2, args.pushes + 2)]
        if args.pushes:
            steps.append(("delete", args.pushes + 1, args.pushes))
        for action, version, expected in steps:
            begun = time.monotonic()
            took = upload(version) if action == "upload" else delete(version)
            ended = time.monotonic()
            seconds = converge(replicas, expected, ended, args.converge_timeout)
            push = Push(f"{action} {version}", expected, begun, took, time.monotonic(), seconds)
            pushes.append(push)
            print(
                f"{push.action:>10}: every replica answers {expected} "
                f"{push.converge_seconds:.2f} s after (replicas: "
                + ", ".join(f"{s:.2f}" for s in seconds)
                + ")",
                flush=True,
            )
            time.sleep(args.settle_seconds)  # traffic on the new version before the next push
        load.stop.set()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - started_load
        stats = haproxy_stats(stats_port)

    return report(args, pushes, load.answers, stats, elapsed)


def _client_credentials(env: dict[str, str]) -> dict[str, str]:
    if "AWS_ACCESS_KEY_ID" not in env:
        return {}  # boto3 reads the environment and files itself
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_REGION"],
    }


def stale_answers(pushes: list[Push], answers: list[Answer]) -> int:
    """Answers from another version among requests sent after a push converged and before
    the next push began."""
    stale = 0
    for push, following in zip(pushes, [*pushes[1:], None], strict=True):
        end = following.begun if following else float("inf")
        for answer in answers:
            if push.converged_at <= answer.sent < end and answer.version not in (
                None,
                push.version,
            ):
                stale += 1
    return stale


def request_counts(answers: list[Answer]) -> dict[str, dict[str, int]]:
    """Requests sent and failed, by protocol."""
    return {
        protocol: {
            "sent": sum(1 for a in answers if a.protocol == protocol),
            "failed": sum(1 for a in answers if a.protocol == protocol and a.version is None),
        }
        for protocol in ("rest", "grpc")
    }


def haproxy_servers(stats: list[dict[str, str]]) -> list[dict[str, Any]]:
    """HAProxy's own counts for each replica in each backend, from its stats page."""
    return [
        {
            "backend": row["pxname"],
            "replica": row["svname"],
            "requests": int(row["stot"] or 0),
            "http_5xx": int(row["hrsp_5xx"] or 0),
            "retries": int(row["wretr"] or 0),
            "redispatches": int(row["wredis"] or 0),
            "check_failures": int(row["chkfail"] or 0),
            "status": row["status"],
        }
        for row in stats
        if row["svname"].startswith("r")
    ]


def report(
    args: argparse.Namespace,
    pushes: list[Push],
    answers: list[Answer],
    stats: list[dict[str, str]],
    elapsed: float,
) -> dict[str, Any]:
    by_protocol = request_counts(answers)
    errors = sorted({a.error for a in answers if a.version is None})
    servers = haproxy_servers(stats)
    converge_times = [p.converge_seconds for p in pushes]
    return {
        "replicas": args.replicas,
        "poll_seconds": args.poll_seconds,
        "model_mib": args.model_mib,
        "complete_marker": args.complete_marker,
        "seconds_under_load": round(elapsed, 1),
        "pushes": [
            {
                "action": p.action,
                "version": p.version,
                "upload_seconds": round(p.upload_seconds, 3),
                "converge_seconds": round(p.converge_seconds, 3),
                "replica_seconds": [round(s, 3) for s in p.seconds],
            }
            for p in pushes
        ],
        "converge_median": round(statistics.median(converge_times), 3) if pushes else None,
        "converge_max": round(max(converge_times), 3) if pushes else None,
        "requests": by_protocol,
        "sent": sum(p["sent"] for p in by_protocol.values()),
        "failed": sum(p["failed"] for p in by_protocol.values()),
        "errors": errors[:20],
        "stale_after_convergence": stale_answers(pushes, answers),
        "haproxy": servers,
    }


def print_report(result: dict[str, Any]) -> None:
    print()
    print(
        f"{result['replicas']} replicas, poll every {result['poll_seconds']:g} s, "
        f"{result['model_mib']:g} MiB versions, half-upload rule: "
        + (f"marker {result['complete_marker']}" if result["complete_marker"] else "stable listing")
    )
    print()
    print("| push | converged in (slowest replica) | fastest replica | upload took |")
    print("|---|---|---|---|")
    for p in result["pushes"]:
        print(
            f"| {p['action']} | {p['converge_seconds']:.2f} s | {min(p['replica_seconds']):.2f} s "
            f"| {p['upload_seconds']:.2f} s |"
        )
    print()
    rest, grpc = result["requests"]["rest"], result["requests"]["grpc"]
    print(
        f"requests in {result['seconds_under_load']} s: {result['sent']} sent, "
        f"{result['failed']} failed (REST {rest['sent']} / {rest['failed']}, "
        f"gRPC {grpc['sent']} / {grpc['failed']}); converged in median "
        f"{result['converge_median']} s, at most {result['converge_max']} s; answers from an "
        f"older version after convergence: {result['stale_after_convergence']}"
    )
    print()
    print("| HAProxy backend | replica | requests | 5xx | retries | redispatches | failed checks |")
    print("|---|---|---|---|---|---|---|")
    for s in result["haproxy"]:
        print(
            f"| {s['backend']} | {s['replica']} | {s['requests']} | {s['http_5xx']} "
            f"| {s['retries']} | {s['redispatches']} | {s['check_failures']} |"
        )
    for error in result["errors"]:
        print(f"failed: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=10, help="versions uploaded, one by one")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--rest-clients", type=int, default=4)
    parser.add_argument("--grpc-clients", type=int, default=2)
    parser.add_argument("--model-mib", type=float, default=4.0, help="weights in each version")
    parser.add_argument("--complete-marker", default="", help="servo's marker rule, if set")
    parser.add_argument("--settle-seconds", type=float, default=1.0, help="between pushes")
    parser.add_argument("--converge-timeout", type=float, default=120.0)
    parser.add_argument("--s3-endpoint", default="", help="a store of your own, not moto's")
    parser.add_argument("--bucket", default="", help="an existing bucket (with --s3-endpoint)")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "haproxy")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if not shutil.which(args.haproxy):
        print("haproxy is not installed: apt-get install haproxy (`make replicas` does)")
        return 2
    with tempfile.TemporaryDirectory(prefix="servo-replicas-") as tmp:
        try:
            result = run(args, Path(tmp))
        except RuntimeError as exc:
            print(f"failed: {exc}; logs: {tmp} (kept until exit)")
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} (last lines)")
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            return 1
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    bad = result["failed"] or result["stale_after_convergence"] or not result["sent"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
