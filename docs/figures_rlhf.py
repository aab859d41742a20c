"""Figures of the RLHF and labeling-service pages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from figure_tools import FigureSpec, metric_rows
from plotly.subplots import make_subplots

CARTPOLE_TEACHERS = (("oracle", ()), ("noisy", ("--teacher-beta", "1")), ("mistake", ("--teacher-epsilon", "0.1")))
CARTPOLE_SEEDS = (0, 1, 2, 3, 4)
CARTPOLE_BUDGET = ("--labels", "100", "--total-steps", "60000", "--eval-every", "5000")
# Pendulum with the mistaken teacher and three ensemble members (the default before 2026-12-06): report seed 101
# was one of the protocol's failures then, seed 100 one of its successes; the oracle on seed 101 shows that the seed
# itself is not the problem.
PENDULUM_RUNS = (("mistake", 100), ("mistake", 101), ("oracle", 101))
PENDULUM_BUDGET = ("--labels", "200", "--total-steps", "100000", "--ensemble-size", "3")


def _cartpole_runs() -> tuple[tuple[str, ...], ...]:
    return tuple(
        ("run", "--env", "CartPole-v1", "--teacher", teacher, *extra, *CARTPOLE_BUDGET, "--seed", str(seed))
        for teacher, extra in CARTPOLE_TEACHERS
        for seed in CARTPOLE_SEEDS
    )


def _cartpole_figure(run_dirs: list[Path]) -> go.Figure:
    """True evaluation return over env steps: one faint line per seed and the mean per teacher."""
    from baselines.common.report import color, metric_series

    fig = go.Figure()
    for i, (teacher, _) in enumerate(CARTPOLE_TEACHERS):
        dirs = run_dirs[i * len(CARTPOLE_SEEDS) : (i + 1) * len(CARTPOLE_SEEDS)]
        series = [metric_series(metric_rows(d), "eval/return_mean") for d in dirs]
        for seed, (xs, ys) in zip(CARTPOLE_SEEDS, series, strict=True):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color(i), "width": 1}, opacity=0.35,
                                     name=f"{teacher} seed {seed}", legendgroup=teacher, showlegend=False))  # fmt: skip
        length = min(len(xs) for xs, _ in series)  # every run evaluates at the same steps: average them
        mean = np.mean([ys[:length] for _, ys in series], axis=0)
        fig.add_trace(go.Scatter(x=series[0][0][:length], y=mean, mode="lines+markers", line={"color": color(i)},
                                 name=f"{teacher} (mean of {len(dirs)} seeds)", legendgroup=teacher))  # fmt: skip
    return fig.update_layout(
        title="RLHF on CartPole-v1, 100 labels, 60k steps: true evaluation return (faint: single seeds)",
        xaxis_title="env steps",
        yaxis_title="mean return over 10 episodes",
        template="plotly_white",
    )


def _pendulum_runs() -> tuple[tuple[str, ...], ...]:
    return tuple(
        ("run", "--env", "Pendulum-v1", "--teacher", teacher, *PENDULUM_BUDGET, "--seed", str(seed))
        for teacher, seed in PENDULUM_RUNS
    )


def _two_panels(run_dirs: Sequence[Path], names: Sequence[str], title: str) -> go.Figure:
    """Top: true evaluation return over env steps. Bottom: the reward model's correlation with the true returns of
    recent segments, at each retraining."""
    from baselines.common.report import color, metric_series

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=(
            "true evaluation return (deterministic policy, 10 episodes)",
            "reward model: correlation of predicted and true returns of recent segments",
        ),
    )
    for i, (run_dir, name) in enumerate(zip(run_dirs, names, strict=True)):
        rows = metric_rows(run_dir)
        for row, key in ((1, "eval/return_mean"), (2, "reward/return_correlation")):
            xs, ys = metric_series(rows, key)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"color": color(i)}, name=name,
                                     legendgroup=name, showlegend=row == 1), row=row, col=1)  # fmt: skip
    fig.update_yaxes(title_text="return", row=1, col=1)
    fig.update_yaxes(title_text="Pearson r", range=[-1.05, 1.05], row=2, col=1)
    fig.update_xaxes(title_text="env steps", row=2, col=1)
    return fig.update_layout(title=title, template="plotly_white", height=620)


SPECS: list[FigureSpec] = [
    FigureSpec("rlhf-cartpole-teachers", _cartpole_runs(), _cartpole_figure),
    FigureSpec(
        "rlhf-pendulum-mistake",
        _pendulum_runs(),
        lambda dirs: _two_panels(
            dirs,
            [f"{teacher} seed {seed}" for teacher, seed in PENDULUM_RUNS],
            "RLHF on Pendulum-v1, 200 labels, 100k steps, 3 ensemble members: the mistaken teacher (eps 0.1) on a "
            "good and a bad seed",
        ),
    ),
]
