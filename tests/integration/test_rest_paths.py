"""Model names and version labels holding `/`, addressed over REST with `%2F` as in TFS,
through a real server process (the HTTP server decodes the path before the app reads it): a model
`team/sum` served from a config file, predicted, its status and metadata read, by version
and by label, on /v1 and /v2, and added and removed through v2's repository.

How the app reads a decoded path is tested in process in tests/apis/rest/test_paths.py,
test_app.py and test_open_inference.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.models import SUM_MODEL, write_python_model
from tests.support.server import model_config, running_server

pytestmark = pytest.mark.integration

X = {"instances": [1.0, 2.0]}
V2_X = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def test_a_model_named_with_a_slash_is_addressed_with_2f(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "sum", SUM_MODEL, version=3)
    other = write_python_model(tmp_path / "other", SUM_MODEL, version=1)
    config = tmp_path / "models.config"
    config.write_text(
        model_config([("team/sum", base, "python", 'version_labels { key: "v/3" value: 3 }')])
    )
    with (
        running_server(
            [f"--model_config_file={config}", "--allow_python_models_over_network=true"]
        ) as server,
        httpx.Client(base_url=server.rest, timeout=60) as rest,
    ):
        for path in [
            "/v1/models/team%2Fsum",
            "/v1/models/team%2fsum/versions/3",
            "/v1/models/team%2Fsum/labels/v%2F3",
        ]:
            answer = rest.post(f"{path}:predict", json=X)
            assert (answer.status_code, answer.json()) == (200, {"predictions": [3.0]}), path
            answer = rest.get(path)
            assert answer.status_code == 200, path
            assert answer.json() == {
                "model_version_status": [
                    {
                        "version": "3",
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
            answer = rest.get(f"{path}/metadata")
            assert answer.json()["model_spec"] == {
                "name": "team/sum",
                "signature_name": "",
                "version": "3",
            }
        answer = rest.get("/v1/models")
        assert [m["name"] for m in answer.json()["models"]] == ["team/sum"]
        # A name that is not served, and TFS's unencoded reading of it: the path's errors.
        answer = rest.post("/v1/models/team%2Fnope:predict", json=X)
        assert (answer.status_code, answer.json()) == (
            400,
            {"error": "Malformed request: POST /v1/models/team/nope:predict"},
        )
        answer = rest.post("/v1/models/team:predict", json=X)
        assert (answer.status_code, answer.json()) == (
            404,
            {"error": "Servable not found for request: Latest(team)"},
        )

        # The Open Inference Protocol's routes, a label as its version.
        for path in ["/v2/models/team%2Fsum", "/v2/models/team%2Fsum/versions/v%2F3"]:
            answer = rest.post(f"{path}/infer", json=V2_X)
            assert answer.status_code == 200, (path, answer.text)
            assert (answer.json()["model_name"], answer.json()["model_version"]) == (
                "team/sum",
                "3",
            )
            assert answer.json()["outputs"][0]["data"] == [3.0]
            assert rest.get(f"{path}/ready").json() == {"name": "team/sum", "ready": True}
            assert rest.get(path).json()["name"] == "team/sum"

        # v2's repository adds and removes a model named with a slash.
        load = {"parameters": {"config": f'{{"base_path": "{other}", "model_platform": "python"}}'}}
        answer = rest.post("/v2/repository/models/team%2Fother/load", json=load)
        assert (answer.status_code, answer.json()) == (200, {}), answer.text
        answer = rest.post("/v1/models/team%2Fother:predict", json=X)
        assert answer.json() == {"predictions": [3.0]}
        answer = rest.post("/v2/repository/models/team%2Fother/unload", json={})
        assert answer.status_code == 200, answer.text
        assert rest.post("/v1/models/team%2Fother:predict", json=X).status_code == 400
        assert server.stop() == 0
