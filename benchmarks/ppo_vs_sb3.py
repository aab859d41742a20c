"""PPO side by side with Stable-Baselines3 at identical settings (each env's row of ENV_DEFAULTS), one thread each.

Targets (issue 4): CartPole-v1 100k steps: eval return >= 475 on 5 of 5 seeds, at >= 4x SB3's steps/s;
Pendulum-v1 200k steps: median eval return over 5 seeds >= -200, same speed ratio.
Targets (issue 14), on the protocol's reporting seeds (``--first-seed 100``): Hopper-v5 and HalfCheetah-v5 at 1M
steps, median eval return >= 2,500 and >= 2,000, at >= 2x SB3's steps/s (observation and reward normalization,
VecNormalize on SB3's side, in both).

Run: ``.venv/bin/python benchmarks/ppo_vs_sb3.py [--env CartPole-v1] [--seeds 5] [--first-seed 0] [--sb3-seeds 1]``
(needs the ``bench`` extra: ``pip install -e .[bench]``; the MuJoCo envs the ``mujoco`` extra too).

``--jobs 2`` runs two at a time (each single-threaded); the speed ratio stays fair as long as every run shares the
machine alike, which it does when both sides run under the same ``--jobs``. ``--results FILE`` records each
finished run as a JSON line (``run_records.py``) and skips runs already there: 1M-step runs of both libraries take
hours on 2 cores, and a measurement cut off resumes. Our runs are keyed by the code of ``baselines/`` and ``rlhf/``
and the row's settings, SB3's by its version and the same settings. ``--no-run`` only prints what the file holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from run_records import (
    add_code_argument,
    code_version,
    git_commit,
    load_records,
    records_of_code,
    run_and_record,
    short_hash,
)

from baselines.common.evaluation import evaluate_policy
from baselines.ppo import PPOConfig, train_ppo

TARGETS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "Hopper-v5": 2500.0, "HalfCheetah-v5": 2000.0}
SPEED_TARGETS = {"Hopper-v5": 2.0, "HalfCheetah-v5": 2.0}
"""Steps/s ratio targets; 4.5x elsewhere (issue 11)."""
PUBLISHED = {
    "Hopper-v5": "rl-zoo's PPO on Hopper-v3: 2410 +- 10 (one agent); CleanRL's ppo_continuous_action on Hopper-v4: "
    "2383 +- 272 (its own settings, over seeds)",
    "HalfCheetah-v5": "rl-zoo's PPO on HalfCheetah-v3: 5819 +- 664 (one agent); CleanRL's ppo_continuous_action on "
    "HalfCheetah-v4: 1443 +- 46 (its own settings, over seeds)",
    "Walker2d-v5": "rl-zoo's PPO on Walker2d-v3: 3479 +- 822 (one agent); CleanRL's ppo_continuous_action on "
    "Walker2d-v4: 2288 +- 572 (its own settings, over seeds)",
}
"""At 1M steps: rl-zoo's benchmark.md and CleanRL's benchmark/ppo_continuous_action.md (tag pr-424)."""

Lib = Literal["ours", "sb3"]


def sb3_version() -> str | None:
    try:
        return metadata.version("stable-baselines3")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Job:
    """One training run: ``lib``'s PPO on ``env_id`` and ``seed`` with the env's row (``total_steps`` overridden
    when given)."""

    lib: Lib
    env_id: str
    seed: int
    total_steps: int | None = None

    def config(self) -> PPOConfig:
        steps = {} if self.total_steps is None else {"total_steps": self.total_steps}
        return PPOConfig.defaults_for(self.env_id, seed=self.seed, **steps)

    @property
    def key(self) -> str:
        version = code_version() if self.lib == "ours" else f"stable-baselines3 {sb3_version()}"
        settings = dataclasses.asdict(dataclasses.replace(self.config(), seed=0, out=None))
        return f"{self.lib}/{self.env_id}/{short_hash({'lib': self.lib, 'version': version, **settings})}/{self.seed}"


def run_ours(config: PPOConfig, out: Path) -> tuple[float, float]:
    summary = train_ppo(dataclasses.replace(config, out=out, eval_every=10**9))
    return summary["steps_per_second"], summary["eval_return_mean"]


def run_sb3(cfg: PPOConfig) -> tuple[float, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    def schedule(value: float, kind: str) -> Any:
        return (lambda remaining: value * remaining) if kind == "linear" else value

    envs = make_vec_env(cfg.env, n_envs=cfg.num_envs, seed=cfg.seed)
    if cfg.normalize_obs or cfg.normalize_reward:
        envs = VecNormalize(envs, norm_obs=cfg.normalize_obs, norm_reward=cfg.normalize_reward, gamma=cfg.gamma)
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.activation]
    sizes = list(cfg.hidden_sizes)
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=cfg.num_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        learning_rate=schedule(cfg.learning_rate, cfg.lr_schedule),
        clip_range=schedule(cfg.clip_range, cfg.clip_schedule),
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        policy_kwargs={
            "net_arch": {"pi": sizes, "vf": sizes},
            "activation_fn": activation,
            "log_std_init": cfg.log_std_init,
        },
        seed=cfg.seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(cfg.total_steps)
    sps = model.num_timesteps / (time.perf_counter() - start)

    def act(obs: np.ndarray) -> np.ndarray:
        if isinstance(envs, VecNormalize):
            # the training run's statistics, as ours are restored from its checkpoint
            obs = np.asarray(envs.normalize_obs(obs))
        return model.predict(obs, deterministic=True)[0]

    return sps, float(evaluate_policy(act, cfg.env, 10, cfg.seed).mean())


def run_job(job: Job) -> dict[str, Any]:
    """Train and evaluate one job (one torch thread) and return its record."""
    torch.set_num_threads(1)
    config = job.config()
    start = time.perf_counter()
    if job.lib == "ours":
        with tempfile.TemporaryDirectory(prefix="ppo-vs-sb3-") as tmp:
            sps, ret = run_ours(config, Path(tmp))
    else:
        sps, ret = run_sb3(config)
    return {
        "key": job.key,
        "lib": job.lib,
        "env": job.env_id,
        "seed": job.seed,
        "total_steps": config.total_steps,
        "steps_per_second": sps,
        "return": ret,
        "wall_seconds": time.perf_counter() - start,
        "commit": git_commit(),
        "code": code_version(),
    }


def _describe(record: dict[str, Any]) -> str:
    return (
        f"{record['lib']:<4} {record['env']} seed {record['seed']}: {record['steps_per_second']:,.0f} steps/s, "
        f"eval return {record['return']:.1f}"
    )


def run_pending(jobs: Sequence[Job], results: Path, workers: int) -> None:
    """Run the jobs not yet in ``results`` and append each record as it finishes."""
    done = load_records(results)
    pending = [job for job in jobs if job.key not in done]
    print(f"{len(pending)} runs to do ({len(jobs) - len(pending)} already in {results})", flush=True)
    if not pending:
        return
    run_and_record(run_job, pending, results, workers, _describe)


def report(env_id: str, jobs: Sequence[Job], records: dict[str, dict[str, Any]]) -> None:
    """Returns and steps/s of both sides on ``env_id`` from the recorded runs, with targets and published figures."""
    found = {lib: [records[j.key] for j in jobs if j.env_id == env_id and j.lib == lib and j.key in records]
             for lib in ("ours", "sb3")}  # fmt: skip
    planned = {lib: sum(j.env_id == env_id and j.lib == lib for j in jobs) for lib in ("ours", "sb3")}
    steps = next(j.config().total_steps for j in jobs if j.env_id == env_id)
    print(f"\n== {env_id}, {steps} steps, the row's settings")
    for lib, runs in found.items():
        if not planned[lib]:
            continue
        if not runs:
            print(f"{lib + ':':<5} no run recorded of {planned[lib]}")
            continue
        returns = [r["return"] for r in runs]
        missing = f" ({planned[lib] - len(runs)} of {planned[lib]} not run yet)" if len(runs) < planned[lib] else ""
        print(f"{lib + ':':<5} {statistics.mean(r['steps_per_second'] for r in runs):,.0f} steps/s; eval returns "
              f"{[round(r, 1) for r in returns]} (seeds {[r['seed'] for r in runs]}){missing}")  # fmt: skip
        print(f"      median {statistics.median(returns):.1f}, worst {min(returns):.1f}")
    if found["ours"] and found["sb3"]:
        ratio = statistics.mean(r["steps_per_second"] for r in found["ours"]) / statistics.mean(
            r["steps_per_second"] for r in found["sb3"]
        )
        print(f"speed ratio ours / sb3: {ratio:.2f}x (target {SPEED_TARGETS.get(env_id, 4.5)}x)")
    if env_id in PUBLISHED:
        print(f"published: {PUBLISHED[env_id]}")
    target = TARGETS.get(env_id)
    if target is not None and found["ours"]:
        hits = sum(r["return"] >= target for r in found["ours"])
        print(f"our seeds at or above {target}: {hits} of {len(found['ours'])}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", help="env id (repeatable); default CartPole-v1 and Pendulum-v1")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of our PPO")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--sb3-seeds", type=int, default=1, help="seeds of SB3 (slow: ~25 s / ~70 s each)")
    parser.add_argument("--total-steps", type=int, help="override the row's budget (e.g. a short speed-only check)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one torch thread each")
    parser.add_argument("--results", type=Path, help="JSON-lines record of finished runs (resumable; default: none)")
    parser.add_argument("--no-run", action="store_true", help="only report what --results already holds")
    add_code_argument(parser)
    args = parser.parse_args(argv)
    if args.code is not None and not args.no_run:
        parser.error("--code reads the records of other code: it needs --no-run")
    if args.jobs < 1 or args.seeds < 0 or args.sb3_seeds < 0 or (args.no_run and args.results is None):
        parser.error("--jobs must be at least 1, --seeds and --sb3-seeds at least 0; --no-run needs --results")
    if args.sb3_seeds and not args.no_run and sb3_version() is None:
        parser.error("stable-baselines3 is not installed: pip install -e '.[bench]' (or --sb3-seeds 0)")
    envs = args.env or ["CartPole-v1", "Pendulum-v1"]
    sides: tuple[tuple[Lib, int], ...] = (("sb3", args.sb3_seeds), ("ours", args.seeds))  # SB3's runs are the longest
    jobs = [
        Job(lib, env_id, seed, args.total_steps)
        for env_id in envs
        for lib, count in sides
        for seed in range(args.first_seed, args.first_seed + count)
    ]
    with tempfile.TemporaryDirectory(prefix="ppo-vs-sb3-") as tmp:
        results = args.results or Path(tmp) / "results.jsonl"
        if not args.no_run:
            run_pending(jobs, results, args.jobs)
        records = load_records(results)
    with records_of_code(args.code):
        for env_id in envs:
            report(env_id, jobs, records)


if __name__ == "__main__":
    main()
