"""The `rlhf` command: one entry point, one subcommand per job, config dataclasses turned into flags by tyro.

Configs with per-env defaults (``cli_default``) are built in two passes: ``--env``, ``--config FILE`` and
``--resume DIR`` pick the defaults (rl-zoo style tables, a tuner's best config, a run to continue), then every
other flag overrides them. ``--help`` shows the defaults of the env given.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tyro

from baselines.bandits.experiment import BanditConfig, run_bandit
from baselines.common.config import find_flag
from baselines.common.errors import ConfigError, check_seed
from baselines.dqn import DQNConfig, train_dqn
from baselines.ppo import PPOConfig, train_ppo
from baselines.tabular.experiment import TabularConfig, run_tabular
from baselines.tune import TuneConfig, run_tune
from feedback_ui.server import (
    LabelersAddConfig,
    ServeConfig,
    ServerHandle,
    labeler_url,
    run_labelers_add,
    run_serve,
    start_server_in_background,
)
from rlhf.demo import DemoConfig, run_demo
from rlhf.export import ExportConfig, run_export
from rlhf.loop import RLHFConfig, run_rlhf
from rlhf.store import PreferenceStore
from rlhf.train_reward import TrainRewardConfig, run_train_reward


def run_loop(config: RLHFConfig) -> dict[str, Any]:
    """`rlhf run`; with --teacher human the labeling service runs alongside the loop, stopped at the end."""
    if not config.human:
        return run_rlhf(config)
    handle: ServerHandle | None = None

    def start_service(workspace: Path) -> None:
        nonlocal handle
        handle = start_server_in_background(workspace, config.host, config.port)
        store = PreferenceStore(workspace / "prefs.sqlite")
        try:
            labeler = store.get_labeler_by_name("you")
            personal = "" if labeler is not None else labeler_url(handle.url, store.add_labeler("you")[1])
        finally:
            store.close()
        print(f"labeling service: {handle.url}  (admin: {handle.admin_url})", file=sys.stderr, flush=True)
        if personal:
            print(f"label here: {personal}", file=sys.stderr, flush=True)
        print(f"more labelers: rlhf labelers add NAME --workspace {workspace}", file=sys.stderr, flush=True)

    try:
        return run_rlhf(config, on_store_ready=start_service)
    finally:
        if handle is not None:
            handle.stop()


# Subcommand -> (config class, runner). A runner validates, writes the run folder and returns summary.json.
COMMANDS: dict[str, tuple[type[Any], Callable[[Any], dict[str, Any]]]] = {
    "bandit": (BanditConfig, run_bandit),
    "tabular": (TabularConfig, run_tabular),
    "run": (RLHFConfig, run_loop),
    "export": (ExportConfig, run_export),
    "train-reward": (TrainRewardConfig, run_train_reward),
    "demo": (DemoConfig, run_demo),
    "serve": (ServeConfig, run_serve),
    "labelers-add": (LabelersAddConfig, run_labelers_add),
    "ppo": (PPOConfig, train_ppo),
    "dqn": (DQNConfig, train_dqn),
    "tune": (TuneConfig, run_tune),
}

RESUMABLE = ("ppo", "run", "dqn", "demo")
DESCRIPTION = "rlhf-pipeline: classic RL baselines to reinforcement learning from human feedback."


def _headline(summary: dict[str, Any]) -> str:
    """A short line of the figures people look at first."""
    keys = ("algo", "env_id", "eval_return_mean", "success_rate", "value_start", "steps_per_second", "labels_used",
            "reward_model_accuracy", "pairs", "path", "url", "reference_eval_return", "report")  # fmt: skip
    shown = {k: summary[k] for k in keys if summary.get(k) is not None}
    if len(summary.get("results", {})) > 1:
        shown["results"] = {
            algo: {
                k: r[k] for k in ("eval_return_mean", "train_return_last_10pct", "value_start") if r.get(k) is not None
            }
            for algo, r in summary["results"].items()
        }
    if "agents" in summary:
        shown["agents"] = {
            name: {"mean_reward": round(a["mean_reward"], 3), "final_optimal": round(a["final_optimal"], 3)}
            for name, a in list(summary["agents"].items())[:8]
        }
    return json.dumps(shown)


def parse(argv: Sequence[str]) -> tuple[str, Any]:
    """``(subcommand, config)`` from the command line; ConfigError for bad --env/--config/--resume values."""
    args = list(argv)
    if not args or args[0] not in COMMANDS:  # top-level help, or tyro's own error for an unknown subcommand
        tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in COMMANDS.items()}, args=args, prog="rlhf", description=DESCRIPTION
        )
        raise SystemExit(2)
    name, rest = args[0], args[1:]
    cls = COMMANDS[name][0]
    default = None
    if hasattr(cls, "cli_default") and not ({"-h", "--help"} & set(rest) and find_flag(rest, "--env") is None):
        default = cls.cli_default(find_flag(rest, "--env"), find_flag(rest, "--config"), find_flag(rest, "--resume"))
    config = tyro.cli(cls, args=rest, prog=f"rlhf {name}", default=default)
    if isinstance(getattr(config, "seed", None), int):  # every command with a seed: one range for all of them
        check_seed(config.seed)
    return name, config


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand; user errors print one line and exit with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["labelers", "add"]:  # `rlhf labelers add NAME` reads better than the subcommand's name
        args = ["labelers-add", *args[2:]]
    command = args[0] if args else "rlhf"
    try:
        command, config = parse(args)
        summary = COMMANDS[command][1](config)
    except ConfigError as error:
        print(f"rlhf {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path given that cannot be used: an existing file as --out, a folder as --config...
        if os.environ.get("RLHF_DEBUG"):
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"rlhf {command}: error: {error.strerror or error}{where} (RLHF_DEBUG=1 shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(locals().get("config"), "out", None)
        hint = f"; continue with: rlhf {command} --resume {out}" if out is not None and command in RESUMABLE else ""
        print(f"\nrlhf {command}: interrupted{hint}", file=sys.stderr)
        return 130
    print(_headline(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
