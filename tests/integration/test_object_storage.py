"""Model repositories in object storage, end to end: servo processes polling a bucket of moto's
S3 server on loopback. A repository uploaded is served, a new version swaps in, a deleted one
unloads, a half-uploaded one waits until it is complete, a store that goes away fails polls
without unloading anything and its return resumes them, a restart reuses the cache, and no
credential ever reaches the output, even from a store that quotes them back.

Every wait is for a state (a version's status, a line of the output, the requests the store
saw), never for a length of time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.support.s3 import S3Server
from tests.support.server import ServerProcess, grpc_stubs, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Answers the version it is: its directory is named as the version's in the bucket.
MODEL = """
import os
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"version": {"dtype": "int64", "shape": [-1]}},
    }}

    def load(self, path):
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        return {"version": np.full(inputs["x"].shape, self.version, np.int64)}
"""
MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'


def new_bucket(s3: S3Server) -> str:
    bucket = f"it-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    return bucket


def put_version(s3: S3Server, bucket: str, version: int) -> None:
    s3.put(bucket, f"m/{version}/model.py", MODEL)


def answer(server: ServerProcess) -> int:
    reply = httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [1.0]}, timeout=30)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["predictions"][0])


def states(server: ServerProcess) -> dict[int, str]:
    reply = httpx.get(f"{server.rest}/v1/models/m", timeout=30)
    if reply.status_code != 200:
        return {}
    return {int(v["version"]): v["state"] for v in reply.json()["model_version_status"]}


def metric(server: ServerProcess, name: str) -> float:
    page = httpx.get(f"{server.rest}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


def serve_bucket(
    s3: S3Server, bucket: str, cache: Path, tmp_path: Path, *more: str, env: dict | None = None
) -> AbstractContextManager[ServerProcess]:
    """A servo process serving model `m` from `s3://<bucket>/m`, with metrics at /metrics."""
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(MONITORING)
    return running_server(
        [
            "--model_name=m",
            f"--model_base_path=s3://{bucket}/m",
            f"--model_cache_dir={cache}",
            f"--monitoring_config_file={monitoring}",
            *more,
        ],
        env if env is not None else s3.env(),
    )


def test_a_bucket_is_served_new_versions_swap_in_and_deleted_ones_unload(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = new_bucket(s3)
    put_version(s3, bucket, 1)
    cache = tmp_path / "cache"
    with serve_bucket(s3, bucket, cache, tmp_path) as server:
        assert answer(server) == 1
        assert states(server) == {1: "AVAILABLE"}
        put_version(s3, bucket, 2)
        wait_until(lambda: states(server) == {2: "AVAILABLE", 1: "END"}, what="2 swapped in")
        assert answer(server) == 2
        assert len(list(cache.glob("*.complete"))) == 1  # version 1's copy went with it
        s3.delete_prefix(bucket, "m/2")  # the latest is version 1 again
        wait_until(lambda: states(server) == {2: "END", 1: "AVAILABLE"}, what="back to 1")
        assert answer(server) == 1
        assert metric(server, "servo_model_downloads{") == 3
        assert metric(server, "servo_storage_poll_errors") == 0


def test_a_half_uploaded_version_loads_only_once_complete(s3: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(s3)
    put_version(s3, bucket, 1)
    with serve_bucket(s3, bucket, tmp_path / "cache", tmp_path) as server:
        assert answer(server) == 1
        # Version 2: its model file is in, a large file is still uploading (multipart).
        key = "m/2/variables/variables.data"
        upload = s3.client.create_multipart_upload(Bucket=bucket, Key=key)
        put_version(s3, bucket, 2)
        server.wait_for_line("Version 2 of servable m")
        assert "an upload under it is in progress" in server.wait_for_line(
            "an upload under it is in progress"
        )
        listed = s3.requests(f"GET /{bucket}?list-type=2")
        wait_until(lambda: s3.requests(f"GET /{bucket}?list-type=2") >= listed + 2, what="2 polls")
        assert states(server) == {1: "AVAILABLE"}  # two polls later, still not loaded
        part = s3.client.upload_part(
            Bucket=bucket, Key=key, PartNumber=1, UploadId=upload["UploadId"], Body=b"x" * 100
        )
        s3.client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        wait_until(lambda: states(server) == {2: "AVAILABLE", 1: "END"}, what="2 complete")
        assert answer(server) == 2
    # Logged once per change of the reason (first seen, uploading, changed), not per poll.
    assert server.output.count("an upload under it is in progress") == 1


def test_the_store_gone_fails_polls_unloading_nothing_and_its_return_resumes_them(
    tmp_path: Path,
) -> None:
    store = S3Server()
    store.start()
    try:
        bucket = new_bucket(store)
        put_version(store, bucket, 1)
        with serve_bucket(store, bucket, tmp_path / "cache", tmp_path) as server:
            assert answer(server) == 1
            store.stop()
            line = server.wait_for_line(f"Cannot list s3://{bucket}/m")
            assert "nothing changes" in line
            wait_until(lambda: metric(server, "servo_storage_poll_errors") >= 2, what="2 polls")
            assert server.output.count(f"Cannot list s3://{bucket}/m") == 1  # once per change
            assert metric(server, 'servo_storage_poll_errors{path="s3://') >= 2
            assert states(server) == {1: "AVAILABLE"} and answer(server) == 1  # nothing unloads
            store.start()  # back, empty: the same version is uploaded again, then a new one
            store.create_bucket(bucket)
            put_version(store, bucket, 1)
            server.wait_for_line("its base path answers again")
            put_version(store, bucket, 2)
            wait_until(lambda: states(server) == {2: "AVAILABLE", 1: "END"}, what="2 loaded")
            assert answer(server) == 2
    finally:
        store.stop()


def test_a_restart_reuses_the_cached_copy_and_tfs_s3_endpoint_is_read(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = new_bucket(s3)
    put_version(s3, bucket, 1)
    cache = tmp_path / "cache"
    # TFS's variables for the endpoint, no AWS_ENDPOINT_URL.
    env = {k: v for k, v in s3.env().items() if k != "AWS_ENDPOINT_URL"}
    env.update(S3_ENDPOINT=f"127.0.0.1:{s3.port}", S3_USE_HTTPS="0")
    with serve_bucket(s3, bucket, cache, tmp_path, env=env) as first:
        assert answer(first) == 1
        assert f"Downloaded s3://{bucket}/m/1 " in first.output
        assert first.stop() == 0
    gets = s3.requests(f"GET /{bucket}/m/1/model.py")
    assert gets >= 1
    assert len(list(cache.glob("*.complete"))) == 1  # the stop kept the copy
    with serve_bucket(s3, bucket, cache, tmp_path, env=env) as second:
        assert answer(second) == 1
        assert "Reusing the cached copy" in second.output
        assert "Downloading" not in second.output
        assert metric(second, 'servo_model_downloads{model_name="m",outcome="reused"}') == 1
    assert s3.requests(f"GET /{bucket}/m/1/model.py") == gets  # nothing downloaded again


class _Refusing(BaseHTTPRequestHandler):
    """A store that refuses every request and quotes the request's credentials back in its
    error, the worst a store (or a proxy) could do."""

    seen: list[str] = []

    def _refuse(self) -> None:
        quoted = f"{self.headers.get('Authorization')} {self.headers.get('X-Amz-Security-Token')}"
        type(self).seen.append(quoted)
        body = (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
            f"<Message>Access Denied for {quoted}</Message></Error>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _refuse

    def log_message(self, *args: object) -> None: ...


@contextmanager
def refusing_store() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_never_reach_the_output_or_the_answers(tmp_path: Path) -> None:
    key_id, secret, token = (
        "AKIAUNIQUEKEYID77",
        "secret-Uv9Wq-never-shown",
        "token-Zx81-never-shown",
    )
    local = tmp_path / "local" / "1"
    local.mkdir(parents=True)
    (local / "model.py").write_text(MODEL)
    config = tmp_path / "models.config"
    config.write_text(model_config([("local", tmp_path / "local", "python")]))
    with refusing_store() as port:
        env = {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": token,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
        with (
            running_server(
                [
                    f"--model_config_file={config}",
                    "--log_level=debug",
                    "--allow_python_models_over_network",
                ],
                env,
            ) as server,
            grpc_stubs(server) as stubs,
        ):
            request = model_server_config_pb2.ModelServerConfig()
            text_format.Parse(config.read_text(), request)
            added = request.model_config_list.config.add()
            added.name, added.base_path, added.model_platform = "m", "s3://refused/m", "python"
            with pytest.raises(grpc.RpcError) as err:
                stubs.models.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=request), timeout=60
                )
            details = err.value.details() or ""
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Cannot list s3://refused/m" in details and "Access Denied" in details
            server.wait_for_line("Cannot list s3://refused/m")
            # A second look, through the v2 repository index (a model's status).
            index = httpx.post(f"{server.rest}/v2/repository/index", json={}, timeout=30).text
            assert server.stop() == 0
    assert any(key_id in seen for seen in _Refusing.seen)  # the store was sent them ...
    assert any(token in seen for seen in _Refusing.seen)
    for value in (key_id, secret, token):  # ... and quoted them back: never shown here
        assert value not in server.output
        assert value not in details
        assert value not in index
    assert "<redacted>" in details
