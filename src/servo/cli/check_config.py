"""`servo check-config FILE`: a model config file (a ModelServerConfig in protobuf text format,
as --model_config_file takes) checked without starting a server.

Every problem is reported, one a line, not just the first: the text protobuf's parser refuses
(its lines, `L:C: ...` as TFS logs them), then for each model entry what the server would
refuse (no name or base path, a name listed twice, an unknown platform, a bad version policy
or label) and a local base path that does not exist. Exit 0 with a one-line summary when the
config is fine, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from servo.protos.text_format import InvalidProtobufFile
from servo.server import config as configs
from servo.util import gfile


def problems_of(path: str) -> tuple[list[str], configs.ModelServerConfig | None]:
    """The problems of the config file at `path`, and the config when it parsed."""
    try:
        text = configs.read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        return [f"Cannot read '{path}': {exc}"], None
    try:
        config = configs.parse_text(text, configs.ModelServerConfig(), path)
    except InvalidProtobufFile as exc:
        return list(exc.lines) or [str(exc)], None
    problems = configs.model_server_config_problems(config)
    for model in config.model_config_list.config:
        if model.base_path and not gfile.is_remote(model.base_path):
            local = gfile.local_path(model.base_path)
            if os.path.isabs(local) and not os.path.isdir(local):
                problems.append(
                    f"Model {model.name}: base_path {model.base_path} is not a directory"
                )
    return problems, config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="servo check-config",
        description="Check a model config file (ModelServerConfig, protobuf text format, as "
        "--model_config_file) and report every problem, without starting a server.",
    )
    parser.add_argument("file", help="the config file: a local path, file://, s3:// or gs://")
    args = parser.parse_args(argv)
    # The parser's lines are reported below; the log would repeat them.
    parser_log = logging.getLogger("servo.protos.text_format")
    was_disabled, parser_log.disabled = parser_log.disabled, True
    try:
        problems, config = problems_of(args.file)
    finally:
        parser_log.disabled = was_disabled
    if problems:
        for problem in problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        count = len(problems)
        print(f"{args.file}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        return 1
    assert config is not None
    models = config.model_config_list.config
    listed = ", ".join(f"{m.name} ({configs.model_platform(m)})" for m in models)
    print(f"{args.file}: OK, {len(models)} model{'s' if len(models) != 1 else ''}: {listed}")
    return 0
