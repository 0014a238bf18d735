"""A rolling update on one machine: replicas behind a load balancer, restarted one at a time
with a new flag while clients keep sending, as a Kubernetes Deployment rolls a new pod spec.

The nearest honest test of deploy/kubernetes without a cluster. It reuses the replica
scenario of bench/replicas.py (moto's S3 server, --replicas servo processes serving model
`m` from s3://<bucket>/m, HAProxy in front with one REST and one gRPC frontend, each
replica health-checked through GET /v2/health/ready every 0.5 s, REST and gRPC clients in
closed loops through it) and then, for each replica in turn, as the Deployment's
`maxUnavailable: 0` roll would:

  1. SIGTERM to its PID. servo turns not ready at once and serves on for
     --shutdown_drain_seconds (--drain-seconds here), as it does in the pod;
  2. waits until HAProxy has taken it out of both backends (its own health checks saw the
     readiness fail) and checks the process was still running then: it drained, it was not
     cut off;
  3. waits for the process to exit, which must be 0 (every request in flight finished);
  4. starts its replacement on the same ports with the new config (the flag change: the
     Prometheus page turned on with --monitoring_config_file) and waits until HAProxy has it
     back in both backends before the next replica.

Reports requests sent and failed by protocol, per replica the seconds from SIGTERM to out of
rotation, to exit and to back in rotation, and HAProxy's own counts (5xx, retries,
redispatches: a failure a retry hid would show there). Exits 1 if any request failed, a
replica exited non-zero or before it left the rotation, or a replacement did not come up
with the new flag. --drain-seconds 0 shows what the drain prevents.

    python bench/replicas.py is the convergence scenario; this one:
    python bench/rolling.py [--replicas 3] [--drain-seconds 3] [--rest-clients 4]
                            [--grpc-clients 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from replicas import (
    CREDENTIALS,
    MODEL,
    START_TIMEOUT,
    Load,
    _client_credentials,
    haproxy_config,
    haproxy_servers,
    haproxy_stats,
    moto_server,
    onnx_model,
    request_counts,
    started,
    wait_for,
)
from servo_process import Servo, free_port

METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING = f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
STOP_TIMEOUT = 120.0  # a bound on one replica's drain and stop, not a timing


@dataclass
class Step:
    """One replica's replacement."""

    replica: str  # HAProxy's server name, r0, r1, ...
    out_of_rotation_seconds: float  # SIGTERM -> DOWN in both backends
    still_running_when_out: bool
    exit_seconds: float  # SIGTERM -> the process exited
    exit_code: int
    back_in_rotation_seconds: float  # SIGTERM -> the replacement UP in both backends
    new_flag_live: bool  # the replacement serves the metrics page (the new config)


def servers_state(stats_port: int, name: str) -> set[str]:
    """HAProxy's status of server `name` in each backend (e.g. {"UP"}, {"DOWN"})."""
    return {
        row["status"].split()[0]
        for row in haproxy_stats(stats_port)
        if row["svname"] == name and row["pxname"] in ("rest_replicas", "grpc_replicas")
    }


def all_in(stats_port: int, count: int) -> bool:
    try:
        return all(servers_state(stats_port, f"r{i}") == {"UP"} for i in range(count))
    except OSError:
        return False


def serves_metrics(servo: Servo) -> bool:
    try:
        with urllib.request.urlopen(f"{servo.rest}{METRICS_PATH}", timeout=10) as answer:
            return answer.status == 200 and b":tensorflow:serving:" in answer.read()
    except urllib.error.HTTPError:
        return False


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import boto3

    with ExitStack() as stack:
        endpoint = stack.enter_context(moto_server(workdir))
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        s3 = boto3.client("s3", endpoint_url=endpoint, **_client_credentials(env))
        bucket = f"servo-rolling-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=f"{MODEL}/1/model.onnx", Body=onnx_model(1, 0.1))
        monitoring = workdir / "monitoring.config"
        monitoring.write_text(MONITORING)

        def replica(i: int, new: bool, grpc: int | None = None, rest: int | None = None) -> Servo:
            flags = [
                f"--model_name={MODEL}",
                f"--model_base_path=s3://{bucket}/{MODEL}",
                f"--model_cache_dir={workdir / f'cache-{i}'}",
                f"--shutdown_drain_seconds={args.drain_seconds:g}",
            ]
            if new:  # the config being rolled out
                flags.append(f"--monitoring_config_file={monitoring}")
            generation = "new" if new else "old"
            servo = Servo(
                flags,
                workdir / f"replica-{i}-{generation}.log",
                env=env,
                grpc_port=grpc,
                rest_port=rest,
            )
            stack.callback(servo.stop)
            servo.wait_state(MODEL, 1, "AVAILABLE", timeout=START_TIMEOUT)
            return servo

        replicas = [replica(i, new=False) for i in range(args.replicas)]
        assert not any(serves_metrics(r) for r in replicas), "the old config has no metrics"
        rest_port, grpc_port, stats_port = free_port(), free_port(), free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(replicas, rest_port, grpc_port, stats_port))
        stack.enter_context(started([args.haproxy, "-db", "-f", str(config)], workdir / "lb.log"))
        wait_for(lambda: all_in(stats_port, len(replicas)), START_TIMEOUT, "HAProxy: all UP")

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
        stack.callback(load.stop.set)
        wait_for(lambda: load.answered(args), START_TIMEOUT, "every client's first answers")

        steps: list[Step] = []
        began = time.monotonic()
        for i, old in enumerate(replicas):
            name = f"r{i}"
            term = time.monotonic()
            old.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda name=name: servers_state(stats_port, name) == {"DOWN"},
                STOP_TIMEOUT,
                f"HAProxy taking {name} out",
            )
            out = time.monotonic()
            running_when_out = old.process.poll() is None
            code = old.process.wait(STOP_TIMEOUT)
            exited = time.monotonic()
            new = replica(i, new=True, grpc=old.grpc_port, rest=old.rest_port)
            replicas[i] = new
            wait_for(
                lambda name=name: servers_state(stats_port, name) == {"UP"},
                START_TIMEOUT,
                f"HAProxy taking {name}'s replacement in",
            )
            back = time.monotonic()
            step = Step(
                name,
                round(out - term, 3),
                running_when_out,
                round(exited - term, 3),
                code,
                round(back - term, 3),
                serves_metrics(new),
            )
            steps.append(step)
            print(
                f"{name}: out of rotation {step.out_of_rotation_seconds:.2f} s after SIGTERM "
                f"(still serving: {running_when_out}), exited {code} at "
                f"{step.exit_seconds:.2f} s, replacement in rotation at "
                f"{step.back_in_rotation_seconds:.2f} s",
                flush=True,
            )
        load.stop.set()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - began
        stats = haproxy_stats(stats_port)

    answers = load.answers
    by_protocol = request_counts(answers)
    servers = haproxy_servers(stats)
    return {
        "replicas": args.replicas,
        "drain_seconds": args.drain_seconds,
        "seconds_rolling": round(elapsed, 1),
        "steps": [asdict(s) for s in steps],
        "requests": by_protocol,
        "sent": sum(p["sent"] for p in by_protocol.values()),
        "failed": sum(p["failed"] for p in by_protocol.values()),
        "errors": sorted({a.error for a in answers if a.version is None})[:20],
        "haproxy": servers,
    }


def problems(result: dict[str, Any]) -> list[str]:
    found = []
    if not result["sent"]:
        found.append("no request was sent")
    if result["failed"]:
        found.append(f"{result['failed']} requests failed")
    for step in result["steps"]:
        if not step["still_running_when_out"]:
            found.append(f"{step['replica']} stopped before the load balancer took it out")
        if step["exit_code"] != 0:
            found.append(f"{step['replica']} exited {step['exit_code']} (drain incomplete)")
        if not step["new_flag_live"]:
            found.append(f"{step['replica']}'s replacement does not run the new config")
    return found


def print_report(result: dict[str, Any]) -> None:
    print()
    print(
        f"{result['replicas']} replicas rolled one at a time in {result['seconds_rolling']} s, "
        f"--shutdown_drain_seconds={result['drain_seconds']:g}"
    )
    print()
    print("| replica | out of rotation | exited (code) | replacement in rotation |")
    print("|---|---|---|---|")
    for s in result["steps"]:
        print(
            f"| {s['replica']} | {s['out_of_rotation_seconds']:.2f} s | {s['exit_seconds']:.2f} s "
            f"({s['exit_code']}) | {s['back_in_rotation_seconds']:.2f} s |"
        )
    rest, grpc = result["requests"]["rest"], result["requests"]["grpc"]
    print()
    print(
        f"requests: {result['sent']} sent, {result['failed']} failed (REST {rest['sent']} / "
        f"{rest['failed']}, gRPC {grpc['sent']} / {grpc['failed']})"
    )
    worst = {
        k: sum(s[k] for s in result["haproxy"]) for k in ("http_5xx", "retries", "redispatches")
    }
    print(
        f"HAProxy: {worst['http_5xx']} 5xx, {worst['retries']} retries, "
        f"{worst['redispatches']} redispatches"
    )
    for error in result["errors"]:
        print(f"failed: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--drain-seconds", type=float, default=3.0, help="servo's drain")
    parser.add_argument("--rest-clients", type=int, default=4)
    parser.add_argument("--grpc-clients", type=int, default=2)
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "haproxy")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if not shutil.which(args.haproxy):
        print("haproxy is not installed: apt-get install haproxy (`make rolling` does)")
        return 2
    with tempfile.TemporaryDirectory(prefix="servo-rolling-") as tmp:
        try:
            result = run(args, Path(tmp))
        except (RuntimeError, AssertionError) as exc:
            print(f"failed: {exc}")
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} (last lines)")
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            return 1
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    found = problems(result)
    for problem in found:
        print(f"problem: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
