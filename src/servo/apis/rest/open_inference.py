"""The Open Inference Protocol ("KServe v2") on the REST port, answered from the same data
plane as TFS's routes:

    GET  /v2                                     server metadata (name, version, extensions)
    GET  /v2/health/live                         200 while the server runs
    GET  /v2/health/ready                        200 when every configured model has an
                                                 AVAILABLE version; 400 naming those that have none
    GET  /v2/models/{m}[/versions/{v}]           model metadata (platform, inputs, outputs)
    GET  /v2/models/{m}[/versions/{v}]/ready     200 when the model (the version) is AVAILABLE;
                                                 400 when it is not, 404 for an unknown model
    POST /v2/models/{m}[/versions/{v}]/infer     inference: a TFS predict on the same model
    POST /v2/repository/index                    every model, version and state
    POST /v2/repository/models/{m}/load          add or update a model in the running config
    POST /v2/repository/models/{m}/unload        remove a model from the running config

`{v}` is a version number or a version label (servo's extension). As the protocol says, a 200
means true and a 4xx false; bodies are JSON, errors `{"error": ...}` with the HTTP status of
their code (400 for a bad request, 404 for an unknown model or route, 503 when a model is
unavailable). Paths are matched as written (the protocol's are case-sensitive, unlike TFS's).

Triton's binary tensor extension: a request whose `Inference-Header-Content-Length` header is N
carries its JSON in the first N bytes of the body and, after it, the raw data of each input
whose parameters give a `binary_data_size`, in the order of the inputs. An output is answered
in binary when its request asks for it (`"parameters": {"binary_data": true}`) or the request's
`binary_data_output` parameter is true; the answer then has the same layout, with
`Inference-Header-Content-Length` set and content type application/octet-stream.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

import servo
from servo.apis import open_inference as v2
from servo.apis.data_plane import ModelSpec, Prediction
from servo.apis.rest import paths
from servo.core.status import Code, ServoError
from servo.decoded_size import DEFAULT_LIMITS, DecodeLimits

if TYPE_CHECKING:
    from servo.apis.data_plane import DataPlane
    from servo.server.model_repository import ModelRepository

SERVER_NAME = "servo"
EXTENSIONS: tuple[str, ...] = ("binary_tensor_data", "model_repository")
HEADER_LENGTH = "inference-header-content-length"
BINARY_HEADERS = [("content-type", "application/octet-stream")]
JSON_HEADERS = [("content-type", "application/json")]

# The path is the HTTP server's decoded one: a name (or a version label) may hold a '/' that was
# %2F on the wire, so the model piece is read by `paths` (strictly: no '/' in a name or a
# version, as the protocol's own routes have it).
_MODELS_PREFIX = "/v2/models/"
_READY_SUFFIX = "/ready"
_INFER_SUFFIX = "/infer"
_ANY_VERSION = re.compile(r".+", re.DOTALL)
_REPOSITORY_MODEL = re.compile(r"/v2/repository/models/(.+)/(load|unload)", re.DOTALL)

_ORIGIN = re.compile(r"https?://")
ROUTE_CACHE_SIZE = 4096
Answer = tuple[int, list[tuple[str, str]], bytes]
ReadBody = Callable[[], Awaitable[bytes]]


class OpenInference:
    """The /v2 routes over a data plane (and, for the repository extension, the server's
    model repository; without one those routes answer 404). Thread-safety: as RestApi's."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        timeout: float | None = 30.0,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
        repository: ModelRepository | None = None,
        error_code: Callable[[BaseException], Code] = lambda exc: (
            exc.code if isinstance(exc, ServoError) else Code.INTERNAL
        ),
    ) -> None:
        """`error_code(exc)`: the code a failed infer is counted by (the REST app's, which
        knows its body errors)."""
        self.plane = plane
        self.error_code = error_code
        self.timeout = timeout
        self.decode_limits = decode_limits
        self.repository = repository
        self._infer_routes: dict[str, ModelSpec] = {}  # clients reuse few paths

    def _infer_route(self, path: str) -> ModelSpec | None:
        """The model spec of an infer path (None for another path), remembered when it does
        not depend on which models are served."""
        if not (path.startswith(_MODELS_PREFIX) and path.endswith(_INFER_SUFFIX)):
            return None
        found = self._readings(path[len(_MODELS_PREFIX) : -len(_INFER_SUFFIX)])
        reading = paths.pick(found, self.plane.model_names)
        if reading is None:
            return None
        spec = v2.model_spec(reading.name, reading.version or "")
        if paths.unambiguous(found):
            if len(self._infer_routes) >= ROUTE_CACHE_SIZE:
                self._infer_routes.clear()
            self._infer_routes[path] = spec
        return spec

    @staticmethod
    def _readings(piece: str, route: str = "") -> list[paths.Reading]:
        """A model piece's readings as NAME[/versions/VERSION] (a version or a label)."""
        return paths.readings(
            piece,
            labels=False,
            version=_ANY_VERSION,
            forbidden="/",
            ignore_case=False,
            route=route,
        )

    def _model_route(self, path: str) -> paths.Reading | None:
        """The model a GET /v2/models/... path names: its `route` "ready" for readiness, ""
        for metadata; None when no model is named."""
        if not path.startswith(_MODELS_PREFIX):
            return None
        piece = path[len(_MODELS_PREFIX) :]
        found = self._readings(piece)
        if piece.endswith(_READY_SUFFIX):
            found += self._readings(piece[: -len(_READY_SUFFIX)], route="ready")
        return paths.pick(paths.ordered(found), self.plane.model_names)

    async def answer(self, method: str, path: str, headers: Any, read_body: ReadBody) -> Answer:
        """The status, headers and body of a /v2 request; 404 for a route servo lacks.
        Raises ServoError for an error (the REST boundary writes it)."""
        if method == "POST":
            spec = self._infer_routes.get(path) or self._infer_route(path)
            if spec is not None:
                return await self._infer(spec, headers, read_body)
            if self.repository is not None:
                if path == "/v2/repository/index":
                    return _json(200, await self._index(await read_body()))
                match = _REPOSITORY_MODEL.fullmatch(path)
                if match is not None:
                    name, action = match.group(1, 2)
                    body = await read_body()
                    if action == "load":
                        await self.repository.load(name, _load_config(body))
                    else:
                        await self.repository.unload(name)
                    return 200, JSON_HEADERS, b"{}"
        elif method == "GET":
            return _json(*self._get(path))
        elif method == "OPTIONS" and _ORIGIN.match(headers.get("origin") or ""):
            return 200, JSON_HEADERS, b"{}"  # a CORS preflight, answered as /v1's are
        return _json(404, {"error": f"Not found: {method} {path}"})

    def _get(self, path: str) -> tuple[int, Any]:
        if path in ("/v2", "/v2/"):
            return 200, {
                "name": SERVER_NAME,
                "version": servo.__version__,
                "extensions": [e for e in EXTENSIONS if e != "model_repository" or self.repository],
            }
        if path == "/v2/health/live":
            return 200, {"live": True}
        if path == "/v2/health/ready":
            return self._server_ready()
        reading = self._model_route(path)
        if reading is not None:
            spec = v2.model_spec(reading.name, reading.version or "")
            if reading.route == "ready":
                return self._model_ready(spec)
            return 200, self._metadata(spec)
        return 404, {"error": f"Not found: GET {path}"}

    # -- health and metadata ---------------------------------------------------------------

    def _server_ready(self) -> tuple[int, Any]:
        why = v2.server_not_ready(self.plane)
        return (400, {"error": why}) if why else (200, {"ready": True})

    def _model_ready(self, spec: ModelSpec) -> tuple[int, Any]:
        ready, why = v2.model_ready(self.plane, spec)
        if ready:
            return 200, {"name": spec.name, "ready": True}
        return (400 if spec.name in self.plane.model_names() else 404), {"error": why}

    def _metadata(self, spec: ModelSpec) -> dict[str, Any]:
        return v2.model_metadata_of(self.plane, spec).to_json()

    # -- infer -----------------------------------------------------------------------------

    async def _infer(self, spec: ModelSpec, headers: Any, read_body: ReadBody) -> Answer:
        """An infer: a predict, counted and timed as TFS's REST predict is."""
        started = time.perf_counter()
        code = Code.OK
        try:
            body = await read_body()
            length = headers.get(HEADER_LENGTH)
            if length is None:
                header, binary = body, memoryview(b"")
            else:
                cut = _header_length(length, len(body))
                header, binary = body[:cut], memoryview(body)[cut:]
            call = _infer_call(_loads(header), binary, self.decode_limits, spec.name)
            return await self.plane.predict(spec, call, self.timeout)
        except BaseException as exc:
            code = self.error_code(exc)
            raise
        finally:
            self.plane.record_request(spec.name, "predict", "REST", code, started)

    # -- the repository extension --------------------------------------------------------

    async def _index(self, body: bytes) -> list[dict[str, str]]:
        assert self.repository is not None
        doc = _loads(body) if body.strip() else {}
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise v2.invalid('"ready" must be true or false')
        index = []
        for entry in self.repository.index(ready_only=ready):
            item = {"name": entry.name}
            if entry.version:
                item["version"] = entry.version
            item["state"] = entry.state
            if entry.reason:
                item["reason"] = entry.reason
            index.append(item)
        return index


# -- JSON --------------------------------------------------------------------------------


def _json(status: int, doc: Any) -> Answer:
    return status, JSON_HEADERS, orjson.dumps(doc)


def _loads(body: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise v2.invalid(f"The request is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise v2.invalid("The request's JSON must be an object")
    return doc


def _header_length(length: str, body_length: int) -> int:
    """Inference-Header-Content-Length: the JSON's byte length, at most the body's."""
    length = length.strip()
    digits = length.lstrip("0") or "0"
    if (
        not (length.isascii() and length.isdigit())
        or len(digits) > len(str(body_length))
        or int(digits) > body_length
    ):
        raise v2.invalid(
            f"Inference-Header-Content-Length is {length!r}: it must be the byte length of "
            f"the request's JSON, at most the body's {body_length} bytes"
        )
    return int(digits)


def _load_config(body: bytes) -> str | None:
    """A load's optional model config: `{"parameters": {"config": "<JSON>"}}`."""
    if not body.strip():
        return None
    parameters = _loads(body).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise v2.invalid('"parameters" must be an object')
    unknown = sorted(k for k in parameters if k != "config")
    if unknown:
        raise v2.invalid(
            f'Unsupported load parameter(s): {", ".join(unknown)}; servo takes "config" '
            "(the model's entry of TFS's model config, as JSON)"
        )
    config = parameters.get("config")
    if config is not None and not isinstance(config, str):
        raise v2.invalid('"config" must be a string holding the model config as JSON')
    return config


def _field(doc: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise v2.invalid(f'{what}: "{key}" is missing or not {_KIND_NAMES.get(kind, kind)}')
    return value


_KIND_NAMES: dict[Any, str] = {str: "a string", list: "a list", dict: "an object"}


def _bad_input(index: int, entry: Any) -> ServoError:
    """What is wrong with an input tensor's name, datatype or shape."""
    if not isinstance(entry, dict):
        return v2.invalid(f"Input {index} is not an object")
    name = _field(entry, "name", str, f"Input {index}")
    what = f"Input '{name}'"
    _field(entry, "datatype", str, what)
    _field(entry, "shape", list, what)
    return v2.invalid(f'{what}: "shape" must be a list of integers')


def _parameters(doc: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = doc.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise v2.invalid(f'{what}: "parameters" must be an object')
    if "shared_memory_region" in parameters:
        raise v2.invalid(
            f"{what}: servo has no shared-memory extension; send the tensor in the request"
        )
    return parameters


def _infer_call(
    doc: dict[str, Any], binary: memoryview, limits: DecodeLimits, model_name: str
) -> v2.InferCall[Answer]:
    """The infer request `doc` (its binary data after it) as the data plane's call."""
    parameters = _parameters(doc, "The request")
    signature_name = parameters.get(v2.SIGNATURE_PARAMETER, "")
    if not isinstance(signature_name, str):
        raise v2.invalid(f'The "{v2.SIGNATURE_PARAMETER}" parameter must be a string')
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise v2.invalid('"id" must be a string')
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise v2.invalid('The request has no "inputs": give a list of its input tensors')
    inputs, offset = [], 0
    for index, entry in enumerate(raw_inputs):
        # The checks cost little when they pass: the words of an error are made only for one.
        name = entry.get("name") if type(entry) is dict else None
        datatype, shape = (
            (entry.get("datatype"), entry.get("shape")) if name is not None else (None, None)
        )
        if (
            type(name) is not str
            or type(datatype) is not str
            or type(shape) is not list
            or not all(type(d) is int for d in shape)
        ):
            raise _bad_input(index, entry)
        size = None
        if "parameters" in entry:
            size = _parameters(entry, f"Input '{name}'").get("binary_data_size")
        if size is not None:
            what = f"Input '{name}'"
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise v2.invalid(f"{what}: binary_data_size must be a byte count")
            if "data" in entry:
                raise v2.invalid(f'{what} has both "data" and a binary_data_size: give one')
            if offset + size > len(binary):
                raise v2.invalid(
                    f"{what}: binary_data_size {size} runs past the request's binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            raw = binary[offset : offset + size]
            offset += size
            decode = _raw_decoder(name, datatype, tuple(shape), raw)
        elif "data" in entry:
            decode = _json_decoder(name, datatype, tuple(shape), entry["data"])
        else:
            raise v2.invalid(f"Input '{name}' has no \"data\" (nor a binary_data_size)")
        inputs.append(v2.InferInput(name, datatype, tuple(shape), decode))
    if offset != len(binary):
        raise v2.invalid(
            f"The request has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size claims"
        )
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise v2.invalid('The "binary_data_output" parameter must be true or false')
    outputs, binary_outputs = [], set()
    requested = doc.get("outputs") or []
    if not isinstance(requested, list):
        raise v2.invalid('"outputs" must be a list')
    for index, entry in enumerate(requested):
        if not isinstance(entry, dict):
            raise v2.invalid(f"Output {index} is not an object")
        name = _field(entry, "name", str, f"Output {index}")
        output_parameters = _parameters(entry, f"Output '{name}'")
        if "classification" in output_parameters:
            raise v2.invalid(
                f"Output '{name}': servo has no classification extension; use the model's "
                "classify signature through TFS's :classify"
            )
        wants_binary = output_parameters.get("binary_data", binary_default)
        if not isinstance(wants_binary, bool):
            raise v2.invalid(f"Output '{name}': binary_data must be true or false")
        outputs.append(name)
        if wants_binary:
            binary_outputs.add(name)

    def respond(prediction: Prediction) -> Answer:
        return _infer_answer(
            model_name, request_id, prediction, binary_outputs, binary_default and not outputs
        )

    return v2.InferCall(inputs, outputs, signature_name, limits.budget(), respond)


def _raw_decoder(
    name: str, datatype: str, shape: tuple[int, ...], raw: memoryview
) -> Callable[[Any], Any]:
    return lambda budget: v2.from_raw(name, datatype, shape, raw, budget)


def _json_decoder(
    name: str, datatype: str, shape: tuple[int, ...], data: Any
) -> Callable[[Any], Any]:
    return lambda budget: v2.from_json(name, datatype, shape, data, budget)


def _infer_answer(
    model_name: str,
    request_id: str,
    prediction: Prediction,
    binary_outputs: set[str],
    all_binary: bool,
) -> Answer:
    outputs, chunks = [], []
    for name, array in v2.output_arrays(prediction):
        entry: dict[str, Any] = {
            "name": name,
            "datatype": v2.datatype_of(array),
            "shape": list(array.shape),
        }
        if all_binary or name in binary_outputs:
            raw = v2.to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = v2.to_json_data(name, array)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(prediction.id.version),
        "outputs": outputs,
    }
    if request_id:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return 200, JSON_HEADERS, header
    return (
        200,
        [*BINARY_HEADERS, ("inference-header-content-length", str(len(header)))],
        b"".join([header, *chunks]),
    )
