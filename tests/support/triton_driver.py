"""Calls a server with the official Open Inference Protocol client, `tritonclient`, as a user's
program would. Runs in the venv that has tritonclient (not servo's: it pins older protobuf),
so it imports nothing of servo or of the tests.

    python triton_driver.py < {"protocol": "http" | "grpc", "url": "127.0.0.1:PORT",
                               "calls": [{"op": ..., ...}, ...]}

prints one JSON answer per call: the call's result, or {"error": text, "status": code} when the
client raised. Tensors travel as {"datatype", "shape", "data"}: numbers as JSON numbers, BYTES
as hex strings (any bytes survive).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype


def _array(tensor: dict[str, Any]) -> np.ndarray:
    if tensor["datatype"] == "BYTES":
        flat = np.array([bytes.fromhex(v) for v in tensor["data"]], dtype=object)
        return flat.reshape(tensor["shape"])
    return np.array(tensor["data"], dtype=triton_to_np_dtype(tensor["datatype"])).reshape(
        tensor["shape"]
    )


def _tensor(array: np.ndarray) -> dict[str, Any]:
    if array.dtype == object or array.dtype.kind == "S":
        data = [bytes(v).hex() for v in array.reshape(-1)]
        return {"datatype": "BYTES", "shape": list(array.shape), "data": data}
    return {
        "datatype": np_to_triton_dtype(array.dtype),
        "shape": list(array.shape),
        "data": array.reshape(-1).tolist(),
    }


def _metadata(client: Any, grpc: bool, value: Any) -> Any:
    if not grpc:
        return value
    from google.protobuf import json_format

    return json_format.MessageToDict(value, preserving_proto_field_name=True)


def call(client: Any, grpc: bool, spec: dict[str, Any]) -> Any:
    module = grpcclient if grpc else httpclient
    op = spec["op"]
    if op == "live":
        return client.is_server_live()
    if op == "ready":
        return client.is_server_ready()
    if op == "model_ready":
        return client.is_model_ready(spec["model"], spec.get("version", ""))
    if op == "server_metadata":
        return _metadata(client, grpc, client.get_server_metadata())
    if op == "model_metadata":
        return _metadata(
            client, grpc, client.get_model_metadata(spec["model"], spec.get("version", ""))
        )
    if op == "index":
        index = client.get_model_repository_index()
        return index if not grpc else _metadata(client, grpc, index).get("models", [])
    if op == "load":
        client.load_model(spec["model"], config=spec.get("config"))
        return True
    if op == "unload":
        client.unload_model(spec["model"])
        return True
    if op == "infer":
        binary = spec.get("binary", True)
        inputs = []
        for name, tensor in spec["inputs"].items():
            infer_input = module.InferInput(name, tensor["shape"], tensor["datatype"])
            if grpc:
                infer_input.set_data_from_numpy(_array(tensor))
            else:
                infer_input.set_data_from_numpy(_array(tensor), binary_data=binary)
            inputs.append(infer_input)
        outputs = None
        if spec.get("outputs") is not None:
            outputs = [
                module.InferRequestedOutput(name)
                if grpc
                else module.InferRequestedOutput(name, binary_data=binary)
                for name in spec["outputs"]
            ]
        result = client.infer(
            spec["model"],
            inputs,
            model_version=spec.get("version", ""),
            outputs=outputs,
            request_id=spec.get("id", ""),
        )
        response = result.get_response()
        if grpc:
            names = [o.name for o in response.outputs]
            answer = {"model_name": response.model_name, "model_version": response.model_version}
            answer["id"] = response.id
        else:
            names = [o["name"] for o in response["outputs"]]
            answer = {k: response.get(k, "") for k in ("model_name", "model_version", "id")}
        answer["outputs"] = {name: _tensor(result.as_numpy(name)) for name in names}
        return answer
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    request = json.load(sys.stdin)
    grpc = request["protocol"] == "grpc"
    module = grpcclient if grpc else httpclient
    client = module.InferenceServerClient(request["url"])
    answers = []
    for spec in request["calls"]:
        try:
            answers.append({"result": call(client, grpc, spec)})
        except InferenceServerException as exc:
            answers.append({"error": exc.message(), "status": str(exc.status())})
    client.close()
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
