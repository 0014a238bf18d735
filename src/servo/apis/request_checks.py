"""TFS's checks of an inference request against its signature, with TFS's codes and messages
(`servables/tensorflow/predict_util.cc`, `util.cc`, TensorFlow's feed checks).

Clients and scripts match on these texts, so they are kept word for word. Each check is a
plain function; the data plane calls them in TFS's order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, base, from_numpy, to_numpy
from servo.platforms.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ModelServable,
    Signature,
)

# How a protocol says that a request names a signature the model does not have: TFS's REST
# and gRPC texts (and codes) differ there, so each protocol passes its own.
MissingSignature = Callable[[str], ServoError]


def find_signature(servable: ModelServable, name: str, missing: MissingSignature) -> Signature:
    """The signature `name` names ("" for serving_default); `missing(key)` when there is none."""
    key = name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise missing(key)
    return signature


def missing_example_signature(key: str) -> ServoError:
    """Classify and regress over either protocol: TFS's GetSignatures message."""
    return ServoError(Code.INVALID_ARGUMENT, f"No signature was found with the name: {key}")


def verify_predict_signature(signature: Signature) -> None:
    """TFS's check of a predict request's signature, made with
    --enable_signature_method_name_check only: predict takes predict, classify and regress
    signatures."""
    if signature.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise ServoError(
            Code.INTERNAL,
            f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
            f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {signature.method_name}",
        )


def check_input_names(signature: Signature, names: Collection[str]) -> None:
    """That a request's input aliases fit the signature: the count first, then each alias (an
    input with a default may be left out)."""
    expected = signature.inputs
    if len(names) > len(expected) or (len(names) < len(expected) and not signature.defaults):
        sent, wanted = sorted(names), sorted(expected)
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
            f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}.",
        )
    used = 0
    for alias, spec in expected.items():
        if alias in names:
            used += 1
        elif alias not in signature.defaults:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Signature input alias: {alias}(feed name: {spec.tensor_name}) not found in "
                f"request and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(names))}}}, or default input alias set: "
                f"{','.join(sorted(signature.defaults))}",
            )
    if names and used != len(names):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Inputs contains invalid name. Used request inputs: "
            f"{','.join(sorted(set(names) & expected.keys()))}, request input: "
            f"{','.join(sorted(names))}",
        )


def output_names(signature: Signature, output_filter: Sequence[str]) -> tuple[str, ...] | None:
    """The output aliases a request asks for (None: all of them)."""
    if not output_filter:
        return None
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.",
            )
        if alias in seen:
            raise ServoError(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


def check_input_dtypes(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TensorFlow's check that each input has its signature's dtype."""
    for index, (alias, spec) in enumerate(signature.inputs.items()):
        array = inputs.get(alias)
        if array is None:
            continue
        want = to_numpy(spec.dtype)
        if array.dtype != want and not (want.kind == "O" and array.dtype.kind in "SUO"):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Expects arg[{index}] to be {_type_name(spec.dtype)} but "
                f"{_numpy_type_name(array.dtype)} is provided",
            )


def _type_name(dtype: DataType) -> str:
    return base(dtype).name.removeprefix("DT_").lower()


def _numpy_type_name(dtype: np.dtype) -> str:
    try:
        return _type_name(from_numpy(dtype))
    except ServoError:
        return str(dtype)
