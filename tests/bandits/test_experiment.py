"""The book's chapter-2 numbers, reproduced with its settings (2000 runs x 1000 steps, 10 arms), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from baselines.bandits.experiment import FIGURES, AgentResult, BanditConfig, run_bandit, simulate
from baselines.bandits.spec import parse_agent_spec
from rlhf.cli import main


def _run(spec: str, runs: int = 2000, steps: int = 1000, **kwargs: float | bool) -> AgentResult:
    return simulate(parse_agent_spec(spec), runs, steps, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_figure_2_2_epsilon_greedy_and_greedy() -> None:
    eps = _run("eps-greedy:epsilon=0.1")
    greedy = _run("greedy")
    assert eps.reward_mean[-100:].mean() == pytest.approx(1.36, abs=0.05)
    assert eps.optimal_mean[-100:].mean() == pytest.approx(0.80, abs=0.04)
    assert greedy.reward_mean[-100:].mean() == pytest.approx(1.0, abs=0.06)
    assert greedy.optimal_mean[-100:].mean() == pytest.approx(0.35, abs=0.05)


@pytest.mark.slow
def test_figure_2_3_optimistic_beats_realistic_epsilon_greedy_in_optimal_actions() -> None:
    optimistic, realistic = (_run(spec) for spec in FIGURES["2.3"].agents)
    assert optimistic.optimal_mean[-100:].mean() > realistic.optimal_mean[-100:].mean() + 0.05
    # The optimistic agent explores early: worse at first (the book's spike aside).
    assert optimistic.optimal_mean[:5].mean() < realistic.optimal_mean[:5].mean() + 0.1


@pytest.mark.slow
def test_figure_2_4_ucb_beats_epsilon_greedy_in_mean_reward() -> None:
    ucb, eps = (_run(spec) for spec in FIGURES["2.4"].agents)
    assert ucb.reward_mean.mean() > eps.reward_mean.mean() + 0.03


@pytest.mark.slow
def test_figure_2_5_gradient_bandit_baseline_helps() -> None:
    results = {spec: _run(spec, mean_offset=4.0) for spec in FIGURES["2.5"].agents}
    for alpha in ("0.1", "0.4"):
        with_base = results[f"gradient:alpha={alpha},baseline=true"]
        without = results[f"gradient:alpha={alpha},baseline=false"]
        assert with_base.optimal_mean[-100:].mean() > without.optimal_mean[-100:].mean() + 0.1


@pytest.mark.slow
def test_exercise_2_5_constant_step_size_beats_sample_average_when_nonstationary() -> None:
    # 500 runs instead of the book's 2000 keep CI quick; the gap is many standard errors wide.
    sample_average, constant = (
        _run(spec, runs=500, steps=10_000, nonstationary=True) for spec in FIGURES["ex2.5"].agents
    )
    assert constant.reward_mean[-1000:].mean() > sample_average.reward_mean[-1000:].mean() + 0.1
    assert constant.optimal_mean[-1000:].mean() > sample_average.optimal_mean[-1000:].mean() + 0.1


def test_same_seed_same_result_and_agents_share_the_testbed() -> None:
    a = _run("ucb:c=1", runs=50, steps=100, seed=7)
    b = _run("ucb:c=1", runs=50, steps=100, seed=7)
    c = _run("ucb:c=1", runs=50, steps=100, seed=8)
    np.testing.assert_array_equal(a.reward_mean, b.reward_mean)
    assert not np.array_equal(a.reward_mean, c.reward_mean)


def test_run_bandit_writes_the_run_folder_keyed_by_spec(tmp_path: Path) -> None:
    specs = ("eps-greedy:epsilon=0.1", "thompson")
    summary = run_bandit(BanditConfig(agent=specs, runs=100, steps=50, out=tmp_path / "run"))
    assert list(summary["agents"]) == list(specs)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    for spec in specs:
        agent = on_disk["agents"][spec]
        assert len(agent["reward_curve"]) == 50 and len(agent["optimal_curve"]) == 50
        assert all(0.0 <= p <= 1.0 for p in agent["optimal_curve"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["steps"] == 50 and config["testbed"] == "stationary"
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 50 and "reward/thompson" in json.loads(rows[0])
    assert "plotly" in (tmp_path / "run" / "report.html").read_text()[:5_000_000].lower()


def test_cli_figure_2_6_parameter_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bandit", "--figure", "2.6", "--runs", "100", "--steps", "200", "--out", str(tmp_path / "f")]) == 0
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    study = summary["parameter_study"]
    assert set(study) == {"epsilon-greedy", "gradient bandit", "UCB", "greedy with optimistic init, alpha=0.1"}
    assert study["UCB"]["values"][0] == 1 / 16 and len(study["UCB"]["mean_reward"]) == 7
    assert '"algo": "bandit"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "nope"], "unknown agent 'nope'"),
        (["--agent", "greedy", "--runs", "0"], "--runs must be at least 1"),
        (["--agent", "eps-greedy:epsilon=-0.1"], "epsilon must be in [0, 1]"),
        (["--figure", "2.2", "--agent", "greedy"], "--figure sets its own agents"),
        ([], "give at least one --agent"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert main(["bandit", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_unknown_flag_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bandit", "--agent", "greedy", "--no-such-flag", "1"])
    assert exit_info.value.code == 2
