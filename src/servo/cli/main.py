"""`servo`: the command line entry point.

    servo serve --model_name=m --model_base_path=/models/m --rest_api_port=8501
    servo --model_config_file=/models/models.config      (flags alone mean `serve`)
    python -m servo serve ...

`servo serve` takes every `tensorflow_model_server` flag (see `servo serve --help`).
"""

from __future__ import annotations

import sys

USAGE = """usage: servo serve [--flag=value ...]   (see: servo serve --help)

Commands:
  serve        serve models with TensorFlow Serving's APIs (the default)
  inspect      print a model directory's platform, versions and signatures
               (see: servo inspect --help)
  check-config check a model config file and report every problem
               (see: servo check-config --help)
  split-table  split a lookup table into shards for the sharded platform
               (see: servo split-table --help)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv and not argv[0].startswith("-"):
        command, argv = argv[0], argv[1:]
        if command == "split-table":
            from servo.cli.split_table import main as split_table

            return split_table(argv)
        if command == "inspect":
            from servo.cli.inspect_model import main as inspect_model

            return inspect_model(argv)
        if command == "check-config":
            from servo.cli.check_config import main as check_config

            return check_config(argv)
        if command != "serve":
            print(f"servo: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
            return 2
    from servo.cli.model_server import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
