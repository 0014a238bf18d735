"""The baseline of bench/rest_predict.py: a bare ASGI app that does the same work as servo's
REST predict route (parse the JSON body, run the ONNX model, write the JSON answer), with the
same libraries (orjson, numpy, ONNX Runtime) and nothing else: no routing, no model manager,
no checks. Run with uvicorn (uvloop, httptools); the model path is in SERVO_BENCH_MODEL."""

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


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    x = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    y = _session.run(_OUTPUTS, {_INPUT: x})[0]
    answer = orjson.dumps({"predictions": y}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": answer})
