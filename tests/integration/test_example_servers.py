"""The worked examples on real servers. What `make serve` serves of them: the text classifier as
a pipeline and as a composite, both answering the pipeline's curl from the Makefile's "Try:"
lines as vocab then vocab_classifier do, and the whole embedding table. And
scripts/serve_sharded.py (`make serve-sharded`) as a real process on free loopback ports: its 3
shard servers and their front answer as the whole table, and every process it started is gone
after a Ctrl-C, after the front stops, and after a shard fails to start."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.examples import example_script
from tests.support.server import alive, free_port, running_server
from tests.support.testdata import REPO
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "serve_sharded.py"
SERVE_EXAMPLES = REPO / "scripts" / "serve_examples.py"  # make serve: its Try lines
SERVED = [
    "vocab",
    "vocab_classifier",
    "text_classifier_pipeline",
    "text_classifier_composite",
    "embeddings",
]
SHARDED = ["embeddings", "embeddings_shards", "embeddings_sharded"]
STOP_TIMEOUT = 120.0  # the script's own bound (45 s per group of servers) and some


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The new example models, as scripts/make_example_models.py writes them."""
    import onnx  # noqa: F401 - needed by this test

    out = tmp_path_factory.mktemp("examples") / "models"
    names = dict.fromkeys([*SERVED, *SHARDED])
    assert example_script().main([str(out), *(a for n in names for a in ("--only", n))]) == 0
    return out


@pytest.fixture(scope="module")
def table(examples: Path) -> dict[str, np.ndarray]:
    """The whole embedding table, key -> row."""
    from servo.platforms import lookup
    from servo.platforms.options import PlatformOptions

    whole = lookup.load(str(examples / "embeddings" / "1"), PlatformOptions())
    assert isinstance(whole, lookup.EmbeddingTable)
    try:
        keys, values = whole.contents()
    finally:
        whole.close()
    return {k.decode(): v for k, v in zip(keys, values, strict=True)}


def makefile_curl_body(model: str) -> dict:
    """The JSON body of `make serve`'s "Try:" curl line that predicts with `model` (printed
    by scripts/serve_examples.py)."""
    spec = importlib.util.spec_from_file_location("serve_examples", SERVE_EXAMPLES)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    lines = script.try_lines("localhost", 8501, 8500)
    [line] = [line for line in lines if f"/v1/models/{model}:predict" in line]
    match = re.search(r"curl -d '(.*)' localhost", line)
    assert match is not None, line
    return json.loads(match.group(1))


def status(client: httpx.Client, base: str, model: str) -> str | None:
    try:
        answer = client.get(f"{base}/v1/models/{model}", timeout=5)
    except httpx.TransportError:
        return None
    if answer.status_code != 200:
        return None
    return str(answer.json()["model_version_status"][0]["state"])


def test_make_serve_answers_the_pipelines_curl_as_the_composite_and_the_steps_do(
    examples: Path, table: dict[str, np.ndarray]
) -> None:
    with (
        running_server([f"--model_config_file={examples / 'models.config'}"]) as server,
        httpx.Client() as client,
    ):
        for model in SERVED:
            wait_until(lambda m=model: status(client, server.rest, m) == "AVAILABLE", what=model)

        def predict(model: str, body: dict) -> list:
            answer = client.post(f"{server.rest}/v1/models/{model}:predict", json=body)
            assert answer.status_code == 200, answer.text
            return list(answer.json()["predictions"])

        body = makefile_curl_body("text_classifier_pipeline")
        by_pipeline = predict("text_classifier_pipeline", body)
        assert predict("text_classifier_composite", body) == by_pipeline
        ids = predict("vocab", body)
        scores = predict("vocab_classifier", {"instances": ids})
        assert by_pipeline == [{"ids": i, "scores": s} for i, s in zip(ids, scores, strict=True)]
        assert ids[0] == [8, 5, 2, 3] and -1 in ids[1]  # known words, and an unknown one

        keys = ["item-0000", "item-2048", "unknown"]
        rows = np.array(predict("embeddings", {"instances": keys}), np.float32)
        np.testing.assert_array_equal(rows[:2], [table[k] for k in keys[:2]])
        np.testing.assert_array_equal(rows[2], np.zeros(16, np.float32))


# -- scripts/serve_sharded.py -----------------------------------------------------------------


def children(pid: int) -> set[int]:
    """The running processes whose parent is `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def serving_from(path: Path) -> set[int]:
    """The running servo servers whose command line names a directory under `path` (the
    servers of one test: its models and the front the script writes there)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        server = args[1:4] == ["-m", "servo", "serve"]
        if server and any(str(path) in a for a in args) and alive(int(entry)):
            found.add(int(entry))
    return found


class ShardedRun:
    """scripts/serve_sharded.py on free loopback ports, its output in a file."""

    def __init__(self, models: Path, work: Path, shard_rest: list[int] | None = None) -> None:
        self.models = models
        self.logs = work / "logs"
        self.output = work / "serve_sharded.out"
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.shard_grpc = [free_port() for _ in range(3)]
        self.shard_rest = shard_rest or [free_port() for _ in range(3)]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    f"--models={models}",
                    f"--logs={self.logs}",
                    "--bind-address=127.0.0.1",
                    f"--grpc-port={self.grpc_port}",
                    f"--rest-port={self.rest_port}",
                    f"--shard-grpc-ports={','.join(map(str, self.shard_grpc))}",
                    f"--shard-rest-ports={','.join(map(str, self.shard_rest))}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, client: httpx.Client) -> dict[str, int]:
        """Waits until the front serves and the script has said where everything listens;
        returns the PIDs it printed, by server name."""

        def ready() -> bool:
            assert self.running(), f"serve_sharded.py exited:\n{self.text()}"
            return (
                status(client, self.rest, "embeddings_sharded") == "AVAILABLE"
                and "Ctrl-C stops" in self.text()
            )

        wait_until(ready, what="the sharded example serving")
        pids = re.findall(r"^  (shard \d|front): pid (\d+),", self.text(), re.MULTILINE)
        return {name: int(pid) for name, pid in pids}

    def wait_exit(self) -> int:
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait()


@contextmanager
def sharded_run(
    examples: Path, work: Path, shard_rest: list[int] | None = None
) -> Iterator[ShardedRun]:
    """A run of the script, killed if it still runs when the test ends; the test then waits
    until none of its servers runs."""
    run = ShardedRun(examples, work, shard_rest)
    try:
        yield run
    finally:
        run.kill()  # SIGKILL: its servers then get SIGTERM from the kernel (PR_SET_PDEATHSIG)
        wait_until(lambda: not serving_from(work), what="every server of the test gone")


@pytest.fixture
def sharded_examples(examples: Path, tmp_path: Path) -> Path:
    """A copy of the sharded example in each test's directory, so that each test's servers
    are told apart by their command lines."""
    import shutil

    copy = tmp_path / "models"
    for name in SHARDED:
        shutil.copytree(examples / name, copy / name)
    return copy


def test_serve_sharded_answers_as_the_whole_table_and_ctrl_c_stops_every_server(
    sharded_examples: Path, tmp_path: Path, table: dict[str, np.ndarray]
) -> None:
    with sharded_run(sharded_examples, tmp_path) as run, httpx.Client() as client:
        pids = run.wait_ready(client)
        assert sorted(pids) == ["front", "shard 0", "shard 1", "shard 2"]
        # The script's children are exactly the servers it says it started.
        assert children(run.process.pid) == set(pids.values())
        assert serving_from(tmp_path) == set(pids.values())
        # The ports are not the example front's: it serves a copy listing them.
        front = json.loads((run.logs / "front" / "1" / "sharded.json").read_text())
        assert front == {
            "model": "embeddings",
            "shards": [f"127.0.0.1:{port}" for port in run.shard_grpc],
        }
        for index, port in enumerate(run.shard_rest):
            assert status(client, f"http://127.0.0.1:{port}", "embeddings") == "AVAILABLE"
            assert (run.logs / f"shard-{index}.log").exists()

        rng = np.random.default_rng(7)
        keys = [f"item-{i:04d}" for i in rng.choice(4096, 300, replace=False).tolist()]
        keys += ["unknown", keys[0]]  # unknown keys answer zeros; a key asked twice, twice
        answer = client.post(
            f"{run.rest}/v1/models/embeddings_sharded:predict", json={"instances": keys}
        )
        assert answer.status_code == 200, answer.text
        rows = np.array(answer.json()["predictions"], np.float32)
        expected = [table.get(k, np.zeros(16, np.float32)) for k in keys]
        np.testing.assert_array_equal(rows, expected)
        # Keys of any shape come back in that shape.
        grid = [[keys[0], keys[1]], [keys[2], "unknown"]]
        answer = client.post(
            f"{run.rest}/v1/models/embeddings_sharded:predict", json={"inputs": {"keys": grid}}
        )
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(
            np.array(answer.json()["outputs"], np.float32),
            [[table[keys[0]], table[keys[1]]], [table[keys[2]], np.zeros(16, np.float32)]],
        )

        run.process.send_signal(signal.SIGINT)  # what Ctrl-C sends it
        assert run.wait_exit() == 0, run.text()
        assert not [pid for pid in pids.values() if alive(pid)]
        assert not serving_from(tmp_path)
        assert run.text().rstrip().endswith("servo: every server stopped")


def test_when_the_front_stops_the_script_stops_the_shards(
    sharded_examples: Path, tmp_path: Path
) -> None:
    with sharded_run(sharded_examples, tmp_path) as run, httpx.Client() as client:
        pids = run.wait_ready(client)
        os.kill(pids["front"], signal.SIGTERM)
        assert run.wait_exit() == 1, run.text()
        assert f"front (pid {pids['front']}) exited with code 0 by itself" in run.text()
        assert not [pid for pid in pids.values() if alive(pid)]
        assert not serving_from(tmp_path)


def test_a_shard_that_cannot_start_stops_the_others(sharded_examples: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = [free_port(), busy.getsockname()[1], free_port()]
        with sharded_run(sharded_examples, tmp_path, ports) as run:
            assert run.wait_exit() == 1, run.text()
    text = run.text()
    assert "shard 1 (pid " in text and "before serving" in text
    assert "Failed to start HTTP Server" in text  # the end of its log, shown
    assert not serving_from(tmp_path)
