"""deploy/kserve: the ServingRuntime, the ClusterServingRuntime and the InferenceService
example against KServe's resources as KServe's Python SDK declares them (kserve.models,
generated from KServe's OpenAPI, run in .venv-kserve: tests/support/kserve_schema.py), the
runtimes' containers against the Kubernetes API's Container schema too, and the container's
command against servo's own flag parser with KServe's `{{.Name}}` filled in."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from servo.apis.grpc.open_inference import SERVICE
from tests.deploy.checks import schema_problems
from tests.support.kserve_schema import kserve_schema
from tests.support.manifests import KSERVE, documents, model_errors, servo_flags

FILES = {
    "cluster-serving-runtime.yaml": "V1alpha1ClusterServingRuntime",
    "serving-runtime.yaml": "V1alpha1ServingRuntime",
    "inference-service.yaml": "V1beta1InferenceService",
}
KSERVE_REST_PORT = 8080  # KServe's convention for a runtime's HTTP port
# Known to KServe's controller (its own TensorFlow Serving runtime declares it) though the
# Python SDK's PredictorProtocol, which lists what KServe's Python server speaks, has not.
CONTROLLER_PROTOCOLS = {"grpc-v1"}


def runtime_problems(obj: dict[str, Any]) -> list[str]:
    """A runtime against KServe's SDK, Kubernetes' Container schema and servo's flags."""
    schema = kserve_schema()
    kind = {"ClusterServingRuntime": "V1alpha1ClusterServingRuntime"}.get(
        obj["kind"], "V1alpha1ServingRuntime"
    )
    problems = model_errors(obj, schema, kind)
    spec = obj["spec"]
    formats = {f["name"] for f in spec.get("supportedModelFormats", []) if f.get("autoSelect")}
    if not {"tensorflow", "onnx", "tflite"} <= formats:
        problems.append(f"KServe selects servo only for {sorted(formats)}")
    protocols = set(spec.get("protocolVersions", []))
    if not protocols <= set(schema["protocols"]) | CONTROLLER_PROTOCOLS:
        problems.append(f"protocols KServe does not know: {protocols - set(schema['protocols'])}")
    if not {"v1", "v2", "grpc-v2"} <= protocols:
        problems.append(f"protocolVersions {sorted(protocols)} miss one servo speaks")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    pod["spec"] = {"containers": spec["containers"]}
    problems += schema_problems([pod])
    (container,) = spec["containers"]
    if container["name"] != "kserve-container":
        problems.append("KServe's runtime container is named kserve-container")
    if container.get("command") != ["servo", "serve"]:
        problems.append(f"the command is {container.get('command')}, not servo serve")
    args = [a.replace("{{.Name}}", "half-plus-two") for a in container.get("args", [])]
    flags = servo_flags(args)
    if isinstance(flags, str):
        return [*problems, f"servo refuses the runtime's flags: {flags}"]
    if flags.model_name != "half-plus-two" or flags.model_base_path != "/mnt/models":
        problems.append("servo is not given the model's {{.Name}} and KServe's /mnt/models")
    if flags.rest_api_port != KSERVE_REST_PORT:
        problems.append(f"servo's REST port {flags.rest_api_port} is not KServe's 8080")
    declared = [p["containerPort"] for p in container.get("ports", [])]
    if declared != [flags.rest_api_port]:
        problems.append(f"the declared ports {declared} are not servo's REST port")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    if probe.get("port") != flags.rest_api_port or probe.get("path") != "/v2/health/ready":
        problems.append("the readiness probe is not servo's /v2/health/ready on its REST port")
    return problems


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    found = {}
    for name in FILES:
        (obj,) = documents(KSERVE / name)
        found[name] = obj
    return found


@pytest.mark.parametrize("name", FILES)
def test_matches_kserve_sdk(objects: dict[str, dict[str, Any]], name: str) -> None:
    assert model_errors(objects[name], kserve_schema(), FILES[name]) == []


@pytest.mark.parametrize("name", ["cluster-serving-runtime.yaml", "serving-runtime.yaml"])
def test_runtime(objects: dict[str, dict[str, Any]], name: str) -> None:
    assert runtime_problems(objects[name]) == []


def test_runtimes_have_one_spec(objects: dict[str, dict[str, Any]]) -> None:
    cluster, namespaced = objects["cluster-serving-runtime.yaml"], objects["serving-runtime.yaml"]
    assert (cluster["kind"], namespaced["kind"]) == ("ClusterServingRuntime", "ServingRuntime")
    assert cluster["spec"] == namespaced["spec"]


def test_servo_serves_the_v2_grpc_service() -> None:
    # grpc-v2 in protocolVersions is KServe's name for this service.
    assert SERVICE == "inference.GRPCInferenceService"


def test_inference_service_selects_the_runtime(objects: dict[str, dict[str, Any]]) -> None:
    runtime = objects["serving-runtime.yaml"]
    model = objects["inference-service.yaml"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def _set(obj: dict[str, Any], value: Any, *path: str | int) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value  # type: ignore[index]


RUNTIME_MUTATIONS = {
    "a typo'd field": (
        lambda o: o["spec"].update(supportedModelFormat=o["spec"].pop("supportedModelFormats")),
        "supportedModelFormat: no such field",
    ),
    "a typo'd nested field": (
        lambda o: o["spec"]["supportedModelFormats"][0].update(autoselect=True),
        "autoselect: no such field in V1alpha1SupportedModelFormat",
    ),
    "a wrong type": (
        lambda o: _set(o, "yes", "spec", "multiModel"),
        "multiModel: bool expected",
    ),
    "a typo'd container field": (
        lambda o: o["spec"]["containers"][0].update(arg=[]),
        "arg: no such field in V1Container",
    ),
    "a flag servo does not know": (
        lambda o: o["spec"]["containers"][0]["args"].append("--rest_port=8080"),
        "unknown flag --rest_port",
    ),
    "a wrong port": (
        lambda o: _set(o, 8081, "spec", "containers", 0, "ports", 0, "containerPort"),
        "the declared ports [8081] are not servo's REST port",
    ),
    "an unknown protocol": (
        lambda o: o["spec"]["protocolVersions"].append("v3"),
        "protocols KServe does not know",
    ),
    "a format left out": (
        lambda o: o["spec"].update(
            supportedModelFormats=[
                f for f in o["spec"]["supportedModelFormats"] if f["name"] != "onnx"
            ]
        ),
        "KServe selects servo only for",
    ),
}


@pytest.mark.parametrize("what", RUNTIME_MUTATIONS)
def test_a_broken_runtime_is_refused(objects: dict[str, dict[str, Any]], what: str) -> None:
    obj = copy.deepcopy(objects["cluster-serving-runtime.yaml"])
    RUNTIME_MUTATIONS[what][0](obj)
    problems = runtime_problems(obj)
    assert any(RUNTIME_MUTATIONS[what][1] in p for p in problems), problems


def test_a_typo_in_the_inference_service_is_refused(objects: dict[str, dict[str, Any]]) -> None:
    obj = copy.deepcopy(objects["inference-service.yaml"])
    model = obj["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    errors = model_errors(obj, kserve_schema(), "V1beta1InferenceService")
    assert errors == [".spec.predictor.model.storageURI: no such field in V1beta1ModelSpec"]
