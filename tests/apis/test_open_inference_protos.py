"""servo's Open Inference Protocol messages (servo/protos/open_inference.proto) against the
official client's (tritonclient's grpc_service.proto, read in its own venv): every message
servo defines exists there under the same name, field by field the same (name, number, type,
repeated, the message or map it holds), and servo leaves none of its fields out."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from google.protobuf.descriptor import Descriptor

from servo.protos import open_inference_pb2
from tests.support.triton import triton_python

DUMP = """
import json
from tritonclient.grpc import service_pb2

def fields(message):
    out = {}
    for f in message.fields:
        held = f.message_type.full_name if f.message_type is not None else ""
        out[f.name] = [f.number, f.type, f.label == f.LABEL_REPEATED, held]
    return out

messages = {}
def walk(message):
    messages[message.full_name] = fields(message)
    for nested in message.nested_types:
        walk(nested)

for message in service_pb2.DESCRIPTOR.message_types_by_name.values():
    walk(message)
print(json.dumps({"package": service_pb2.DESCRIPTOR.package, "messages": messages}))
"""


def _theirs() -> dict[str, Any]:
    done = subprocess.run(
        [triton_python(), "-c", DUMP], capture_output=True, text=True, timeout=120, check=True
    )
    dumped: dict[str, Any] = json.loads(done.stdout)
    return dumped


def _ours() -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}

    def walk(message: Descriptor) -> None:
        out[message.full_name.removeprefix("servo.")] = {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name.removeprefix("servo.") if f.message_type else "",
            ]
            for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    for message in open_inference_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    return out


def test_servo_messages_are_the_protocols_field_by_field() -> None:
    theirs = _theirs()
    assert theirs["package"] == "inference"
    ours = _ours()
    assert len(ours) >= 30
    for name, fields in ours.items():
        assert name in theirs["messages"], f"{name}: no such message in the protocol"
        assert fields == theirs["messages"][name], name


def test_the_service_name_on_the_wire_is_the_protocols() -> None:
    from servo.apis.grpc.open_inference import SERVICE

    # servo's package never reaches the wire: the methods are registered by hand.
    assert open_inference_pb2.DESCRIPTOR.package == "servo.inference"
    assert not open_inference_pb2.DESCRIPTOR.services_by_name
    assert SERVICE == "inference.GRPCInferenceService"
