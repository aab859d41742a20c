"""Figures of the RLHF and labeling-service pages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from figure_tools import FigureSpec, metric_rows
from plotly.subplots import make_subplots

TEACHERS = (("oracle", ()), ("noisy", ("--teacher-beta", "1")), ("mistake", ("--teacher-epsilon", "0.1")))
SEEDS = (0, 1, 2)
CARTPOLE_BUDGET = ("--labels", "100", "--total-steps", "60000", "--eval-every", "5000")


def _teacher_runs() -> tuple[tuple[str, ...], ...]:
    return tuple(
        ("run", "--env", "CartPole-v1", "--teacher", teacher, *extra, *CARTPOLE_BUDGET, "--seed", str(seed))
        for teacher, extra in TEACHERS
        for seed in SEEDS
    )


def _teachers_figure(run_dirs: list[Path]) -> go.Figure:
    """Top: true evaluation return over env steps, one faint line per seed and the mean per teacher. Bottom: the
    reward model's correlation with the true returns of recent segments, at each retraining."""
    from baselines.common.report import color, metric_series

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=(
            "true evaluation return (deterministic policy, 10 episodes)",
            "reward model: correlation of predicted and true segment returns",
        ),
    )
    for i, (teacher, _) in enumerate(TEACHERS):
        dirs = run_dirs[i * len(SEEDS) : (i + 1) * len(SEEDS)]
        for row, key in ((1, "eval/return_mean"), (2, "reward/return_correlation")):
            series = [metric_series(metric_rows(d), key) for d in dirs]
            for seed, (xs, ys) in zip(SEEDS, series, strict=True):
                fig.add_trace(
                    go.Scatter(x=xs, y=ys, mode="lines", line={"color": color(i), "width": 1}, opacity=0.35,
                               name=f"{teacher} seed {seed}", legendgroup=teacher, showlegend=False),
                    row=row, col=1,
                )  # fmt: skip
            if row == 1:  # every run evaluates at the same steps: average them
                length = min(len(xs) for xs, _ in series)
                mean = np.mean([ys[:length] for _, ys in series], axis=0)
                fig.add_trace(
                    go.Scatter(x=series[0][0][:length], y=mean, mode="lines+markers", line={"color": color(i)},
                               name=f"{teacher} (mean of {len(SEEDS)} seeds)", legendgroup=teacher),
                    row=1, col=1,
                )  # fmt: skip
    fig.update_yaxes(title_text="return", row=1, col=1)
    fig.update_yaxes(title_text="Pearson r", range=[-1.05, 1.05], row=2, col=1)
    fig.update_xaxes(title_text="env steps", row=2, col=1)
    return fig.update_layout(
        title="RLHF on CartPole-v1, 100 labels, 60k steps: oracle, noisy (beta 1) and mistake (eps 0.1) teachers",
        template="plotly_white",
        height=640,
    )


SPECS: list[FigureSpec] = [
    FigureSpec("rlhf-cartpole-teachers", _teacher_runs(), _teachers_figure),
]
