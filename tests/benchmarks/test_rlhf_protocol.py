"""The RLHF evaluation protocol: its statistics against hand-computed values, its settings, its resumable results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rlhf_protocol as protocol
import run_records
from rlhf_protocol_stats import (
    PROFILE_TAUS,
    Target,
    iqm,
    median,
    normalized_scores,
    performance_profile,
    stratified_bootstrap,
)

from baselines.common.errors import ConfigError


# --------------------------------------------------------------------------------------------- statistics
def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert iqm(np.array([1.0, 2, 3, 4, 5, 6, 7, 100])) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    # 10 seeds: 2 cut from each end (rliable's trim_mean cuts int(0.25 n)), the outliers among them.
    assert iqm(np.array([-900.0, -1, 2, 3, 4, 5, 6, 7, 500, 800])) == pytest.approx(27 / 6)
    assert median(np.array([3.0, 1, 2, 100])) == pytest.approx(2.5)


def test_normalized_score_per_seed_and_undefined_where_ppo_does_not_beat_random() -> None:
    rlhf = np.array([-200.0, 500, 30, 30])
    ppo = np.array([-150.0, 500, 20, 10])
    random = np.array([-1200.0, 20, 20, 20])
    scores = normalized_scores(rlhf, ppo, random)
    assert scores[:2] == pytest.approx([1000 / 1050, 1.0])
    assert np.isnan(scores[2]) and np.isnan(scores[3])  # PPO equal to random; PPO worse than random


def test_bootstrap_interval_of_two_runs_spans_what_resamples_can_give() -> None:
    # Resamples of [0, 1] have mean 0, 0.5 or 1 with probability 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    point, low, high = stratified_bootstrap([np.array([0.0, 1.0])], np.mean, reps=2000, seed=0)
    assert (float(point), float(low), float(high)) == pytest.approx((0.5, 0.0, 1.0))
    constant = stratified_bootstrap([np.full(5, -3.0)], np.mean, reps=200, seed=0)
    assert [float(v) for v in constant] == pytest.approx([-3.0, -3.0, -3.0])


def test_bootstrap_is_stratified_by_task_and_seeded() -> None:
    # Each task keeps its share of the pooled runs: every resample of tasks [0, 0] and [1, 1] has mean 0.5.
    _, low, high = stratified_bootstrap([np.zeros(2), np.ones(2)], np.mean, reps=500, seed=3)
    assert (float(low), float(high)) == pytest.approx((0.5, 0.5))
    scores = [np.array([0.1, 0.4, 0.9, 1.3, 0.7])]
    first = stratified_bootstrap(scores, performance_profile, reps=300, seed=5)
    again = stratified_bootstrap(scores, performance_profile, reps=300, seed=5)
    assert first[1].shape == PROFILE_TAUS.shape
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a, b)
    assert np.all(first[1] <= first[0] + 1e-12) and np.all(first[0] <= first[2] + 1e-12)


def test_performance_profile_counts_scores_strictly_above_each_tau() -> None:
    profile = performance_profile(np.array([0.2, 0.6, 1.0, 1.2]), np.array([0.0, 0.5, 1.0]))
    assert profile == pytest.approx([1.0, 0.75, 0.25])


def test_targets_as_issue_12_states_them() -> None:
    cartpole = Target(threshold=475, min_hit_fraction=0.9)
    assert cartpole.met(np.array([500.0] * 9 + [240.0])) is True
    assert cartpole.met(np.array([500.0] * 8 + [240.0, 474.0])) is False
    pendulum = Target(median=-180, worst=-300)
    assert pendulum.met(np.array([-150.0, -170, -175, -190, -290])) is True
    assert pendulum.met(np.array([-150.0, -170, -175, -190, -310])) is False  # the worst seed misses
    assert Target().met(np.array([-1000.0])) is None and pendulum.met(np.array([])) is None


def test_a_share_of_ppo_on_the_true_reward_as_issue_14_states_it() -> None:
    """Hopper with 700 labels: the median normalized score, (RLHF - random) / (PPO true - random), reaches 0.8."""
    hopper = Target(normalized_median=0.8)
    returns = np.array([2500.0, 2600.0, 900.0])
    assert hopper.met(returns, np.array([0.82, 0.85, 0.3])) is True
    assert hopper.met(returns, np.array([0.82, 0.79, 0.3])) is False
    assert hopper.met(returns, np.array([])) is False  # PPO beat random on no seed: nothing shows the share
    assert hopper.met(returns) is False
    assert "normalized median >= 0.8" in hopper.describe()


# ------------------------------------------------------------------------------------------------- settings
def test_seed_sets_are_disjoint_and_report_on_ten_seeds() -> None:
    assert len(protocol.REPORT_SEEDS) >= 10
    assert not set(protocol.TUNING_SEEDS) & set(protocol.REPORT_SEEDS)
    with pytest.raises(ConfigError, match=r"disjoint.*\[3\]"):
        protocol.check_disjoint([0, 1, 2, 3], [3, 100])


def test_set_parses_values_by_field_type() -> None:
    sets = protocol.parse_sets(
        ["total_steps=4096", "random-answer-rate=0.1", "teacher=mistake", "teacher_epsilon=none", "query=entropy"]
    )
    assert sets == {
        "total_steps": 4096,
        "random_answer_rate": pytest.approx(0.1),
        "teacher": "mistake",
        "teacher_epsilon": None,
        "query": "entropy",
    }
    assert isinstance(sets["total_steps"], int)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nonsense=1", "not an RLHFConfig field"),
        ("total_steps=many", "total_steps=many"),
        ("reward_model=cnn", "reward_model=cnn"),
        ("labels", "KEY=VALUE"),
        ("seed=3", "--seeds"),
        ("teacher=human", "simulated teacher"),
    ],
)
def test_bad_set_is_a_one_line_error(item: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=message):
        protocol.parse_sets([item])
    assert protocol.main(["--set", item, "--no-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_set_value_the_config_refuses_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert protocol.main(["--set", "random_answer_rate=0.6", "--no-run", "--rows", "cartpole-*"]) == 2
    err = capsys.readouterr().err
    assert "--random-answer-rate must be in [0, 0.5)" in err and err.count("\n") == 1
    assert protocol.main(["--rows", "walker-*", "--no-run"]) == 2
    assert "matches no row" in capsys.readouterr().err


def test_rows_by_name_or_glob() -> None:
    names = [row.name for row in protocol.select_rows("pendulum-*,acrobot-oracle")]
    assert names[-1] == "acrobot-oracle" and len(names) == 6 and all(n.startswith("pendulum") for n in names[:5])


def test_the_default_rows_leave_out_the_long_mujoco_rows_that_globs_still_reach() -> None:
    default = {row.name for row in protocol.select_rows(None)}
    assert "invertedpendulum-oracle" in default and "pendulum-oracle-100k" in default
    assert not any(name.startswith(("hopper", "doublependulum")) for name in default)
    assert len(protocol.select_rows("hopper-*")) == 4
    assert len(protocol.select_rows("*")) == len(protocol.ROWS)


def test_ppo_on_the_true_reward_uses_the_loops_ppo_with_the_envs_reward_normalization() -> None:
    acrobot = protocol.select_rows("acrobot-oracle")[0].config({})
    loop_ppo, true_ppo = acrobot.ppo(), protocol.ppo_true_config(acrobot)
    assert not loop_ppo.normalize_reward and true_ppo.normalize_reward
    assert dataclasses.replace(true_ppo, normalize_reward=False) == loop_ppo
    pendulum = protocol.select_rows("pendulum-oracle-100k")[0].config({})
    assert protocol.ppo_true_config(pendulum) == pendulum.ppo()  # Pendulum's PPO does not normalize rewards


def test_the_double_pendulums_entropy_bonus_reaches_both_sides_of_the_comparison() -> None:
    """The loop's row adds PPO's entropy bonus; PPO on the true reward, the reference, must get it too."""
    for row in protocol.select_rows("doublependulum-*"):
        config = row.config({})
        assert config.ppo().ent_coef == protocol.ppo_true_config(config).ent_coef == 0.01
    assert protocol.select_rows("hopper-oracle-700")[0].config({}).ppo().ent_coef == 0.0


def test_random_policy_returns_use_the_evaluation_seeds() -> None:
    first = protocol.random_policy_returns("Pendulum-v1", 3, seed=7)
    np.testing.assert_allclose(first, protocol.random_policy_returns("Pendulum-v1", 3, seed=7))
    assert first.shape == (3,) and np.all((first <= 0) & (first > -16.3 * 200))
    assert not np.allclose(first, protocol.random_policy_returns("Pendulum-v1", 3, seed=8))
    cartpole = protocol.random_policy_returns("CartPole-v1", 10, seed=0)
    assert 8 <= cartpole.mean() <= 60  # a random CartPole policy falls within a few dozen steps


# ---------------------------------------------------------------------------------------------- results file
def _fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the runs by records made up from the seed; return the list of keys run."""
    calls: list[str] = []

    def fake_run_job(job: protocol.Job, keep_runs: Path | None = None) -> dict[str, Any]:
        calls.append(job.key)
        value = {"rlhf": -200.0, "ppo": -150.0, "random": -1200.0}[job.kind] + job.seed
        return protocol.make_record(job, {"eval_return_mean": value, "env_steps": 100_000}, 10.0)

    monkeypatch.setattr(protocol, "run_job", fake_run_job)
    return calls


def test_a_rerun_skips_finished_runs_and_resumes_an_interrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_runs(monkeypatch)
    results, markdown = tmp_path / "results.jsonl", tmp_path / "table.md"
    argv = ["--rows", "pendulum-oracle-100k,pendulum-mistake", "--seeds", "tuning", "--num-seeds", "2",
            "--jobs", "1", "--results", str(results), "--markdown", str(markdown), "--plot", str(tmp_path / "p.html"),
            "--reps", "200"]  # fmt: skip
    assert protocol.main(argv) == 0
    assert len(calls) == 8  # 2 rows x 2 seeds of RLHF; PPO and random shared by the two rows: 2 + 2
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len({r["key"] for r in records}) == 8 and all(r["code"] == run_records.code_version() for r in records)
    out = capsys.readouterr().out
    assert "pendulum-mistake" in out and "0.95" in out  # normalized: (-200 + 1200) / (-150 + 1200) = 0.952
    assert "normalized median [95% CI]" in out  # the targets of the MuJoCo rows are on it
    assert markdown.read_text().startswith("`python benchmarks/rlhf_protocol.py --rows")
    assert (tmp_path / "p.html").stat().st_size > 0

    calls.clear()
    assert protocol.main(argv) == 0
    assert calls == []
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])  # killed while writing the sixth record
    assert protocol.main(argv) == 0
    assert len(calls) == 3
    assert protocol.main([*argv, "--set", "labels=150"]) == 0
    assert len(calls) == 3 + 4  # other settings: the RLHF runs again; PPO and random do not depend on labels


@pytest.mark.slow
def test_end_to_end_on_cartpole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.jsonl"
    argv = ["--rows", "cartpole-oracle", "--seeds", "tuning", "--num-seeds", "2", "--jobs", "1", "--reps", "200",
            "--set", "total_steps=2048", "--set", "labels=10", "--results", str(results),
            "--plot", str(tmp_path / "p.html")]  # fmt: skip
    assert protocol.main(argv) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["kind"], r["seed"]) for r in records) == [
        (k, s) for k in ("ppo", "random", "rlhf") for s in (0, 1)
    ]
    assert all(np.isfinite(r["return"]) and r["wall_seconds"] > 0 for r in records)
    assert all(r["env_steps"] >= 2048 for r in records if r["kind"] != "random")
    assert all(r["summary"]["labels_used"] == 10 for r in records if r["kind"] == "rlhf")
    assert "cartpole-oracle  2  " in capsys.readouterr().out


def test_an_empty_plot_path_means_no_plot() -> None:
    assert protocol.build_parser().parse_args(["--plot", ""]).plot is None
    assert protocol.build_parser().parse_args([]).plot == Path("runs/rlhf_protocol/profile.html")
