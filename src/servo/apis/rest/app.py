"""The TFS REST API (JSON over HTTP/1.1) as an RSGI application (served by `http_server`).

Routes, as TFS matches them (case-insensitive, whole path):

    POST /v1/models/{m}[/versions/{v} | /labels/{l}]:(predict|classify|regress)
    GET  /v1/models                                              every model's status (servo's)
    GET  /v1/models/{m}[/versions/{v} | /labels/{l}]            model status
    GET  /v1/models/{m}[/versions/{v} | /labels/{l}]/metadata   signature metadata
    GET  {prometheus path}                                       metrics, when enabled
    GET  /v1/openapi.json                                        this API in OpenAPI 3
    GET, HEAD /                                                  the status page (servo's;
                                                                 `status_page`), when on
    GET, POST /v2/...                                            the Open Inference Protocol
                                                                 (`open_inference`)

TFS matches these on the raw path and then decodes the name and the label; the HTTP server
(`http_server`) hands the app a decoded path, so a name or label that held `%2F` or `%3A` is
read from it by `paths` (the reading whose name is served). Any other `/v1/...` request is
400 "Malformed request: METHOD PATH"; everything else is 404.
Every answer is JSON (but the metrics page and the status page); errors are
`{"error": message}` with the HTTP status of their code.
An `OPTIONS` request (a CORS preflight) to a `/v1/...` path is 200 when it has an `Origin`
header, as in TFS, with or without `--rest_api_enable_cors_support` (which adds the CORS
headers to every `/v1` answer). With metrics on, every `/v1` request is counted by model name
and status, and the latency of those that succeed is recorded, as TFS's HTTP server does.

The whole request path of the protocol reads top to bottom here, with one error boundary in
`__rsgi__`; decoding and encoding live in `json_codec`, the requests' steps in
`data_plane.DataPlane`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from google.protobuf.message import Message

from servo.apis import messages
from servo.apis.data_plane import DataPlane, ExampleResults, ModelSpec, Prediction
from servo.apis.rest import json_codec, open_inference, paths, status_page
from servo.apis.rest.http_server import BodyBudgetExceeded
from servo.apis.rest.read_watch import ReadTimeout, ReadWatch
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.decoded_size import DEFAULT_LIMITS, DecodeLimits
from servo.platforms import servable as model
from servo.platforms.servable import ModelServable

if TYPE_CHECKING:
    from servo.server.model_repository import ModelRepository
    from servo.server.server_core import VersionStatus

log = logging.getLogger(__name__)

# TFS's routes are matched on the raw path; the app is handed a decoded one, where a name or
# a label may hold '/' or ':' (their %2F, %3A decoded): `paths` reads it.
_PREDICTION = re.compile(r"/v1/models/(.+):(classify|regress|predict)", re.IGNORECASE | re.DOTALL)
_MODEL_PREFIX = "/v1/models/"
_METADATA_SUFFIX = "/metadata"
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_V1 = re.compile(r"/v1/", re.IGNORECASE)
_ORIGIN = re.compile(r"https?://")

JSON_HEADERS = [("content-type", "application/json")]
CORS_HEADERS = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST, GET"),
    ("access-control-allow-headers", "Content-Type"),
]
METRICS_HEADERS = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
# The API's OpenAPI 3 document, kept beside this module (no TFS route is /v1/openapi.json).
OPENAPI_PATH = "/v1/openapi.json"
OPENAPI_FILE = Path(__file__).with_name("openapi.json")
_INT64_MAX = 2**63 - 1
_ROUTE_CACHE_SIZE = 4096


@dataclass(frozen=True)
class RestOptions:
    # --rest_api_timeout_in_ms, in seconds; None (or <= 0 in the flag) means no limit.
    timeout: float | None = 30.0
    # --rest_api_enable_cors_support
    enable_cors: bool = False
    # The largest request body accepted, after gzip decoding; larger ones get 413.
    max_body_bytes: int = 64 * 2**20
    # The Prometheus page's path, or None when metrics are off.
    metrics_path: str | None = None
    # --max_decoded_bytes_per_tensor and --max_decoded_bytes_per_request
    decode_limits: DecodeLimits = DEFAULT_LIMITS
    # --rest_api_read_timeout_seconds: the longest wait for a body once the headers are
    # read (408 after it); None means no limit.
    read_timeout: float | None = 30.0
    # --enable_status_page: the status page at `/` (TFS: 404 there).
    status_page: bool = True
    # With --workers > 1: the metrics page of every worker summed (servo.cli.workers);
    # None renders this process's metrics.
    metrics_page: Callable[[], Awaitable[bytes]] | None = None


# How much of a chunked body past the limit is read (and dropped) before the 413.
DRAIN_BYTES = 16 * 2**20


class RequestTooLarge(Exception):
    """A body over the limit (HTTP 413); `read_whole` when the body was read to its end (and
    dropped), so the connection can carry the next request."""

    def __init__(self, message: str, read_whole: bool) -> None:
        super().__init__(message)
        self.read_whole = read_whole


class UnsupportedMediaType(Exception):
    """A body in an encoding servo cannot read (HTTP 415)."""


SUPPORTED_ENCODINGS = ("gzip", "identity")


class RequestTimeout(Exception):
    pass


async def _rest_of(pieces: Any) -> AsyncIterator[bytes]:
    """The pieces an async iterator has left (a body iterator is not iterable twice)."""
    while True:
        try:
            piece: bytes = await anext(pieces)
        except StopAsyncIteration:
            return
        yield piece


class RestApi:
    """Thread-safety: runs on one event loop; the state it reads (the data plane's core and
    metrics) is thread-safe."""

    def __init__(
        self,
        plane: DataPlane,
        options: RestOptions | None = None,
        repository: ModelRepository | None = None,
    ) -> None:
        self.plane = plane
        self.metrics = plane.metrics
        self.options = options or RestOptions()
        self._v2 = open_inference.OpenInference(
            plane,
            timeout=self.options.timeout,
            decode_limits=self.options.decode_limits,
            repository=repository,
            error_code=error_code,
        )
        self._headers = JSON_HEADERS + (CORS_HEADERS if self.options.enable_cors else [])
        self._routes: dict[str, tuple[str, ModelSpec]] = {}
        self._openapi: bytes | None = None  # read on first request
        self._status_page = (
            status_page.StatusPage(self.options.metrics_path) if self.options.status_page else None
        )
        timeout = self.options.read_timeout
        self._read_watch = ReadWatch(timeout) if timeout is not None else None
        self._inference: dict[str, Callable[[ModelSpec, bytes], Awaitable[bytes]]] = {
            "predict": self._predict,
            "classify": self._classify,
            "regress": self._regress,
        }

    # -- the error boundary ----------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        method, path = scope.method, scope.path
        try:
            if path == OPENAPI_PATH and method == "GET":
                if self._openapi is None:
                    self._openapi = OPENAPI_FILE.read_bytes()
                status, body = 200, self._openapi
            elif path.startswith("/v2") and (len(path) == 3 or path[3] == "/"):
                status, headers, body = await self._v2.answer(
                    method, path, scope.headers, lambda: self._read_body(scope, proto)
                )
                if self.options.enable_cors:
                    headers = [*headers, *CORS_HEADERS]
                proto.response_bytes(status, headers, body)
                return
            elif _V1.match(path):
                if self.metrics is None:
                    status, body = await self._v1(method, path, scope, proto, None)
                else:
                    status, body = await self._v1_counted(method, path, scope, proto)
            elif (
                method == "GET"
                and self.options.metrics_path is not None
                and path == self.options.metrics_path
                and self.metrics is not None
            ):
                page = self.options.metrics_page
                body = self.metrics.render() if page is None else await page()
                proto.response_bytes(200, METRICS_HEADERS, body)
                return
            elif path == status_page.PATH and self._status_page is not None:
                proto.response_bytes(*self._status_page.answer(method))
                return
            else:
                status, body = 404, json_codec.dumps_error(f"Not found: {method} {path}")
        except ServoError as exc:
            status, body = json_codec.http_status(exc.code), json_codec.dumps_error(exc.message)
        except RequestTooLarge as exc:
            if not exc.read_whole:  # its unread rest would be taken for the next request
                headers = [*self._headers, ("connection", "close")]
                proto.response_bytes(413, headers, json_codec.dumps_error(str(exc)))
                return
            status, body = 413, json_codec.dumps_error(str(exc))
        except UnsupportedMediaType as exc:
            status, body = 415, json_codec.dumps_error(str(exc))
        except status_page.MethodNotAllowed as exc:
            headers = [*self._headers, ("allow", ", ".join(status_page.ALLOWED_METHODS))]
            proto.response_bytes(405, headers, json_codec.dumps_error(str(exc)))
            return
        except RequestTimeout as exc:
            # The body was not read whole: the connection cannot carry another request.
            headers = [*self._headers, ("connection", "close")]
            proto.response_bytes(408, headers, json_codec.dumps_error(str(exc)))
            return
        except Exception as exc:  # a bug: answer it, log it, keep serving
            log.exception("REST %s %s failed", method, path)
            status = 500
            body = json_codec.dumps_error(f"Internal error: {type(exc).__name__}: {exc}")
        proto.response_bytes(status, self._headers, body)

    async def _v1_counted(
        self, method: str, path: str, scope: Any, proto: Any
    ) -> tuple[int, bytes]:
        """`_v1` with TFS's REST metrics: the request counted by model name ("" when the path
        names none) and status; when it succeeds, its latency by model name and API
        ("predict", "classify", "regress"; "" for status, metadata and preflights)."""
        started = time.perf_counter()
        seen = ["", ""]  # the model name and the API, once the path is parsed
        code = Code.OK
        try:
            return await self._v1(method, path, scope, proto, seen)
        except BaseException as exc:
            code = error_code(exc)
            raise
        finally:
            self.plane.record_request(seen[0], seen[1], "REST", code, started)

    # -- /v1 -------------------------------------------------------------------------------

    async def _v1(
        self, method: str, path: str, scope: Any, proto: Any, seen: list[str] | None
    ) -> tuple[int, bytes]:
        """Answers a /v1 request; fills `seen` (when given) with its model name and API."""
        if method == "POST":
            route = self._routes.get(path)
            if route is None:
                route = self._route(path)
            api, spec = route
            if seen is not None:
                seen[0], seen[1] = spec.name, api
            body = await self._read_body(scope, proto)
            return 200, await self._inference[api](spec, body)
        if method == "GET":
            match = _STATUS.fullmatch(path)
            if match is not None and not match.group(1):
                if not any(match.group(2, 3, 4)):  # GET /v1/models: servo's own route
                    return 200, self._models()
                raise ServoError(Code.INVALID_ARGUMENT, "Missing model name in request.")
            reading = self._status_route(path)
            if reading is None:
                raise _malformed(method, path)
            spec = _model_spec(reading.name, reading.version, reading.label)
            if seen is not None:
                seen[0] = spec.name
            if reading.route:
                return 200, self._metadata(spec)
            return 200, self._status(spec)
        if method == "OPTIONS":
            if _ORIGIN.search(scope.headers.get("origin") or ""):
                return 200, b""
            raise ServoError(Code.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
        raise _malformed(method, path)

    def _route(self, path: str) -> tuple[str, ModelSpec]:
        """A predict/classify/regress path's API and model spec; remembered when it does not
        depend on which models are served, as clients reuse few paths."""
        match = _PREDICTION.fullmatch(path)
        found = paths.readings(match.group(1), labels=True) if match is not None else []
        reading = paths.pick(found, self.plane.model_names)
        if match is None or reading is None:
            raise _malformed("POST", path)
        route = (
            match.group(2).lower(),
            _model_spec(reading.name, reading.version, reading.label),
        )
        if paths.unambiguous(found):
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[path] = route
        return route

    def _status_route(self, path: str) -> paths.Reading | None:
        """The model a status or metadata path names (its `route` "metadata" for metadata),
        or None for a malformed path."""
        if path[: len(_MODEL_PREFIX)].lower() != _MODEL_PREFIX:
            return None
        piece = path[len(_MODEL_PREFIX) :]
        found = paths.readings(piece, labels=True)
        if piece.lower().endswith(_METADATA_SUFFIX):
            metadata = piece[: -len(_METADATA_SUFFIX)]
            found += paths.readings(metadata, labels=True, route="metadata")
        return paths.pick(paths.ordered(found), self.plane.model_names)

    async def _read_body(self, scope: Any, proto: Any) -> bytes:
        limit = self.options.max_body_bytes
        length = scope.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            message = f"Request body of {length} bytes is over the {limit} limit"
            # Read it (dropping it) when it is small enough, so that the 413 reaches a client
            # still sending (a connection closed with data unread is reset, and the client
            # sees no answer) and the connection stays open; a larger one, or one a client
            # waits to send until asked (Expect: 100-continue), is left unread.
            expects = (scope.headers.get("expect") or "").lower() == "100-continue"
            read_whole = (
                int(length) <= DRAIN_BYTES and not expects and await self._drain(proto, int(length))
            )
            raise RequestTooLarge(message, read_whole)
        watch = self._read_watch
        try:
            # A body that has come whole (servo's HTTP server says so: `complete`) is read
            # with no wait, so no deadline is needed: the watch's bookkeeping is skipped.
            if watch is None or getattr(proto, "complete", False):
                body = await self._receive(proto, length, limit)
            else:
                body = await watch.read(self._receive(proto, length, limit))
        except ReadTimeout:
            assert watch is not None
            raise RequestTimeout(
                f"The request body did not arrive within {watch.timeout:g} s "
                "(--rest_api_read_timeout_seconds)"
            ) from None
        except BodyBudgetExceeded as exc:  # the server's bound on the bodies held at once
            raise ServoError(Code.UNAVAILABLE, str(exc)) from None
        encoding = (scope.headers.get("content-encoding") or "").strip().lower()
        if encoding == "gzip":
            body = _gunzip(body, limit)
        elif encoding not in ("", "identity"):
            raise UnsupportedMediaType(
                f"Unsupported Content-Encoding: {encoding}; servo reads bodies in "
                f"{' or '.join(SUPPORTED_ENCODINGS)}"
            )
        return body

    async def _drain(self, proto: Any, length: int) -> bool:
        """Reads a body of `length` bytes to its end, dropping it, within the read deadline;
        whether it was read whole."""

        async def drop() -> int:
            size = 0
            async for chunk in _rest_of(aiter(proto)):
                size += len(chunk)
            return size

        watch = self._read_watch
        try:
            size = await (drop() if watch is None else watch.read(drop()))
        except (ReadTimeout, BodyBudgetExceeded):  # the 413 stands; the connection closes
            return False
        return size == length

    @staticmethod
    async def _receive(proto: Any, length: str | None, limit: int) -> bytes:
        """The request's body as sent, at most `limit` bytes."""
        if length is not None:
            body: bytes = await proto()
            if len(body) > limit:
                raise RequestTooLarge(
                    f"Request body of {len(body)} bytes is over the {limit} limit", True
                )
            return body
        chunks, size = [], 0  # chunked: read piece by piece, never holding more than the limit
        pieces = aiter(proto)  # one iterator: the drain below goes on where the body stopped
        async for chunk in _rest_of(pieces):
            size += len(chunk)
            if size > limit:
                # Read on (dropping it) up to DRAIN_BYTES more, within the read deadline, so
                # that the 413 reaches a client still sending: a connection closed with its
                # data unread is reset, and the client sees no answer at all.
                drained, read_whole = 0, True
                try:
                    async for rest in _rest_of(pieces):
                        drained += len(rest)
                        if drained > max(limit, DRAIN_BYTES):
                            read_whole = False
                            break
                except BodyBudgetExceeded:  # the server's bound: the 413 stands, unread
                    read_whole = False
                raise RequestTooLarge(f"Request body is over the {limit} limit", read_whole)
            chunks.append(chunk)
        return b"".join(chunks)

    # -- inference: decode -> data plane -> encode ---------------------------------------

    async def _predict(self, spec: ModelSpec, body: bytes) -> bytes:
        call = _JsonPredict(json_codec.loads(body), self.options.decode_limits)
        return await self.plane.predict(spec, call, self.options.timeout)

    async def _classify(self, spec: ModelSpec, body: bytes) -> bytes:
        call = _JsonExamples(
            json_codec.loads(body),
            json_codec.dumps_classify,
            messages.classify_messages,
            self.options.decode_limits,
        )
        return await self.plane.classify(spec, call, self.options.timeout)

    async def _regress(self, spec: ModelSpec, body: bytes) -> bytes:
        call = _JsonExamples(
            json_codec.loads(body),
            json_codec.dumps_regress,
            messages.regress_messages,
            self.options.decode_limits,
        )
        return await self.plane.regress(spec, call, self.options.timeout)

    # -- status and metadata ---------------------------------------------------------------

    def _status(self, spec: ModelSpec) -> bytes:
        """TFS's GetModelStatusResponse in proto JSON (int64 as strings, enums by name)."""
        return orjson.dumps(
            {"model_version_status": _version_status(self.plane.model_status(spec))},
            option=orjson.OPT_INDENT_2,
        )

    def _models(self) -> bytes:
        """Every configured model by name, each with its GetModelStatus answer's versions
        (none yet: an empty list) and its version labels, in the config's order. TFS has no
        such route (it answers "Missing model name in request.")."""
        return orjson.dumps(
            {
                "models": [
                    {
                        "name": name,
                        "model_version_status": _version_status(versions),
                        "version_labels": {
                            label: str(version)
                            for label, version in sorted(self.plane.version_labels(name).items())
                        },
                    }
                    for name, versions in self.plane.models()
                ]
            },
            option=orjson.OPT_INDENT_2,
        )

    def _metadata(self, spec: ModelSpec) -> bytes:
        """TFS's metadata answer: the model spec and the SignatureDefMap (its key doubled)."""

        def answer(id: ServableId, servable: ModelServable) -> bytes:
            return orjson.dumps(
                {
                    "model_spec": {
                        "name": spec.name,
                        "signature_name": "",
                        "version": str(id.version),
                    },
                    "metadata": {
                        "signature_def": model.signature_def_map_json(servable.signatures)
                    },
                },
                option=orjson.OPT_INDENT_2,
            )

        return self.plane.metadata(spec, answer)


# -- the data plane's calls, in JSON -------------------------------------------------------------


class _JsonPredict:
    """A predict body; its values are read (within `limits`) once the signature gives their
    dtypes, and the answer takes the body's form ("instances" -> "predictions", "inputs" ->
    "outputs")."""

    __slots__ = ("_body", "_doc", "_limits", "signature_name")
    output_filter = ()

    def __init__(self, doc: dict[str, Any], limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self._doc = doc
        self._limits = limits
        # Read before the model is looked up, as TFS reads it.
        self.signature_name = json_codec.signature_name(doc)
        self._body: json_codec.PredictBody | None = None

    def missing_signature(self, key: str) -> ServoError:
        """TFS's REST text (its gRPC one differs)."""
        return ServoError(
            Code.INVALID_ARGUMENT, f'Serving signature name: "{key}" not found in signature def'
        )

    def input_names(self, signature: model.Signature) -> Collection[str]:
        self._body = json_codec.parse_predict(self._doc, lambda _: signature, self._limits.budget())
        return self._body.inputs.keys()

    def inputs(self) -> dict[str, np.ndarray]:
        assert self._body is not None
        return self._body.inputs

    def answer(self, prediction: Prediction) -> bytes:
        assert self._body is not None
        return json_codec.dumps_predict(prediction.outputs, self._body.row_format)

    def log_messages(self, prediction: Prediction, answer: bytes) -> tuple[Message, Message]:
        return messages.predict_messages(prediction)


class _JsonExamples:
    """A classify or regress body: its examples as serialized tf.Examples, read before the
    model is looked up (they need no signature), within `limits`. `dumps` writes the answer,
    `as_messages` the messages of its request log."""

    __slots__ = ("_as_messages", "_dumps", "_examples", "signature_name")

    def __init__(
        self,
        doc: dict[str, Any],
        dumps: Callable[[Any], bytes],
        as_messages: Callable[[ExampleResults[Any], Sequence[bytes]], tuple[Any, Any]],
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.signature_name, self._examples = json_codec.parse_examples(doc, limits)
        self._dumps = dumps
        self._as_messages = as_messages

    def examples(self) -> list[bytes]:
        return self._examples

    def answer(self, results: ExampleResults[Any]) -> bytes:
        return self._dumps(results.results)

    def log_messages(self, results: ExampleResults[Any], answer: bytes) -> tuple[Any, Any]:
        return self._as_messages(results, self._examples)


def error_code(exc: BaseException) -> Code:
    """The code a failed request is counted by in the request metrics."""
    if isinstance(exc, ServoError):
        return exc.code
    if isinstance(exc, RequestTooLarge):
        return Code.RESOURCE_EXHAUSTED
    if isinstance(exc, UnsupportedMediaType):
        return Code.INVALID_ARGUMENT
    if isinstance(exc, RequestTimeout):
        return Code.DEADLINE_EXCEEDED
    if isinstance(exc, asyncio.CancelledError):
        return Code.CANCELLED
    return Code.INTERNAL


def _malformed(method: str, path: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")


def _model_spec(name: str, version: str | None, label: str | None) -> ModelSpec:
    """The model name, version and label of a path. The HTTP server has URL-decoded the path
    once already, as TFS decodes names and labels once: decoding again would turn a name's
    `%2532` into `2`."""
    number = None
    if version:
        number = int(version)
        if number > _INT64_MAX:
            raise ServoError(
                Code.INVALID_ARGUMENT, f"Failed to convert version: {version} to numeric."
            )
    return ModelSpec(name, number, label or None)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decodes a gzip body, refusing to inflate past `limit` bytes."""
    decoder = zlib.decompressobj(wbits=31)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ServoError(Code.INVALID_ARGUMENT, f"Invalid gzip body: {exc}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise RequestTooLarge(
            f"Request body inflates to more than the {limit} bytes limit", read_whole=True
        )
    if not decoder.eof:
        raise ServoError(Code.INVALID_ARGUMENT, "Invalid gzip body: truncated")
    return out


def _version_status(versions: Sequence[VersionStatus]) -> list[dict[str, Any]]:
    return [
        {
            "version": str(v.version),
            "state": v.state.name,
            "status": {"error_code": v.status.code.name, "error_message": v.status.message},
        }
        for v in versions
    ]
