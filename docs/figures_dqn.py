"""Figures of the DQN and tuning pages."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from figure_tools import FigureSpec, curves
from figures_ppo import panels

DQN_CARTPOLE = ("dqn", "--env", "CartPole-v1", "--total-steps", "50000")
EXTENSIONS = {  # name -> flags over CartPole-v1's defaults (double DQN, 3-step returns)
    "plain DQN (1-step, no double)": ("--no-double-dqn", "--n-step", "1"),
    "defaults: double DQN, 3-step": (),
    "defaults + dueling": ("--dueling",),
    "defaults + prioritized replay": ("--prioritized",),
}
TUNE_SEEDS = 2
TUNE_PPO: tuple[str, ...] = (
    "tune",
    "ppo",
    "--env",
    "CartPole-v1",
    "--trials",
    "10",
    "--total-steps",
    "20000",
    "--evaluations",
    "4",
)
TUNE_PPO += ("--startup-trials", "4", "--seeds-per-trial", str(TUNE_SEEDS))
DQN_DIAGNOSTICS = {
    "losses/td_loss": "Huber TD loss (mean since the last row)",
    "losses/q_values": "Q(s, a) of the replayed batches",
    "charts/epsilon": "epsilon",
    "charts/learning_rate": "learning rate",
}


def tune_history(dirs: list[Path]) -> go.Figure:
    """Each trial's seeds (dots), their mean (the objective, a diamond) and the best mean so far."""
    import optuna

    from baselines.common.report import color

    storage = f"sqlite:///{(dirs[0] / 'study.sqlite').resolve()}"
    study = optuna.load_study(study_name="ppo-CartPole-v1", storage=storage)
    fig = go.Figure()
    numbers, seed_values = [], []
    for trial in study.trials:
        for key, value in trial.user_attrs.items():
            if key.startswith("return_seed_"):
                numbers.append(trial.number)
                seed_values.append(value)
    fig.add_trace(go.Scatter(x=numbers, y=seed_values, mode="markers", name="one seed's final return",
                             marker={"color": color(1), "size": 7, "opacity": 0.6}))  # fmt: skip
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    fig.add_trace(go.Scatter(x=[t.number for t in complete], y=[t.value for t in complete], mode="markers",
                             name=f"objective: mean over {TUNE_SEEDS} seeds",
                             marker={"color": color(0), "size": 11, "symbol": "diamond"}))  # fmt: skip
    fig.add_trace(go.Scatter(x=[t.number for t in pruned], y=[t.intermediate_values[t.last_step or 0] for t in pruned],
                             mode="markers", name="pruned (last value the pruner saw)",
                             marker={"color": "#888", "size": 9, "symbol": "x"}))  # fmt: skip
    best: list[float | None] = []  # the best objective so far, None before the first complete trial
    running = float("-inf")
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            running = max(running, trial.value)
        best.append(running if running > float("-inf") else None)
    best_line = {"shape": "hv", "color": color(0)}
    fig.add_trace(go.Scatter(x=[t.number for t in study.trials], y=best,
                             mode="lines", line=best_line, name="best objective so far"))  # fmt: skip
    return fig.update_layout(
        title=f"rlhf tune ppo on CartPole-v1, {TUNE_SEEDS} seeds per trial",
        xaxis_title="trial",
        yaxis_title="final evaluation return",
        template="plotly_white",
    )


SPECS = [
    FigureSpec(
        "dqn-cartpole",
        tuple((*DQN_CARTPOLE, "--seed", str(seed)) for seed in range(3)),
        lambda dirs: curves(
            dirs,
            "eval/return_mean",
            [f"seed {i}" for i in range(3)],
            "DQN on CartPole-v1 (defaults): evaluation return",
            "mean return over 10 episodes",
        ),
    ),
    FigureSpec(
        "dqn-cartpole-diagnostics",
        ((*DQN_CARTPOLE, "--seed", "0"),),
        lambda dirs: panels(dirs[0], DQN_DIAGNOSTICS, "DQN on CartPole-v1 (seed 0): what the Q-network learned"),
    ),
    FigureSpec(
        "dqn-extensions",
        tuple((*DQN_CARTPOLE, "--seed", "0", *flags) for flags in EXTENSIONS.values()),
        lambda dirs: curves(
            dirs,
            "eval/return_mean",
            list(EXTENSIONS),
            "DQN's extensions on CartPole-v1 (seed 0)",
            "mean return over 10 episodes",
        ),
    ),
    FigureSpec("tune-ppo-cartpole", (TUNE_PPO,), tune_history),
]
