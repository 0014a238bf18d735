"""`python -m servo`: the same as the `servo` command."""

from __future__ import annotations

import sys

from servo.cli.main import main

sys.exit(main())
