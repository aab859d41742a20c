"""Figures of the PPO page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from figure_tools import FigureSpec, curves, metric_rows


def panels(run_dir: Path, keys: dict[str, str], title: str) -> go.Figure:
    """One small plot per metric key (``{key: panel title}``) of one run, over env steps, two per row."""
    from plotly.subplots import make_subplots

    from baselines.common.report import color, metric_series

    rows = metric_rows(run_dir)
    fig = make_subplots(rows=(len(keys) + 1) // 2, cols=2, subplot_titles=list(keys.values()))
    for i, key in enumerate(keys):
        xs, ys = metric_series(rows, key)
        fig.add_trace(go.Scatter(x=np.asarray(xs), y=np.asarray(ys), name=key, mode="lines",
                                 line={"color": color(i)}), row=i // 2 + 1, col=i % 2 + 1)  # fmt: skip
    return fig.update_layout(title=title, template="plotly_white", showlegend=False, height=520)


PPO_DIAGNOSTICS = {
    "losses/approx_kl": "approx KL (k3) of an update",
    "losses/clipfrac": "fraction of ratios clipped",
    "losses/entropy": "policy entropy",
    "losses/explained_variance": "explained variance of the value",
}

SPECS = [
    FigureSpec(
        "ppo-cartpole",
        tuple(
            ("ppo", "--env", "CartPole-v1", "--total-steps", "50000", "--eval-every", "5000", "--seed", str(seed))
            for seed in range(3)
        ),
        lambda dirs: curves(
            dirs,
            "eval/return_mean",
            [f"seed {i}" for i in range(3)],
            "PPO on CartPole-v1: evaluation return",
            "mean return over 10 episodes",
        ),
    ),
    FigureSpec(
        "ppo-pendulum",
        tuple(("ppo", "--env", "Pendulum-v1", "--total-steps", "200000", "--seed", str(seed)) for seed in range(2)),
        lambda dirs: curves(
            dirs,
            "eval/return_mean",
            [f"seed {i}" for i in range(2)],
            "PPO on Pendulum-v1: evaluation return",
            "mean return over 10 episodes",
        ),
    ),
    FigureSpec(
        "ppo-cartpole-diagnostics",
        (("ppo", "--env", "CartPole-v1", "--total-steps", "50000", "--seed", "0"),),
        lambda dirs: panels(dirs[0], PPO_DIAGNOSTICS, "PPO on CartPole-v1 (seed 0): what each update did"),
    ),
]
