"""Figures of the PPO page."""

from __future__ import annotations

from figure_tools import FigureSpec, curves

SPECS = [
    FigureSpec(
        "ppo-cartpole",
        tuple(("ppo", "--env", "CartPole-v1", "--total-steps", "50000", "--seed", str(seed)) for seed in range(3)),
        lambda dirs: curves(
            dirs,
            "eval/return_mean",
            [f"seed {i}" for i in range(3)],
            "PPO on CartPole-v1: evaluation return",
            "mean return over 10 episodes",
        ),
    ),
]
