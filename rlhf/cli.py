"""The `rlhf` command: one entry point, one subcommand per job, config dataclasses turned into flags by tyro."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import tyro

from baselines.bandits.experiment import BanditConfig, run_bandit
from baselines.common.errors import ConfigError

# Subcommand name -> (config class, runner). The runner validates, writes the run folder and returns summary.json.
COMMANDS: dict[str, tuple[type[Any], Callable[[Any], dict[str, Any]]]] = {
    "bandit": (BanditConfig, run_bandit),
}


def _headline(summary: dict[str, Any]) -> str:
    """A short line of the figures people look at first."""
    keys = ("algo", "env_id", "eval_return_mean", "success_rate", "value_start", "steps_per_second")
    shown = {k: summary[k] for k in keys if summary.get(k) is not None}
    if "agents" in summary:
        shown["agents"] = {
            name: {"mean_reward": round(a["mean_reward"], 3), "final_optimal": round(a["final_optimal"], 3)}
            for name, a in list(summary["agents"].items())[:8]
        }
    return json.dumps(shown)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand; user errors print one line and exit with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    config = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()},
        args=args,
        prog="rlhf",
        description="rlhf-pipeline: classic RL baselines to reinforcement learning from human feedback.",
    )
    command = next(name for name, (cls, _) in COMMANDS.items() if isinstance(config, cls))
    try:
        summary = COMMANDS[command][1](config)
    except ConfigError as error:
        print(f"rlhf {command}: error: {error}", file=sys.stderr)
        return 2
    print(_headline(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
