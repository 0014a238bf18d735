"""deploy/kubernetes: every Kustomize base and overlay rendered by kustomize itself (kubectl's),
each object checked against the Kubernetes API's schemas (kubernetes-validate, strict, 1.30 and
the newest) or, for the ServiceMonitor, the prometheus-operator CRD's generated models
(cloudcoil), and the Deployment against servo itself: its flags by servo's own parser, its
ports, probes, drain period, mounts and environment (tests/deploy/checks.py). Each kind of
check is shown to refuse a broken copy."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.checks import deployment_problems, schema_problems
from tests.support.manifests import KUBERNETES, kustomize, one

RENDERS = ("base", "overlays/s3", "overlays/local", "prometheus-adapter")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(KUBERNETES / name) for name in RENDERS}


@pytest.mark.parametrize("name", RENDERS)
def test_renders_and_validates(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    objects = rendered[name]
    assert objects
    assert schema_problems(objects) == []
    assert deployment_problems(objects) == []


def test_base_has_every_object(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = sorted(o["kind"] for o in rendered["base"])
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceMonitor",
        ]
    )
    hpa = one(rendered["base"], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "servo_requests_per_second"
    adapter = one(rendered["prometheus-adapter"], "ConfigMap")
    assert 'as: "servo_requests_per_second"' in adapter["data"]["config.yaml"]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return result


def test_overlays(rendered: dict[str, list[dict[str, Any]]]) -> None:
    base, s3, local = (container(rendered[n]) for n in RENDERS[:3])
    assert base["image"] == "servo-model-server:latest"
    assert local["image"] == "servo-model-server:slim"
    env = {e["name"]: e for e in s3["env"]}
    assert env["MODEL_BASE_PATH"]["value"].startswith("s3://")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "servo-s3-credentials"
    assert not [o for o in rendered["overlays/s3"] if o["kind"] == "PersistentVolumeClaim"]
    assert {m["mountPath"] for m in s3["volumeMounts"]} == {
        "/var/cache/servo",
        "/etc/servo",
        "/tmp",
    }


def test_image_is_overridden_by_an_overlay(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n  - {os.path.relpath(KUBERNETES / 'base', tmp_path)}\n"
        "images:\n  - name: servo-model-server\n"
        "    newName: registry.example.com/ml/servo-model-server\n    newTag: '0.1.0'\n"
    )
    assert container(kustomize(tmp_path))["image"] == (
        "registry.example.com/ml/servo-model-server:0.1.0"
    )


Mutation = Callable[[list[dict[str, Any]]], None]


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def _rename(d: dict[str, Any], old: str, new: str) -> None:
    d[new] = d.pop(old)


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "a typo'd field": (
        lambda o: _rename(container(o), "readinessProbe", "readinesProbe"),
        "'readinesProbe' was unexpected",
    ),
    "a typo'd field in the ServiceMonitor": (
        lambda o: _rename(one(o, "ServiceMonitor")["spec"]["endpoints"][0], "path", "paht"),
        "paht: no such field",
    ),
    "a wrong type in the ServiceMonitor": (
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(interval=15),
        "interval",
    ),
    "a flag servo does not know": (
        lambda o: container(o)["args"].append("--shutdown_grace_period=30"),
        "unknown flag --shutdown_grace_period; did you mean --shutdown_grace_period_seconds?",
    ),
    "a bad flag value": (
        lambda o: container(o)["args"].append("--shutdown_grace_period_seconds=soon"),
        "servo refuses the container's flags",
    ),
    "a wrong container port": (
        lambda o: container(o)["ports"][1].update(containerPort=8080),
        "container port http is not servo's REST port 8501",
    ),
    "a probe on the gRPC port": (
        lambda o: container(o)["readinessProbe"]["httpGet"].update(port="grpc"),
        "readinessProbe is not an HTTP GET on servo's REST port",
    ),
    "a wrong Service port": (
        lambda o: one(o, "Service")["spec"]["ports"][0].update(port=9000),
        "Service port grpc is not servo's port 8500",
    ),
    "gRPC without h2c": (
        lambda o: one(o, "Service")["spec"]["ports"][0].pop("appProtocol"),
        "appProtocol is not kubernetes.io/h2c",
    ),
    "a drain longer than the grace period": (
        lambda o: _pod(o).update(terminationGracePeriodSeconds=30),
        "terminationGracePeriodSeconds 30 < preStop + --shutdown_drain_seconds + "
        "--shutdown_grace_period_seconds",
    ),
    "no drain before stopping": (
        lambda o: container(o)["args"].remove("--shutdown_drain_seconds=10"),
        "no drain: with neither --shutdown_drain_seconds nor a preStop sleep",
    ),
    "the metrics page elsewhere": (
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(path="/metrics"),
        "the ServiceMonitor scrapes /metrics",
    ),
    "the monitoring config unmounted": (
        lambda o: container(o)["volumeMounts"].pop(1),
        "is on no ConfigMap mount",
    ),
    "no /tmp": (
        lambda o: container(o)["volumeMounts"].pop(2),
        "/tmp is not writable",
    ),
    "a PDB on other pods": (
        lambda o: one(o, "PodDisruptionBudget")["spec"]["selector"].update(
            matchLabels={"app.kubernetes.io/name": "servoo"}
        ),
        "the PodDisruptionBudget selects no servo pod",
    ),
}


@pytest.mark.parametrize("what", MUTATIONS)
def test_a_broken_copy_is_refused(rendered: dict[str, list[dict[str, Any]]], what: str) -> None:
    objects = copy.deepcopy(rendered["base"])
    mutate, expected = MUTATIONS[what]
    mutate(objects)
    problems = schema_problems(objects) + deployment_problems(objects)
    assert any(expected in p for p in problems), problems


def test_s3_variables_servo_does_not_read_are_refused(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = copy.deepcopy(rendered["overlays/s3"])
    container(objects)["env"].append({"name": "AWS_S3_ENDPOINT", "value": "https://x:9000"})
    assert "servo reads no variable AWS_S3_ENDPOINT" in deployment_problems(objects)
