"""What servo's Kubernetes manifests must hold beyond their schemas, as one function that lists
the problems of a rendered set of objects (so a test can show it refuses a broken copy).

The image's contract (TFS's, issue 17's container image): its entrypoint runs
`servo serve --port=8500 --rest_api_port=8501 --model_name=$MODEL_NAME
--model_base_path=$MODEL_BASE_PATH/$MODEL_NAME` followed by the container's args.
"""

from __future__ import annotations

import argparse
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

from servo.server.config import read_monitoring_config
from servo.util import gfile
from tests.support.manifests import (
    KUBERNETES_VERSIONS,
    by_kind,
    kubernetes_errors,
    pydantic_errors,
    servo_flags,
)

GRPC_PORT = 8500
REST_PORT = 8501
EXIT_MARGIN = 5  # seconds for the process to exit once servo's drain ends
# Set by the image or Kubernetes itself, not read by servo's flags.
NOT_SERVOS = {"MODEL_NAME", "MODEL_BASE_PATH", "HOME"}


def schema_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Each object against its schema: Kubernetes' own kinds against every version in
    KUBERNETES_VERSIONS, the ServiceMonitor against the prometheus-operator CRD's models."""
    problems = []
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            problems += [f"ServiceMonitor: {e}" for e in pydantic_errors(obj, ServiceMonitor)]
        else:
            for version in KUBERNETES_VERSIONS:
                problems += [f"{version}: {e}" for e in kubernetes_errors(obj, version)]
    return problems


def entrypoint_flags(container: dict[str, Any]) -> argparse.Namespace | str:
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    name, base = env.get("MODEL_NAME", "model"), env.get("MODEL_BASE_PATH", "/models")
    return servo_flags(
        [
            f"--port={GRPC_PORT}",
            f"--rest_api_port={REST_PORT}",
            f"--model_name={name}",
            f"--model_base_path={base.rstrip('/')}/{name}",
            *container.get("args", []),
        ]
    )


def _port(container: dict[str, Any], ref: Any) -> int | None:
    for p in container.get("ports", []):
        if ref in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    return None


def _probe_problems(container: dict[str, Any], rest_port: int) -> list[str]:
    problems = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            problems.append(f"no {kind}")
            continue
        port = _port(container, probe.get("httpGet", {}).get("port"))
        if port != rest_port:
            problems.append(f"{kind} is not an HTTP GET on servo's REST port {rest_port}")
    return problems


def _mounted(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume (with its mount) that holds `path`, the longest mount path that covers it."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(root) and (best is None or len(root) > len(best[0])):
            best = (root, {**volumes.get(mount["name"], {}), "mount": mount})
    return best[1] if best else None


def _monitoring_problems(
    objects: list[dict[str, Any]], spec: dict[str, Any], container: dict[str, Any], path: str
) -> list[str]:
    volume = _mounted(spec, container, path)
    if volume is None or "configMap" not in volume:
        return [f"--monitoring_config_file={path} is on no ConfigMap mount"]
    name, key = volume["configMap"]["name"], posixpath.relpath(path, volume["mount"]["mountPath"])
    maps = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == name]
    if not maps or key not in maps[0].get("data", {}):
        return [f"ConfigMap {name} has no {key} for --monitoring_config_file"]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "monitoring.config"
        file.write_text(maps[0]["data"][key])
        config = read_monitoring_config(str(file))
    problems = [] if config.prometheus_config.enable else ["the monitoring config is off"]
    for monitor in by_kind(objects, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("path") != config.prometheus_config.path:
                problems.append(
                    f"the ServiceMonitor scrapes {endpoint.get('path')}, servo serves its "
                    f"metrics at {config.prometheus_config.path}"
                )
    return problems


def _environment_problems(container: dict[str, Any]) -> list[str]:
    """Every variable the container sets is one servo (or botocore, through it) reads."""
    problems = []
    for var in container.get("env", []):
        name = var["name"]
        if name in NOT_SERVOS or name in gfile.SECRET_ENV:
            continue
        sample = "https://store.example:9000" if "ENDPOINT" in name else "us-east-1"
        if gfile.s3_options({name: sample}) == gfile.s3_options({}):
            problems.append(f"servo reads no variable {name}")
    return problems


def deployment_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The Deployment's servo container against servo itself and the objects around it."""
    problems = []
    for deployment in by_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        labels = pod["metadata"]["labels"]
        container = spec["containers"][0]
        flags = entrypoint_flags(container)
        if isinstance(flags, str):
            problems.append(f"servo refuses the container's flags: {flags}")
            continue
        if _port(container, "grpc") != flags.port:
            problems.append(f"container port grpc is not servo's gRPC port {flags.port}")
        if _port(container, "http") != flags.rest_api_port:
            problems.append(f"container port http is not servo's REST port {flags.rest_api_port}")
        problems += _probe_problems(container, flags.rest_api_port)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed = (
            pre_stop.get("seconds", 0)
            + flags.shutdown_drain_seconds
            + flags.shutdown_grace_period_seconds
            + EXIT_MARGIN
        )
        if spec.get("terminationGracePeriodSeconds", 30) < needed:
            problems.append(
                f"terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds')} < "
                "preStop + --shutdown_drain_seconds + --shutdown_grace_period_seconds + "
                f"{EXIT_MARGIN} = {needed:g}"
            )
        if flags.shutdown_drain_seconds + pre_stop.get("seconds", 0) <= 0:
            problems.append(
                "no drain: with neither --shutdown_drain_seconds nor a preStop sleep, servo "
                "stops accepting as soon as the pod is deleted, before every proxy has "
                "removed it from the Service's endpoints"
            )
        if flags.monitoring_config_file:
            problems += _monitoring_problems(objects, spec, container, flags.monitoring_config_file)
        else:
            problems.append("no --monitoring_config_file: the metrics page is off")
        if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            for path in (flags.model_cache_dir or "/tmp", "/tmp"):
                volume = _mounted(spec, container, path.rstrip("/") + "/x")
                if volume is None or volume["mount"].get("readOnly"):
                    problems.append(f"{path} is not writable (read-only root file system)")
        if flags.model_base_path.startswith("s3://"):
            problems += _environment_problems(container)
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            claims = [o["metadata"]["name"] for o in by_kind(objects, "PersistentVolumeClaim")]
            if claim and claim not in claims:
                problems.append(f"volume {volume['name']}: no claim {claim}")
        problems += _around_problems(objects, deployment, labels, container, flags)
    return problems


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _around_problems(
    objects: list[dict[str, Any]],
    deployment: dict[str, Any],
    labels: dict[str, str],
    container: dict[str, Any],
    flags: argparse.Namespace,
) -> list[str]:
    """The Service, PDB, HPA and ServiceMonitor point at the Deployment's pods and ports."""
    problems = []
    services = by_kind(objects, "Service")
    for service in services:
        if not _selects(service["spec"]["selector"], labels):
            problems.append(f"Service {service['metadata']['name']} selects no servo pod")
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        want = {"grpc": (flags.port, "kubernetes.io/h2c"), "http": (flags.rest_api_port, "http")}
        for name, (port, protocol) in want.items():
            p = ports.get(name)
            if p is None or _port(container, p["targetPort"]) != port or p["port"] != port:
                problems.append(f"Service port {name} is not servo's port {port}")
            elif p.get("appProtocol") != protocol:
                problems.append(f"Service port {name}: appProtocol is not {protocol}")
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        if not _selects(pdb["spec"]["selector"]["matchLabels"], labels):
            problems.append("the PodDisruptionBudget selects no servo pod")
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problems.append("the HorizontalPodAutoscaler scales another object")
    for monitor in by_kind(objects, "ServiceMonitor"):
        selected = [
            s
            for s in services
            if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        if not selected:
            problems.append("the ServiceMonitor selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for service in selected:
                ports = {p["name"]: p for p in service["spec"]["ports"]}
                if (
                    endpoint.get("port") not in ports
                    or ports[endpoint["port"]]["port"] != flags.rest_api_port
                ):
                    problems.append(
                        f"the ServiceMonitor scrapes port {endpoint.get('port')}, not REST"
                    )
    return problems
