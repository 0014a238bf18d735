"""servo.cli.connections: connection caps fitted under the open-file limit, gRPC's arguments
for the connection flags, the raise of the soft limit (in a child process), and the REST
port's protocol flags as the HTTP server takes them."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from servo.apis.rest.http_server import HttpServer
from servo.cli.connections import BASE_DESCRIPTORS, ConnectionCaps, fit_caps, grpc_arguments
from servo.cli.flags import build_parser
from servo.cli.model_server import rest_protocol_limits


def test_caps_that_fit_are_kept() -> None:
    caps = ConnectionCaps(100, 50)
    assert fit_caps(caps, 100 + 50 + 256 + BASE_DESCRIPTORS, 256) == caps


def test_caps_that_do_not_fit_are_lowered_in_proportion_leaving_the_reserve() -> None:
    caps = fit_caps(ConnectionCaps(4096, 4096), 1024, 256)
    room = 1024 - 256 - BASE_DESCRIPTORS
    assert caps.rest + caps.grpc <= room
    assert caps.rest == caps.grpc == room // 2


def test_caps_stay_at_least_one_when_the_limit_leaves_no_room() -> None:
    assert fit_caps(ConnectionCaps(10, 10), 100, 256) == ConnectionCaps(1, 1)


def test_grpc_arguments_follow_the_flags_and_zero_leaves_grpc_defaults() -> None:
    args = dict(grpc_arguments(ConnectionCaps(8, 9), idle=1.5, handshake=2, keepalive=3))
    assert args == {
        "grpc.max_allowed_incoming_connections": 9,
        "grpc.max_connection_idle_ms": 1500,
        "grpc.server_handshake_timeout_ms": 2000,
        "grpc.keepalive_time_ms": 3000,
        "grpc.keepalive_timeout_ms": 20_000,
    }
    assert dict(grpc_arguments(ConnectionCaps(8, 9), idle=0, handshake=0, keepalive=0)) == {
        "grpc.max_allowed_incoming_connections": 9
    }


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    code = (
        "import resource\n"
        "from servo.cli.connections import raise_open_file_limit\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}))\n"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    expected = str(hard if hard != resource.RLIM_INFINITY else 2**20)
    assert out == [expected, expected]


def test_connection_flags_have_defaults_and_reject_bad_values() -> None:
    parser = build_parser()
    args = parser.parse_args([])
    assert (args.rest_api_max_connections, args.grpc_max_connections) == (4096, 4096)
    assert args.rest_api_idle_timeout_seconds == 30.0
    assert args.rest_api_read_timeout_seconds == 30.0
    assert args.rest_api_max_request_head_bytes == 65536
    assert args.rest_api_max_pipelined_requests == 16
    assert args.rest_api_max_read_ahead_bytes == 1024 * 1024
    assert args.rest_api_close_linger_seconds == 2.0
    assert args.rest_api_max_buffered_body_bytes == 2**30
    assert args.grpc_max_buffered_message_bytes == 2**30
    assert args.grpc_max_connection_idle_seconds == 300.0
    assert args.open_files_reserve == 256
    assert args.shutdown_grace_period_seconds == 30.0
    for bad in (
        "--rest_api_max_connections=0",
        "--rest_api_idle_timeout_seconds=-1",
        "--rest_api_max_pipelined_requests=0",
        "--rest_api_max_read_ahead_bytes=0",
        "--rest_api_close_linger_seconds=-1",
        "--rest_api_max_buffered_body_bytes=0",
        "--grpc_max_buffered_message_bytes=0",
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([bad])
        assert exit_info.value.code == 2


def test_the_rest_protocol_flags_reach_the_http_server() -> None:
    args = build_parser().parse_args(
        [
            "--rest_api_idle_timeout_seconds=0",
            "--rest_api_max_request_head_bytes=2048",
            "--rest_api_max_pipelined_requests=3",
            "--rest_api_max_read_ahead_bytes=4096",
            "--rest_api_close_linger_seconds=0.5",
            "--rest_api_max_buffered_body_bytes=134217728",
        ]
    )
    server = HttpServer(object(), "127.0.0.1", 0, **rest_protocol_limits(args))
    assert server.max_buffered_body_bytes == 128 * 2**20
    assert server.idle_timeout is None  # 0 turns it off
    assert (server.max_head_bytes, server.max_pipelined) == (2048, 3)
    assert (server.max_read_ahead_bytes, server.close_linger) == (4096, 0.5)


def test_the_bound_on_bodies_held_cannot_be_below_the_largest_body(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_flags(["--rest_api_max_buffered_body_bytes=1048576"])
    assert exit_info.value.code == 2
    assert (
        "--rest_api_max_buffered_body_bytes=1048576 is below --rest_api_max_body_bytes=67108864"
        in capsys.readouterr().err
    )
    args = parser.parse_flags(
        ["--rest_api_max_buffered_body_bytes=1048576", "--rest_api_max_body_bytes=1048576"]
    )
    assert args.rest_api_max_buffered_body_bytes == args.rest_api_max_body_bytes == 2**20


@pytest.mark.parametrize(
    ("flags", "largest"),
    [
        # The largest message received: --max_decoded_bytes_per_request (256 MiB) and 4 MiB.
        (["--grpc_max_buffered_message_bytes=268435456"], "272629760 bytes"),
        (
            [
                "--grpc_max_buffered_message_bytes=268435456",
                "--grpc_channel_arguments=grpc.max_receive_message_length=300000000",
            ],
            "300000000 bytes",
        ),
        (["--grpc_channel_arguments=grpc.max_receive_message_length=-1"], "no limit"),
    ],
)
def test_the_bound_on_messages_held_cannot_be_below_the_largest_message(
    capsys: pytest.CaptureFixture[str], flags: list[str], largest: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_flags(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is below the largest gRPC message received (" + largest in err
    assert "raise the first or lower the second" in err


def test_the_bound_on_messages_held_fits_a_lower_message_limit() -> None:
    parser = build_parser()
    args = parser.parse_flags(
        ["--grpc_max_buffered_message_bytes=8388608", "--max_decoded_bytes_per_request=4194304"]
    )
    assert args.grpc_max_buffered_message_bytes == 8 * 2**20  # 4 MiB decoded and 4 MiB
    args = parser.parse_flags(
        [
            "--grpc_max_buffered_message_bytes=1048576",
            "--grpc_channel_arguments=grpc.max_receive_message_length=1048576",
        ]
    )
    assert args.grpc_max_buffered_message_bytes == 2**20
