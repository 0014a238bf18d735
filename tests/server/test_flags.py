"""The command line's values: each bad one is refused by the parser (exit code 2) with what is
wrong, before anything starts."""

from __future__ import annotations

import argparse

import pytest

from servo.cli.flags import build_parser


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--log_level=loud", "argument --log_level: expected one of debug, info, warning"),
        ("--rest_api_max_body_bytes=-1", "expected a positive number of bytes, got -1"),
        ("--rest_api_max_body_bytes=0", "expected a positive number of bytes, got 0"),
        ("--total_model_memory_bytes=-5", "expected 0 (unlimited) or more bytes, got -5"),
        (
            "--model_platform=bogus",
            "argument --model_platform: expected one of composite, lookup, onnx, pipeline",
        ),
        ("--port=-1", "a port is 0..65535, got -1"),
        ("--file_system_poll_wait_seconds=soon", "expected an integer, got 'soon'"),
    ],
)
def test_bad_values_exit_2_with_the_reason(flag: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([flag])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_good_values() -> None:
    args = build_parser().parse_args(
        [
            "--log_level=WARNING",
            "--rest_api_max_body_bytes=1024",
            "--total_model_memory_bytes=0",
            "--model_platform=onnx",
        ]
    )
    assert (args.log_level, args.rest_api_max_body_bytes) == ("warning", 1024)
    assert (args.total_model_memory_bytes, args.model_platform) == (0, "onnx")
    defaults = build_parser().parse_args([])
    assert (defaults.log_level, defaults.model_platform) == ("info", "")


def test_per_model_flag_has_a_default_and_overrides() -> None:
    from servo.cli.flags import PerModel, parse_int32, per_model

    parse = per_model(parse_int32)
    value = parse("8,slow=2, other = 3")
    assert value == PerModel(8, (("slow", 2), ("other", 3)))
    assert value.get("slow") == 2
    assert value.get("unknown") == 8
    assert parse("4") == PerModel(4)


@pytest.mark.parametrize("text", ["", "slow=2", "1,2", "=3", "8,slow=x"])
def test_per_model_flag_refuses_what_it_cannot_read(text: str) -> None:
    from servo.cli.flags import parse_int32, per_model

    with pytest.raises(argparse.ArgumentTypeError):
        per_model(parse_int32)(text)


def test_model_management_flags_keep_tfs_behaviour_by_default() -> None:
    defaults = build_parser().parse_args([])
    assert defaults.allow_model_config_over_network is True
    assert defaults.allow_python_models_over_network is False
    assert defaults.allowed_model_base_path_roots == ()
    assert defaults.allowed_request_log_roots == ()
    assert defaults.model_config_reload_wait_seconds == 300.0
    args = build_parser().parse_args(
        [
            "--allow_model_config_over_network=false",
            "--allowed_model_base_path_roots=/srv/models,/srv/../opt/models",
            "--model_config_reload_wait_seconds=0",
        ]
    )
    assert args.allow_model_config_over_network is False
    assert args.allowed_model_base_path_roots == ("/srv/models", "/opt/models")
    assert args.model_config_reload_wait_seconds == 0.0
