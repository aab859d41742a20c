"""The `rlhf` command: one entry point, one subcommand per job, config dataclasses turned into flags by tyro.

Subcommands are imported when they run: `rlhf bandit --help` loads numpy and tyro, not torch, fastapi or
transformers. The top-level ``rlhf --help`` lists the table below and imports no subcommand.

Configs with per-env defaults (``cli_default``) are built in two passes: ``--env``, ``--config FILE`` and
``--resume DIR`` pick the defaults (rl-zoo style tables, a tuner's best config, a run to continue), then every
other flag overrides them. ``--help`` shows the defaults of the env given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from baselines.common.config import find_flag
from baselines.common.errors import ConfigError, RankLost, check_seed

if TYPE_CHECKING:
    from feedback_ui.server import ServerHandle
    from rlhf.loop import RLHFConfig

Runner = Callable[[Any], dict[str, Any]]


def run_loop(config: RLHFConfig) -> dict[str, Any]:
    """`rlhf run`; with --teacher human the labeling service runs alongside the loop, stopped at the end."""
    from rlhf.loop import run_rlhf

    if not config.human:
        return run_rlhf(config)
    from feedback_ui.server import labeler_url, start_server_in_background
    from rlhf.store import PreferenceStore

    handle: ServerHandle | None = None
    store_path = Path()

    def start_service(workspace: Path) -> None:
        nonlocal handle, store_path
        store_path = workspace / "prefs.sqlite"
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
        summary = run_rlhf(config, on_store_ready=start_service)
        if handle is not None:
            let_labelers_see_the_end(store_path)
        return summary
    finally:
        if handle is not None:
            handle.stop()


FINISH_GRACE_S = 10.0
"""How long the labeling service outlives a finished run while people label: their pages (polling every few
seconds) show that the run finished and how it ended, instead of losing the server under the labeler."""
LABELER_ACTIVE_S = 120.0


def let_labelers_see_the_end(store_path: Path, machines: Collection[str] = ()) -> None:
    """Keep the service up ``FINISH_GRACE_S`` after the run if a person (a labeler not named in ``machines``)
    labeled within ``LABELER_ACTIVE_S``."""
    import time

    from rlhf.store import PreferenceStore

    store = PreferenceStore(store_path)
    try:
        last = store.last_label_time([labeler.id for labeler in store.labelers() if labeler.name not in machines])
    finally:
        store.close()
    if last is None or time.time() - last > LABELER_ACTIVE_S:
        return
    print(
        f"run finished: the labeling page shows the result; the labeling service closes in {FINISH_GRACE_S:.0f} s "
        "(Ctrl-C closes it now)",
        file=sys.stderr,
        flush=True,
    )
    try:
        time.sleep(FINISH_GRACE_S)
    except KeyboardInterrupt:
        pass


class Command(NamedTuple):
    """Where a subcommand lives; its module is imported only when that subcommand runs."""

    module: str
    config: str
    """Name of the config dataclass in ``module``: tyro turns its fields into the subcommand's flags."""
    runner: str | Runner
    """Name of the runner in ``module`` (or a function of this file): it validates the config, writes the run
    folder and returns summary.json."""
    summary: str
    """One line for ``rlhf --help``: the first sentence of the config's docstring (a test keeps them equal)."""


COMMANDS: dict[str, Command] = {
    "bandit": Command(
        "baselines.bandits.experiment",
        "BanditConfig",
        "run_bandit",
        "Run bandit agents on a k-armed testbed (Sutton & Barto chapter 2).",
    ),
    "tabular": Command(
        "baselines.tabular.experiment",
        "TabularConfig",
        "run_tabular",
        "Dynamic programming and TD control on discrete envs (Sutton & Barto chapters 4 and 6).",
    ),
    "run": Command(
        "rlhf.loop",
        "RLHFConfig",
        run_loop,
        "Reinforcement learning from preferences: PPO on a reward model trained from labeled segment pairs.",
    ),
    "export": Command(
        "rlhf.export",
        "ExportConfig",
        "run_export",
        "Export the labeled pairs of a preference store as a Hugging Face dataset (save_to_disk) or JSONL.",
    ),
    "train-reward": Command(
        "rlhf.train_reward",
        "TrainRewardConfig",
        "run_train_reward",
        "Train a reward model from exported preferences alone; with --ppo-steps, then train PPO on it.",
    ),
    "demo": Command(
        "rlhf.demo",
        "DemoConfig",
        "run_demo",
        "Reference PPO, then RLHF with labels given through the labeling service, then one comparison report.",
    ),
    "serve": Command(
        "feedback_ui.server",
        "ServeConfig",
        "run_serve",
        "Serve the labeling page and JSON API for a workspace (the run folder of `rlhf run`).",
    ),
    "labelers-add": Command(
        "feedback_ui.server",
        "LabelersAddConfig",
        "run_labelers_add",
        "Add a labeler to a workspace and print their personal labeling URL (the token is shown once).",
    ),
    "labelers-revoke": Command(
        "feedback_ui.server",
        "LabelersRevokeConfig",
        "run_labelers_revoke",
        "Revoke a labeler's token: their personal URL stops working (their labels stay).",
    ),
    "labelers-rotate": Command(
        "feedback_ui.server",
        "LabelersRotateConfig",
        "run_labelers_rotate",
        "Give a labeler a new token and print their new personal URL (the old one stops working).",
    ),
    "labelers-weight": Command(
        "rlhf.labelers_weight",
        "LabelersWeightConfig",
        "run_labelers_weight",
        "Set the weight of a labeler's labels in reward training (0: ignore them), or --auto to estimate it again.",
    ),
    "ppo": Command("baselines.ppo", "PPOConfig", "train_ppo", "PPO on a gymnasium env."),
    "gpto": Command(
        "baselines.gpto",
        "GPTOConfig",
        "train_gpto",
        "GPTO on a gymnasium env: PPO with a pluggable trust term, rollout reuse and PPG's auxiliary phase.",
    ),
    "dqn": Command("baselines.dqn", "DQNConfig", "train_dqn", "Train DQN on a discrete-action env."),
    "tune": Command(
        "baselines.tune",
        "TuneConfig",
        "run_tune",
        "Search an algorithm's hyperparameters with Optuna; resumable; writes a report and the best config.",
    ),
}

RESUMABLE = ("ppo", "gpto", "run", "dqn", "demo")
DESCRIPTION = "rlhf-pipeline: classic RL baselines to reinforcement learning from human feedback."


def load(name: str) -> tuple[type[Any], Runner]:
    """Import subcommand ``name``'s module: its config class and its runner."""
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    runner = getattr(module, command.runner) if isinstance(command.runner, str) else command.runner
    return getattr(module, command.config), runner


def _top_level(args: list[str]) -> None:
    """``rlhf``, ``rlhf --help`` or an unknown subcommand: argparse prints the listing or the error and exits."""
    parser = argparse.ArgumentParser(
        prog="rlhf", description=DESCRIPTION, epilog="`rlhf COMMAND --help` lists a command's flags."
    )
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    parser.parse_args(args)


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
    if not args or args[0] not in COMMANDS:
        _top_level(args)
        raise SystemExit(2)  # argparse exits first: a listing for --help, an error otherwise
    import tyro  # not needed by the top-level listing

    name, rest = args[0], args[1:]
    cls = load(name)[0]
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
    if args[:1] == ["labelers"] and args[1:2] in (["add"], ["weight"], ["revoke"], ["rotate"]):  # reads better
        args = [f"labelers-{args[1]}", *args[2:]]
    command = args[0] if args else "rlhf"
    try:
        command, config = parse(args)
        summary = load(command)[1](config)
        if "baselines.common.distributed" in sys.modules:  # under torchrun: every rank ends together
            from baselines.common.distributed import finish_world

            finish_world()
    except ConfigError as error:
        print(f"rlhf {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path given that cannot be used: an existing file as --out, a folder as --config...
        if os.environ.get("RLHF_DEBUG"):
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"rlhf {command}: error: {error.strerror or error}{where} (RLHF_DEBUG=1 shows where)", file=sys.stderr)
        return 2
    except RankLost as error:  # under torchrun: another rank stopped; this one stops too, in one line
        print(f"rlhf {command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out = getattr(locals().get("config"), "out", None)
        resumable = out is not None and command in RESUMABLE and (Path(out) / "checkpoint.pt").exists()
        hint = f"; continue with: rlhf {command} --resume {out}" if resumable else ""
        print(f"\nrlhf {command}: interrupted{hint}", file=sys.stderr)
        return 130
    if summary.get("rank", 0) == 0:  # under torchrun, rank 0 speaks for the run
        print(_headline(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
