"""Config reloads that cannot hurt, and model management an operator grants, on real server
processes (issue 11, findings 3, 5 and 8): an empty or half-written polled config file changes
nothing while requests flow; a reload naming a base path with nothing to load answers and
holds up neither later reloads nor the poller; what a network client may change."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.support.models import write_python_model
from tests.support.server import (
    ServerProcess,
    grpc_stubs,
    model_config,
    run_servo,
    running_server,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

RPC_TIMEOUT = 60.0  # generous: the answers come at once; the test asserts on what they say
LINE_TIMEOUT = 30.0  # seconds for a 1 s poller to log what it saw

VERSION_MODEL = """
import os
import numpy as np

class Model:
    def load(self, path):
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        return inputs["inputs"] * 0 + self.version
"""

# Leaves a mark when its code runs at all.
MARKING_MODEL = """
import os
open(os.path.join(os.path.dirname(__file__), "ran"), "w").close()

class Model:
    def predict(self, inputs, signature_name):
        return inputs["inputs"]
"""


def write_atomically(path: Path, text: str) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(text)
    os.replace(staging, path)


def versions(server: ServerProcess, name: str) -> dict[str, str]:
    answer = httpx.get(f"{server.rest}/v1/models/{name}", timeout=10)
    if answer.status_code != 200:
        return {}
    return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}


def predict(server: ServerProcess, name: str, client: httpx.Client | None = None) -> httpx.Response:
    post = client.post if client is not None else httpx.post
    return post(f"{server.rest}/v1/models/{name}:predict", json={"instances": [1.0]}, timeout=30)


def reload(server: ServerProcess, text: str) -> tuple[grpc.StatusCode, str]:
    """HandleReloadConfigRequest with the config `text`: the answer's code and message."""
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    request = model_management_pb2.ReloadConfigRequest(config=config)
    with grpc_stubs(server) as stubs:
        try:
            answer = stubs.models.HandleReloadConfigRequest(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as err:
            return err.code(), err.details()
    assert answer.status.error_code == 0
    return grpc.StatusCode.OK, answer.status.error_message


class Load:
    """REST predicts on `name` in a loop until stopped: how many were sent, and the failures."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server, self.name = server, name
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                answer = predict(self.server, self.name, client)
                self.sent += 1
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


# -- finding 3: an empty or half-written polled config file -----------------------------------


def seen(server: ServerProcess, load: Load, line: str) -> None:
    """Waits until the poller has logged `line` or a request failed."""
    wait_until(lambda: load.failures or line in server.output, LINE_TIMEOUT, f"{line!r} logged")


def test_an_empty_then_a_half_written_config_file_changes_nothing(tmp_path: Path) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    b = write_python_model(tmp_path / "b", VERSION_MODEL, version=2)
    config = tmp_path / "models.config"
    full = model_config([("a", a, "python"), ("b", b, "python")])
    write_atomically(config, full)
    with running_server(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    ) as server:
        with Load(server, "a") as load:
            wait_until(lambda: load.sent > 0, what="the first request")
            # A truncate-then-write edit, caught between the two.
            with open(config, "w"):
                pass
            seen(server, load, "Taking no action for empty config.")
            sent = load.sent
            wait_until(lambda: load.sent > sent, what="requests after the empty file")
            # The same edit caught half-way.
            config.write_text(full[: len(full) // 2])
            seen(server, load, "Ignoring the new")
            sent = load.sent
            wait_until(lambda: load.sent > sent, what="requests after the half-written file")
            config.write_text(full)
        assert load.failures == []
        assert load.sent > 0
        assert versions(server, "a") == {"1": "AVAILABLE"}
        assert predict(server, "b").json() == {"predictions": [2.0]}


# -- finding 5: a reload naming a base path with nothing to load ------------------------------


def test_a_reload_naming_a_missing_base_path_answers_and_later_reloads_work(
    tmp_path: Path,
) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    b = write_python_model(tmp_path / "b", VERSION_MODEL, version=2)
    missing = tmp_path / "missing"
    config = tmp_path / "models.config"
    config.write_text(model_config([("a", a, "python")]))
    with running_server(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=1",
            "--allow_python_models_over_network",
        ]
    ) as server:
        code, message = reload(
            server, model_config([("a", a, "python"), ("missing", missing, "python")])
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert message == (
            "1 model(s) added but not available yet; each loads its versions as they appear: "
            f"{{missing: nothing to load yet at base path {missing}: Could not find base path "
            f"{missing}}}"
        )
        # A later reload is not held up, and loads its model.
        code, message = reload(
            server,
            model_config([("a", a, "python"), ("missing", missing, "python"), ("b", b, "python")]),
        )
        assert (code, message) == (grpc.StatusCode.OK, "")
        assert predict(server, "b").json() == {"predictions": [2.0]}
        # The model that had nothing to load loads its first version when it appears.
        write_python_model(tmp_path / "staging", VERSION_MODEL, version=5)
        missing.mkdir()
        os.rename(tmp_path / "staging" / "5", missing / "5")
        wait_until(lambda: versions(server, "missing").get("5") == "AVAILABLE")
        assert predict(server, "missing").json() == {"predictions": [5.0]}
        assert predict(server, "a").json() == {"predictions": [1.0]}


def test_a_polled_file_naming_an_empty_base_path_does_not_hold_up_the_poller(
    tmp_path: Path,
) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    c = write_python_model(tmp_path / "c", VERSION_MODEL, version=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "models.config"
    write_atomically(config, model_config([("a", a, "python")]))
    with running_server(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    ) as server:
        write_atomically(config, model_config([("a", a, "python"), ("empty", empty, "python")]))
        line = server.wait_for_line("nothing to load yet", LINE_TIMEOUT)
        assert f"{{empty: nothing to load yet at base path {empty}: No versions of" in line
        write_atomically(
            config,
            model_config([("a", a, "python"), ("empty", empty, "python"), ("c", c, "python")]),
        )
        wait_until(lambda: versions(server, "c").get("3") == "AVAILABLE")
        assert predict(server, "c").json() == {"predictions": [3.0]}
        assert server.stop() == 0


GATED_MODEL = """
import os, time

class Model:
    def load(self, path):
        gate = os.path.join(os.path.dirname(os.path.normpath(path)), "gate")
        while not os.path.exists(gate):
            time.sleep(0.01)

    def predict(self, inputs, signature_name):
        return inputs["inputs"]
"""


def test_a_polled_file_adding_a_slow_model_does_not_hold_up_the_next_poll(
    tmp_path: Path,
) -> None:
    """The poller applies a config and goes on: the slow model's wait (up to 300 s by
    default) runs beside it, so the next edit is applied at the next poll. (Two load threads:
    with TFS's default of one, the next model's load would queue behind the slow one.)"""
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    slow = write_python_model(tmp_path / "slow", GATED_MODEL, version=1)
    c = write_python_model(tmp_path / "c", VERSION_MODEL, version=3)
    config = tmp_path / "models.config"
    write_atomically(config, model_config([("a", a, "python")]))
    with running_server(
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--num_load_threads=2",
        ]
    ) as server:
        write_atomically(config, model_config([("a", a, "python"), ("slow", slow, "python")]))
        wait_until(lambda: versions(server, "slow").get("1") == "LOADING")
        write_atomically(
            config,
            model_config([("a", a, "python"), ("slow", slow, "python"), ("c", c, "python")]),
        )
        wait_until(lambda: versions(server, "c").get("3") == "AVAILABLE")
        assert versions(server, "slow") == {"1": "LOADING"}
        (Path(slow) / "gate").write_text("")
        wait_until(lambda: versions(server, "slow").get("1") == "AVAILABLE")
        assert predict(server, "slow").json() == {"predictions": [1.0]}
        assert server.stop() == 0


# -- finding 8: model management is something an operator grants ------------------------------


def test_a_network_client_cannot_add_code_or_unload_everything_by_default(
    tmp_path: Path,
) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    anywhere = write_python_model(tmp_path / "anywhere", MARKING_MODEL)
    config = tmp_path / "models.config"
    config.write_text(model_config([("a", a, "python")]))
    with running_server([f"--model_config_file={config}"]) as server:
        code, message = reload(
            server, model_config([("a", a, "python"), ("evil", anywhere, "python")])
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert message == (
            f"Model evil: a python model at {anywhere} runs that directory's code, and adding "
            "or changing one over the network is not allowed; list it in --model_config_file, "
            "or start the server with --allow_python_models_over_network=true"
        )
        assert not (anywhere / "1" / "ran").exists()
        # The python model it serves, sent back as it is: allowed.
        assert reload(server, model_config([("a", a, "python")])) == (grpc.StatusCode.OK, "")
        # An empty model list takes no action.
        assert reload(server, "model_config_list {}") == (grpc.StatusCode.OK, "")
        assert predict(server, "a").json() == {"predictions": [1.0]}
        assert versions(server, "a") == {"1": "AVAILABLE"}


def test_allowed_roots_and_grants_set_by_the_operator(tmp_path: Path) -> None:
    models, logs = tmp_path / "models", tmp_path / "logs"
    a = write_python_model(models / "a", VERSION_MODEL, version=1)
    outside = write_python_model(tmp_path / "outside", VERSION_MODEL)
    config = tmp_path / "models.config"
    config.write_text(model_config([("a", a, "python")]))

    def logged(prefix: Path) -> str:
        collector = f'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }}'
        return f"logging_config {{ {collector} sampling_config {{ sampling_rate: 1 }} }}"

    with running_server(
        [
            f"--model_config_file={config}",
            f"--allowed_model_base_path_roots={models}",
            f"--allowed_request_log_roots={logs}",
            "--allow_python_models_over_network=true",
        ]
    ) as server:
        for path in (outside, models / ".." / "outside", Path("/proc")):
            code, message = reload(
                server, model_config([("a", a, "python"), ("x", path, "python")])
            )
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert message == (
                f"Model x: base path {path} is outside the allowed roots ({models}); add a root "
                "to --allowed_model_base_path_roots or move the model under one of them"
            )
        escape = logs / ".." / "elsewhere" / "requests"
        code, message = reload(server, model_config([("a", a, "python", logged(escape))]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert message == (
            f"Model a: request-log filename_prefix {escape} is outside the allowed roots "
            f"({logs}); add a root to --allowed_request_log_roots or log under one of them"
        )
        assert not (tmp_path / "elsewhere").exists()
        # Inside the roots, with python models granted: allowed.
        b = write_python_model(models / "b", VERSION_MODEL, version=2)
        prefix = logs / "a" / "requests"
        text = model_config([("a", a, "python", logged(prefix)), ("b", b, "python")])
        assert reload(server, text) == (grpc.StatusCode.OK, "")
        assert predict(server, "b").json() == {"predictions": [2.0]}
        assert predict(server, "a").json() == {"predictions": [1.0]}
        wait_until(lambda: list((logs / "a").glob("requests.*.tfrecord")), what="a request log")


def test_config_changes_over_the_network_turned_off(tmp_path: Path) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    config = tmp_path / "models.config"
    config.write_text(model_config([("a", a, "python")]))
    with running_server(
        [f"--model_config_file={config}", "--allow_model_config_over_network=false"]
    ) as server:
        assert reload(server, "model_config_list {}") == (
            grpc.StatusCode.PERMISSION_DENIED,
            "Model config changes over the network are turned off on this server "
            "(--allow_model_config_over_network=false); change --model_config_file instead",
        )
        assert predict(server, "a").json() == {"predictions": [1.0]}


def test_a_startup_config_outside_the_allowed_roots_exits_1(tmp_path: Path) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL)
    done = run_servo(
        "--model_name=a",
        f"--model_base_path={a}",
        f"--allowed_model_base_path_roots={tmp_path / 'models'}",
    )
    assert done.returncode == 1
    assert (
        f"Model a: base path {a} is outside the allowed roots ({tmp_path / 'models'}); add a "
        "root to --allowed_model_base_path_roots"
    ) in done.stderr
