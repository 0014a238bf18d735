#!/usr/bin/env python3
"""Serves the example models (`make serve`) in the foreground and prints curl commands to try
once the server is listening, below its load logs rather than above them.

    python scripts/serve_examples.py [--bind-address 127.0.0.1] [--grpc-port 8500] \
        [--rest-port 8501] [--models examples/models/models.config] \
        [--monitoring-config examples/monitoring.config]

- Readiness is a state: the REST API's `GET /v2/health/ready` answering 200 (servo opens its
  ports once the config's models serve). A server that exits first ends the script with its
  exit code.
- The server runs in a session of its own; SIGINT (Ctrl-C), SIGTERM and SIGHUP are forwarded
  to it by its PID, so that it gets each signal once: the first stops it gracefully, a second
  one exits at once (servo's rule). The script exits with the server's code.
- The curls name the bind address, or localhost when it is a loopback or a wildcard address.

Loopback by default: anyone who reaches the ports may use every API (README, Security).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import FrameType

POLL = 0.1  # seconds between readiness checks while the models load
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def try_lines(host: str, rest_port: int, grpc_port: int) -> list[str]:
    rest = f"{host}:{rest_port}"
    json_posts = [
        ('{"instances": [1.0, 2.0, 5.0]}', "v1/models/half_plus_two:predict"),
        (
            '{"instances": [[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]}',
            "v1/models/mlp:predict",
        ),
        ('{"instances": ["servo", "unknown"]}', "v1/models/vocab:predict"),
        ('{"instances": ["a model server"]}', "v1/models/word_count:predict"),
        (
            '{"instances": ["a model server", "servo serves"]}',
            "v1/models/whitespace_tokenizer:predict",
        ),
        (
            '{"instances": [{"x1": 0.9, "x2": 0.8}, {"x1": 0.1, "x2": 0.2}]}',
            "v1/models/decision_forest:predict",
        ),
        (
            '{"instances": [["servo", "serves", "a", "model"], '
            '["the", "unknown", "<pad>", "<pad>"]]}',
            "v1/models/text_classifier_pipeline:predict",
        ),
    ]
    lines = [f"servo: gRPC on port {grpc_port}, REST on port {rest_port}. Try:"]
    lines += [f"  curl -d '{body}' {rest}/{path}" for body, path in json_posts]
    lines += [
        f"  curl {rest}/v1/models/half_plus_two",
        f"  curl {rest}/v1/models/half_plus_two/metadata",
        '  curl -d \'{"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", '
        f'"data": [1, 2, 5]}}]}}\' {rest}/v2/models/half_plus_two/infer',
        f"  curl {rest}/v2/health/ready",
        f"  curl {rest}/monitoring/prometheus/metrics",
        f"The status page (models, versions, request rates; live): http://{rest}/",
    ]
    return lines


def client_host(bind_address: str) -> str:
    """Where a client on this machine reaches a server bound to `bind_address`."""
    if bind_address in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost", ""):
        return "localhost"
    return f"[{bind_address}]" if ":" in bind_address else bind_address


def ready(host: str, rest_port: int) -> bool:
    target = "127.0.0.1" if host == "localhost" else host
    try:
        with urllib.request.urlopen(
            f"http://{target}:{rest_port}/v2/health/ready", timeout=2
        ) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind-address", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--models", default="examples/models/models.config")
    parser.add_argument("--monitoring-config", default="examples/monitoring.config")
    args = parser.parse_args(argv)
    command = [
        sys.executable,
        "-m",
        "servo",
        "serve",
        f"--bind_address={args.bind_address}",
        f"--port={args.grpc_port}",
        f"--rest_api_port={args.rest_port}",
        f"--model_config_file={args.models}",
        f"--monitoring_config_file={args.monitoring_config}",
    ]
    server = subprocess.Popen(command, start_new_session=True)

    def forward(sig: int, _frame: FrameType | None) -> None:
        if server.poll() is None:
            server.send_signal(sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    host = client_host(args.bind_address)
    while server.poll() is None:
        if ready(host, args.rest_port):
            print("\n".join(try_lines(host, args.rest_port, args.grpc_port)), flush=True)
            break
        time.sleep(POLL)
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
