"""The RLHF evaluation protocol (issue 12): the RLHF page's tables (docs/rlhf.md) come from this script.

Seeds: defaults are chosen on ``TUNING_SEEDS`` only; figures are reported on ``REPORT_SEEDS`` (10 seeds never used
for tuning). The two sets are disjoint, and the script refuses to run if an edit makes them overlap.

Rows (``ROWS``): one RLHFConfig each, the loop's defaults plus the overrides that issue 12's targets name, with the
target next to it as data. For every row and seed three runs are made:
- rlhf: ``run_rlhf`` (the row's teacher and budget); its figure is the loop's final true eval return.
- ppo: PPO on the TRUE reward with the loop's own PPO settings (``RLHFConfig.ppo()``: same env defaults, loop
  overrides, total steps, seed and evaluation), trained by ``train_ppo``. One field differs: the loop turns PPO's
  reward normalization off because ``LearnedReward`` already scales the learned reward; PPO on the true reward
  gets the env's own PPO default instead (on for Acrobot and MountainCar, whose raw -1 per step rewards PPO is tuned
  to learn from normalized; off for Pendulum and CartPole). Each side thus gets the reward scaling it was tuned
  with; giving PPO the loop's ``normalize_reward=False`` would handicap the reference and flatter the RLHF score.
- random: uniform random actions on the same evaluation episodes and env seeds as the loop's evaluation.
Normalized score, per seed: (RLHF - random) / (PPO true - random); undefined (left out, counted) on a seed where
PPO does not beat the random policy. Rows whose PPO settings coincide (the Pendulum teachers) share their PPO runs.

Statistics (Agarwal et al. 2021, https://arxiv.org/abs/2108.13264): per row the median and the IQM (rliable's
``aggregate_iqm``) over seeds with 95% percentile intervals of a bootstrap over seeds (fixed resamples and seed),
the worst seed and the seeds reaching the row's target, for the RLHF return, PPO's and
the normalized score; and the performance profile (share of runs whose normalized score exceeds tau, stratified
over rows) drawn with plotly to ``--plot``: ``rlhf_protocol_stats.py``. A protocol reports distributions over
seeds, never one seed, so no figure rests on the last bit of a float: a run that lands elsewhere on another CPU
moves one sample, not the conclusion; a conclusion that flips with one sample is not one to report.

Results are JSON lines in ``--results`` keyed by kind, seed and a hash of the run's settings (the resolved config,
``--set`` included, and ``code_version()``: the code of ``baselines/`` and ``rlhf/``, committed or not): a re-run
skips what is there, so an interrupted measurement resumes, and a change to the code that runs measures afresh.
Speed (s per 50k env steps, the whole run) is only comparable with the 35 s target from an otherwise idle machine.
The table is printed (``--markdown FILE`` writes it for the docs).

Run (hours on 2 cores): ``python benchmarks/rlhf_protocol.py --seeds report --jobs 2 --markdown runs/rlhf.md``.
The MuJoCo rows (issue 14) run 1M steps each, 5-12 min a run here, so they are ``long``: left out unless ``--rows``
names them (``'*'``: every row). ``--rows 'hopper-*,doublependulum-*'`` on the ten report seeds is 80 RLHF and 20
PPO runs, a night on 2 cores; ``--num-seeds 3`` a first look.
Tuning: ``--seeds tuning --rows 'pendulum-*' --set random_answer_rate=0.1``. Smoke: ``--rows cartpole-oracle
--num-seeds 2 --set total_steps=4096 --set labels=20``. ``--list`` shows the rows; ``--no-run`` only summarizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import json
import shlex
import shutil
import sys
import tempfile
import time
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import TypeAdapter, ValidationError
from rlhf_protocol_stats import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    RowResult,
    Target,
    publish_table,
    table_rows,
    write_plot,
)
from run_records import (
    add_seed_set_arguments,
    check_code_argument,
    chosen_seeds,
    code_version,
    git_commit,
    load_records,
    records_of_code,
    run_and_record,
    short_hash,
)

from baselines.common.errors import ConfigError, check
from baselines.ppo import PPOConfig
from rlhf.loop import RLHFConfig

TUNING_SEEDS: tuple[int, ...] = tuple(range(0, 80))
"""Seeds that defaults are chosen on (and nothing is reported on). Issue 12's choices read seeds 0-9, 10-19 for the
random-answer rate, 20-39 for the label phase under a mistaken teacher, and 40-79 for the ensemble size and
CartPole's discount; ``--seeds tuning --num-seeds 5`` takes the first five."""
REPORT_SEEDS: tuple[int, ...] = tuple(range(100, 110))
"""Seeds the docs' RLHF figures come from; never used for tuning."""
MOUNTAIN_CAR_BUDGET: dict[str, Any] = {"labels": 300, "total_steps": 200_000}
"""MountainCar-v0 and MountainCarContinuous-v0: no target yet; report where the loop stands against PPO."""
RESULTS = Path("runs/rlhf_protocol/results.jsonl")
Kind = Literal["rlhf", "ppo", "random"]
KINDS: tuple[Kind, ...] = ("rlhf", "ppo", "random")
# Fields the protocol sets itself (or that need a person): --set refuses them.
PROTOCOL_FIELDS = {
    "seed": "seeds come from --seeds",
    "out": "runs go to temporary folders (--keep-runs DIR)",
    "resume": "a re-run resumes from --results",
    "track": "the protocol does not log to wandb",
}


def check_disjoint(tuning: Iterable[int], report: Iterable[int]) -> None:
    """ConfigError when a seed is in both sets (a figure from a tuning seed would not be an honest one)."""
    shared = sorted(set(tuning) & set(report))
    check(not shared, f"tuning and report seeds must be disjoint; both hold {shared}")


check_disjoint(TUNING_SEEDS, REPORT_SEEDS)


@dataclass(frozen=True)
class Row:
    name: str
    overrides: dict[str, Any]
    target: Target = field(default_factory=Target)
    long: bool = False
    """Hours on 2 cores (the MuJoCo rows at 1M steps): run only when ``--rows`` names it, not by default."""

    def config(self, sets: dict[str, Any]) -> RLHFConfig:
        """RLHFConfig's defaults, then the row's overrides, then ``--set`` (ConfigError when invalid)."""
        config = RLHFConfig(**{**self.overrides, **sets})
        config.validate()
        return config


PENDULUM: dict[str, Any] = {"env": "Pendulum-v1", "labels": 200, "total_steps": 100_000}
CARTPOLE: dict[str, Any] = {"env": "CartPole-v1", "labels": 100, "total_steps": 100_000}
MISTAKE: dict[str, Any] = {"teacher": "mistake", "teacher_epsilon": 0.1}
INVERTED_PENDULUM: dict[str, Any] = {"env": "InvertedPendulum-v5", "labels": 50, "total_steps": 100_000}
DOUBLE_PENDULUM: dict[str, Any] = {"env": "InvertedDoublePendulum-v5", "total_steps": 1_000_000}
HOPPER: dict[str, Any] = {"env": "Hopper-v5", "total_steps": 1_000_000}
ROWS: tuple[Row, ...] = (
    Row("pendulum-oracle-50k", {**PENDULUM, "total_steps": 50_000}, Target(median=-200)),
    Row("pendulum-oracle-100k", PENDULUM, Target(median=-180, worst=-300)),
    Row("pendulum-mistake", {**PENDULUM, **MISTAKE}, Target(median=-250, worst=-500)),
    Row("pendulum-noisy", {**PENDULUM, "teacher": "noisy", "teacher_beta": 1.0}, Target(median=-220)),
    Row("pendulum-myopic", {**PENDULUM, "teacher": "myopic", "teacher_gamma": 0.9}),
    Row("cartpole-oracle", CARTPOLE, Target(threshold=475, min_hit_fraction=0.9)),
    Row("cartpole-mistake", {**CARTPOLE, **MISTAKE}, Target(threshold=475, min_hit_fraction=0.8)),
    Row("acrobot-oracle", {"env": "Acrobot-v1", "labels": 300, "total_steps": 200_000}, Target(median=-100)),
    Row("mountaincar-oracle", {"env": "MountainCar-v0", **MOUNTAIN_CAR_BUDGET}),
    Row("mountaincarcontinuous-oracle", {"env": "MountainCarContinuous-v0", **MOUNTAIN_CAR_BUDGET}),
    # MuJoCo (issue 14): Christiano et al. 2017's label-efficiency comparison (their Figure 1), oracle labels at
    # three budgets and the mistake teacher at the middle one, beside PPO on the true reward at the same steps.
    Row("invertedpendulum-oracle", INVERTED_PENDULUM, Target(median=1000)),
    *(
        Row(f"{name}-oracle-{labels}", {**budget, "labels": labels}, target if labels == 700 else Target(), long=True)
        for name, budget, target in (
            ("doublependulum", DOUBLE_PENDULUM, Target(median=8000)),
            ("hopper", HOPPER, Target(normalized_median=0.8)),
        )
        for labels in (350, 700, 1400)
    ),
    Row("doublependulum-mistake-700", {**DOUBLE_PENDULUM, **MISTAKE, "labels": 700}, long=True),
    Row("hopper-mistake-700", {**HOPPER, **MISTAKE, "labels": 700}, Target(normalized_median=0.6), long=True),
)


# ------------------------------------------------------------------------------------------------ settings
def select_rows(spec: str | None, rows: Sequence[Row] = ROWS) -> list[Row]:
    """Rows named by ``spec``: comma-separated names or globs (``pendulum-*``); when None, every row but the long
    ones (``make bench`` stays in tens of minutes; ``--rows '*'`` runs them all)."""
    if not spec:
        return [row for row in rows if not row.long]
    patterns = [part.strip() for part in spec.split(",") if part.strip()]
    for pattern in patterns:
        check(
            any(fnmatch.fnmatchcase(row.name, pattern) for row in rows),
            f"--rows {pattern!r} matches no row; rows: {', '.join(row.name for row in rows)}",
        )
    return [row for row in rows if any(fnmatch.fnmatchcase(row.name, pattern) for pattern in patterns)]


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` overrides of RLHFConfig fields (``none`` for None), each value checked against its field's
    type (a number from text, a name from a Literal's choices). ConfigError on anything else."""
    hints = typing.get_type_hints(RLHFConfig)
    sets: dict[str, Any] = {}
    for item in items:
        key, equals, raw = item.partition("=")
        name = key.strip().replace("-", "_")
        check(bool(equals) and bool(name), f"--set takes KEY=VALUE, got {item!r}")
        check(name in hints, f"--set {name}: not an RLHFConfig field; fields: {', '.join(sorted(hints))}")
        check(name not in PROTOCOL_FIELDS, f"--set {name}: {PROTOCOL_FIELDS.get(name)}")
        if raw.strip().lower() in ("none", "null") and type(None) in typing.get_args(hints[name]):
            sets[name] = None
            continue
        try:
            sets[name] = TypeAdapter(hints[name]).validate_python(raw.strip())
        except ValidationError as error:
            raise ConfigError(f"--set {name}={raw}: {error.errors()[0]['msg']}") from None
    check(sets.get("teacher") != "human", "--set teacher=human: the protocol needs a simulated teacher")
    return sets


def ppo_true_config(config: RLHFConfig) -> PPOConfig:
    """PPO on the true reward with the loop's PPO settings, reward normalization as the env's PPO default has it."""
    env_default = PPOConfig.defaults_for(config.env).normalize_reward
    return dataclasses.replace(config.ppo(), normalize_reward=env_default)


def settings_hash(kind: Kind, config: RLHFConfig) -> str:
    """Hash of what decides the run's outcome apart from its seed: its resolved config and ``code_version()``."""
    if kind == "rlhf":
        what: dict[str, Any] = dataclasses.asdict(dataclasses.replace(config, seed=0, out=None))
        if what["algo"] == "ppo":  # as every run recorded before --algo existed: their keys stay valid
            del what["algo"]
    elif kind == "ppo":
        what = dataclasses.asdict(dataclasses.replace(ppo_true_config(config), seed=0, out=None))
    else:
        what = {"env": config.env, "eval_episodes": config.eval_episodes}
    return short_hash({"kind": kind, "code": code_version(), **what})


@dataclass(frozen=True)
class Job:
    """One run: ``kind`` on ``seed`` with ``config`` (the first row that needs it; others share it by ``key``)."""

    kind: Kind
    row: str
    seed: int
    config: RLHFConfig
    settings: str
    sets: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.settings}/{self.seed}"


def plan_jobs(rows: Sequence[Row], seeds: Sequence[int], sets: dict[str, Any]) -> dict[tuple[str, Kind, int], Job]:
    """The job each (row, kind, seed) needs; rows with identical settings get the same Job (one run)."""
    by_key: dict[str, Job] = {}
    plan: dict[tuple[str, Kind, int], Job] = {}
    for row in rows:
        config = row.config(sets)
        for kind in KINDS:
            settings = settings_hash(kind, config)
            for seed in seeds:
                job = Job(kind, row.name, seed, config, settings, sets)
                plan[row.name, kind, seed] = by_key.setdefault(job.key, job)
    return plan


# ---------------------------------------------------------------------------------------------------- runs
def random_policy_returns(env_id: str, episodes: int, seed: int) -> np.ndarray:
    """Returns of uniform random actions on the loop's evaluation episodes (same env seeds as ``evaluate_policy``)."""
    import gymnasium as gym

    from baselines.common.evaluation import evaluate_policy

    env = gym.make(env_id)
    space = env.action_space
    env.close()
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        return evaluate_policy(
            lambda obs: space.start + rng.integers(int(space.n), size=len(obs)), env_id, episodes, seed
        )
    assert isinstance(space, gym.spaces.Box)
    return evaluate_policy(
        lambda obs: rng.uniform(space.low, space.high, (len(obs), *space.shape)).astype(space.dtype),
        env_id,
        episodes,
        seed,
    )


def make_record(job: Job, summary: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    steps = int(summary.get("env_steps") or 0)
    return {
        "key": job.key,
        "kind": job.kind,
        "row": job.row,
        "seed": job.seed,
        "settings": job.settings,
        "commit": git_commit(),
        "code": code_version(),
        "env": job.config.env,
        "return": summary["eval_return_mean"],
        "wall_seconds": wall_seconds,
        "env_steps": steps,
        "steps_per_second": steps / max(wall_seconds, 1e-9),
        "sets": job.sets,
        "summary": summary,
    }


def run_job(job: Job, keep_runs: Path | None = None) -> dict[str, Any]:
    """Run one job in a temporary folder (or under ``keep_runs``) and return its results record."""
    import torch

    from baselines.ppo import train_ppo
    from rlhf.loop import run_rlhf

    torch.set_num_threads(1)
    start = time.perf_counter()
    config = dataclasses.replace(job.config, seed=job.seed)
    with tempfile.TemporaryDirectory(prefix="rlhf-protocol-") as tmp:
        out = (keep_runs or Path(tmp)) / f"{job.kind}-{job.settings}-seed{job.seed}"
        if out.exists():  # a run killed before its record was written: it starts again
            shutil.rmtree(out)
        if job.kind == "rlhf":
            summary = run_rlhf(dataclasses.replace(config, out=out))
        elif job.kind == "ppo":
            summary = train_ppo(dataclasses.replace(ppo_true_config(config), out=out))
        else:
            returns = random_policy_returns(config.env, config.eval_episodes, job.seed)
            summary = {"eval_return_mean": float(returns.mean()), "eval_return_std": float(returns.std())}
    return make_record(job, summary, time.perf_counter() - start)


def run_pending(jobs: Sequence[Job], results: Path, workers: int, keep_runs: Path | None) -> None:
    """Run the jobs not yet in ``results`` (longest first), appending each record as it finishes."""
    done = load_records(results)
    pending = sorted(
        {job.key: job for job in jobs if job.key not in done}.values(),
        key=lambda job: (-job.config.total_steps * (job.kind != "random"), KINDS.index(job.kind)),
    )
    print(f"{len(pending)} runs to do ({len(set(job.key for job in jobs)) - len(pending)} already in {results})")
    if not pending:
        return
    run_and_record(functools.partial(run_job, keep_runs=keep_runs), pending, results, workers, _describe)


def _describe(record: dict[str, Any]) -> str:
    return (
        f"{record['row']} {record['kind']} seed {record['seed']}: return {record['return']:.1f} in "
        f"{record['wall_seconds']:.0f} s"
        + (f" ({record['steps_per_second']:.0f} steps/s)" if record["env_steps"] else "")
    )


def collect(
    rows: Sequence[Row],
    seeds: Sequence[int],
    plan: dict[tuple[str, Kind, int], Job],
    records: dict[str, dict[str, Any]],
) -> list[RowResult]:
    """Per row, the seeds whose three runs are all in ``records``, and their returns."""
    out = []
    for row in rows:
        found = {
            kind: {s: records[key] for s in seeds if (key := plan[row.name, kind, s].key) in records} for kind in KINDS
        }
        complete = [s for s in seeds if all(s in found[kind] for kind in KINDS)]
        values = {kind: np.array([found[kind][s]["return"] for s in complete], dtype=np.float64) for kind in KINDS}
        runs = [r for r in found["rlhf"].values() if r["env_steps"]]
        per_run = float(np.mean([r["wall_seconds"] for r in runs])) if runs else None
        per_50k = float(np.mean([50_000 * r["wall_seconds"] / r["env_steps"] for r in runs])) if runs else None
        returns = (values["rlhf"], values["ppo"], values["random"])
        out.append(RowResult(row.name, row.target, complete, *returns, per_run, per_50k))
    return out


# --------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_set_arguments(parser, TUNING_SEEDS, REPORT_SEEDS, RESULTS)
    parser.add_argument(
        "--rows",
        default=None,
        help="comma-separated row names or globs (default: every row but the long MuJoCo ones; '*': all)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an RLHFConfig field for every selected row (repeatable)",
    )
    parser.add_argument(
        "--plot",
        type=lambda text: Path(text) if text else None,
        default=Path("runs/rlhf_protocol/profile.html"),
        help="performance profile (plotly HTML); '' for none",
    )
    parser.add_argument("--reps", type=int, default=BOOTSTRAP_REPS, help="bootstrap resamples")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep run folders under DIR (default: deleted)")
    parser.add_argument("--list", action="store_true", help="print the rows (configs and targets) and exit")
    return parser


def run_protocol(args: argparse.Namespace, argv: Sequence[str]) -> int:
    check_disjoint(TUNING_SEEDS, REPORT_SEEDS)
    rows = select_rows(args.rows)
    sets = parse_sets(args.set)
    if args.list:
        for row in rows:
            print(f"{row.name:<30} {row.target.describe():<40} {json.dumps({**row.overrides, **sets}, default=str)}")
        return 0
    seeds = chosen_seeds(args, TUNING_SEEDS, REPORT_SEEDS)
    check(args.jobs >= 1 and args.reps >= 1, "--jobs and --reps must be at least 1")
    plan = plan_jobs(rows, seeds, sets)
    if not args.no_run:
        run_pending(list(plan.values()), args.results, args.jobs, args.keep_runs)
    results = collect(rows, seeds, plan, load_records(args.results))
    table = table_rows(results, args.reps)
    command = shlex.join(["python", "benchmarks/rlhf_protocol.py", *argv])
    overrides = " ".join(f"{name}={value}" for name, value in sets.items()) or "none"
    about = (
        f"{args.seeds} seeds {seeds}, commit {git_commit()} (code {code_version()}), --set {overrides}; medians and "
        f"IQMs over seeds with {CONFIDENCE:.0%} bootstrap intervals ({args.reps} resamples, seed {BOOTSTRAP_SEED})"
    )
    publish_table(command, about, table, args.markdown)
    if args.plot is not None:
        write_plot(args.plot, results, f"{command} — {about}", table, args.reps)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_code_argument(args)
        with records_of_code(args.code):
            return run_protocol(args, list(sys.argv[1:] if argv is None else argv))
    except ConfigError as error:
        print(f"rlhf_protocol: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
