"""`rlhf tabular`: config validation before anything is written, the run folder contract, book numbers end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tyro

from baselines.common.errors import ConfigError
from baselines.common.runs import RunFolder, to_jsonable
from baselines.tabular.experiment import Preset, TabularConfig, run_tabular


def test_cliff_comparison_writes_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "cliff"
    config = TabularConfig(
        preset="cliff",
        algo=("sarsa", "q-learning", "value-iteration"),
        alpha=0.5,
        episodes=40,
        runs=2,
        eval_episodes=2,
        out=out,
    )
    summary = run_tabular(config)
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "summary.json", "report.html"}
    assert json.loads((out / "summary.json").read_text()) == to_jsonable(summary)
    # Top-level keys describe the first algorithm; every algorithm has its own entry.
    assert summary["algo"] == "sarsa" and summary["algos"] == ["sarsa", "q-learning", "value-iteration"]
    assert summary["gamma"] == 1.0 and summary["env_id"] == "GridWorld-v0" and summary["seed"] == 0
    assert len(summary["train_return_curve"]) == 40
    assert set(summary["results"]) == {"sarsa", "q-learning", "value-iteration"}
    dp = summary["results"]["value-iteration"]
    assert dp["value_start"] == -13.0 and dp["eval_return_mean"] == -13.0 and dp["success_rate"] == 1.0
    assert dp["converged"] and dp["iterations"] == 15
    for algo in ("sarsa", "q-learning"):
        result = summary["results"][algo]
        assert len(result["train_return_curve"]) == 40 and 0.0 <= result["success_rate"] <= 1.0
        assert result["eval_episodes"] == 4  # 2 runs x 2 episodes
    rows = RunFolder(out).read_metrics()
    assert [row["step"] for row in rows] == list(range(1, 41))
    assert {"charts/train_return/sarsa", "charts/episode_length/q-learning", "dp/delta/value-iteration"} <= set(rows[0])
    assert "dp/delta/value-iteration" not in rows[-1]  # value iteration stopped after 15 sweeps
    report = (out / "report.html").read_text()
    assert "Return per training episode" in report and "state values and greedy actions" in report


def test_frozenlake_value_iteration_end_to_end(tmp_path: Path) -> None:
    summary = run_tabular(
        TabularConfig(env="FrozenLake-v1", algo=("value-iteration",), gamma=0.99, eval_episodes=200, out=tmp_path)
    )
    assert round(summary["value_start"], 3) == 0.542
    # The goal is the only reward, so the success rate is the mean return (0.74 for the optimal policy).
    assert summary["success_rate"] == summary["eval_return_mean"]
    assert 0.6 < summary["eval_return_mean"] < 0.9
    rows = RunFolder(tmp_path).read_metrics()
    assert set(rows[0]) == {"step", "time", "dp/delta", "dp/policy_changes"}
    assert len(rows) == summary["iterations"]


def test_td_on_an_env_that_is_not_a_grid(tmp_path: Path) -> None:
    summary = run_tabular(
        TabularConfig(env="Taxi-v4", algo=("q-learning",), episodes=5, runs=1, eval_episodes=1, out=tmp_path)
    )
    assert len(summary["train_return_curve"]) == 5 and "value_start" in summary
    assert "is not a grid" in (tmp_path / "report.html").read_text()
    rows = RunFolder(tmp_path).read_metrics()
    assert {"charts/train_return", "charts/episode_length", "charts/epsilon"} <= set(rows[0])


@pytest.mark.parametrize(("preset", "gamma"), [("sutton-4x4", 1.0), ("sutton-5x5", 0.9), ("cliff", 1.0)])
def test_gamma_defaults_to_the_book_value(preset: Preset, gamma: float) -> None:
    assert TabularConfig(preset=preset, algo=("sarsa",)).resolved().gamma == gamma
    assert TabularConfig(env="FrozenLake-v1", algo=("sarsa",)).resolved().gamma == 0.99


def test_command_line_repeats_algo() -> None:
    config = tyro.cli(
        TabularConfig,
        args=["--env", "GridWorld-v0", "--preset", "windy", "--algo", "sarsa", "--algo", "q-learning", "--ucb-c", "2"],
    )
    assert config.algo == ("sarsa", "q-learning") and config.preset == "windy" and config.ucb_c == 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"env": "NoSuchEnv-v0"}, "tabular envs include GridWorld-v0, FrozenLake-v1"),
        ({"env": "Taxi-v3"}, "Taxi-v4"),
        ({"env": "CartPole-v1", "algo": ("value-iteration",)}, "needs a transition model P; CartPole-v1 has none"),
        ({"env": "CartPole-v1"}, "need discrete observations and actions"),
        ({"env": "FrozenLake-v1", "preset": "cliff"}, "--preset applies to GridWorld-v0 only"),
        ({"preset": "mountain"}, "unknown GridWorld preset"),
        ({"algo": ()}, "give at least one --algo"),
        ({"algo": ("td-lambda",)}, "unknown --algo 'td-lambda'"),
        ({"algo": ("sarsa", "sarsa")}, "once"),
        ({"gamma": 1.5}, "--gamma must be in [0, 1]"),
        ({"alpha": 0.0}, "--alpha must be in (0, 1]"),
        ({"epsilon": -0.1}, "--epsilon must be in [0, 1]"),
        ({"epsilon_decay": 1.5}, "--epsilon-decay"),
        ({"temperature": 0.0}, "--temperature must be > 0"),
        ({"ucb_c": -1.0}, "--ucb-c must be >= 0"),
        ({"episodes": 0}, "--episodes must be at least 1"),
        ({"runs": 0}, "--runs must be at least 1"),
        ({"theta": 0.0}, "--theta must be a finite number > 0"),
        ({"eval_episodes": 0}, "--eval-episodes must be at least 1"),
    ],
)
def test_bad_input_raises_config_error_before_writing(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"algo": ("sarsa",), "out": tmp_path / "run"} | overrides
    with pytest.raises(ConfigError) as error:
        run_tabular(TabularConfig(**settings))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()
