"""The replica scenario, small: bench/replicas.py run as a user runs it (3 servo replicas on
one bucket of moto's S3 server, HAProxy in front health-checking their readiness, REST and
gRPC clients through it) with 2 pushes and a deletion. Every request must succeed, every
replica must converge on each pushed version (the script waits on their states, bounded),
no older version may answer once a push has converged, and the load balancer must have
spread both protocols over every replica with no retry hiding a failure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REPLICAS = 3
PUSHES = 2


def test_replicas_behind_haproxy_converge_on_every_push_and_no_request_fails(
    tmp_path: Path,
) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is not installed: `make unit` installs it from Debian's packages")
    figures = tmp_path / "replicas.json"
    run = subprocess.run(
        [
            sys.executable,
            "bench/replicas.py",
            f"--replicas={REPLICAS}",
            f"--pushes={PUSHES}",
            "--rest-clients=2",
            "--grpc-clients=1",
            "--model-mib=1",
            "--settle-seconds=0.5",
            "--converge-timeout=60",
            f"--json={figures}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(figures.read_text())

    assert [p["action"] for p in result["pushes"]] == ["upload 2", "upload 3", "delete 3"]
    assert [p["version"] for p in result["pushes"]] == [2, 3, 2]
    assert all(len(p["replica_seconds"]) == REPLICAS for p in result["pushes"])
    assert result["failed"] == 0, result["errors"]
    assert result["requests"]["rest"]["sent"] > 0 and result["requests"]["grpc"]["sent"] > 0
    assert result["stale_after_convergence"] == 0
    servers = result["haproxy"]
    assert len(servers) == 2 * REPLICAS
    for server in servers:  # both protocols reached every replica, none through a retry
        assert server["requests"] > 0, server
        assert server["status"] == "UP", server
        assert server["http_5xx"] == server["retries"] == server["redispatches"] == 0, server
