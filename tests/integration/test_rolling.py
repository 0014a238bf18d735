"""The rolling update of issue 17, small: bench/rolling.py run as a user runs it (3 servo
replicas on one bucket of moto's S3 server behind HAProxy, REST and gRPC clients through it),
each replica replaced in turn by one with a new flag. No request may fail, and no retry or
redispatch of HAProxy may hide one; each replica must leave the rotation while it still runs
(servo's drain) and exit 0; each replacement must run the new config and be back in both
backends before the next replica goes. (`--drain-seconds 0` fails these checks: README,
Deploy.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
REPLICAS = 3


def test_a_rolling_flag_change_behind_haproxy_fails_no_request_and_drains_every_replica(
    tmp_path: Path,
) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed: `make unit` installs it from Debian's packages")
    figures = tmp_path / "rolling.json"
    run = subprocess.run(
        [
            sys.executable,
            "bench/rolling.py",
            f"--replicas={REPLICAS}",
            "--drain-seconds=3",
            "--rest-clients=2",
            "--grpc-clients=1",
            f"--json={figures}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(figures.read_text())

    assert [s["replica"] for s in result["steps"]] == [f"r{i}" for i in range(REPLICAS)]
    for step in result["steps"]:
        assert step["still_running_when_out"], step  # out of rotation before it stopped
        assert step["out_of_rotation_seconds"] < step["exit_seconds"], step
        assert step["exit_code"] == 0, step
        assert step["new_flag_live"], step
    assert result["failed"] == 0, result["errors"]
    assert result["requests"]["rest"]["sent"] > 0 and result["requests"]["grpc"]["sent"] > 0
    for server in result["haproxy"]:
        assert server["requests"] > 0, server
        assert server["http_5xx"] == server["retries"] == server["redispatches"] == 0, server
