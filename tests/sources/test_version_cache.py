"""The local copies of versions in object storage, against moto's S3 server: downloaded whole
or not at all, reused when the listing is unchanged, removed with their version, and the
cache directory kept to one server and its user."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.sources import version_cache
from servo.sources.version_cache import VersionCache
from servo.util import gfile
from tests.support.s3 import S3Server

ID = ServableId("m", 1)


@pytest.fixture
def url(s3_env: S3Server) -> str:
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(bucket)
    s3_env.put(bucket, "m/1/model.py", "x = 1\n")
    s3_env.put(bucket, "m/1/variables/variables.data", b"\x00" * 3000)
    s3_env.put(bucket, "m/1/assets.extra/tf_serving_warmup_requests", b"w")
    return f"s3://{bucket}/m/1"


def entries(cache_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(cache_dir) if n != ".lock")


def test_a_version_is_downloaded_whole_then_reused_and_removed_with_its_version(
    url: str, tmp_path: Path
) -> None:
    outcomes: list[tuple[str, str, int]] = []
    cache = VersionCache(str(tmp_path / "cache"), on_download=lambda *a: outcomes.append(a))
    local = Path(cache.fetch(ID, url))
    assert (local / "model.py").read_text() == "x = 1\n"
    assert (local / "variables" / "variables.data").stat().st_size == 3000
    assert (local / "assets.extra" / "tf_serving_warmup_requests").read_bytes() == b"w"
    assert outcomes == [("m", "downloaded", 3007)]
    key = local.parent.name
    assert local.name == "1"  # named as the version directory is
    assert entries(tmp_path / "cache") == [key, f"{key}.complete"]
    marker = json.loads((tmp_path / "cache" / f"{key}.complete").read_text())
    assert marker["url"] == url and len(marker["objects"]) == 3
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert cache.size(url) == 3007
    # The server stops: the copy stays, and the next server reuses it.
    cache.stop()
    cache.release(ID, url)
    restarted = VersionCache(str(tmp_path / "cache"), on_download=lambda *a: outcomes.append(a))
    assert restarted.has_complete("m", url, tuple(sorted(gfile.list_objects(url).values())))
    assert restarted.fetch(ID, url) == str(local)
    assert outcomes[-1] == ("m", "reused", 0)
    restarted.release(ID, url)  # the version unloads: its copy goes
    assert entries(tmp_path / "cache") == []


def test_a_copy_whose_listing_changed_is_downloaded_again(
    url: str, s3_env: S3Server, tmp_path: Path
) -> None:
    cache = VersionCache(str(tmp_path))
    local = Path(cache.fetch(ID, url))
    cache.stop()
    bucket = url.split("/")[2]
    s3_env.put(bucket, "m/1/model.py", "x = 2\n")  # same size, another ETag
    again = VersionCache(str(tmp_path))
    assert Path(again.fetch(ID, url)) == local
    assert (local / "model.py").read_text() == "x = 2\n"


def test_a_copy_missing_a_file_or_its_marker_is_not_reused(url: str, tmp_path: Path) -> None:
    cache = VersionCache(str(tmp_path))
    local = Path(cache.fetch(ID, url))
    cache.stop()
    listing = tuple(sorted(gfile.list_objects(url).values()))
    os.truncate(local / "variables" / "variables.data", 10)
    assert not VersionCache(str(tmp_path)).has_complete("m", url, listing)
    os.remove(str(local.parent) + ".complete")
    again = VersionCache(str(tmp_path))
    assert not again.has_complete("m", url, listing)
    again.fetch(ID, url)
    assert (local / "variables" / "variables.data").stat().st_size == 3000


def test_a_failed_download_leaves_nothing_behind(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VersionCache(str(tmp_path), download_threads=1)
    real = gfile.open_object
    calls: list[str] = []

    def failing(object_url: str, expected=None):  # type: ignore[no-untyped-def]
        calls.append(object_url)
        if object_url.endswith("variables.data"):
            raise ServoError(Code.PERMISSION_DENIED, "Cannot read: Access Denied")
        return real(object_url, expected)

    monkeypatch.setattr(gfile, "open_object", failing)
    with pytest.raises(ServoError) as err:
        cache.fetch(ID, url)
    assert err.value.code == Code.PERMISSION_DENIED
    assert entries(tmp_path) == []  # no partial directory, no marker
    monkeypatch.setattr(gfile, "open_object", real)
    assert Path(cache.fetch(ID, url)).is_dir()  # the load's retry downloads it whole


def test_an_object_that_fails_for_a_moment_is_downloaded_again(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gfile.open_object
    failures = [ServoError(Code.UNAVAILABLE, "Could not connect to the endpoint URL")]

    def flaky(object_url: str, expected=None):  # type: ignore[no-untyped-def]
        if object_url.endswith("model.py") and failures:
            raise failures.pop()
        return real(object_url, expected)

    monkeypatch.setattr(gfile, "open_object", flaky)
    monkeypatch.setattr(version_cache, "RETRY_SECONDS", 0.0)
    local = Path(VersionCache(str(tmp_path)).fetch(ID, url))
    assert (local / "model.py").read_text() == "x = 1\n"


def test_a_version_changed_during_its_download_is_refused(
    url: str, s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = url.split("/")[2]
    real = gfile.open_object

    def upload_meanwhile(object_url: str, expected=None):  # type: ignore[no-untyped-def]
        if object_url.endswith("model.py"):
            s3_env.put(bucket, "m/1/late.txt", "arrived during the download")
        return real(object_url, expected)

    monkeypatch.setattr(gfile, "open_object", upload_meanwhile)
    with pytest.raises(ServoError, match="changed while it was downloaded") as err:
        VersionCache(str(tmp_path), download_threads=1).fetch(ID, url)
    assert err.value.code == Code.UNAVAILABLE
    assert entries(tmp_path) == []


def test_objects_that_would_leave_the_entry_are_refused(s3_env: S3Server, tmp_path: Path) -> None:
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(bucket)
    s3_env.put(bucket, "m/1/model.py", "x")
    s3_env.put(bucket, "m/1/../../escape.py", "y")  # a key S3 stores as written
    with pytest.raises(ServoError, match="not a plain relative path") as err:
        VersionCache(str(tmp_path)).fetch(ID, f"s3://{bucket}/m/1")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert not (tmp_path.parent / "escape.py").exists()


def test_the_cache_directory_is_one_servers_and_its_users(url: str, tmp_path: Path) -> None:
    first = VersionCache(str(tmp_path / "cache"))
    first.fetch(ID, url)
    with pytest.raises(ServoError, match="in use by another servo process") as err:
        VersionCache(str(tmp_path / "cache")).fetch(ServableId("other", 1), url)
    assert err.value.code == Code.FAILED_PRECONDITION
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ServoError, match="others may write to it"):
        VersionCache(str(shared)).fetch(ID, url)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "cache")
    with pytest.raises(ServoError, match="not a directory"):
        VersionCache(str(link)).fetch(ID, url)


def test_leftovers_of_an_earlier_run_are_removed(url: str, tmp_path: Path) -> None:
    (tmp_path / "0123.partial-99-0").mkdir()  # a download a killed server left
    (tmp_path / "4567").mkdir()  # a copy no version of this run loads
    (tmp_path / "4567.complete").write_text("{}")
    cache = VersionCache(str(tmp_path))
    local = Path(cache.fetch(ID, url))
    assert "0123.partial-99-0" not in entries(tmp_path)
    cache.prune()
    assert entries(tmp_path) == [local.parent.name, f"{local.parent.name}.complete"]


def test_downloads_are_held_to_the_bandwidth(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    class Clock:
        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            return False

        def is_set(self) -> bool:
            return False

        def set(self) -> None: ...

    monkeypatch.setattr(version_cache, "CHUNK", 500)
    cache = VersionCache(str(tmp_path), max_bytes_per_second=1000, download_threads=1)
    monkeypatch.setattr(cache, "_stop", Clock())
    cache.fetch(ID, url)
    # 3,007 bytes in chunks of at most 500 at 1,000 bytes a second; the clock does not move
    # here, so the last chunk waits for the time of every chunk before it.
    assert 2.4 < max(waits) <= 3.01
