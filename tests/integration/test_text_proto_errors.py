"""Text-proto files that protobuf's parser refuses, through real server processes: servo
logs what TFS logs (protobuf's `Error parsing text-format tensorflow.serving.<Message>:
LINE:COLUMN: ...` lines, then TFS's own) for every text-proto file it reads, at start (exit
1), when the polled model config changes (the running config stays) and when a version's
`batching_params.pbtxt` is read (the version fails). The parser's texts themselves are
tested in process in tests/test_text_format.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.models import SUM_MODEL, write_python_model
from tests.support.server import model_config, run_servo, running_server

pytestmark = pytest.mark.integration


def messages(output: str) -> list[str]:
    """The log lines' messages (after servo's `<time> <level> <logger>] `)."""
    return [line.split("] ", 1)[1] for line in output.splitlines() if "] " in line]


def parsed(message_type: str, where: str, what: str) -> str:
    return f"Error parsing text-format tensorflow.serving.{message_type}: {where}: {what}"


@pytest.mark.parametrize(
    ("flag", "text", "lines"),
    [
        (
            "--model_config_file",
            "improperly formatted file",  # TFS's testdata/bad_model_config.txt
            [
                parsed(
                    "ModelServerConfig",
                    "1:12",
                    'Message type "tensorflow.serving.ModelServerConfig" has no field named '
                    '"improperly".',
                )
            ],
        ),
        (
            "--model_config_file",
            'model_config_list {\n  config {\n    name: "a\\q"\n    base_path: 7\n',
            [
                parsed("ModelServerConfig", "3:14", "Invalid escape sequence in string literal."),
                parsed("ModelServerConfig", "4:16", "Expected string, got: 7"),
            ],
        ),
        (
            "--batching_parameters_file",
            "max_batch_size: 8",
            [parsed("BatchingParameters", "1:17", 'Expected "{", found "8".')],
        ),
        (
            "--monitoring_config_file",
            "prometheus_config { enable: yes }",
            [
                parsed(
                    "MonitoringConfig",
                    "1:33",
                    'Invalid value for boolean field "enable". Value: "yes".',
                )
            ],
        ),
        (
            "--ssl_config_file",
            'server_key: "k" server_key: "k"',
            [
                parsed(
                    "SSLConfig",
                    "1:27",
                    'Non-repeated field "server_key" is specified multiple times.',
                )
            ],
        ),
    ],
)
def test_a_bad_text_proto_file_at_start_is_logged_as_tfs_logs_it(
    tmp_path: Path, flag: str, text: str, lines: list[str]
) -> None:
    model = write_python_model(tmp_path / "m", SUM_MODEL)
    path = tmp_path / "bad.txt"
    path.write_text(text)
    args = ["--model_name=m", f"--model_base_path={model}", f"{flag}={path}"]
    if flag == "--model_config_file":
        args = [f"{flag}={path}"]
    elif flag == "--batching_parameters_file":
        args.append("--enable_batching")
    result = run_servo("--port=0", "--rest_api_port=0", *args)
    assert result.returncode == 1, result.stderr
    logged = messages(result.stderr)
    assert lines[0] in logged, result.stderr
    start = logged.index(lines[0])
    assert logged[start : start + len(lines) + 1] == [
        *lines,
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{path}'",
    ]


def test_a_bad_polled_model_config_is_logged_as_tfs_logs_it_and_changes_nothing(
    tmp_path: Path,
) -> None:
    model = write_python_model(tmp_path / "m", SUM_MODEL)
    config = tmp_path / "models.config"
    config.write_text(model_config([("m", model, "python")]))
    with running_server(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    ) as server:
        bad = tmp_path / "bad.config"
        bad.write_text("model_config_list { config { name: 'm' } ")
        bad.replace(config)
        server.wait_for_line(f"Ignoring the new {config}; the running config stays")
        assert messages(server.output)[-3:] == [
            parsed("ModelServerConfig", "1:42", "Expected identifier, got: "),
            f"Failed to read ModelServerConfig file: Invalid protobuf file: '{config}'",
            f"Ignoring the new {config}; the running config stays",
        ]
        answer = httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [1.0, 2.0]})
        assert answer.json() == {"predictions": [3.0]}
        assert server.stop() == 0


def test_a_bad_batching_params_pbtxt_fails_its_version_with_tfs_status(tmp_path: Path) -> None:
    model = write_python_model(tmp_path / "m", SUM_MODEL)
    params = model / "1" / "batching_params.pbtxt"
    params.write_text("max_batch_size { value: x }")
    result = run_servo(
        "--port=0",
        "--rest_api_port=0",
        "--model_name=m",
        f"--model_base_path={model}",
        "--model_platform=python",
        "--enable_batching",
        "--enable_per_model_batching_parameters",
        "--max_num_load_retries=0",
    )
    assert result.returncode == 1, result.stderr
    line = parsed("BatchingParameters", "1:25", "Expected integer, got: x")
    assert line in messages(result.stderr)
    # The version's status: TFS's text, then the parser's line for whoever reads no log.
    assert f"INVALID_ARGUMENT: Invalid protobuf file: '{params}': {line}" in result.stderr
