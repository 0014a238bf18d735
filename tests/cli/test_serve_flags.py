"""`servo serve`'s command line as an operator meets it: --help with every default, TFS's
flags apart from servo's, and a mistyped flag answered in one line with the closest flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from servo.cli.flags import SERVO_FLAGS, TFS_FLAGS, PerModel, build_parser, shown_default
from servo.cli.main import main
from tests.support.testdata import REPO


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def entries(text: str) -> dict[str, str]:
    """Each flag's entry in --help (its lines from `  --name` on), whitespace joined."""
    found: dict[str, str] = {}
    for chunk in ("\n" + text).split("\n  --")[1:]:
        name, _, rest = chunk.partition(" ")
        found[name] = " ".join(rest.split("\n\n", 1)[0].split())
    return found


def test_help_shows_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    found = entries(help_text(capsys))
    for flag in (*TFS_FLAGS, *SERVO_FLAGS):
        assert found[flag.name].endswith(f"(default: {shown_default(flag.default)})"), flag.name
    assert found["port"] == "PORT Port for the gRPC API. (default: 8500)"
    assert found["enable_batching"] == "[BOOL] Batch requests on the server. (default: false)"
    assert found["bind_address"].endswith("(default: 0.0.0.0)")


def test_help_puts_tfs_flags_apart_from_servos(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    tfs_title, servo_title = "TensorFlow Serving's flags", "servo's own flags"
    tfs_part = entries(text[text.index(tfs_title) : text.index(servo_title)])
    servo_part = entries(text[text.index(servo_title) :])
    assert list(tfs_part) == [flag.name for flag in TFS_FLAGS]
    assert list(servo_part) == [flag.name for flag in SERVO_FLAGS]
    assert text.startswith("usage: servo serve [--flag=value ...]\n")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "true"), ("", '""'), ((), '""'), (("onnx", "tflite"), "onnx,tflite"), (30.0, "30")],
)
def test_defaults_are_shown_as_written_on_the_command_line(value: object, shown: str) -> None:
    assert shown_default(value) == shown
    assert shown_default(PerModel(8, (("slow", 2),))) == "8,slow=2"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--rest_api_prot=8501"], "unknown flag --rest_api_prot; did you mean --rest_api_port?"),
        (
            ["--model_base_pth", "/m"],
            "unknown flag --model_base_pth; did you mean --model_base_path?",
        ),
        (["--enable_batchin"], "unknown flag --enable_batchin; did you mean --enable_batching?"),
        (["--zzzqqq=1"], "unknown flag --zzzqqq; see --help for the flags"),
        (["models"], "unexpected argument 'models' (flags are written --name=value)"),
        (["--port=eighty"], "argument --port: expected an integer, got 'eighty'"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_flags(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"servo serve: {line}\n" and captured.out == ""


def test_the_command_answers_a_typo_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "servo", "serve", "--rest_api_prot=8501"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr == "servo serve: unknown flag --rest_api_prot; did you mean --rest_api_port?\n"
    )


def test_workers_defaults_to_one_process_and_refuses_less_than_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_parser().parse_flags([]).workers == 1
    assert build_parser().parse_flags(["--workers=4"]).workers == 4
    # A worker's command repeats the flags and ends with --workers=1: the last one wins.
    from servo.cli.workers import worker_command

    command = worker_command(["--workers=2", "--port=9000"])
    assert build_parser().parse_flags(command[4:]).workers == 1
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_flags(["--workers=0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "servo serve: argument --workers: expected 1 or more, got 0\n"
