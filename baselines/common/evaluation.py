"""Evaluation on a separate env: one episode per sub-env, batched policy calls, true env reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

EVAL_SEED_OFFSET = 10_000  # evaluation episodes start from seeds no training env of a run with a small seed uses


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
) -> np.ndarray:
    """Run ``episodes`` episodes (one per sub-env of a sync vector env, env seeds ``seed + EVAL_SEED_OFFSET + i``).

    Args:
        act: maps a batch of observations ``(episodes, *obs_shape)`` to actions ``(episodes, ...)``
            (the deterministic policy, with any observation normalization applied inside).
        env_id: gymnasium id of the evaluation env (a fresh env, never the training one).
        episodes: number of episodes.
        seed: the run's seed; the evaluation envs are seeded apart from the training envs.

    Returns:
        Undiscounted episode returns ``(episodes,)``.
    """
    envs = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync", **(env_kwargs or {}))
    try:
        obs, _ = envs.reset(seed=[seed + EVAL_SEED_OFFSET + i for i in range(episodes)])  # type: ignore[arg-type]
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            obs, rewards, terminated, truncated, _ = envs.step(act(obs))
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
        return returns
    finally:
        envs.close()
