"""The baselines of bench/rest_predict.py: a bare app that does the same work as servo's REST
predict route (parse the JSON body, run the ONNX model, write the JSON answer), with the same
libraries (orjson, numpy, ONNX Runtime) and nothing else: no routing, no model manager, no
checks. `app` is the ASGI form, run with uvicorn (uvloop, httptools); `rsgi_app` the RSGI form,
run with granian (uvloop) or servo's own HTTP server (bench/http_stack.py). The model path is
in SERVO_BENCH_MODEL."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson

_options = ort.SessionOptions()
_options.intra_op_num_threads = 1
_session = ort.InferenceSession(
    os.environ["SERVO_BENCH_MODEL"], _options, providers=["CPUExecutionProvider"]
)
_INPUT = _session.get_inputs()[0].name
_OUTPUTS = [o.name for o in _session.get_outputs()]
_HEADERS = [(b"content-type", b"application/json")]
_RSGI_HEADERS = [("content-type", "application/json")]


def predict(body: bytes) -> bytes:
    x = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    y = _session.run(_OUTPUTS, {_INPUT: x})[0]
    return orjson.dumps({"predictions": y}, option=orjson.OPT_SERIALIZE_NUMPY)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer = predict(body)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": answer})


class _RsgiApp:
    async def __rsgi__(self, scope, proto):
        if scope.proto != "http":
            return
        proto.response_bytes(200, _RSGI_HEADERS, predict(await proto()))


rsgi_app = _RsgiApp()
