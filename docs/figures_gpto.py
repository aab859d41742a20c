"""GPTO's figure (docs/gpto.md): the ablation's learning curves on the report seeds, from the committed records of
``benchmarks/gpto_ablation.py``."""

from __future__ import annotations

import sys

import numpy as np
import plotly.graph_objects as go
from figure_tools import ROOT, FigureSpec
from plotly.subplots import make_subplots

GPTO_CODE = "29748cb9af"
"""The code of ``baselines/`` and ``rlhf/`` whose records the figure shows (``run_records.code_version``), the one
the tables of docs/gpto.md were measured with."""
ABLATION_RECORDS = "benchmarks/results/gpto_ablation_report.jsonl"
ABLATION_ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "InvertedDoublePendulum-v5")
SHOWN = ("ppo", "gpto", "kl", "spo", "trust-region")
ABLATION_COMMAND = (
    f"python benchmarks/gpto_ablation.py --seeds report --envs CartPole-v1,Acrobot-v1,Pendulum-v1 "
    f"--results {ABLATION_RECORDS}"
)
DOUBLE_PENDULUM_COMMAND = (
    "python benchmarks/gpto_ablation.py --seeds report --envs InvertedDoublePendulum-v5 --variants ppo,gpto "
    f"--results {ABLATION_RECORDS}"
)
BAND_REPS = 2000


def trimmed_iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The interquartile mean along ``axis`` (a quarter cut from each end, as scipy's ``trim_mean(x, 0.25)``)."""
    ordered = np.sort(values, axis=axis)
    cut = int(0.25 * ordered.shape[axis])
    kept = np.take(ordered, np.arange(cut, ordered.shape[axis] - cut), axis=axis)
    return np.asarray(kept.mean(axis=axis))


def iqm_band(curves: np.ndarray, reps: int = BAND_REPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluation (columns of ``curves``, seeds as rows): the IQM over seeds and its 95% bootstrap interval
    (seeds resampled with replacement, the same resample for every column)."""
    rng = np.random.default_rng(0)
    draws = rng.integers(len(curves), size=(reps, len(curves)))
    resampled = np.stack([trimmed_iqm(curves[rows]) for rows in draws])
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    return trimmed_iqm(curves), low, high


def _ablation_curves() -> go.Figure:
    """Per env, the IQM learning curve of PPO and of GPTO's default (95% bootstrap band over the report seeds), and
    the trust terms as thin lines: what 'steps to PPO's final IQM' in the table reads off."""
    from baselines.common.report import color

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpto_ablation import curves_of
    from run_records import load_records

    records = [r for r in load_records(ROOT / ABLATION_RECORDS).values() if r.get("code") == GPTO_CODE]
    envs = [env for env in ABLATION_ENVS if any(r["env"] == env for r in records)]
    fig = make_subplots(rows=1, cols=max(len(envs), 1), subplot_titles=envs)
    for col, env in enumerate(envs, 1):
        for i, name in enumerate(SHOWN):
            runs = sorted((r for r in records if r["env"] == env and r["name"] == name), key=lambda r: r["seed"])
            if not runs:
                continue
            values, steps = curves_of(runs)
            middle, low, high = iqm_band(values)
            main = name in ("ppo", "gpto")
            line_color = "#555" if name == "ppo" else color(i - 1)
            if main:
                fig.add_trace(go.Scatter(x=np.concatenate([steps, steps[::-1]]), y=np.concatenate([high, low[::-1]]),
                                         fill="toself", mode="none", hoverinfo="skip", showlegend=False,
                                         fillcolor="rgba(120,120,120,0.18)" if name == "ppo"
                                         else "rgba(31,119,180,0.18)"), row=1, col=col)  # fmt: skip
            label = {"ppo": "PPO", "gpto": "GPTO's default"}.get(name, f"--trust {name}")
            fig.add_trace(go.Scatter(x=steps, y=middle, mode="lines", name=f"{label} (IQM, n={len(runs)})",
                                     legendgroup=name, showlegend=col == 1,
                                     line={"color": line_color, "width": 3 if main else 1,
                                           "dash": "dash" if name == "ppo" else "solid"},
                                     hovertemplate=f"{label}, {env}: IQM %{{y:.1f}} at %{{x}} steps"),
                          row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="env steps")
    fig.update_yaxes(title_text="evaluation return (IQM over seeds)", row=1, col=1)
    return fig.update_layout(
        title="GPTO against PPO on report seeds 100-109: IQM learning curves, 95% bootstrap bands for PPO and "
        "GPTO's default",
        template="plotly_white",
        height=460,
        legend={"orientation": "h", "y": -0.25},
    )


SPECS: list[FigureSpec] = [
    FigureSpec(
        "gpto-ablation-curves",
        (),
        lambda _dirs: _ablation_curves(),
        sources=(ABLATION_COMMAND, DOUBLE_PENDULUM_COMMAND),
    ),
]
