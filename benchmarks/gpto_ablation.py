"""GPTO against PPO, piece by piece, at PPO's budgets: does each part of GPTO earn its place? (docs/gpto.md)

Ablation (``--part ablation``): per env, PPO (``baselines.ppo``, its tuned row) and GPTO variants with the same
settings but one piece changed (``VARIANTS``; ``gpto`` is GPTO's default setting), each over the seeds. Reported per
variant: the final return (median, IQM with 95% stratified-bootstrap intervals, worst seed); the env steps at which
the IQM learning curve first reaches PPO's final IQM, as a share of the steps PPO's own curve needed (interval: the
same bootstrap over seeds); and the median steps per second relative to PPO's recorded runs of the same code and
seeds (run in one invocation at the same ``--jobs``, they share the machine's load).

Multi-task (``--part multitask``): per task family (``baselines/tasks.py``), GPTO trained on the family's variants
with a task input; its return on each seen variant and, zero-shot, on the held-out one; then fine-tuned on the held-out
variant for ``FINE_TUNE_SHARE`` of PPO's from-scratch budget, against PPO from scratch on that variant (the same
task input, constant there). Issue 15's target: the fine-tuned policy reaches PPO's from-scratch return.

Runs are recorded in ``--results`` as they finish (``run_records.py``): a re-run skips what is recorded under the
current code; ``--no-run`` prints the tables from the records. Defaults are chosen on ``--seeds tuning`` and
reported on ``--seeds report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rlhf_protocol_stats import (
    BOOTSTRAP_REPS,
    CONFIDENCE,
    Estimate,
    iqm,
    publish_table,
    stratified_bootstrap,
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

ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "InvertedDoublePendulum-v5")
VARIANTS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "gpto": {},
    "kl": {"trust": "kl"},
    "spo": {"trust": "spo"},
    "trust-region": {"trust": "trust-region"},
    "ppg": {"aux_every": 16},
    "reuse-2": {"reuse": 2},
    "reuse-2-half-epochs": {"reuse": 2, "epochs_share": 0.5},
}
"""GPTO overrides of each ablation row over GPTO's per-env defaults (``ppo`` runs baselines.ppo; ``gpto`` is the
default setting; the other rows change one piece of PPO's update, starting from PPO's settings). ``epochs_share``
scales the env's ``n_epochs``: reuse 2 at half the epochs takes as many gradient steps per update as PPO."""
PPO_SETTINGS: dict[str, Any] = {"trust": "clip", "reuse": 1, "aux_every": 0}
FAMILIES = ("pendulum-masses", "cartpole-poles")
MULTITASK_BUDGET_FACTOR = 2
"""The multi-task policy trains for this many times PPO's single-env budget (over all its variants)."""
FINE_TUNE_SHARE = 0.2
EVALUATIONS = 20
"""Evaluations per run (the learning curve's points)."""
TUNING_SEEDS: tuple[int, ...] = tuple(range(0, 5))
REPORT_SEEDS: tuple[int, ...] = tuple(range(100, 110))
RESULTS = Path("runs/gpto_ablation/results.jsonl")

Kind = Literal["ablation", "multitask", "scratch"]


@dataclass(frozen=True)
class Job:
    kind: Kind
    name: str
    """The variant (ablation) or the family (multitask, scratch)."""
    env: str
    seed: int
    config: Any
    """A PPOConfig (the ppo row) or a GPTOConfig."""
    settings: str

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.name}|{self.env}|{self.settings}|{self.seed}"


def ablation_config(variant: str, env: str, total_steps: int | None) -> Any:
    from baselines.gpto import GPTOConfig
    from baselines.ppo import PPOConfig

    overrides: dict[str, Any] = {} if total_steps is None else {"total_steps": total_steps}
    if variant == "ppo":
        config: Any = PPOConfig.defaults_for(env, **overrides)
    elif variant == "gpto":
        config = GPTOConfig.defaults_for(env, **overrides)
    else:
        changes = dict(VARIANTS[variant])
        share = changes.pop("epochs_share", 1.0)
        config = GPTOConfig.defaults_for(env, **{**PPO_SETTINGS, **changes, **overrides})
        config = dataclasses.replace(config, n_epochs=max(1, round(config.n_epochs * share)))
    return dataclasses.replace(config, eval_every=max(config.total_steps // EVALUATIONS, 1), checkpoint_every=0)


def multitask_config(family: str, total_steps: int | None, kind: Kind) -> Any:
    """The multi-task run (``kind`` multitask: the family's variants, MULTITASK_BUDGET_FACTOR x PPO's budget), or
    PPO from scratch on the held-out variant (``scratch``: PPO's settings and budget)."""
    from baselines.gpto import GPTOConfig
    from baselines.tasks import TASK_FAMILIES

    env = TASK_FAMILIES[family].env_id
    single = GPTOConfig.defaults_for(env, **({} if total_steps is None else {"total_steps": total_steps}))
    if kind == "scratch":
        config = dataclasses.replace(single, **PPO_SETTINGS, tasks=f"{family}/held-out")
    else:  # four variants: a multiple of four sub-envs, per-task reward scaling
        num_envs = max(4, single.num_envs - single.num_envs % 4)
        config = dataclasses.replace(
            single,
            tasks=family,
            num_envs=num_envs,
            normalize_reward=True,
            total_steps=single.total_steps * MULTITASK_BUDGET_FACTOR,
        )
    return dataclasses.replace(config, eval_every=max(config.total_steps // EVALUATIONS, 1), checkpoint_every=0)


def settings_hash(config: Any) -> str:
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "out")}
    return short_hash({"code": code_version(), "config": values})


def plan_jobs(
    part: str, names: Sequence[str], envs: Sequence[str], seeds: Sequence[int], total_steps: int | None
) -> list[Job]:
    jobs: list[Job] = []
    for seed in seeds:
        if part == "ablation":
            for env in envs:
                for variant in names:
                    config = ablation_config(variant, env, total_steps)
                    jobs.append(Job("ablation", variant, env, seed, config, settings_hash(config)))
        else:
            for family in names:
                kinds: tuple[Kind, ...] = ("multitask", "scratch")
                for kind in kinds:
                    config = multitask_config(family, total_steps, kind)
                    jobs.append(Job(kind, family, config.env, seed, config, settings_hash(config)))
    return jobs


def learning_curve(folder: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(int(row["step"]), float(row["eval/return_mean"])) for row in rows if "eval/return_mean" in row]


def run_job(job: Job) -> dict[str, Any]:
    """Train one run in a temporary folder; its record. A multitask job also measures the held-out variant
    zero-shot and after fine-tuning from its checkpoint."""
    import torch

    from baselines.gpto import GPTO, GPTOConfig, init_gpto, train_gpto
    from baselines.ppo import evaluate, train_ppo

    torch.set_num_threads(1)
    config = dataclasses.replace(job.config, seed=job.seed)
    start = time.perf_counter()
    record: dict[str, Any] = {
        "key": job.key,
        "kind": job.kind,
        "name": job.name,
        "env": job.env,
        "seed": job.seed,
        "settings": job.settings,
        "commit": git_commit(),
        "code": code_version(),
    }
    with tempfile.TemporaryDirectory(prefix="gpto-ablation-") as tmp:
        out = Path(tmp) / "run"
        trained = dataclasses.replace(config, out=out)
        summary = train_gpto(trained) if isinstance(config, GPTOConfig) else train_ppo(trained)
        record |= {
            "return": summary["eval_return_mean"],
            "curve": learning_curve(out),
            "steps_per_second": summary["steps_per_second"],
            "env_steps": summary["env_steps"],
            "task_returns": summary.get("eval_task_returns"),
        }
        if job.kind == "multitask":
            held_out = dataclasses.replace(
                config,
                tasks=f"{job.name}/held-out",
                init_from=out,
                out=Path(tmp) / "fine",
                total_steps=int(config.total_steps / MULTITASK_BUDGET_FACTOR * FINE_TUNE_SHARE),
            )
            state = init_gpto(held_out)
            record["zero_shot"] = float(np.concatenate(list(evaluate(state, GPTO).values())).mean())
            state.envs.close()
            record["fine_tuned"] = train_gpto(held_out)["eval_return_mean"]
            record["fine_tune_steps"] = held_out.total_steps
    record["wall_seconds"] = time.perf_counter() - start
    return record


def describe(record: dict[str, Any]) -> str:
    extra = (
        f", zero-shot {record['zero_shot']:.1f}, fine-tuned {record['fine_tuned']:.1f}" if "zero_shot" in record else ""
    )
    return (
        f"{record['kind']} {record['name']} {record['env']} seed {record['seed']}: return {record['return']:.1f}"
        f"{extra} in {record['wall_seconds']:.0f} s ({record['steps_per_second']:.0f} steps/s)"
    )


# ------------------------------------------------------------------------------------------------ the tables
def steps_to(curves: np.ndarray, steps: np.ndarray, threshold: float) -> float:
    """The first step at which the IQM over seeds (rows of ``curves``) reaches ``threshold``; inf if never."""
    reached = np.nonzero([iqm(curves[:, j]) >= threshold for j in range(curves.shape[1])])[0]
    return float(steps[reached[0]]) if len(reached) else float("inf")


def curves_of(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(seeds x evaluations)`` returns and the evaluation steps (the shortest curve's, when they differ)."""
    length = min(len(r["curve"]) for r in records)
    steps = np.array([step for step, _ in records[0]["curve"][:length]], dtype=float)
    return np.array([[value for _, value in r["curve"][:length]] for r in records]), steps


def steps_share(
    variant: Sequence[dict[str, Any]], ppo: Sequence[dict[str, Any]], reps: int
) -> tuple[float, float, float]:
    """Steps for the variant's IQM curve to reach PPO's final IQM over the steps PPO's curve needed: the point
    and its bootstrap interval (seeds of both resampled)."""
    ppo_curves, ppo_steps = curves_of(ppo)
    curves, steps = curves_of(variant)

    def share(v: np.ndarray, p: np.ndarray) -> float:
        threshold = iqm(p[:, -1])
        return steps_to(v, steps, threshold) / steps_to(p, ppo_steps, threshold)

    rng = np.random.default_rng(12)
    draws = [
        share(curves[rng.integers(len(curves), size=len(curves))], ppo_curves[rng.integers(len(ppo), size=len(ppo))])
        for _ in range(reps)
    ]
    # Nearest ranks, not interpolation: a resample that never reaches the threshold is inf, and inf - inf is NaN.
    low = np.percentile(draws, 50 * (1 - CONFIDENCE), method="lower")
    high = np.percentile(draws, 50 * (1 + CONFIDENCE), method="higher")
    return share(curves, ppo_curves), float(low), float(high)


def _interval(point: float, low: float, high: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


ABLATION_HEADERS = (
    "env",
    "variant",
    "seeds",
    "final median [95% CI]",
    "final IQM [95% CI]",
    "worst",
    "steps to PPO's final / PPO's [95% CI]",
    "steps/s vs PPO",
)


def ablation_table(
    records: Sequence[dict[str, Any]], names: Sequence[str], envs: Sequence[str], reps: int
) -> list[list[str]]:
    table = []
    for env in envs:
        ppo = [r for r in records if r["name"] == "ppo" and r["env"] == env]
        ppo_sps = float(np.median([r["steps_per_second"] for r in ppo])) if ppo else float("nan")
        for name in names:
            runs = [r for r in records if r["name"] == name and r["env"] == env]
            estimate = Estimate.of(np.array([r["return"] for r in runs]), reps) if runs else None
            if estimate is None:
                table.append([env, name, "0", "-", "-", "-", "-", "-"])
                continue
            share = _interval(*steps_share(runs, ppo, reps), 2) if ppo else "-"
            sps = float(np.median([r["steps_per_second"] for r in runs])) / ppo_sps
            table.append(
                [
                    env,
                    name,
                    str(estimate.n),
                    _interval(*estimate.median),
                    _interval(*estimate.iqm),
                    f"{estimate.worst:.1f}",
                    share,
                    f"{sps:.2f}",
                ]
            )
    return table


MULTITASK_HEADERS = (
    "family",
    "seeds",
    "seen variants IQM [95% CI]",
    "held-out zero-shot IQM [95% CI]",
    f"held-out after {FINE_TUNE_SHARE:.0%} of PPO's steps IQM [95% CI]",
    "PPO from scratch IQM [95% CI]",
    "fine-tuned >= scratch",
)


def multitask_table(records: Sequence[dict[str, Any]], families: Sequence[str], reps: int) -> list[list[str]]:
    table = []
    for family in families:
        multi = [r for r in records if r["kind"] == "multitask" and r["name"] == family]
        scratch = [r for r in records if r["kind"] == "scratch" and r["name"] == family]
        if not multi or not scratch:
            table.append([family, f"{len(multi)}/{len(scratch)}", "-", "-", "-", "-", "-"])
            continue

        def iqm_interval(values: Sequence[float]) -> tuple[float, float, float]:
            point, low, high = stratified_bootstrap([np.array(values)], iqm, reps)
            return float(point), float(low), float(high)

        fine = iqm_interval([r["fine_tuned"] for r in multi])
        base = iqm_interval([r["return"] for r in scratch])
        table.append(
            [
                family,
                str(len(multi)),
                _interval(*iqm_interval([r["return"] for r in multi])),
                _interval(*iqm_interval([r["zero_shot"] for r in multi])),
                _interval(*fine),
                _interval(*base),
                "yes" if fine[0] >= base[0] else "no",
            ]
        )
    return table


# --------------------------------------------------------------------------------------------------- the CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("ablation", "multitask"), default="ablation")
    parser.add_argument(
        "--envs", default=",".join(ENVS[:3]), help=f"ablation envs, comma-separated (all: {','.join(ENVS)})"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="ablation rows, comma-separated")
    parser.add_argument("--families", default=",".join(FAMILIES), help="multi-task families, comma-separated")
    add_seed_set_arguments(parser, TUNING_SEEDS, REPORT_SEEDS, RESULTS)
    parser.add_argument(
        "--total-steps", type=int, default=None, help="every run's budget (default: each env's PPO row)"
    )
    parser.add_argument("--reps", type=int, default=BOOTSTRAP_REPS, help="bootstrap resamples")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_code_argument(args)
        with records_of_code(args.code):
            return run(args, list(sys.argv[1:] if argv is None else argv))
    except ConfigError as error:
        print(f"gpto_ablation: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from baselines.tasks import TASK_FAMILIES

    envs = [env.strip() for env in args.envs.split(",") if env.strip()]
    if args.part == "ablation":
        names = [name.strip() for name in args.variants.split(",") if name.strip()]
        unknown = [name for name in names if name not in VARIANTS]
        check(not unknown, f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
        check("ppo" in names, "--variants must include ppo (the reference every row is compared with)")
    else:
        names = [name.strip() for name in args.families.split(",") if name.strip()]
        unknown = [name for name in names if name not in TASK_FAMILIES]
        check(not unknown, f"unknown task families {unknown}; known: {', '.join(TASK_FAMILIES)}")
    check(args.jobs >= 1 and args.reps >= 1, "--jobs and --reps must be at least 1")
    seeds = chosen_seeds(args, TUNING_SEEDS, REPORT_SEEDS)
    jobs = plan_jobs(args.part, names, envs, seeds, args.total_steps)
    done = load_records(args.results)
    if not args.no_run:
        pending = sorted((job for job in jobs if job.key not in done), key=lambda job: -job.config.total_steps)
        print(f"{len(pending)} runs to do ({len(jobs) - len(pending)} already in {args.results})")
        if pending:
            run_and_record(run_job, pending, args.results, args.jobs, describe)
        done = load_records(args.results)
    records = [done[job.key] for job in jobs if job.key in done]
    headers: Sequence[str] = ABLATION_HEADERS
    if args.part == "ablation":
        table = ablation_table(records, names, envs, args.reps)
    else:
        headers, table = MULTITASK_HEADERS, multitask_table(records, names, args.reps)
    command = shlex.join(["python", "benchmarks/gpto_ablation.py", *argv])
    about = (
        f"{args.seeds} seeds {seeds}, commit {git_commit()} (code {code_version()}); {len(records)} of "
        f"{len(jobs)} runs recorded; {CONFIDENCE:.0%} stratified-bootstrap intervals ({args.reps} resamples)"
    )
    publish_table(command, about, table, args.markdown, headers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
