"""Figures of the bandit and tabular pages: Sutton & Barto's chapter-2 figures from ``rlhf bandit --figure``, and
the tabular checks (value iteration's contraction, Q-learning reaching the DP optimum, cliff walking) from
``rlhf tabular``. Every number drawn is read from the run folders' ``summary.json`` / ``metrics.jsonl``, except the
quantities the commands do not log (the random-pair contraction ratios, the distance to the DP optimum), which are
computed here from the env's transition model and the runs' outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from figure_tools import FigureSpec, metric_rows
from plotly.subplots import make_subplots

from baselines.bandits.experiment import parameter_study_figure
from baselines.common.report import color


def _summary(run_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return result


def _thin(values: list[float] | np.ndarray, window: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps (from 1) and the trailing moving average over ``window``, kept every ``every`` steps (small JSON)."""
    array = np.asarray(values, dtype=float)
    cumulative = np.concatenate([[0.0], np.cumsum(array)])
    steps = np.arange(1, len(array) + 1)
    starts = np.maximum(0, steps - window)
    averaged = (cumulative[steps] - cumulative[starts]) / (steps - starts)
    keep = np.unique(np.concatenate([np.arange(0, len(array), every), [len(array) - 1]]))
    return steps[keep], np.round(averaged[keep], 4)


def bandit_curves(title: str, window: int = 1, every: int = 2) -> Callable[[list[Path]], go.Figure]:
    """Average reward and % optimal action per step, one line per agent (the book's two panels)."""

    def build(run_dirs: list[Path]) -> go.Figure:
        summary = _summary(run_dirs[0])
        fig = make_subplots(rows=1, cols=2, subplot_titles=("Average reward", "% optimal action"))
        for i, (spec, agent) in enumerate(summary["agents"].items()):
            for col, key, scale in ((1, "reward_curve", 1.0), (2, "optimal_curve", 100.0)):
                steps, values = _thin(np.asarray(agent[key]) * scale, window, every)
                fig.add_trace(
                    go.Scatter(
                        x=steps, y=values, name=spec, legendgroup=spec, showlegend=col == 1, line={"color": color(i)}
                    ),
                    row=1,
                    col=col,
                )
        smoothing = f", moving average over {window} steps" if window > 1 else ""
        fig.update_xaxes(title="step")
        fig.update_yaxes(title="reward", row=1, col=1)
        fig.update_yaxes(title="%", row=1, col=2)
        return fig.update_layout(
            title=f"{title} ({summary['runs']} runs{smoothing})",
            template="plotly_white",
            height=430,
            legend={"orientation": "h", "y": -0.2},
        )

    return build


def parameter_study(run_dirs: list[Path]) -> go.Figure:
    """Figure 2.6: mean reward over the first 1000 steps against each family's parameter."""
    summary = _summary(run_dirs[0])
    return parameter_study_figure(summary["parameter_study"], summary["steps"], summary["runs"])


def _frozen_lake_model(gamma: float) -> tuple[Any, np.ndarray]:
    """FrozenLake-v1's model and its optimal action values ``Q*`` (S, A) by value iteration."""
    from baselines.tabular.dp import model_from_env, q_values, value_iteration
    from baselines.tabular.envs import make_env

    model = model_from_env(make_env("FrozenLake-v1"), "FrozenLake-v1")
    optimum = value_iteration(model, gamma, theta=1e-12)
    return model, q_values(model, optimum.values, gamma)


def contraction(run_dirs: list[Path]) -> go.Figure:
    """Value iteration's sup-norm contraction: the logged sweep deltas, their ratios, and random pairs (u, v)."""
    from baselines.tabular.dp import q_values

    fig = make_subplots(
        rows=3,
        cols=1,
        subplot_titles=(
            "||v_k+1 - v_k||_inf per sweep (dashed: gamma^k bound)",
            "ratio of consecutive deltas (dotted: gamma)",
            "||Tv - Tu|| / ||v - u|| for 500 random pairs",
        ),
        vertical_spacing=0.09,
    )
    rng = np.random.default_rng(0)
    for i, run_dir in enumerate(run_dirs):
        gamma = float(_summary(run_dir)["gamma"])
        deltas = np.array([row["dp/delta"] for row in metric_rows(run_dir)])
        sweeps = np.arange(1, len(deltas) + 1)
        every = max(1, len(deltas) // 150)
        keep = np.unique(np.concatenate([np.arange(0, len(deltas), every), [len(deltas) - 1]]))
        name = f"gamma {gamma}"
        style = {"color": color(i)}
        fig.add_trace(go.Scatter(x=sweeps[keep], y=deltas[keep], name=name, legendgroup=name, line=style), 1, 1)
        bound = deltas[0] * gamma ** (sweeps - 1)
        fig.add_trace(
            go.Scatter(
                x=sweeps[keep],
                y=bound[keep],
                name=f"{name}: delta_1 gamma^(k-1)",
                legendgroup=name,
                showlegend=False,
                line={**style, "dash": "dash"},
            ),
            1,
            1,
        )
        ratios = deltas[1:] / deltas[:-1]
        fig.add_trace(
            go.Scatter(x=sweeps[1:][keep[:-1]], y=ratios[keep[:-1]], legendgroup=name, showlegend=False, line=style),
            2,
            1,
        )
        fig.add_hline(y=gamma, line={**style, "dash": "dot"}, row=2, col=1)
        model, _ = _frozen_lake_model(gamma)
        scale = 1.0 / (1.0 - gamma)
        u = rng.uniform(-scale, scale, size=(500, model.n_states))
        v = rng.uniform(-scale, scale, size=(500, model.n_states))
        backup_u = np.stack([q_values(model, row, gamma).max(axis=1) for row in u])
        backup_v = np.stack([q_values(model, row, gamma).max(axis=1) for row in v])
        pair_ratios = np.abs(backup_v - backup_u).max(axis=1) / np.abs(v - u).max(axis=1)
        fig.add_trace(
            go.Box(y=np.round(pair_ratios, 4), name=name, legendgroup=name, showlegend=False, marker=style), 3, 1
        )
        fig.add_trace(
            go.Scatter(
                x=[name],
                y=[gamma],
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 40, "color": "black"},
                showlegend=False,
            ),
            3,
            1,
        )
    fig.update_yaxes(type="log", title="largest value change", row=1, col=1)
    fig.update_xaxes(title="sweep k", row=1, col=1)
    fig.update_xaxes(title="sweep k", type="log", row=2, col=1)
    fig.update_yaxes(title="delta_k+1 / delta_k", row=2, col=1)
    fig.update_yaxes(title="ratio (black bar: gamma)", row=3, col=1)
    return fig.update_layout(
        title="Value iteration on FrozenLake-v1: a gamma-contraction",
        template="plotly_white",
        height=1050,
        legend={"orientation": "h", "y": -0.08},
    )


def q_learning_optimum(run_dirs: list[Path]) -> go.Figure:
    """Q-learning's table and greedy policy against value iteration's, as the number of episodes grows."""
    summaries = [_summary(d) for d in run_dirs]
    gamma = float(summaries[0]["gamma"])
    _, q_star = _frozen_lake_model(gamma)
    v_star = q_star.max(axis=1)
    optimal_start = summaries[0]["results"]["value-iteration"]
    episodes, value_error, start_value, optimal_actions, success = [], [], [], [], []
    for run_dir, summary in zip(run_dirs, summaries, strict=True):
        config = json.loads((run_dir / "config.json").read_text())
        q_result = summary["results"]["q-learning"]
        values = np.asarray(q_result["values"])
        actions = np.asarray(q_result["policy"])
        # Terminal states (holes, goal) have V* = 0 and are never updated: they do not count.
        live = np.abs(q_star).sum(axis=1) > 0
        episodes.append(int(config["episodes"]))
        value_error.append(float(np.abs(values - v_star)[live].max()))
        start_value.append(float(q_result["value_start"]))
        chosen = q_star[np.arange(len(actions)), actions]
        optimal_actions.append(float((chosen >= v_star - 1e-3)[live].mean()))
        success.append(float(q_result["success_rate"]))
    fig = make_subplots(
        rows=3,
        cols=1,
        subplot_titles=(
            "max_s |V_Q(s) - V*(s)| (non-terminal states)",
            "V(start): Q-learning vs V* (dashed)",
            "greedy policy: optimal actions, success rate",
        ),
    )
    fig.add_trace(go.Scatter(x=episodes, y=value_error, mode="lines+markers", name="sup-norm error of V_Q"), 1, 1)
    fig.add_trace(go.Scatter(x=episodes, y=start_value, mode="lines+markers", name="Q-learning V(start)"), 2, 1)
    fig.add_hline(y=optimal_start["value_start"], line={"dash": "dash"}, row=2, col=1)
    fig.add_trace(
        go.Scatter(x=episodes, y=optimal_actions, mode="lines+markers", name="share of states with an optimal action"),
        3,
        1,
    )
    fig.add_trace(
        go.Scatter(x=episodes, y=success, mode="lines+markers", name="success rate of the greedy policy"), 3, 1
    )
    fig.add_hline(y=optimal_start["success_rate"], line={"dash": "dash"}, row=3, col=1)
    fig.update_xaxes(type="log", title="training episodes per run")
    fig.update_yaxes(title="max |V_Q - V*|", row=1, col=1)
    fig.update_yaxes(title="V(start)", row=2, col=1)
    fig.update_yaxes(title="share", range=[0, 1.05], row=3, col=1)
    return fig.update_layout(
        title=f"Q-learning vs the value-iteration optimum (dashed), FrozenLake-v1, gamma {gamma}",
        template="plotly_white",
        height=1000,
        legend={"orientation": "h", "y": -0.08},
    )


_MOVES = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # GridWorld-v0: left, down, right, up


def _greedy_path(
    actions: list[int], start: tuple[int, int] = (3, 0), goal: tuple[int, int] = (3, 11)
) -> list[tuple[int, int]]:
    cell, path = start, [start]
    while cell != goal and len(path) < 60:
        d_row, d_col = _MOVES[actions[cell[0] * 12 + cell[1]]]
        cell = (min(3, max(0, cell[0] + d_row)), min(11, max(0, cell[1] + d_col)))
        path.append(cell)
    return path


def cliff(run_dirs: list[Path], exploration: str = "epsilon 0.1") -> go.Figure:
    """Example 6.6 / figure 6.4: online return per episode, and each algorithm's greedy path on the grid."""
    summary = _summary(run_dirs[0])
    runs = json.loads((run_dirs[0] / "config.json").read_text())["runs"]
    fig = make_subplots(
        rows=2,
        cols=1,
        row_heights=[0.62, 0.38],
        vertical_spacing=0.14,
        subplot_titles=(
            f"return per episode (10-episode moving average, mean of {runs} runs)",
            "greedy path of the mean Q table (S start, G goal, the cliff in between)",
        ),
    )
    for i, (algo, result) in enumerate(summary["results"].items()):
        steps, values = _thin(result["train_return_curve"], 10, 1)
        style = {"color": color(i)}
        fig.add_trace(go.Scatter(x=steps, y=values, name=algo, legendgroup=algo, line=style), 1, 1)
        path = _greedy_path(result["policy"])
        offset = (i - 1.5) * 0.08
        fig.add_trace(
            go.Scatter(
                x=[c + offset for _, c in path],
                y=[r + offset for r, _ in path],
                mode="lines",
                legendgroup=algo,
                showlegend=False,
                line={**style, "width": 3},
                name=f"{algo}: {len(path) - 1} steps",
            ),
            2,
            1,
        )
    fig.add_trace(
        go.Scatter(
            x=list(range(12)),
            y=[3] * 12,
            mode="text",
            text=["S"] + ["C"] * 10 + ["G"],
            showlegend=False,
            textfont={"size": 16},
        ),
        2,
        1,
    )
    fig.update_yaxes(range=[-100, 0], title="return", row=1, col=1)
    fig.update_xaxes(title="episode", row=1, col=1)
    fig.update_yaxes(autorange="reversed", range=[3.5, -0.5], dtick=1, title="row", row=2, col=1)
    fig.update_xaxes(range=[-0.5, 11.5], dtick=1, title="column", row=2, col=1)
    return fig.update_layout(
        title=f"Cliff walking (Example 6.6), alpha 0.5, {exploration}", template="plotly_white", height=720
    )


def _bandit(name: str, figure: str, title: str, window: int = 1, every: int = 2) -> FigureSpec:
    return FigureSpec(name, (("bandit", "--figure", figure, "--runs", "2000"),), bandit_curves(title, window, every))


SPECS = [
    _bandit("bandit-2-2", "2.2", "Figure 2.2: greedy vs epsilon-greedy"),
    _bandit("bandit-2-3", "2.3", "Figure 2.3: optimistic initial values"),
    _bandit("bandit-2-4", "2.4", "Figure 2.4: UCB vs epsilon-greedy"),
    _bandit("bandit-2-5", "2.5", "Figure 2.5: gradient bandit with and without baseline"),
    FigureSpec("bandit-2-6", (("bandit", "--figure", "2.6", "--runs", "2000"),), parameter_study),
    _bandit("bandit-ex2-5", "ex2.5", "Exercise 2.5: non-stationary testbed", window=100, every=50),
    FigureSpec(
        "tabular-vi-contraction",
        tuple(
            ("tabular", "--env", "FrozenLake-v1", "--algo", "value-iteration", "--gamma", gamma, "--theta", "1e-10")
            for gamma in ("0.5", "0.9", "0.99")
        ),
        contraction,
    ),
    FigureSpec(
        "tabular-q-learning-optimal",
        tuple(
            (
                *("tabular", "--env", "FrozenLake-v1", "--algo", "value-iteration", "--algo", "q-learning"),
                *("--gamma", "0.99", "--alpha", "0.1", "--epsilon", "0.2", "--runs", "3", "--episodes", episodes),
            )
            for episodes in ("250", "1000", "4000", "16000", "40000")
        ),
        q_learning_optimum,
    ),
    FigureSpec(
        "tabular-cliff",
        (
            (
                *("tabular", "--env", "GridWorld-v0", "--preset", "cliff"),
                *("--algo", "sarsa", "--algo", "q-learning", "--algo", "expected-sarsa", "--algo", "double-q"),
                *("--alpha", "0.5", "--epsilon", "0.1", "--episodes", "500", "--runs", "20"),
            ),
        ),
        cliff,
    ),
    FigureSpec(
        "tabular-cliff-decay",
        (
            (
                *("tabular", "--env", "GridWorld-v0", "--preset", "cliff", "--algo", "sarsa", "--algo", "q-learning"),
                *(
                    "--alpha",
                    "0.5",
                    "--epsilon",
                    "0.1",
                    "--epsilon-decay",
                    "0.995",
                    "--episodes",
                    "1000",
                    "--runs",
                    "20",
                ),
            ),
        ),
        lambda dirs: cliff(dirs, "epsilon 0.1 x 0.995 per episode"),
    ),
]
