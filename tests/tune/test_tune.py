"""The tuner: trials as run folders, a resumable SQLite study, pruning, the report and a best config that the
training command reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from baselines.common.errors import ConfigError
from baselines.dqn import DQNConfig
from baselines.tune import TuneConfig, algorithms, make_objective, open_study, run_tune


def _small_space(trial: optuna.Trial, env: str) -> dict[str, object]:
    """A cheap space for tests: tiny networks, a few gradient steps."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "n_step": trial.suggest_categorical("n_step", [1, 3]),
        "double_dqn": trial.suggest_categorical("double_dqn", [False, True]),
        "hidden_sizes": (16, 16),
        "learning_starts": 100,
        "train_freq": 50,
        "gradient_steps": 5,
    }


@pytest.fixture
def small_dqn(monkeypatch: pytest.MonkeyPatch) -> None:
    table = algorithms()
    small = {**table, "dqn": table["dqn"].__class__(table["dqn"].config_class, table["dqn"].train, _small_space)}
    monkeypatch.setattr("baselines.tune.algorithms", lambda: small)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Target and region quantiles")  # importances of a 3-trial study
def test_study_trials_report_best_config_and_resume(tmp_path: Path, small_dqn: None) -> None:
    out = tmp_path / "study"
    config = TuneConfig("dqn", trials=3, total_steps=400, evaluations=2, eval_episodes=2, startup_trials=2, out=out)
    summary = run_tune(config)
    assert summary["trials"] == 3 and summary["complete"] + summary["pruned"] == 3
    assert (out / "study.sqlite").exists()
    trial_dirs = sorted((out / "trials").iterdir())
    assert [d.name for d in trial_dirs] == ["trial-0000", "trial-0001", "trial-0002"]
    assert all((d / "config.json").exists() for d in trial_dirs)
    html = (out / "report.html").read_text()
    for title in ("Optimization history", "Parameter importances", "Parallel coordinates", "Slices"):
        assert title in html
    # The best config trains as it was tuned: `rlhf dqn --config best_config.json` starts from these values.
    best = DQNConfig.cli_default(None, summary["best_config"], None)
    best_trial = json.loads((out / "trials" / f"trial-{summary['best_trial']:04d}" / "config.json").read_text())
    for field in ("learning_rate", "n_step", "double_dqn", "hidden_sizes", "total_steps", "train_freq"):
        assert json.loads(json.dumps(getattr(best, field))) == best_trial[field]
    # Resuming the study runs only the missing trials.
    summary = run_tune(TuneConfig("dqn", trials=4, total_steps=400, evaluations=2, eval_episodes=2, out=out))
    assert summary["trials"] == 4 and len(list((out / "trials").iterdir())) == 4
    with pytest.raises(ConfigError, match="holds a study"):
        run_tune(TuneConfig("dqn", trials=5, total_steps=800, out=out))


@pytest.mark.slow
def test_a_trial_below_the_pruners_bar_is_pruned(tmp_path: Path, small_dqn: None) -> None:
    cfg = TuneConfig("dqn", trials=1, total_steps=400, evaluations=2, eval_episodes=2, out=tmp_path).resolved()
    study = open_study(cfg, pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    study.optimize(make_objective(cfg, algorithms()["dqn"]), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [200]  # stopped at the first evaluation
    assert (tmp_path / "trials" / "trial-0000" / "config.json").exists()
    assert not (tmp_path / "trials" / "trial-0000" / "summary.json").exists()


def test_search_spaces_give_valid_configs(tmp_path: Path) -> None:
    for name, algorithm in algorithms().items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(20):
            trial = study.ask()
            values = algorithm.search_space(trial, "CartPole-v1")
            algorithm.config_class.defaults_for("CartPole-v1", **values, out=tmp_path / name).validate()
            study.tell(trial, 0.0)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--trials"):
        run_tune(TuneConfig("dqn", trials=0, out=tmp_path / "a"))
    with pytest.raises(ConfigError, match="unknown env id"):
        run_tune(TuneConfig("dqn", env="NoSuchEnv-v0", out=tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="pick another --out"):
        run_tune(TuneConfig("dqn", trials=1, out=tmp_path / "c"))
    # What every trial would fail on is refused before the study starts.
    with pytest.raises(ConfigError, match="DQN needs discrete actions"):
        run_tune(TuneConfig("dqn", env="Pendulum-v1", trials=2, out=tmp_path / "d"))
    with pytest.raises(ConfigError, match="--device must be cpu or cuda"):
        run_tune(TuneConfig("dqn", device="tpu", trials=2, out=tmp_path / "e"))
    with pytest.raises(ConfigError, match="--timeout must be positive"):
        run_tune(TuneConfig("dqn", timeout=0, trials=2, out=tmp_path / "f"))
    assert not any((tmp_path / name).exists() for name in "def")


@pytest.mark.filterwarnings("ignore:The number of trials is too small")
def test_a_study_whose_trials_all_fail_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = algorithms()

    def impossible(trial: optuna.Trial, env: str) -> dict[str, object]:
        return {"batch_size": 10**9, "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3)}

    dqn = table["dqn"].__class__(table["dqn"].config_class, table["dqn"].train, impossible)
    monkeypatch.setattr("baselines.tune.algorithms", lambda: {**table, "dqn": dqn})
    with pytest.raises(ConfigError, match="no trial finished: 2 failed"):
        run_tune(TuneConfig("dqn", trials=2, total_steps=512, out=tmp_path))
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == 2  # the results are still written


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Target and region quantiles")
def test_ppo_trials_run_through_the_same_tuner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = algorithms()
    if "ppo" not in table:
        pytest.skip("baselines/ppo.py is not in this checkout")

    def tiny(trial: optuna.Trial, env: str) -> dict[str, object]:
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True), "hidden_sizes": (16,)}

    ppo = table["ppo"].__class__(table["ppo"].config_class, table["ppo"].train, tiny)
    monkeypatch.setattr("baselines.tune.algorithms", lambda: {**table, "ppo": ppo})
    summary = run_tune(TuneConfig("ppo", trials=2, total_steps=1024, evaluations=2, eval_episodes=2, out=tmp_path))
    assert summary["tuned_algo"] == "ppo" and summary["complete"] + summary["pruned"] == 2
    assert json.loads((tmp_path / "best_config.json").read_text())["hidden_sizes"] == [16]


def _fake_dqn(monkeypatch: pytest.MonkeyPatch, outs: list[Path]) -> None:
    """A DQN whose runs take no time: seed S evaluates S + 1 at step 100 and S + 2 at step 200, and ends at 10 S."""
    table = algorithms()

    def train(config: DQNConfig, on_eval: object = None) -> dict[str, object]:
        assert callable(on_eval)
        outs.append(config.out)  # type: ignore[arg-type]
        on_eval(100, config.seed + 1.0)
        on_eval(200, config.seed + 2.0)
        return {"eval_return_mean": 10.0 * config.seed, "wall_seconds": 1.0, "env_steps": 200}

    dqn = table["dqn"].__class__(table["dqn"].config_class, train, _small_space)
    monkeypatch.setattr("baselines.tune.algorithms", lambda: {**table, "dqn": dqn})


@pytest.mark.filterwarnings("ignore:Target and region quantiles")
def test_the_objective_is_the_mean_over_the_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outs: list[Path] = []
    _fake_dqn(monkeypatch, outs)
    summary = run_tune(
        TuneConfig("dqn", trials=2, total_steps=200, evaluations=2, seed=5, seeds_per_trial=3, out=tmp_path)
    )
    assert summary["complete"] == 2 and summary["seeds_per_trial"] == 3
    assert summary["best_value"] == pytest.approx(60.0) and summary["best_seed_returns"] == [50.0, 60.0, 70.0]
    assert summary["best_return_std"] == pytest.approx(np.std([50.0, 60.0, 70.0]))
    assert outs[:3] == [tmp_path / "trials" / "trial-0000" / f"seed-{seed}" for seed in (5, 6, 7)]
    study = open_study(
        TuneConfig("dqn", total_steps=200, evaluations=2, seed=5, seeds_per_trial=3, out=tmp_path).resolved()
    )
    for trial in study.trials:
        assert trial.value == pytest.approx(60.0)
        assert {k: v for k, v in trial.user_attrs.items() if k.startswith("return_seed_")} == {
            "return_seed_5": 50.0,
            "return_seed_6": 60.0,
            "return_seed_7": 70.0,
        }
        assert trial.user_attrs["wall_seconds"] == 3.0
        # The pruner sees, at each evaluation of the k-th seed, the mean over seeds 0..k at that evaluation, at the
        # env steps of the trial so far: values that mean the same in every trial at a given step.
        assert trial.intermediate_values == pytest.approx({100: 6.0, 200: 7.0, 300: 6.5, 400: 7.5, 500: 7.0, 600: 8.0})


@pytest.mark.filterwarnings("ignore:Target and region quantiles")
@pytest.mark.filterwarnings("ignore:The number of trials is too small")
def test_seeds_per_trial_is_part_of_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dqn(monkeypatch, [])
    run_tune(TuneConfig("dqn", trials=1, total_steps=200, evaluations=2, seeds_per_trial=2, out=tmp_path))
    with pytest.raises(ConfigError, match=r"holds a study with .*'seeds_per_trial': 2"):
        run_tune(TuneConfig("dqn", trials=2, total_steps=200, evaluations=2, seeds_per_trial=3, out=tmp_path))
    summary = run_tune(TuneConfig("dqn", trials=2, total_steps=200, evaluations=2, seeds_per_trial=2, out=tmp_path))
    assert summary["trials"] == 2 and summary["best_seed_returns"] == [0.0, 10.0]
    with pytest.raises(ConfigError, match="--seeds-per-trial must be at least 1, got 0"):
        run_tune(TuneConfig("dqn", trials=1, seeds_per_trial=0, out=tmp_path / "zero"))
    assert not (tmp_path / "zero").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The number of trials is too small")
def test_each_seed_of_a_trial_is_a_run_folder(tmp_path: Path, small_dqn: None) -> None:
    summary = run_tune(
        TuneConfig("dqn", trials=1, total_steps=400, evaluations=2, eval_episodes=2, seeds_per_trial=2, out=tmp_path)
    )
    seeds = [tmp_path / "trials" / "trial-0000" / f"seed-{seed}" for seed in (0, 1)]
    finals = [json.loads((d / "summary.json").read_text())["eval_return_mean"] for d in seeds]
    assert [json.loads((d / "config.json").read_text())["seed"] for d in seeds] == [0, 1]
    assert summary["best_value"] == pytest.approx(np.mean(finals)) and summary["best_seed_returns"] == finals
