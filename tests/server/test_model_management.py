"""Model management grants: allowed roots (resolved, so '..' and links cannot escape), python
models over the network, config changes over the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.server import config as configs
from servo.server.model_management import (
    ModelManagementGrants,
    is_empty_model_list,
    parse_roots,
    under_roots,
)


def config(text: str) -> configs.ModelServerConfig:
    return configs.parse_text(text, configs.ModelServerConfig(), "test")


def entry(name: str, base_path: str, platform: str = "onnx", extra: str = "") -> str:
    return (
        f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "{platform}" {extra} }}'
    )


def models(*entries: str) -> configs.ModelServerConfig:
    return config(f"model_config_list {{ {' '.join(entries)} }}")


def test_parse_roots() -> None:
    assert parse_roots("") == ()
    assert parse_roots(" /srv/models , /tmp/../srv/x,") == ("/srv/models", "/srv/x")
    with pytest.raises(ValueError, match="must be an absolute path, got 'models'"):
        parse_roots("models")


def test_under_roots_resolves_dots_and_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "m").mkdir(parents=True)
    os.symlink("/etc", root / "link")
    roots = parse_roots(str(root))
    assert under_roots(str(root / "m"), roots)
    assert under_roots(str(root), roots)
    assert under_roots(str(root / "not-yet" / "m"), roots)  # missing: resolved as far as it goes
    assert not under_roots(str(root / ".." / "elsewhere"), roots)
    assert not under_roots(str(root / "link"), roots)
    assert not under_roots(str(tmp_path / "root2"), roots)  # a name that starts the same


def test_base_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    grants = ModelManagementGrants(allowed_model_base_path_roots=parse_roots(str(tmp_path)))
    grants.check_config(models(entry("m", f"{tmp_path}/m")))
    for path in ("/proc", f"{tmp_path}/../x", "s3://bucket/m"):
        with pytest.raises(ServoError) as err:
            grants.check_config(models(entry("m", path)))
        assert err.value.code == Code.PERMISSION_DENIED
        assert err.value.message == (
            f"Model m: base path {path} is outside the allowed roots ({tmp_path}); add a root "
            "to --allowed_model_base_path_roots or move the model under one of them"
        )
    ModelManagementGrants().check_config(models(entry("m", "/proc")))  # no roots: anywhere


def test_request_log_prefixes_outside_the_roots_are_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    grants = ModelManagementGrants(allowed_request_log_roots=parse_roots(str(logs)))

    def logged(prefix: str) -> configs.ModelServerConfig:
        collector = f'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }}'
        return models(entry("m", "/models/m", extra=f"logging_config {{ {collector} }}"))

    grants.check_config(logged(f"{logs}/m/requests"))
    with pytest.raises(ServoError) as err:
        grants.check_config(logged(f"{logs}/../../etc/cron.d/x"))
    assert err.value.code == Code.PERMISSION_DENIED
    assert err.value.message == (
        f"Model m: request-log filename_prefix {logs}/../../etc/cron.d/x is outside the allowed "
        f"roots ({logs}); add a root to --allowed_request_log_roots or log under one of them"
    )
    # A prefix that is the root itself writes <root>.<n>.tfrecord beside it, not in it.
    with pytest.raises(ServoError):
        grants.check_config(logged(str(logs)))
    grants.check_config(logged(f"{logs}/requests"))


def test_python_models_over_the_network() -> None:
    served = models(entry("p", "/models/p", "python"))
    refused = ModelManagementGrants()
    refused.check_network_config(
        served, models(entry("p", "/models/p", "python"), entry("o", "/o"))
    )
    for new in (
        models(entry("q", "/models/q", "python")),
        models(entry("p", "/tmp/p", "python")),
    ):
        with pytest.raises(ServoError) as err:
            refused.check_network_config(served, new)
        assert err.value.code == Code.PERMISSION_DENIED
        assert "--allow_python_models_over_network=true" in err.value.message
    allowed = ModelManagementGrants(allow_python_models_over_network=True)
    allowed.check_network_config(served, models(entry("q", "/models/q", "python")))


def test_config_over_the_network_turned_off() -> None:
    grants = ModelManagementGrants(allow_model_config_over_network=False)
    with pytest.raises(ServoError) as err:
        grants.check_network_config(models(), models(entry("o", "/o")))
    assert err.value.code == Code.PERMISSION_DENIED
    assert "--allow_model_config_over_network=false" in err.value.message


def test_an_empty_model_list() -> None:
    assert is_empty_model_list(config("model_config_list {}"))
    assert not is_empty_model_list(configs.ModelServerConfig())
    assert not is_empty_model_list(models(entry("o", "/o")))


def test_url_roots_are_prefixes_segment_by_segment() -> None:
    roots = parse_roots("/srv/models, s3://models/prod, GS://other", urls=True)
    assert roots == ("/srv/models", "s3://models/prod", "gs://other")
    assert under_roots("s3://models/prod/m", roots)
    assert under_roots("s3://models/prod", roots)
    assert under_roots("gs://other/anything/m", roots)
    assert under_roots("file:///srv/models/m", roots)  # a local path
    for outside in (
        "s3://models/production/m",  # a name that starts the same
        "s3://models/prod/../secret/m",  # refused outright: a '..' segment
        "s3://models/prod//m",
        "s3://models-2/prod/m",
        "gs://models/prod/m",  # another store
        "s3://user:pw@models/prod/m",
        "/srv/other",
    ):
        assert not under_roots(outside, roots), outside
    assert not under_roots("/srv/models/m", ("s3://models",))  # a URL root allows no path
    with pytest.raises(ValueError, match="segments"):
        parse_roots("s3://models/../x", urls=True)
    with pytest.raises(ValueError, match="must be a local directory"):
        parse_roots("s3://models")  # request-log and profile roots are local


def test_base_paths_in_object_storage_under_url_roots(tmp_path: Path) -> None:
    grants = ModelManagementGrants(
        allowed_model_base_path_roots=parse_roots(f"{tmp_path},s3://models/prod", urls=True)
    )
    grants.check_config(models(entry("m", "s3://models/prod/m"), entry("l", f"{tmp_path}/l")))
    with pytest.raises(ServoError) as err:
        grants.check_config(models(entry("m", "s3://models/staging/m")))
    assert err.value.code == Code.PERMISSION_DENIED
    assert "--allowed_model_base_path_roots" in err.value.message
    grants.check_version_path(ServableId("m", 1), "s3://models/prod/m/1")
    with pytest.raises(ServoError) as err:
        grants.check_version_path(ServableId("m", 1), "s3://models/staging/m/1")
    assert err.value.code == Code.PERMISSION_DENIED
