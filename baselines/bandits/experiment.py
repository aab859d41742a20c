"""`rlhf bandit`: run agents on a vectorized testbed and write a run folder with a report.

``--figure`` reproduces the Sutton & Barto (2nd ed.) chapter-2 experiments with the book's settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import tyro

from baselines.bandits.spec import AgentSpec, parse_agent_spec
from baselines.bandits.testbeds import BanditTestbed
from baselines.common.errors import check
from baselines.common.progress import progress_bar
from baselines.common.report import Report, add_curve_with_band, color, smooth
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir

if TYPE_CHECKING:
    import plotly.graph_objects as go

FigureName = Literal["2.2", "2.3", "2.4", "2.5", "2.6", "ex2.5"]
Testbed = Literal["stationary", "nonstationary"]


@dataclass(frozen=True)
class BanditConfig:
    """Run bandit agents on a k-armed testbed (Sutton & Barto chapter 2)."""

    agent: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Agent spec NAME[:key=value,...]; repeat the flag for several agents. Names: greedy, eps-greedy,
    optimistic, ucb, gradient, thompson; keys: epsilon, alpha, q0, c, baseline."""
    runs: int = 2000
    """Independent bandit problems, simulated together."""
    steps: int | None = None
    """Steps per run (default 1000, or the figure's)."""
    arms: int = 10
    """Arms per bandit."""
    testbed: Testbed | None = None
    """stationary (q* ~ N(offset, 1)) or nonstationary (random walks, sd 0.01); default stationary."""
    mean_offset: float | None = None
    """Mean of the true action values (default 0; figure 2.5 uses 4)."""
    walk_std: float = 0.01
    """Standard deviation of the non-stationary random walk per step."""
    figure: FigureName | None = None
    """Reproduce a book experiment: its agents, steps, testbed and plot (2.6: parameter study)."""
    seed: int = 0
    """Seed of the testbed and the agents."""
    out: Path | None = None
    """Run folder (default runs/bandit-<time>)."""
    track: bool = False
    """Also log to wandb (offline unless logged in)."""

    def resolved(self) -> BanditConfig:
        """Fill in defaults and the figure's settings; raise ConfigError on invalid input."""
        check(self.runs >= 1, f"--runs must be at least 1, got {self.runs}")
        check(self.arms >= 2, f"--arms must be at least 2, got {self.arms}")
        check(self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        check(self.walk_std >= 0, f"--walk-std must be >= 0, got {self.walk_std}")
        check(math.isfinite(self.walk_std), f"--walk-std must be a finite number, got {self.walk_std}")
        check(
            self.mean_offset is None or math.isfinite(self.mean_offset),
            f"--mean-offset must be a finite number, got {self.mean_offset}",
        )
        if self.figure is not None:
            check(not self.agent, "--figure sets its own agents; drop --agent or drop --figure")
            book = FIGURES[self.figure]
            cfg = replace(
                self,
                agent=book.agents,
                steps=self.steps or book.steps,
                testbed=self.testbed or book.testbed,
                mean_offset=book.mean_offset if self.mean_offset is None else self.mean_offset,
            )
        else:
            check(bool(self.agent), "give at least one --agent SPEC (e.g. --agent eps-greedy:epsilon=0.1)")
            cfg = replace(
                self,
                steps=self.steps or 1000,
                testbed=self.testbed or "stationary",
                mean_offset=self.mean_offset or 0.0,
            )
        check(len(set(cfg.agent)) == len(cfg.agent), "each --agent spec may be given once")
        for spec in cfg.agent:
            parse_agent_spec(spec)
        return replace(cfg, out=cfg.out or default_run_dir("bandit", f"fig{cfg.figure}" if cfg.figure else None))


@dataclass(frozen=True)
class BookFigure:
    agents: tuple[str, ...]
    steps: int = 1000
    testbed: Testbed = "stationary"
    mean_offset: float = 0.0
    # For the parameter study: agent family -> (parameter name, spec template, exponents of 2).
    study: tuple[tuple[str, str, str, tuple[int, ...]], ...] = ()


def _study_specs(study: tuple[tuple[str, str, str, tuple[int, ...]], ...]) -> tuple[str, ...]:
    return tuple(template.format(2.0**e) for _, _, template, exponents in study for e in exponents)


_STUDY_2_6 = (
    ("epsilon-greedy", "epsilon", "eps-greedy:epsilon={}", tuple(range(-7, -1))),
    ("gradient bandit", "alpha", "gradient:alpha={}", tuple(range(-5, 3))),
    ("UCB", "c", "ucb:c={}", tuple(range(-4, 3))),
    (
        "greedy with optimistic init, alpha=0.1",
        "q0",
        "optimistic:q0={},alpha=0.1,epsilon=0",
        tuple(range(-2, 3)),
    ),
)

FIGURES: dict[str, BookFigure] = {
    "2.2": BookFigure(("greedy", "eps-greedy:epsilon=0.01", "eps-greedy:epsilon=0.1")),
    "2.3": BookFigure(("optimistic:q0=5,epsilon=0,alpha=0.1", "eps-greedy:epsilon=0.1,q0=0,alpha=0.1")),
    "2.4": BookFigure(("ucb:c=2", "eps-greedy:epsilon=0.1")),
    "2.5": BookFigure(
        (
            "gradient:alpha=0.1,baseline=true",
            "gradient:alpha=0.1,baseline=false",
            "gradient:alpha=0.4,baseline=true",
            "gradient:alpha=0.4,baseline=false",
        ),
        mean_offset=4.0,
    ),
    "2.6": BookFigure(_study_specs(_STUDY_2_6), study=_STUDY_2_6),
    "ex2.5": BookFigure(
        ("eps-greedy:epsilon=0.1", "eps-greedy:epsilon=0.1,alpha=0.1"), steps=10_000, testbed="nonstationary"
    ),
}


@dataclass
class AgentResult:
    """Per-step statistics over runs for one agent (arrays of shape ``(steps,)``)."""

    spec: str
    reward_mean: np.ndarray
    reward_std: np.ndarray
    optimal_mean: np.ndarray
    regret_mean: np.ndarray
    seconds: float

    def summary(self, runs: int) -> dict[str, Any]:
        steps = len(self.reward_mean)
        tail = min(100, steps)
        final_optimal = float(self.optimal_mean[-tail:].mean())
        smoothed = smooth(self.optimal_mean, 50)
        reached = np.flatnonzero(smoothed >= 0.9 * final_optimal)
        return {
            "reward_curve": self.reward_mean,
            "optimal_curve": self.optimal_mean,
            "mean_reward": float(self.reward_mean.mean()),
            "final_reward": float(self.reward_mean[-tail:].mean()),
            "final_optimal": final_optimal,
            "cumulative_regret": float(self.regret_mean.sum()),
            "final_regret_per_step": float(self.regret_mean[-tail:].mean()),
            "steps_to_90pct_of_final_optimal": int(reached[0]) + 1 if len(reached) else None,
            "seconds": self.seconds,
        }


def simulate(
    spec: AgentSpec,
    runs: int,
    steps: int,
    arms: int = 10,
    nonstationary: bool = False,
    mean_offset: float = 0.0,
    walk_std: float = 0.01,
    seed: int = 0,
    on_progress: Callable[[int], object] | None = None,
) -> AgentResult:
    """Run one agent on ``runs`` bandits for ``steps`` steps, all runs at once.

    Every agent sees the same true values for a given seed (common random numbers across agents).
    """
    testbed = BanditTestbed(runs, arms, np.random.default_rng([seed, 0]), nonstationary, mean_offset, walk_std)
    agent = spec.build(runs, arms, np.random.default_rng([seed, 1]))
    reward_mean = np.empty(steps)
    reward_std = np.empty(steps)
    optimal_mean = np.empty(steps)
    regret_mean = np.empty(steps)
    start = time.perf_counter()
    for t in range(steps):
        actions = agent.act()
        true_values = testbed.true_values(actions)
        rewards = testbed.pull(actions, true_values)
        agent.update(actions, rewards)
        reward_mean[t] = rewards.mean()
        reward_std[t] = rewards.std()
        optimal_mean[t] = np.count_nonzero(true_values >= testbed.best_value) / runs
        regret_mean[t] = testbed.best_value.mean() - true_values.mean()
        testbed.advance()
        if on_progress is not None and (t + 1) % 100 == 0:
            on_progress(100)
    if on_progress is not None:
        on_progress(steps % 100)
    return AgentResult(spec.text, reward_mean, reward_std, optimal_mean, regret_mean, time.perf_counter() - start)


def run_bandit(config: BanditConfig) -> dict[str, Any]:
    """Validate ``config``, run every agent, write the run folder; return the summary."""
    cfg = config.resolved()
    assert cfg.out is not None and cfg.steps is not None and cfg.mean_offset is not None
    specs = [parse_agent_spec(s) for s in cfg.agent]
    folder = RunFolder.create(cfg.out, cfg)
    results: list[AgentResult] = []
    with (
        MetricsLogger(folder, cfg, cfg.track) as logger,
        progress_bar(len(specs) * cfg.steps, "bandit steps") as bar,
    ):
        for spec in specs:
            results.append(
                simulate(
                    spec,
                    cfg.runs,
                    cfg.steps,
                    cfg.arms,
                    cfg.testbed == "nonstationary",
                    cfg.mean_offset,
                    cfg.walk_std,
                    cfg.seed,
                    bar.update,
                )
            )
        for t in range(cfg.steps):
            row: dict[str, float] = {}
            for r in results:
                row[f"reward/{r.spec}"] = float(r.reward_mean[t])
                row[f"optimal/{r.spec}"] = float(r.optimal_mean[t])
            logger.log(row, step=t + 1)
    summary: dict[str, Any] = {
        "algo": "bandit",
        "figure": cfg.figure,
        "runs": cfg.runs,
        "steps": cfg.steps,
        "arms": cfg.arms,
        "testbed": cfg.testbed,
        "seed": cfg.seed,
        "agents": {r.spec: r.summary(cfg.runs) for r in results},
    }
    if cfg.figure is not None and FIGURES[cfg.figure].study:
        summary["parameter_study"] = parameter_study(FIGURES[cfg.figure].study, summary["agents"])
    folder.write_summary(summary)
    write_report(folder, cfg, results, summary)
    return summary


def parameter_study(
    study: tuple[tuple[str, str, str, tuple[int, ...]], ...], agents: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Figure 2.6: mean reward over all steps as a function of each family's parameter."""
    out: dict[str, dict[str, Any]] = {}
    for family, parameter, template, exponents in study:
        values = [2.0**e for e in exponents]
        out[family] = {
            "parameter": parameter,
            "values": values,
            "mean_reward": [agents[template.format(v)]["mean_reward"] for v in values],
        }
    return out


def parameter_study_figure(study: dict[str, Any], steps: int, runs: int) -> go.Figure:
    """Figure 2.6: each family's mean reward over the first ``steps`` steps against its parameter (log2 axis)."""
    import plotly.graph_objects as go  # here, not at the top: `rlhf bandit --help` does not load plotly

    fig = go.Figure()
    for i, (family, points) in enumerate(study.items()):
        fig.add_trace(
            go.Scatter(
                x=points["values"],
                y=points["mean_reward"],
                name=f"{family} ({points['parameter']})",
                mode="lines+markers",
                line={"color": color(i)},
            )
        )
    ticks = [2.0**e for e in range(-7, 3)]
    labels = ["1/128", "1/64", "1/32", "1/16", "1/8", "1/4", "1/2", "1", "2", "4"]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=labels, title="epsilon / alpha / c / Q0")
    fig.update_yaxes(title=f"average reward over the first {steps} steps")
    return fig.update_layout(title=f"Parameter study, figure 2.6 ({runs} runs)", template="plotly_white", height=450)


def write_report(folder: RunFolder, cfg: BanditConfig, results: list[AgentResult], summary: dict[str, Any]) -> None:
    import plotly.graph_objects as go  # here, not at the top: `rlhf bandit --help` does not load plotly

    title = f"Bandits: figure {cfg.figure}" if cfg.figure else "Bandits"
    report = Report(
        title,
        f"{cfg.runs} runs x {cfg.steps} steps, {cfg.arms} arms, {cfg.testbed} testbed, "
        f"mean offset {cfg.mean_offset}, seed {cfg.seed}. Bands: 95% interval of the mean over runs.",
    )
    if "parameter_study" in summary:
        report.figure(parameter_study_figure(summary["parameter_study"], cfg.steps or 0, cfg.runs))
    steps = np.arange(1, (cfg.steps or 0) + 1)
    window = 1 if (cfg.steps or 0) <= 1000 else 50
    reward_fig, optimal_fig, regret_fig = go.Figure(), go.Figure(), go.Figure()
    for i, r in enumerate(results):
        half = 1.96 * r.reward_std / np.sqrt(cfg.runs)
        mean = smooth(r.reward_mean, window)
        add_curve_with_band(reward_fig, steps, mean, mean - half, mean + half, r.spec, color(i))
        opt = smooth(r.optimal_mean, window)
        half_opt = 1.96 * np.sqrt(opt * (1 - opt) / cfg.runs)
        add_curve_with_band(
            optimal_fig, steps, 100 * opt, 100 * (opt - half_opt), 100 * (opt + half_opt), r.spec, color(i)
        )
        regret_fig.add_trace(go.Scatter(x=steps, y=np.cumsum(r.regret_mean), name=r.spec, line={"color": color(i)}))
    if len(results) <= 10:
        smoothing = f" (moving average over {window} steps)" if window > 1 else ""
        reward_fig.update_layout(title="Average reward" + smoothing, xaxis_title="step", yaxis_title="reward")
        optimal_fig.update_layout(title="% optimal action" + smoothing, xaxis_title="step", yaxis_title="%")
        regret_fig.update_layout(title="Cumulative regret", xaxis_title="step", yaxis_title="regret")
        for fig in (reward_fig, optimal_fig, regret_fig):
            fig.update_layout(height=420)
            report.figure(fig)
    report.heading("Convergence summary")
    report.table(
        [
            "agent",
            "mean reward",
            "final reward (last 100)",
            "final % optimal (last 100)",
            "steps to 90% of final % optimal",
            "cumulative regret",
            "seconds",
        ],
        [
            [
                spec,
                s["mean_reward"],
                s["final_reward"],
                100 * s["final_optimal"],
                s["steps_to_90pct_of_final_optimal"] or "-",
                s["cumulative_regret"],
                s["seconds"],
            ]
            for spec, s in summary["agents"].items()
        ],
    )
    report.write(folder.report_path)
