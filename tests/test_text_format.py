"""protobuf's text format as protobuf's C++ parser (TFS's) reads it (servo.protos.text_format):
the texts it refuses, its error lines word for word and column for column, the lines logged,
the status TFS answers; and, for random damaged configs, the same errors as protobuf's own C++
parser (protoc's `--encode`, from grpcio-tools) reports.

The server's use of it for each file it reads is in tests/server/test_config.py,
tests/batching/test_batching.py and, through real processes,
tests/integration/test_text_proto_errors.py.
"""

from __future__ import annotations

import importlib.resources
import logging
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servo.protos import batching_parameters_pb2, model_server_config_pb2, ssl_config_pb2
from servo.protos.text_format import (
    InvalidProtobufFile,
    TextFormatError,
    check,
    parse,
    parse_file_text,
)
from tests.support.testdata import REPO

MSC = "tensorflow.serving.ModelServerConfig"
MC = "tensorflow.serving.ModelConfig"


def lines(
    text: str | bytes, message: type = model_server_config_pb2.ModelServerConfig
) -> list[str]:
    with pytest.raises(TextFormatError) as err:
        parse(text, message())
    return err.value.lines


def error(where: str, what: str, message_type: str = MSC) -> str:
    return f"Error parsing text-format {message_type}: {where}: {what}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # TFS's testdata/bad_model_config.txt: the place is the token after the unknown name.
        (
            "improperly formatted file",
            [error("1:12", f'Message type "{MSC}" has no field named "improperly".')],
        ),
        (
            "\tmodel_config_list {\n\t\tconfig { nam: 1 } }",
            [error("2:29", f'Message type "{MC}" has no field named "nam".')],
        ),
        (
            'model_config_list {\n  config { name: "a" name: "b" }',
            [error("2:26", 'Non-repeated field "name" is specified multiple times.')],
        ),
        ("model_config_list { config { name: ", [error("1:36", "Expected string, got: ")]),
        ("model_config_list {", [error("1:20", "Expected identifier, got: ")]),
        ("model_config_list { config { name: 12 } }", [error("1:36", "Expected string, got: 12")]),
        ("model_config_list { config { name: x } }", [error("1:36", "Expected string, got: x")]),
        (
            "model_config_list { config { model_type: FOO } }",
            [error("1:46", 'Unknown enumeration value of "FOO" for field "model_type".')],
        ),
        (
            "model_config_list { config { version_labels { key: 'a' "
            "value: 99999999999999999999 } } }",
            [error("1:63", "Integer out of range (99999999999999999999)")],
        ),
        (
            "model_config_list { config { version_labels { key: 'a' value: 1x } } }",
            [
                error("1:64", "Need space between number and identifier."),
                error(
                    "1:66",
                    'Message type "tensorflow.serving.ModelConfig.VersionLabelsEntry" has no '
                    'field named "x".',
                ),
            ],
        ),
        (
            'model_config_list { config { name: "a\\q" } }',
            [error("1:39", "Invalid escape sequence in string literal.")],
        ),
        (
            'model_config_list { config { name: "abc\n" } }',
            [
                error("1:40", 'Multiline strings are not allowed. Did you miss a "?.'),
                error("2:6", "Unexpected end of string."),  # the quote after the line feed
                error("2:6", "Expected identifier, got: "),
            ],
        ),
        (
            "model_config_list { config { model_version_policy { latest {} all {} } } }",
            [
                error(
                    "1:67",
                    'Field "all" is specified along with field "latest", another member of '
                    'oneof "policy_choice".',
                ),
            ],
        ),
        (
            "model_config_list { config { logging_config { sampling_config { "
            "sampling_rate: foo } } } }",
            [
                error("1:80", "Expected double, got: foo"),
            ],
        ),
        (
            "model_config_list { config { logging_config { sampling_config { "
            "sampling_rate: 0x1 } } } }",
            [
                error("1:80", "Expect a decimal number, got: 0x1"),
            ],
        ),
        (
            "custom_model_config { [type.googleapis.com/foo.Bar] { } }",
            [
                error(
                    "1:53",
                    'Could not find type "type.googleapis.com/foo.Bar" stored in '
                    "google.protobuf.Any.",
                ),
            ],
        ),
        (
            "model_config_list { config { [ext.x]: 1 } }",
            [
                error(
                    "1:37", f'Extension "ext.x" is not defined or is not an extension of "{MC}".'
                ),
            ],
        ),
        (
            "model_config_list { config { name: 'a' } } \x01 model_config_list {}",
            [
                error("1:44", "Invalid control characters encountered in text."),
                error(
                    "1:64", 'Non-repeated field "model_config_list" is specified multiple times.'
                ),
            ],
        ),
        (
            "model_config_list { config { foo.5 } }",
            [
                error("1:33", "Need space between identifier and decimal point."),
                error("1:33", f'Message type "{MC}" has no field named "foo".'),
            ],
        ),
    ],
)
def test_refused_texts_and_their_lines_are_protobufs(text: str, expected: list[str]) -> None:
    assert lines(text) == expected


def test_other_message_types_are_named_as_tfs_names_them() -> None:
    assert lines("max_batch_size: 8", batching_parameters_pb2.BatchingParameters) == [
        error("1:17", 'Expected "{", found "8".', "tensorflow.serving.BatchingParameters")
    ]
    assert lines("client_verify: maybe", ssl_config_pb2.SSLConfig) == [
        error(
            "1:21",
            'Invalid value for boolean field "client_verify". Value: "maybe".',
            "tensorflow.serving.SSLConfig",
        )
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  # nothing\n",
        'model_config_list { config { name: "m" base_path: "/m" model_platform: "onnx" } }',
        "model_config_list < config < name: 'a'; base_path: 'b', > >",
        "model_config_list { config [ {name: 'a'}, {name: 'b'} ] }",
        "model_config_list { config { name: '' name: 'x' } }",  # '' is unset in proto3
        'model_config_list { config { name: "a" \'b\' "c" } }',
        "model_config_list { config { model_type: 7 } }",  # an open enum takes any number
    ],
)
def test_texts_the_parser_takes_parse_as_pythons_parser_parses_them(text: str) -> None:
    from google.protobuf import text_format as python_text_format

    assert check(text.encode(), model_server_config_pb2.ModelServerConfig.DESCRIPTOR) == []
    expected = python_text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert parse(text, model_server_config_pb2.ModelServerConfig()) == expected


def test_the_lines_are_logged_and_the_file_answers_tfs_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidProtobufFile) as err:
        parse_file_text("nope: 1", model_server_config_pb2.ModelServerConfig(), "/c/m.config")
    line = error("1:5", f'Message type "{MSC}" has no field named "nope".')
    assert str(err.value) == "Invalid protobuf file: '/c/m.config'"
    assert err.value.status == "INVALID_ARGUMENT: Invalid protobuf file: '/c/m.config'"
    assert err.value.lines == [line]
    assert err.value.detail == f"Invalid protobuf file: '/c/m.config': {line}"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.ERROR, line)]


def test_a_deprecated_field_is_warned_of_as_protobuf_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """protobuf logs "text format contains deprecated field" on the 1st, 2nd, 4th, ... time
    in the process (ABSL_LOG_EVERY_POW_2), with the count."""
    with caplog.at_level(logging.WARNING):
        for _ in range(8):
            parse(
                "model_config_list { config { model_type: TENSORFLOW } }",
                model_server_config_pb2.ModelServerConfig(),
            )
    warned = [r.getMessage() for r in caplog.records]
    counts = [int(m.split("(N = ")[1].split(")")[0]) for m in warned]
    assert counts and all(c & (c - 1) == 0 for c in counts)  # powers of 2 only
    assert warned[0].startswith(f"Warning parsing text-format {MSC}: 1:40 (N = ")
    assert warned[0].endswith('): text format contains deprecated field "model_type"')


def test_what_only_pythons_parser_refuses_is_its_error_in_protobufs_form() -> None:
    """The C++ parser takes bytes that are not UTF-8 in a string; Python's does not, and
    servo's messages are Python's."""
    text = b'model_config_list { config { name: "\\xff" } }'
    assert check(text, model_server_config_pb2.ModelServerConfig.DESCRIPTOR) == []
    (line,) = lines(text)
    assert line.startswith(f"Error parsing text-format {MSC}: 1:43: ")
    assert "Couldn't parse string" in line


def test_deep_nesting_is_refused_not_a_crash() -> None:
    from google.protobuf import struct_pb2

    text = "list_value { values { " * 300
    (line,) = lines(text, struct_pb2.Value)
    assert line == (
        "Error parsing text-format google.protobuf.Value: 1:2214: Message is too deep: servo "
        "reads messages nested at most 200 deep."
    )


# -- against protobuf's own C++ parser ---------------------------------------------------------


def cpp_errors(data: bytes) -> list[str]:
    """protoc --encode's errors (C++ TextFormat::Parser, the location from 1), warnings
    included, with servo's package names written as TFS's."""
    grpc_tools = pytest.importorskip("grpc_tools")
    include = str(importlib.resources.files(grpc_tools) / "_proto")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from grpc_tools import protoc; sys.exit(protoc.main(sys.argv))",
            f"-I{REPO / 'src'}",
            f"-I{include}",
            "--encode=servo.tensorflow.serving.ModelServerConfig",
            "servo/protos/model_server_config.proto",
        ],
        input=data,
        capture_output=True,
        cwd=REPO / "src",
        check=False,
    )
    found = result.stderr.decode("utf-8", "replace").splitlines()
    return sorted(
        line.removeprefix("input:").replace("servo.tensorflow.", "tensorflow.")
        for line in found
        if line != "Failed to parse input."
    )


def servo_errors(data: bytes) -> list[str]:
    from servo.protos.text_format import _check

    checker = _check(data, model_server_config_pb2.ModelServerConfig.DESCRIPTOR)
    return sorted(
        [f"{e.line + 1}:{e.column + 1}: {e.message}" for e in checker.errors]
        + [f"{w.line + 1}:{w.column + 1}: warning: {w.message}" for w in checker.warnings]
    )


SEEDS = [
    b'model_config_list {\n  config {\n    name: "m"\n    base_path: "/models/m"\n'
    b'    model_platform: "tensorflow"\n    model_version_policy { latest { num_versions: 2 } }\n'
    b'    version_labels { key: "stable" value: 42 }\n  }\n}\n',
    b'model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" '
    b"model_version_policy { specific { versions: [1, 2] } } logging_config { "
    b'log_collector_config { type: "x" filename_prefix: "/tmp/l" } '
    b"sampling_config { sampling_rate: 0.5 } } } }",
    b"model_config_list < config < name: 'x' model_type: TENSORFLOW "
    b"model_version_policy { all {} } > >\n# end\n",
]
PIECES = [
    *(bytes([c]) for c in b"{}<>:[],;\"'\\\n\t #-./%\x01"),
    b"0x",
    b"1e",
    b"07",
    b"9",
    b"f",
    b"name",
    b"config",
    b"inf",
    b"\xc3",
    b"\\x",
    b"foo",
]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_damaged_configs_get_the_errors_protobufs_cpp_parser_gives(rng: random.Random) -> None:
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        change = rng.random()
        if change < 0.4:
            data[at:at] = rng.choice(PIECES)
        elif change < 0.7:
            del data[at : at + rng.randint(1, 4)]
        else:
            data[at : at + 1] = rng.choice(PIECES)
    assert servo_errors(bytes(data)) == cpp_errors(bytes(data)), bytes(data)
