"""``python -m feedback_ui --workspace DIR [--port N]``: the labeling server (``rlhf serve`` runs the same)."""

from __future__ import annotations

import sys

import tyro

from baselines.common.errors import ConfigError
from feedback_ui.server import ServeConfig, run_serve


def main() -> int:
    config = tyro.cli(ServeConfig, prog="python -m feedback_ui")
    try:
        run_serve(config)
    except ConfigError as error:
        print(f"feedback_ui: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
