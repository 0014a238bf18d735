"""One file-system interface for what servo reads: local paths, `file://`, `s3://` and `gs://`.

TensorFlow reads every path through a file system registered for its URL scheme (its
`tf.io.gfile`); TFS therefore takes `s3://bucket/prefix` and `gs://bucket/prefix` wherever it
takes a path. servo does the same for model base paths and its config files, through fsspec
(the `s3` extra: s3fs, `gcs`: gcsfs), imported only when such a URL is first read.

- A path without a scheme is local, and so is `file:///abs/path` (read as `/abs/path`); the
  only other schemes are `s3` and `gs` (`check_url`): fsspec's others (http, sftp, zip,
  chains) would let a config make the server fetch from any host.
- A URL names a bucket and a key prefix, never credentials (`user:secret@`), a port, a query
  or a `.`/`..`/empty segment, so that a prefix means what it says to every store.
- Credentials and endpoints come only from each store's usual environment variables and
  files, never from the command line or a config: S3 from botocore's chain
  (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
  `~/.aws/credentials`, instance roles), `AWS_REGION` (or TFS's `S3_REGION`),
  `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (or TFS's `S3_ENDPOINT`, a host:port with
  `S3_USE_HTTPS` and `S3_VERIFY_SSL`); GCS from Google's default credentials
  (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's, the metadata server) and
  `STORAGE_EMULATOR_HOST`.
- Errors are `ServoError`s (listings) or `StorageError`s (an `OSError`, for file reads) with
  a code (NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED, UNAVAILABLE) and a message from
  which every credential servo knows of has been removed (`redact`); the logs are redacted
  the same way (`RedactingFormatter`), and the store clients' own loggers, which write
  signed requests at DEBUG, are kept at WARNING.
- Listings are never cached: every call asks the store.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from servo import pip_install
from servo.core.status import Code, ServoError

OBJECT_STORES = ("s3", "gs")
EXTRAS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs")}  # scheme -> (module, servo extra)

# Loggers of the store clients: at DEBUG they write signed requests (the access key id, the
# session token); kept at WARNING whatever --log_level says.
CLIENT_LOGGERS = (
    "botocore",
    "aiobotocore",
    "boto3",
    "s3fs",
    "gcsfs",
    "fsspec",
    "google",
    "google_auth_httplib2",
    "urllib3",
    "aiohttp",
)


def scheme(path: str) -> str | None:
    """`s3` or `gs` for an object-store URL; None for a local path (`file://` included).
    Another scheme is returned as written (lowercased), for `check_url` to refuse."""
    if "://" not in path:
        return None
    found = path.split("://", 1)[0].lower()
    return None if found == "file" else found


def is_remote(path: str) -> bool:
    """Whether `path` is a URL of an object store (or of a scheme servo refuses)."""
    return scheme(path) is not None


def local_path(path: str) -> str:
    """A local path as the OS takes it: `file:///x` -> `/x`; anything else unchanged."""
    if path[:7].lower() == "file://":
        rest = path[7:]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return rest
    return path


def check_url(url: str) -> None:
    """Raises ValueError (its message says why, never echoing credentials) unless `url` is
    a URL servo reads: `s3://bucket[/prefix]` or `gs://bucket[/prefix]`."""
    found = scheme(url)
    if found is None:
        return
    if found not in OBJECT_STORES:
        raise ValueError(
            f"the scheme {found}:// is not one servo reads (local paths, file://, s3://, gs://)"
        )
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(
            f"a {found}:// URL may not carry credentials; they come from the store's "
            "environment variables and files"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"a {found}:// URL may not have a query or a fragment")
    if not parts.netloc or ":" in parts.netloc:
        raise ValueError(f"a {found}:// URL names a bucket (and no port): {found}://BUCKET/...")
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if any(s in ("", ".", "..") for s in segments) or "//" in parts.path:
        raise ValueError(f"a {found}:// URL may not have empty, '.' or '..' segments")


def normalize(url: str) -> str:
    """`url` with its scheme lowercased and no trailing slash (check it first)."""
    found = scheme(url)
    if found is None:
        return url
    return f"{found}://{url.split('://', 1)[1].strip('/')}"


def join(url: str, *names: str) -> str:
    return "/".join([normalize(url), *names])


def _bucket_path(url: str) -> str:
    """fsspec's form of a URL: `bucket/prefix`."""
    return url.split("://", 1)[1].strip("/")


# -- credentials and their redaction ------------------------------------------------------

SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
_SECRET_FILE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
_GOOGLE_SECRET_KEYS = ("private_key", "private_key_id", "client_secret", "refresh_token")
_MIN_SECRET = 4  # shorter values would redact ordinary words
REDACTED = "<redacted>"

_secrets: tuple[str, ...] | None = None
_secrets_lock = threading.Lock()


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every credential servo can know of: the AWS variables, the AWS shared credentials
    file's keys, the secrets of GOOGLE_APPLICATION_CREDENTIALS's file; longest first."""
    env = os.environ if environ is None else environ
    found = {env[name] for name in SECRET_ENV if env.get(name)}
    credentials = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(
        os.path.expanduser("~"), ".aws", "credentials"
    )
    with contextlib.suppress(OSError, configparser.Error, UnicodeDecodeError):
        parser = configparser.RawConfigParser()
        parser.read(credentials, encoding="utf-8")
        for section in parser.sections():
            found.update(
                parser.get(section, k) for k in _SECRET_FILE_KEYS if parser.has_option(section, k)
            )
    google = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if google:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(google, encoding="utf-8") as f:
                data = json.load(f)
            found.update(str(data[k]) for k in _GOOGLE_SECRET_KEYS if data.get(k))
    values = {v.strip() for v in found if len(v.strip()) >= _MIN_SECRET}
    # A PEM key is also redacted line by line (a message may quote one line of it).
    for value in list(values):
        if "\n" in value:
            values.update(line for line in value.splitlines() if len(line) >= 16)
    return tuple(sorted(values, key=len, reverse=True))


def _known_secrets() -> tuple[str, ...]:
    global _secrets
    with _secrets_lock:
        if _secrets is None:
            _secrets = secret_values()
        return _secrets


def reset_secrets() -> None:
    """Reads the credentials again at the next `redact` (tests change the environment)."""
    global _secrets
    with _secrets_lock:
        _secrets = None


def redact(text: str) -> str:
    """`text` with every known credential replaced by `<redacted>`."""
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose lines (messages and tracebacks) never hold a known credential."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def quiet_client_loggers() -> None:
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    # gcsfs logs every request that runs out of retries with its traceback, at ERROR: servo
    # logs the failed poll or download itself, once per change.
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


# -- the stores' file systems ---------------------------------------------------------------


def s3_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs's options from the environment: the endpoint (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL, or TFS's S3_ENDPOINT with S3_USE_HTTPS), the region (AWS_REGION or
    TFS's S3_REGION; botocore reads AWS_DEFAULT_REGION itself), TFS's S3_VERIFY_SSL=0;
    credentials are left to botocore's chain."""
    env = os.environ if environ is None else environ
    client: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    tfs_endpoint = env.get("S3_ENDPOINT", "").strip()
    if not endpoint and tfs_endpoint:
        if "://" in tfs_endpoint:
            endpoint = tfs_endpoint
        else:
            https = env.get("S3_USE_HTTPS", "1").strip().lower() not in ("0", "false")
            endpoint = f"{'https' if https else 'http'}://{tfs_endpoint}"
    if endpoint:
        client["endpoint_url"] = endpoint
    region = env.get("AWS_REGION") or env.get("S3_REGION")
    if region:
        client["region_name"] = region
    if env.get("S3_VERIFY_SSL", "1").strip().lower() in ("0", "false"):
        client["verify"] = False
    return {
        "client_kwargs": client,
        # A poll that fails is tried again at the next poll, so a request is not retried
        # here (botocore's retries, with their back-off, took 2 to 5 s per refused poll);
        # the downloads retry each object themselves (servo.sources.version_cache).
        "config_kwargs": {
            "connect_timeout": 10,
            "read_timeout": 60,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
        "use_listings_cache": False,
        "skip_instance_cache": True,
    }


def gcs_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """gcsfs's options: Google's default credentials (token None), no listing cache;
    STORAGE_EMULATOR_HOST is read by gcsfs itself."""
    return {"token": None, "use_listings_cache": False, "skip_instance_cache": True}


_file_systems: dict[str, Any] = {}
_fs_lock = threading.Lock()


def file_system(store: str) -> Any:
    """The fsspec file system of `store` (`s3` or `gs`), one per process; FAILED_PRECONDITION
    naming the extra when its package is not installed."""
    with _fs_lock:
        found = _file_systems.get(store)
        if found is not None:
            return found
        module, extra = EXTRAS[store]
        try:
            if store == "s3":
                import s3fs

                found = s3fs.S3FileSystem(**s3_options())
                found.retries = 1  # no retries of its own beside botocore's one
            else:
                import gcsfs

                found = gcsfs.GCSFileSystem(**gcs_options())
        except ImportError:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"Reading {store}:// paths needs {module}, which is not installed: "
                + pip_install(extra),
            ) from None
        quiet_client_loggers()
        _file_systems[store] = found
        return found


def reset_file_systems() -> None:
    """Forgets the file systems made (tests change the environment between servers)."""
    with _fs_lock:
        _file_systems.clear()
    reset_secrets()


def _fs_of(url: str) -> Any:
    try:
        check_url(url)
    except ValueError as exc:
        raise ServoError(Code.INVALID_ARGUMENT, f"{url}: {exc}") from None
    store = scheme(url)
    assert store is not None
    return file_system(store)


# -- errors -----------------------------------------------------------------------------------


class StorageError(OSError):
    """A file that could not be read from a store; `code` says how (NOT_FOUND, ...)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403")
_MISSING = ("NoSuchBucket", "NoSuchKey", "404")


def error_code(exc: BaseException) -> Code:
    """The code of a store client's exception."""
    name = type(exc).__name__
    if isinstance(exc, ServoError | StorageError):
        return exc.code
    if isinstance(exc, FileNotFoundError):
        return Code.NOT_FOUND
    if isinstance(exc, PermissionError):
        return Code.PERMISSION_DENIED
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
        return Code.UNAUTHENTICATED
    text = str(exc)
    if any(word in text for word in _DENIED):
        return Code.PERMISSION_DENIED
    if any(word in text for word in _MISSING):
        return Code.NOT_FOUND
    return Code.UNAVAILABLE  # unreachable, timed out, throttled, a 5xx: try again


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ == "NoCredentialsError":
        text += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return redact(" ".join(text.split()))


def storage_error(exc: BaseException, what: str) -> ServoError:
    """`exc`, raised by a store client while doing `what`, as a redacted ServoError."""
    if isinstance(exc, ServoError):
        return ServoError(exc.code, redact(exc.message))
    return ServoError(error_code(exc), f"{what}: {_describe(exc)}")


# -- listing and reading ------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ObjectInfo:
    """One object under a prefix: its path below the prefix, size and ETag (GCS: its
    generation)."""

    path: str
    size: int
    etag: str


def _etag(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "md5Hash", "mtime"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return ""


def list_objects(url: str) -> dict[str, ObjectInfo]:
    """Every object under the prefix `url` (its path below it -> info), directory
    placeholders (keys ending in `/`) left out. An empty dict when nothing is there. Raises
    a redacted ServoError when the store cannot answer; INVALID_ARGUMENT when `url` is an
    object itself (a file, not a directory)."""
    fs = _fs_of(url)
    base = _bucket_path(url)
    try:
        found = fs.find(base, detail=True)
    except Exception as exc:
        raise storage_error(exc, f"Cannot list {normalize(url)}") from None
    objects: dict[str, ObjectInfo] = {}
    prefix = base + "/"
    for name, info in found.items():
        if name == base and info.get("type") != "directory":
            raise ServoError(Code.INVALID_ARGUMENT, f"Base path {url} is not a directory")
        if not name.startswith(prefix) or name.endswith("/") or info.get("type") == "directory":
            continue
        relative = name[len(prefix) :]
        objects[relative] = ObjectInfo(relative, int(info.get("size") or 0), _etag(info))
    return objects


def uploads_in_progress(url: str) -> bool | None:
    """Whether an upload under the prefix `url` has begun and not ended (S3's multipart
    uploads, which the AWS tools use for files over 8 MiB: the object is listed only once
    its upload ends); None when the store cannot tell (GCS, or the permission is
    missing)."""
    if scheme(url) != "s3":
        return None
    fs = _fs_of(url)
    bucket, _, key = _bucket_path(url).partition("/")
    try:
        answer = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key + "/")
    except Exception:
        return None
    return bool(answer.get("Uploads"))


@contextlib.contextmanager
def open_object(url: str, expected: ObjectInfo | None = None) -> Iterator[IO[bytes]]:
    """The object at `url`, opened for reading in order. With `expected`, UNAVAILABLE unless
    the object is still that one (its size and ETag); S3's reads then ask for that ETag
    (If-Match), so an object replaced during the read fails instead of mixing two."""
    fs = _fs_of(url)
    try:
        f = fs.open(_bucket_path(url), "rb", block_size=4 * 2**20, cache_type="none")
    except Exception as exc:
        raise storage_error(exc, f"Cannot read {url}") from None
    try:
        if expected is not None:
            details = getattr(f, "details", None) or {}
            size = details.get("size", expected.size)
            etag = _etag(details) or expected.etag
            if int(size) != expected.size or etag != expected.etag:
                raise ServoError(
                    Code.UNAVAILABLE, f"{url} changed since it was listed (being uploaded?)"
                )
        yield f
    finally:
        with contextlib.suppress(Exception):
            f.close()


def read_file(path: str) -> bytes:
    """The whole file at `path` (local, `file://` or a store's URL); an OSError (a
    `StorageError` with a redacted message for a store) when it cannot be read. A store's
    object is read in one piece: the old object or the new, never a mix."""
    if not is_remote(path):
        with open(local_path(path), "rb") as f:
            return f.read()
    try:
        fs = _fs_of(path)
    except ServoError as exc:
        raise StorageError(exc.code, exc.message) from None
    try:
        data: bytes = fs.cat_file(_bucket_path(path))
    except Exception as exc:
        error = storage_error(exc, f"Cannot read {path}")
        raise StorageError(error.code, error.message) from None
    return data
