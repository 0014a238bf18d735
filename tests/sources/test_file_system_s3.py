"""The file-system source on base paths in object storage, against moto's S3 server: versions
found by listing under every policy, a version found only once complete, and a store that
fails making polls fail without changing anything."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import pytest

from servo.core.source import ServableData
from servo.core.status import Code
from servo.sources.file_system import (
    AllVersions,
    FileSystemStoragePathSource,
    FileSystemStoragePathSourceConfig,
    LatestVersions,
    ServableToMonitor,
    SpecificVersions,
    find_versions,
)
from servo.util import gfile
from tests.support.s3 import S3Server


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[int, str]]] = []

    def __call__(self, name: str, versions: Sequence[ServableData[str]]) -> None:
        self.calls.append((name, {item.id.version: item.data for item in versions}))

    def versions(self) -> set[int] | None:
        return set(self.calls[-1][1]) if self.calls else None


class Cache:
    """A cache holding complete copies of the listings given."""

    def __init__(self, complete: Sequence[tuple[str, object]] = ()) -> None:
        self.complete = list(complete)
        self.observed: list[str] = []

    def has_complete(self, name: str, url: str, listing: object) -> bool:
        return (url, listing) in self.complete

    def observe(self, url: str, listing: object) -> None:
        self.observed.append(url)


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    name = f"src-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(name)
    return name


def upload_version(s3: S3Server, bucket: str, version: int | str, *names: str) -> None:
    for name in names or ("model.py",):
        s3.put(bucket, f"m/{version}/{name}", f"{version}:{name}")


def make_source(
    bucket: str, policy=None, *, cache=None, errors=None, **kw
) -> tuple[FileSystemStoragePathSource, Recorder]:
    servable = ServableToMonitor("m", f"s3://{bucket}/m", policy or LatestVersions())
    config = FileSystemStoragePathSourceConfig((servable,), file_system_poll_wait_seconds=-1, **kw)
    source = FileSystemStoragePathSource(config, cache=cache, poll_errors=errors)
    recorder = Recorder()
    source.set_aspired_versions_callback(recorder)
    return source, recorder


def polls(source: FileSystemStoragePathSource, n: int = 2) -> None:
    for _ in range(n):
        source.poll_once()


def test_versions_are_numeric_first_segments_found_by_listing(
    s3_env: S3Server, bucket: str
) -> None:
    upload_version(s3_env, bucket, 1, "model.py", "assets/vocab.txt")
    upload_version(s3_env, bucket, "007")
    s3_env.put(bucket, "m/tmp/model.py", "not a version")
    s3_env.put(bucket, "m/9", "an object, not a version directory")
    s3_env.put(bucket, "m/3/", "")  # a console's directory placeholder: no objects under it
    s3_env.put(bucket, "m2/5/model.py", "another base path that shares the prefix")
    assert find_versions(f"s3://{bucket}/m") == {1: f"s3://{bucket}/m/1", 7: f"s3://{bucket}/m/007"}
    assert find_versions(f"s3://{bucket}/m/") == find_versions(f"s3://{bucket}/m")


def test_a_version_is_found_once_two_polls_list_the_same_objects(
    s3_env: S3Server, bucket: str
) -> None:
    upload_version(s3_env, bucket, 1)
    source, rec = make_source(bucket, LatestVersions(2))
    source.poll_once()
    assert rec.versions() == set()  # seen once: not complete yet
    assert "first seen" in source.pending("m")[1]
    source.poll_once()
    assert rec.versions() == {1}
    upload_version(s3_env, bucket, 2, "model.py")
    source.poll_once()
    upload_version(s3_env, bucket, 2, "variables.data")  # still arriving
    source.poll_once()
    assert rec.versions() == {1}
    assert source.pending("m") == {2: "its objects changed since the last poll"}
    source.poll_once()
    assert rec.versions() == {1, 2}
    assert source.pending("m") == {}


def test_an_upload_in_progress_keeps_a_version_incomplete(s3_env: S3Server, bucket: str) -> None:
    upload_version(s3_env, bucket, 1)
    upload_version(s3_env, bucket, 2, "saved_model.pb")
    upload = s3_env.client.create_multipart_upload(Bucket=bucket, Key="m/2/variables/v.data")
    source, rec = make_source(bucket)
    polls(source, 4)
    assert rec.versions() == {1}
    assert source.pending("m") == {2: "an upload under it is in progress"}
    part = s3_env.client.upload_part(
        Bucket=bucket,
        Key="m/2/variables/v.data",
        PartNumber=1,
        UploadId=upload["UploadId"],
        Body=b"x" * 10,
    )
    s3_env.client.complete_multipart_upload(
        Bucket=bucket,
        Key="m/2/variables/v.data",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    polls(source, 2)  # listed with the new object, then the same again
    assert rec.versions() == {2}


def test_with_a_marker_a_version_is_complete_once_it_holds_the_marker(
    s3_env: S3Server, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    upload_version(s3_env, bucket, 1, "model.py", "_SUCCESS")
    upload_version(s3_env, bucket, 2, "model.py")
    with caplog.at_level(logging.INFO):
        source, rec = make_source(bucket, version_marker="_SUCCESS")
        source.poll_once()
        assert rec.versions() == {1}  # the marker decides at once: no second poll needed
        polls(source, 3)
    assert rec.versions() == {1}
    assert "no _SUCCESS object yet" in source.pending("m")[2]
    assert caplog.text.count("Version 2 of servable m") == 1  # once per change, not per poll
    upload_version(s3_env, bucket, 2, "_SUCCESS")
    source.poll_once()
    assert rec.versions() == {2}


def test_a_complete_cached_copy_makes_a_version_complete_at_once(
    s3_env: S3Server, bucket: str
) -> None:
    upload_version(s3_env, bucket, 1)
    url = f"s3://{bucket}/m/1"
    listing = tuple(
        sorted(
            gfile.ObjectInfo(o.path[2:], o.size, o.etag)
            for o in gfile.list_objects(f"s3://{bucket}/m").values()
        )
    )
    cache = Cache([(url, listing)])
    source, rec = make_source(bucket, cache=cache)
    source.poll_once()
    assert rec.versions() == {1}
    assert cache.observed == [url]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (AllVersions(), {1, 2, 3}),
        (LatestVersions(2), {2, 3}),
        (SpecificVersions(frozenset({1, 4})), {1}),
    ],
)
def test_every_version_policy(s3_env: S3Server, bucket: str, policy, expected: set[int]) -> None:
    for version in (1, 2, 3):
        upload_version(s3_env, bucket, version)
    source, rec = make_source(bucket, policy)
    polls(source)
    assert rec.versions() == expected


def test_a_version_deleted_is_no_longer_aspired(s3_env: S3Server, bucket: str) -> None:
    upload_version(s3_env, bucket, 1)
    upload_version(s3_env, bucket, 2)
    source, rec = make_source(bucket, AllVersions())
    polls(source)
    assert rec.versions() == {1, 2}
    s3_env.delete_prefix(bucket, "m/2")
    source.poll_once()
    assert rec.versions() == {1}


def test_nothing_under_the_base_path_is_not_found_and_nothing_unloads(
    s3_env: S3Server, bucket: str
) -> None:
    upload_version(s3_env, bucket, 1)
    source, rec = make_source(bucket)
    polls(source)
    s3_env.delete_prefix(bucket, "m/1")
    calls = len(rec.calls)
    source.poll_once()
    assert len(rec.calls) == calls
    assert source.status("m").code == Code.NOT_FOUND
    assert "Could not find base path" in source.status("m").message


def test_a_missing_bucket_fails_the_poll(
    s3_env: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[tuple[str, Code]] = []
    with caplog.at_level(logging.ERROR):
        source, rec = make_source("no-such-bucket-here", errors=lambda p, c: errors.append((p, c)))
        polls(source, 3)
    assert rec.calls == []
    assert source.status("m").code == Code.NOT_FOUND
    assert errors == [("s3://no-such-bucket-here/m", Code.NOT_FOUND)] * 3  # every poll
    assert caplog.text.count("no-such-bucket-here") == 1  # logged once


def test_the_store_stopped_fails_polls_without_unloading_and_its_return_resumes_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = S3Server()
    store.start()
    try:
        for name, value in store.env().items():
            monkeypatch.setenv(name, value)
        gfile.reset_file_systems()
        store.create_bucket("outage")
        upload_version(store, "outage", 1)
        errors: list[Code] = []
        source, rec = make_source("outage", errors=lambda p, c: errors.append(c))
        polls(source)
        assert rec.versions() == {1}
        calls = len(rec.calls)
        store.stop()
        with caplog.at_level(logging.INFO):
            polls(source, 3)
            assert len(rec.calls) == calls  # nothing emitted: nothing unloads
            assert errors == [Code.UNAVAILABLE] * 3
            assert source.status("m").code == Code.UNAVAILABLE
            assert caplog.text.count("Cannot list s3://outage/m") == 1
            store.start()  # back, empty: the same objects are uploaded again
            store.create_bucket("outage")
            upload_version(store, "outage", 1)
            upload_version(store, "outage", 2)
            polls(source, 2)
        assert source.status("m").ok
        assert "its base path answers again" in caplog.text
        assert rec.versions() == {2}
    finally:
        store.stop()
        gfile.reset_file_systems()


def test_a_config_change_lists_new_versions_again_a_second_later(
    s3_env: S3Server, bucket: str
) -> None:
    upload_version(s3_env, bucket, 1)
    source = FileSystemStoragePathSource(FileSystemStoragePathSourceConfig((), -1))
    rec = Recorder()
    source.set_aspired_versions_callback(rec)
    source.update_config(
        FileSystemStoragePathSourceConfig((ServableToMonitor("m", f"s3://{bucket}/m"),), -1)
    )
    assert rec.versions() == {1}  # no wait for the next poll
    assert source.aspired_versions("m") == (1,)


def test_a_model_directly_in_its_base_path_and_a_directory_no_version_are_named(
    s3_env: S3Server, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    s3_env.put(bucket, "m/model.onnx", "a model with no version directory")
    s3_env.put(bucket, "m/v1/model.onnx", "a version directory that is no number")
    source, rec = make_source(bucket)
    with caplog.at_level(logging.WARNING):
        polls(source)
    assert rec.versions() == set()
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages.count(
            f"Servable m: ignoring s3://{bucket}/m/v1 under its base path: a version directory is "
            "named by a number (e.g. 1 or 00042), and 'v1' is not one"
        )
        == 1
    )
    [hint] = [m for m in messages if "Did you forget" in m]
    assert hint.endswith(
        f"model.onnx is directly in the base path: put the model into a numbered version "
        f"directory, e.g. s3://{bucket}/m/1/model.onnx"
    )
