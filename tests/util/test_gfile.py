"""servo.util.gfile: the URLs servo reads, the stores' settings from their environment
variables, credentials kept out of messages, and files read whole from a real S3 server."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from servo.core.status import Code, ServoError
from servo.util import gfile
from tests.support.s3 import S3Server


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket",
        "s3://bucket/prefix/m",
        "gs://my.bucket/a/b/",
        "S3://bucket/m",
        "/local",
        "file:///x",
    ],
)
def test_urls_servo_reads(url: str) -> None:
    gfile.check_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://host/m", "not one servo reads"),
        ("simplecache::s3://b/m", "not one servo reads"),
        ("memory://b/m", "not one servo reads"),
        ("s3://AKIAKEY:secret@bucket/m", "may not carry credentials"),
        ("s3://bucket/m?versionId=1", "query"),
        ("s3://bucket:9000/m", "no port"),
        ("s3:///m", "names a bucket"),
        ("s3://bucket/a/../b", "segments"),
        ("s3://bucket/a/./b", "segments"),
        ("s3://bucket/a//b", "segments"),
    ],
)
def test_urls_servo_refuses_and_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        gfile.check_url(url)
    assert "secret" not in str(err.value)


def test_schemes_and_local_paths() -> None:
    assert gfile.scheme("/m") is None and gfile.scheme("file:///m") is None
    assert gfile.scheme("S3://b/m") == "s3" and gfile.is_remote("gs://b/m")
    assert gfile.local_path("file:///models/m") == "/models/m"
    assert gfile.local_path("file://localhost/models/m") == "/models/m"
    assert gfile.normalize("S3://b/m/") == "s3://b/m"
    assert gfile.join("s3://b/m/", "1") == "s3://b/m/1"


def test_s3_settings_come_from_the_environment_tfs_names_included() -> None:
    options = gfile.s3_options({"S3_ENDPOINT": "127.0.0.1:9000", "S3_USE_HTTPS": "0"})
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9000"}
    options = gfile.s3_options({"S3_ENDPOINT": "minio:9000", "S3_REGION": "eu-west-1"})
    assert options["client_kwargs"] == {
        "endpoint_url": "https://minio:9000",
        "region_name": "eu-west-1",
    }
    options = gfile.s3_options(
        {
            "AWS_ENDPOINT_URL": "http://a:1",
            "S3_ENDPOINT": "b:2",  # AWS's own variable wins
            "AWS_REGION": "us-west-2",
            "S3_VERIFY_SSL": "0",
        }
    )
    assert options["client_kwargs"] == {
        "endpoint_url": "http://a:1",
        "region_name": "us-west-2",
        "verify": False,
    }
    assert gfile.s3_options({"AWS_ENDPOINT_URL_S3": "http://c:3"})["client_kwargs"] == {
        "endpoint_url": "http://c:3"
    }
    assert gfile.s3_options({})["use_listings_cache"] is False  # every poll asks the store
    assert "key" not in gfile.s3_options({"AWS_ACCESS_KEY_ID": "x"})  # botocore's own chain


def test_secrets_from_variables_and_files_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = tmp_path / "credentials"
    aws.write_text(
        "[default]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = filesecret1\n"
    )
    google = tmp_path / "google.json"
    google.write_text(
        json.dumps(
            {
                "type": "service_account",
                "private_key_id": "googlekeyid1",
                "private_key": "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END",
                "client_email": "x@y.iam",
            }
        )
    )
    env = {
        "AWS_SECRET_ACCESS_KEY": "envsecret123",
        "AWS_SESSION_TOKEN": "sessiontoken1",
        "AWS_SHARED_CREDENTIALS_FILE": str(aws),
        "GOOGLE_APPLICATION_CREDENTIALS": str(google),
    }
    secrets = gfile.secret_values(env)
    for value in ("envsecret123", "sessiontoken1", "AKIAFROMFILE", "filesecret1", "googlekeyid1"):
        assert value in secrets
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in secrets  # a line of the key alone too
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    gfile.reset_secrets()
    try:
        text = "denied: sessiontoken1 and filesecret1 (MIIEvQIBADANBgkqhkiG9w0BAQEFAASC)"
        assert gfile.redact(text) == "denied: <redacted> and <redacted> (<redacted>)"
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "key %s", ("envsecret123",), None
        )
        assert gfile.RedactingFormatter("%(message)s").format(record) == "key <redacted>"
    finally:
        gfile.reset_secrets()


def test_error_codes_of_the_stores_exceptions() -> None:
    assert gfile.error_code(FileNotFoundError("x")) == Code.NOT_FOUND
    assert gfile.error_code(PermissionError("Access Denied")) == Code.PERMISSION_DENIED
    assert gfile.error_code(OSError("An error occurred (SignatureDoesNotMatch)")) == (
        Code.PERMISSION_DENIED
    )
    assert gfile.error_code(OSError("Could not connect to the endpoint URL")) == Code.UNAVAILABLE
    from botocore.exceptions import NoCredentialsError

    error = gfile.storage_error(NoCredentialsError(), "Cannot list s3://b/m")
    assert error.code == Code.UNAUTHENTICATED
    assert "set AWS_ACCESS_KEY_ID" in error.message


def test_files_listings_and_their_errors_in_a_real_store(s3_env: S3Server) -> None:
    bucket = f"gfile-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(bucket)
    s3_env.put(bucket, "configs/models.config", "model_config_list {}\n")
    s3_env.put(bucket, "m/1/model.py", "x = 1\n")
    s3_env.put(bucket, "m/1/", "")  # a placeholder: not an object of the version
    assert gfile.read_file(f"s3://{bucket}/configs/models.config") == b"model_config_list {}\n"
    with pytest.raises(gfile.StorageError) as err:
        gfile.read_file(f"s3://{bucket}/configs/nope.config")
    assert err.value.code == Code.NOT_FOUND and isinstance(err.value, OSError)
    listed = gfile.list_objects(f"s3://{bucket}/m")
    assert list(listed) == ["1/model.py"]
    assert listed["1/model.py"].size == 6 and listed["1/model.py"].etag
    assert gfile.list_objects(f"s3://{bucket}/nothing") == {}
    with pytest.raises(ServoError) as listing:
        gfile.list_objects(f"s3://{bucket}/m/1/model.py")
    assert listing.value.code == Code.INVALID_ARGUMENT  # a file, not a directory
    with pytest.raises(ServoError) as missing:
        gfile.list_objects("s3://no-such-bucket-gfile/m")
    assert missing.value.code == Code.NOT_FOUND
    assert gfile.uploads_in_progress(f"s3://{bucket}/m/1") is False


def test_local_files_are_read_as_before(tmp_path: Path) -> None:
    (tmp_path / "a.config").write_text("text")
    assert gfile.read_file(str(tmp_path / "a.config")) == b"text"
    assert gfile.read_file(f"file://{tmp_path}/a.config") == b"text"
    with pytest.raises(FileNotFoundError):
        gfile.read_file(str(tmp_path / "nope"))
