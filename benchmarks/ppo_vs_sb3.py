"""PPO side by side with Stable-Baselines3 at identical settings (rl-zoo's), one torch thread each.

Targets (issue 4): CartPole-v1 100k steps: eval return >= 475 on 5 of 5 seeds, at >= 4x SB3's steps/s;
Pendulum-v1 200k steps: median eval return over 5 seeds >= -200, same speed ratio.

Run: ``.venv/bin/python benchmarks/ppo_vs_sb3.py [--env CartPole-v1] [--seeds 5] [--sb3-seeds 1]``
(needs the ``bench`` extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common.evaluation import evaluate_policy
from baselines.ppo import PPOConfig, train_ppo

TARGETS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}


def run_ours(env_id: str, seed: int, out: Path) -> tuple[float, float]:
    summary = train_ppo(PPOConfig.defaults_for(env_id, seed=seed, out=out, eval_every=10**9))
    return summary["steps_per_second"], summary["eval_return_mean"]


def run_sb3(env_id: str, seed: int) -> tuple[float, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    cfg = PPOConfig.defaults_for(env_id)

    def schedule(value: float, kind: str) -> Any:
        return (lambda remaining: value * remaining) if kind == "linear" else value

    envs = make_vec_env(env_id, n_envs=cfg.num_envs, seed=seed)
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
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(cfg.total_steps)
    sps = model.num_timesteps / (time.perf_counter() - start)

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    return sps, float(evaluate_policy(act, env_id, 10, seed).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", action="append", help="env id (repeatable); default CartPole-v1 and Pendulum-v1")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of our PPO")
    parser.add_argument("--sb3-seeds", type=int, default=1, help="seeds of SB3 (slow: ~25 s / ~70 s each)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for env_id in args.env or ["CartPole-v1", "Pendulum-v1"]:
        with tempfile.TemporaryDirectory() as tmp:
            ours = [run_ours(env_id, seed, Path(tmp) / f"s{seed}") for seed in range(args.seeds)]
        theirs = [run_sb3(env_id, seed) for seed in range(args.sb3_seeds)]
        our_sps = statistics.mean(s for s, _ in ours)
        sb3_sps = statistics.mean(s for s, _ in theirs)
        our_returns = [r for _, r in ours]
        target = TARGETS.get(env_id)
        print(f"\n== {env_id}, {PPOConfig.defaults_for(env_id).total_steps} steps, rl-zoo settings")
        print(f"ours: {our_sps:,.0f} steps/s; eval returns {[round(r, 1) for r in our_returns]}")
        print(f"      median {statistics.median(our_returns):.1f}, worst {min(our_returns):.1f}")
        print(f"sb3:  {sb3_sps:,.0f} steps/s; eval returns {[round(r, 1) for _, r in theirs]}")
        print(f"speed ratio ours / sb3: {our_sps / sb3_sps:.2f}x (target 4.5x, issue 11)")
        if target is not None:
            hits = sum(r >= target for r in our_returns)
            print(f"seeds at or above {target}: {hits} of {len(our_returns)}")


if __name__ == "__main__":
    main()
