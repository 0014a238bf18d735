"""A real S3 API server on loopback for the object-storage tests: moto's standalone server
(`moto[server]`), started as a process on a free port and stopped by its PID.

    with s3_server() as s3:                 # or the session fixture `s3` (tests/conftest.py)
        s3.create_bucket("models")
        s3.upload_tree(local_dir, "models", "m")
        env = s3.env()                       # what a servo process needs to reach it

Its state lives in the process: `stop()` then `start()` is a store that went away and came
back empty (tests upload again what they need). The server's request log is kept
(`requests`), so a test can wait for a servo process to have polled again: waiting on what
the store saw, never on a length of time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.server import free_port
from tests.support.waiting import wait_until

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a servo process that reads this store."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, **more}

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **CREDENTIALS, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        wait_until(self._answers, START_TIMEOUT, f"moto's S3 server on port {self.port}")

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._lock:
                self.lines.append(_ANSI.sub("", line.rstrip("\n")))

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"moto exited:\n{self.output}"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the server's PID (SIGKILL after a bound); its port refuses from now."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def requests(self, text: str) -> int:
        """How many requests the server logged whose line holds `text`."""
        with self._lock:
            return sum(1 for line in self.lines if text in line and '"' in line)

    # -- a client of its own ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=CREDENTIALS["AWS_REGION"],
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        return self._client

    def create_bucket(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, body: bytes | str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def upload_tree(
        self, local: Path, bucket: str, prefix: str, *, skip: tuple[str, ...] = ()
    ) -> list[str]:
        """Every file under `local` to `prefix/<its path below local>`, but the paths in
        `skip`; returns the keys written."""
        keys = []
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            if relative in skip:
                continue
            key = f"{prefix}/{relative}"
            self.client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
        return keys

    def delete_prefix(self, bucket: str, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        for item in listed.get("Contents", []):
            self.client.delete_object(Bucket=bucket, Key=item["Key"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
