"""`rlhf tabular`: dynamic programming and TD control on small discrete envs; writes a run folder with a report.

``metrics.jsonl`` has one row per step: an iteration for DP (``dp/delta``, ``dp/policy_changes``), an episode for
TD methods (``charts/train_return``, ``charts/episode_length``, ``charts/epsilon``; means over runs). When several
``--algo`` run, every key ends in ``/<algo>`` and a row holds all algorithms' values at that step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import plotly.graph_objects as go
import tyro

from baselines.common.errors import check
from baselines.common.progress import progress
from baselines.common.report import Report, add_curve_with_band, color, mean_and_band, smooth
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir
from baselines.tabular import envs
from baselines.tabular.dp import DPResult, model_from_env, policy_iteration, q_values, value_iteration
from baselines.tabular.td import EXPLORATIONS, TD_ALGOS, Exploration, ExplorationKind, TDAlgo, train_td

DP_ALGOS = ("value-iteration", "policy-iteration")
ALGOS = DP_ALGOS + TD_ALGOS
Preset = Literal["sutton-4x4", "sutton-5x5", "windy", "cliff"]
# The discount each book example uses; any other env defaults to 0.99.
BOOK_GAMMA = {"sutton-4x4": 1.0, "sutton-5x5": 0.9, "windy": 1.0, "cliff": 1.0}
TRAIN_STEP_CAP = 10_000  # time limit for training episodes on envs that have none (CliffWalking-v1)


@dataclass(frozen=True)
class TabularConfig:
    """Dynamic programming and TD control on discrete envs (Sutton & Barto chapters 4 and 6)."""

    env: str = envs.GRIDWORLD_ID
    """Gymnasium env id with discrete states and actions (GridWorld-v0, FrozenLake-v1, CliffWalking-v1, Taxi-v4)."""
    preset: Preset | None = None
    """GridWorld-v0 layout: sutton-4x4 (Ex. 4.1), sutton-5x5 (Ex. 3.5), windy (Ex. 6.5), cliff (Ex. 6.6)."""
    algo: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """value-iteration, policy-iteration, q-learning, sarsa, expected-sarsa or double-q; repeat to compare."""
    gamma: float | None = None
    """Discount (default: the preset's book value, else 0.99)."""
    alpha: float = 0.1
    """TD step size."""
    exploration: ExplorationKind = "epsilon-greedy"
    """Behaviour policy of TD methods: epsilon-greedy, boltzmann or ucb."""
    epsilon: float = 0.1
    """Epsilon-greedy: probability of a random action."""
    epsilon_decay: float = 1.0
    """Epsilon-greedy: epsilon is multiplied by this after every episode (1: constant)."""
    epsilon_min: float = 0.0
    """Epsilon-greedy: floor of the decayed epsilon."""
    temperature: float = 1.0
    """Boltzmann: softmax temperature."""
    ucb_c: float = 1.0
    """UCB: exploration bonus c in Q + c sqrt(ln N(s) / N(s, a))."""
    episodes: int = 500
    """Training episodes per TD run."""
    runs: int = 10
    """Independent TD runs (curves show their mean and a 95% band)."""
    theta: float = 1e-8
    """DP tolerance: stop when no value changes by this much in a sweep."""
    max_iterations: int = 10_000
    """DP cap on sweeps (and on policy-iteration steps)."""
    eval_episodes: int = 100
    """Greedy-policy evaluation episodes (per run for TD methods) on the real env."""
    seed: int = 0
    """Seed of envs and agents."""
    out: Path | None = None
    """Run folder (default runs/tabular-<env>-<time>)."""
    track: bool = False
    """Also log to wandb (offline unless logged in)."""

    def resolved(self) -> TabularConfig:
        """Fill in defaults; raise ConfigError on invalid input (before anything is written)."""
        check(bool(self.algo), f"give at least one --algo; choose from {', '.join(ALGOS)}")
        for name in self.algo:
            check(name in ALGOS, f"unknown --algo '{name}'; choose from {', '.join(ALGOS)}")
        check(len(set(self.algo)) == len(self.algo), "each --algo may be given once")
        gamma = self.gamma if self.gamma is not None else BOOK_GAMMA.get(self.preset or "", 0.99)
        check(0.0 <= gamma <= 1.0, f"--gamma must be in [0, 1], got {gamma}")
        check(0.0 < self.alpha <= 1.0, f"--alpha must be in (0, 1], got {self.alpha}")
        check(self.exploration in EXPLORATIONS, f"--exploration must be one of {', '.join(EXPLORATIONS)}")
        check(0.0 <= self.epsilon <= 1.0, f"--epsilon must be in [0, 1], got {self.epsilon}")
        check(0.0 < self.epsilon_decay <= 1.0, f"--epsilon-decay must be in (0, 1], got {self.epsilon_decay}")
        check(
            0.0 <= self.epsilon_min <= self.epsilon,
            f"--epsilon-min must be in [0, epsilon={self.epsilon}], got {self.epsilon_min}",
        )
        check(self.temperature > 0.0, f"--temperature must be > 0, got {self.temperature}")
        check(self.ucb_c >= 0.0, f"--ucb-c must be >= 0, got {self.ucb_c}")
        check(self.episodes >= 1, f"--episodes must be at least 1, got {self.episodes}")
        check(self.runs >= 1, f"--runs must be at least 1, got {self.runs}")
        check(0.0 < self.theta < math.inf, f"--theta must be a finite number > 0, got {self.theta}")
        check(self.max_iterations >= 1, f"--max-iterations must be at least 1, got {self.max_iterations}")
        check(self.eval_episodes >= 1, f"--eval-episodes must be at least 1, got {self.eval_episodes}")
        env = envs.make_env(self.env, self.preset)
        try:
            if any(name in DP_ALGOS for name in self.algo):
                model_from_env(env, self.env)
            envs.table_shape(env, self.env)
        finally:
            env.close()
        return replace(self, gamma=gamma, out=self.out or default_run_dir("tabular", self.env))

    @property
    def exploration_settings(self) -> Exploration:
        return Exploration(
            self.exploration, self.epsilon, self.epsilon_decay, self.epsilon_min, self.temperature, self.ucb_c
        )


@dataclass(frozen=True)
class AlgoResult:
    """One algorithm's outcome. ``q`` (S, A) and ``values`` (S,) are means over runs for TD methods;
    ``eval_returns`` and ``successes`` hold every evaluation episode; ``train_returns`` is (runs, episodes)."""

    algo: str
    q: np.ndarray
    values: np.ndarray
    eval_returns: np.ndarray
    successes: np.ndarray
    seconds: float
    dp: DPResult | None = None
    train_returns: np.ndarray | None = None
    train_lengths: np.ndarray | None = None

    @property
    def actions(self) -> np.ndarray:
        return np.asarray(self.q.argmax(axis=1))

    def summary(self, start: np.ndarray, has_goal: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "algo": self.algo,
            "value_start": float(start @ self.values),
            "eval_return_mean": float(self.eval_returns.mean()),
            "eval_return_std": float(self.eval_returns.std()),
            "eval_episodes": len(self.eval_returns),
            "success_rate": float(self.successes.mean()) if has_goal else None,
            "seconds": self.seconds,
        }
        if self.dp is not None:
            out |= {"iterations": self.dp.iterations, "converged": self.dp.converged}
        if self.train_returns is not None and self.train_lengths is not None:
            tail = max(1, self.train_returns.shape[1] // 10)
            out |= {
                "train_return_curve": self.train_returns.mean(axis=0),
                "train_length_curve": self.train_lengths.mean(axis=0),
                "train_return_last_10pct": float(self.train_returns[:, -tail:].mean()),
                "env_steps": int(self.train_lengths.sum()),
            }
        return out | {"values": self.values, "policy": self.actions}


def _eval_env_steps(n_states: int) -> int:
    """Evaluation time limit on envs without one: a greedy policy this slow is going round in circles."""
    return max(100, 10 * n_states)


def run_dp(cfg: TabularConfig, algo: str) -> AlgoResult:
    """Solve the env's model with value or policy iteration and evaluate the greedy policy on the real env."""
    assert cfg.gamma is not None
    env = envs.make_env(cfg.env, cfg.preset)
    model = model_from_env(env, cfg.env)
    start = time.perf_counter()
    solve = value_iteration if algo == "value-iteration" else policy_iteration
    result = solve(model, cfg.gamma, cfg.theta, cfg.max_iterations)
    seconds = time.perf_counter() - start
    eval_env = envs.make_env(cfg.env, cfg.preset, step_cap=_eval_env_steps(model.n_states))
    eval_seed = int(np.random.SeedSequence([cfg.seed, 1]).generate_state(1)[0])
    returns, successes = envs.rollout(eval_env, result.actions, cfg.eval_episodes, eval_seed, envs.goal_test(env))
    q = q_values(model, result.values, cfg.gamma)
    return AlgoResult(algo, q, result.values, returns, successes, seconds, dp=result)


def run_td(cfg: TabularConfig, algo: str) -> AlgoResult:
    """Train ``cfg.runs`` independent agents and evaluate each one's greedy policy on the real env."""
    assert cfg.gamma is not None
    env = envs.make_env(cfg.env, cfg.preset, step_cap=TRAIN_STEP_CAP)
    n_states, _ = envs.table_shape(env, cfg.env)
    eval_env = envs.make_env(cfg.env, cfg.preset, step_cap=_eval_env_steps(n_states))
    reached_goal = envs.goal_test(env)
    q_tables, train_returns, train_lengths, eval_returns, successes = [], [], [], [], []
    start = time.perf_counter()
    # Every algorithm sees the same seeds: run i of sarsa and of q-learning start from the same env stream.
    for run, seeds in enumerate(np.random.SeedSequence(cfg.seed).spawn(cfg.runs)):
        agent_seed, env_seed, eval_seed = (int(s) for s in seeds.generate_state(3))
        trained = train_td(
            env,
            cast(TDAlgo, algo),
            cfg.episodes,
            cfg.alpha,
            cfg.gamma,
            cfg.exploration_settings,
            np.random.default_rng(agent_seed),
            env_seed=env_seed,
            desc=f"{algo} run {run + 1}/{cfg.runs}",
        )
        greedy = trained.q.argmax(axis=1)
        returns, reached = envs.rollout(eval_env, greedy, cfg.eval_episodes, eval_seed, reached_goal)
        q_tables.append(trained.q)
        train_returns.append(trained.returns)
        train_lengths.append(trained.lengths)
        eval_returns.append(returns)
        successes.append(reached)
    seconds = time.perf_counter() - start
    q_stack = np.stack(q_tables)
    return AlgoResult(
        algo,
        q_stack.mean(axis=0),
        q_stack.max(axis=2).mean(axis=0),
        np.concatenate(eval_returns),
        np.concatenate(successes),
        seconds,
        train_returns=np.stack(train_returns),
        train_lengths=np.stack(train_lengths),
    )


def metric_rows(cfg: TabularConfig, results: list[AlgoResult]) -> list[dict[str, float]]:
    """Row t (from 1): DP iteration t and TD episode t of every algorithm that has one."""

    def key(name: str, algo: str) -> str:
        return f"{name}/{algo}" if len(results) > 1 else name

    exploration = cfg.exploration_settings
    rows: list[dict[str, float]] = []
    for result in results:
        if result.dp is not None:
            series = {"dp/delta": result.dp.deltas, "dp/policy_changes": result.dp.policy_changes}
        else:
            assert result.train_returns is not None and result.train_lengths is not None
            series = {
                "charts/train_return": result.train_returns.mean(axis=0),
                "charts/episode_length": result.train_lengths.mean(axis=0),
            }
            if cfg.exploration == "epsilon-greedy":
                series["charts/epsilon"] = np.array([exploration.epsilon_at(e) for e in range(cfg.episodes)])
        for name, values in series.items():
            for t, value in enumerate(values):
                if t == len(rows):
                    rows.append({})
                rows[t][key(name, result.algo)] = float(value)
    return rows


def run_tabular(config: TabularConfig) -> dict[str, Any]:
    """Validate ``config``, run every algorithm, write the run folder; return the summary."""
    cfg = config.resolved()
    assert cfg.out is not None
    folder = RunFolder.create(cfg.out, cfg)
    results = [run_dp(cfg, a) if a in DP_ALGOS else run_td(cfg, a) for a in progress(cfg.algo, "algorithms")]
    with MetricsLogger(folder, cfg, cfg.track) as logger:
        for t, row in enumerate(metric_rows(cfg, results), start=1):
            logger.log(row, step=t)
    env = envs.make_env(cfg.env, cfg.preset)
    start, has_goal = envs.start_distribution(env), envs.goal_test(env) is not None
    per_algo = {r.algo: r.summary(start, has_goal) for r in results}
    summary: dict[str, Any] = {
        **per_algo[cfg.algo[0]],
        "algo": cfg.algo[0],
        "algos": list(cfg.algo),
        "env_id": cfg.env,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "gamma": cfg.gamma,
        "results": per_algo,
    }
    folder.write_summary(summary)
    write_report(folder, cfg, results, summary)
    return summary


def value_heatmap(env_id: str, preset: str | None, result: AlgoResult) -> go.Figure | None:
    """State values on the grid with the greedy action as an arrow (None for envs that are not grids)."""
    view = envs.grid_view(envs.make_env(env_id, preset))
    if view is None:
        return None
    rows, cols = view.shape
    values = result.values.reshape(view.shape).astype(float)
    text = [["" for _ in range(cols)] for _ in range(rows)]
    for row, col in np.ndindex(rows, cols):
        state, label = row * cols + col, view.labels[row][col]
        if label in ("#", "C"):  # walls and cliffs are never occupied
            values[row, col] = np.nan
            text[row][col] = label
            continue
        ends_here = view.absorbing[state] or label in ("G", "H", "T")
        arrow = "" if ends_here else view.arrows[int(result.actions[state])]
        text[row][col] = f"{label} {arrow}".strip() + f"<br>{values[row, col]:.3g}"
    fig = go.Figure(
        go.Heatmap(z=values, text=text, texttemplate="%{text}", colorscale="Viridis", colorbar={"title": "V"})
    )
    fig.update_yaxes(autorange="reversed", title="row")
    fig.update_xaxes(title="column")
    cell_px = 60 if cols <= 12 else 40
    fig.update_layout(
        title=f"{result.algo}: state values and greedy actions",
        height=min(900, 120 + cell_px * rows),
        width=min(1100, 160 + cell_px * cols),
    )
    return fig


def write_report(folder: RunFolder, cfg: TabularConfig, results: list[AlgoResult], summary: dict[str, Any]) -> None:
    env_name = f"{cfg.env} ({cfg.preset})" if cfg.preset else cfg.env
    report = Report(
        f"Tabular: {env_name}",
        f"gamma {cfg.gamma}, seed {cfg.seed}. TD: alpha {cfg.alpha}, {cfg.exploration} exploration, "
        f"{cfg.runs} runs x {cfg.episodes} episodes; bands: 95% interval of the mean over runs. "
        f"DP: theta {cfg.theta}. Evaluation: greedy policy, {cfg.eval_episodes} episodes"
        + (" per run." if any(r.train_returns is not None for r in results) else "."),
    )
    report.heading("Results")
    headers = ["algorithm", "eval return", "success rate", "V(start)", "DP iterations (converged)"]
    headers += ["train return, last 10% of episodes", "seconds"]
    rows = []
    for algo, s in summary["results"].items():
        iterations = f"{s['iterations']} ({'yes' if s['converged'] else 'no'})" if "iterations" in s else "-"
        success = "-" if s["success_rate"] is None else s["success_rate"]
        train = s.get("train_return_last_10pct", "-")
        rows.append([algo, s["eval_return_mean"], success, s["value_start"], iterations, train, s["seconds"]])
    report.table(headers, rows)
    td_results = [r for r in results if r.train_returns is not None]
    if td_results:
        window = max(1, cfg.episodes // 50)
        fig = go.Figure()
        for i, result in enumerate(td_results):
            assert result.train_returns is not None
            mean, low, high = mean_and_band(smooth(result.train_returns, window), axis=0)
            add_curve_with_band(fig, np.arange(1, cfg.episodes + 1), mean, low, high, result.algo, color(i))
        smoothing = f" (moving average over {window} episodes)" if window > 1 else ""
        fig.update_layout(title="Return per training episode" + smoothing, xaxis_title="episode", height=420)
        fig.update_yaxes(title="sum of rewards during episode")
        report.figure(fig)
    dp_results = [r for r in results if r.dp is not None]
    if dp_results:
        fig = go.Figure()
        for i, result in enumerate(dp_results):
            assert result.dp is not None
            x = np.arange(1, result.dp.iterations + 1)
            fig.add_trace(go.Scatter(x=x, y=result.dp.deltas, name=result.algo, line={"color": color(i)}))
        fig.update_yaxes(type="log", title="largest value change")
        fig.update_layout(title="DP convergence", xaxis_title="iteration (sweep or improvement step)", height=380)
        report.figure(fig)
    report.heading("Value functions")
    for result in results:
        heatmap = value_heatmap(cfg.env, cfg.preset, result)
        if heatmap is None:
            report.text(f"{cfg.env} is not a grid world, so its state values are in summary.json only.")
            break
        caption = "Means over runs of max_a Q(s, a); arrows: greedy action of the mean Q." if result.dp is None else ""
        report.figure(heatmap, caption)
    report.write(folder.report_path)
