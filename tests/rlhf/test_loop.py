"""The RLHF loop end to end with tiny budgets, its label schedule, resume, export/import and bad input."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import baselines.ppo
import rlhf.loop as loop_module
from baselines.common.checkpoint import load_checkpoint
from baselines.common.errors import ConfigError
from rlhf.cli import main
from rlhf.datasets import load_preferences
from rlhf.loop import RLHFConfig, label_schedule, run_rlhf
from rlhf.reward import load_reward_model
from rlhf.store import PreferenceStore

TINY = RLHFConfig(
    env="CartPole-v1", labels=24, total_steps=4096, segment_length=20, label_rounds=4, label_phase=0.5, eval_episodes=3
)


def test_label_schedule_front_loads_and_decays_and_sums_exactly() -> None:
    schedule = label_schedule(200, 10, 0.25)
    assert sum(schedule) == 200 and schedule[0] == 50
    assert all(a >= b for a, b in itertools.pairwise(schedule[1:]))
    assert label_schedule(7, 3, 0.5) == [4, 2, 1]
    assert label_schedule(5, 1, 0.25) == [5]


def test_short_loop_on_cartpole_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = run_rlhf(dataclasses.replace(TINY, eval_every=0, out=out))  # 0: evaluated only at the end
    assert summary["labels_used"] == 24
    assert summary["env_steps"] >= 4096 and summary["eval_episodes"] == 3
    assert 0.0 <= summary["reward_model_accuracy"] <= 1.0
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.html", "checkpoint.pt", "prefs.sqlite"):
        assert (out / name).exists(), name
    assert (out / "reward_model" / "model.safetensors").exists()
    store = PreferenceStore(out / "prefs.sqlite")
    labels = store.effective_labels()
    assert len(labels) == 24 and all(label.labeler == "teacher:oracle" for label in labels)
    assert store.queue_size() == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["labels/total"] == 24 and any("reward/val_accuracy" in r for r in rows)
    assert [r["step"] for r in rows if "eval/return_mean" in r] == [summary["env_steps"]]
    # What the labeling page shows: the loop's last report and the history of its measurements.
    status = store.loop_status()
    assert status is not None
    assert (status.round, status.labels_used, status.label_budget) == (4, 24, 24)
    assert (status.env_steps, status.total_steps) == (summary["env_steps"], 4096)
    assert status.policy_true_return == pytest.approx(summary["eval_return_mean"])
    # The teacher's estimated reliability is on record for the admin page; one labeler alone weighs 1.
    (quality,) = store.labeler_quality().values()
    assert quality.name == "teacher:oracle" and 0 < quality.labels <= 24 and quality.weight == pytest.approx(1.0)
    assert all(r.get("reward/labels_downweighted", 0.0) == 0.0 for r in rows)
    assert status.reward_val_accuracy == pytest.approx(summary["reward_model_accuracy"])
    measured = [p for p in status.history if p.reward_val_accuracy is not None]
    trained = [r for r in rows if "reward/val_accuracy" in r]
    assert [p.env_steps for p in measured] == [r["step"] for r in trained]
    assert [p.reward_val_accuracy for p in measured] == pytest.approx([r["reward/val_accuracy"] for r in trained])


@pytest.mark.slow
def test_loop_learns_cartpole_from_few_labels(tmp_path: Path) -> None:
    """60 labels, 60k steps, three seeds, two of which must reach 300 (a random policy scores ~20).

    One seed is a coin that rounding flips: another CPU's rounding changes a run as a new seed does, and one seed
    of 16 stayed below 300 here (seeds 0-15: 500 on 15, 185 on seed 9; at 40k steps 2 of 16 stayed below). Two of
    three fail together about once in a hundred CPUs; every reward model must still track the true return.
    """
    returns = []
    for seed in (0, 1, 2):
        config = RLHFConfig(env="CartPole-v1", labels=60, total_steps=60_000, eval_every=60_000, seed=seed,
                            out=tmp_path / str(seed))  # fmt: skip
        summary = run_rlhf(config)
        returns.append(summary["eval_return_mean"])
        assert summary["reward_return_correlation"] > 0.5, (seed, summary)
    assert sum(r >= 300.0 for r in returns) >= 2, returns


@pytest.mark.slow
def test_loop_balances_the_mujoco_inverted_pendulum_from_50_labels(tmp_path: Path) -> None:
    """InvertedPendulum-v5 (MuJoCo), 50 labels, 30k steps, three seeds, two of which must balance the whole
    1000-step episode. Tuning seeds 0-5 all ended at 1000 here (4 of 6 already at 10k steps); at 50k steps the
    loop's PPO without reward normalization lost it again on 5 of 6 (the reason for the row's setting)."""
    returns = []
    for seed in (0, 1, 2):
        config = RLHFConfig(env="InvertedPendulum-v5", labels=50, total_steps=30_000, eval_every=30_000, seed=seed,
                            out=tmp_path / str(seed))  # fmt: skip
        returns.append(run_rlhf(config)["eval_return_mean"])
    assert sum(r >= 1000.0 for r in returns) >= 2, returns


def test_interrupted_run_resumes_from_store_and_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config = dataclasses.replace(TINY, out=out)
    real_update = baselines.ppo.ppo_update
    calls = {"n": 0}

    def interrupt_after_three(*args: Any) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the run
        return real_update(*args)

    monkeypatch.setattr(loop_module, "PPO", baselines.ppo.PPO._replace(update=interrupt_after_three))
    with pytest.raises(KeyboardInterrupt):
        run_rlhf(config)
    monkeypatch.setattr(loop_module, "PPO", baselines.ppo.PPO)
    saved = torch.load(out / "checkpoint.pt")
    assert saved["ppo"]["global_step"] == 3 * 256
    labels_before = len(PreferenceStore(out / "prefs.sqlite").effective_labels())
    assert 0 < labels_before < 24
    summary = run_rlhf(RLHFConfig.cli_default(None, None, str(out)))
    assert summary["env_steps"] == 4096 and summary["labels_used"] == 24
    assert len(PreferenceStore(out / "prefs.sqlite").effective_labels()) == 24
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 4096


def test_export_then_train_reward_from_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    run_rlhf(dataclasses.replace(TINY, out=out))
    assert main(["export", "--workspace", str(out), "--out", str(tmp_path / "prefs")]) == 0
    export = load_preferences(tmp_path / "prefs")
    assert len(export.pairs) == len(
        [p for p in PreferenceStore(out / "prefs.sqlite").effective_labels() if p.choice != "skip"]
    )
    assert (
        main(["train-reward", "--data", str(tmp_path / "prefs"), "--epochs", "5", "--out", str(tmp_path / "rm")]) == 0
    )
    assert (tmp_path / "rm" / "reward_model" / "config.json").exists()
    capsys.readouterr()
    code = main(
        ["train-reward", "--data", str(tmp_path / "prefs"), "--env", "Pendulum-v1", "--out", str(tmp_path / "x")]
    )
    assert code == 2 and "collected on CartPole-v1, not Pendulum-v1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "0"], "--labels must be positive"),
        (["--segment-length", "900"], "longer than CartPole-v1's horizon of 500"),
        (["--teacher", "skip"], "needs --teacher-threshold"),
        (["--random-answer-rate", "0.5"], "--random-answer-rate must be in [0, 0.5)"),
        (["--env", "CartPol-v1"], "unknown env id"),
        (["--eval-every", "-1"], "--eval-every must be >= 0"),
        (["--pool-size", "1"], "--pool-size must be at least 2"),
        (["--segment-length", "0"], "--segment-length must be at least 1, got 0"),
        (["--ending-pair-share", "1.5"], "--ending-pair-share must be in [0, 1], got 1.5"),
        (["--random-answer-rate", "nan"], "--random-answer-rate must be in [0, 0.5)"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["run", "--env", "CartPole-v1", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_teacher_that_skips_every_pair_leaves_the_reward_untrained(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, teacher="skip", teacher_threshold=1e9, total_steps=2048, out=tmp_path / "r")
    summary = run_rlhf(config)  # every query answered "skip": nothing to train on, and no crash
    assert summary["labels_used"] == 0 and summary["reward_model_accuracy"] is None
    store = PreferenceStore(tmp_path / "r" / "prefs.sqlite")
    assert store.labels() and {label.choice for label in store.effective_labels()} == {"skip"}


def test_store_from_another_env_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_rlhf(dataclasses.replace(TINY, total_steps=1024, labels=4, out=out))
    (out / "summary.json").unlink()  # an unfinished CartPole run in this folder
    before = (out / "config.json").read_text()
    with pytest.raises(ConfigError, match="holds an unfinished run; continue it with --resume"):
        run_rlhf(RLHFConfig(env="Acrobot-v1", labels=4, total_steps=1024, out=out))
    assert (out / "config.json").read_text() == before  # nothing rewritten
    (out / "checkpoint.pt").unlink()  # stopped before its first checkpoint
    with pytest.raises(ConfigError, match="stopped before its first checkpoint"):
        run_rlhf(RLHFConfig(env="Acrobot-v1", labels=4, total_steps=1024, out=out))
    workspace = tmp_path / "workspace"  # only a store of CartPole segments, e.g. a labeling workspace
    workspace.mkdir()
    shutil.copy(out / "prefs.sqlite", workspace / "prefs.sqlite")
    with pytest.raises(ConfigError, match="holds CartPole-v1 segments, not Acrobot-v1"):
        run_rlhf(RLHFConfig(env="Acrobot-v1", labels=4, total_steps=1024, out=workspace))
    assert sorted(p.name for p in workspace.iterdir()) == ["prefs.sqlite"]  # nothing written


def test_label_filter_and_warm_start_in_the_loop(tmp_path: Path) -> None:
    """RIME's filter and warm start run inside the loop: each round logs how many labels were trusted, flipped or
    dropped (they add up to the training labels), the report shows them, and the filter's state is checkpointed
    and read back on resume."""
    out = tmp_path / "run"
    config = dataclasses.replace(
        TINY, teacher="mistake", teacher_epsilon=0.3, label_filter="rime", reward_warm_start=True, eval_every=0, out=out
    )
    run_rlhf(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "reward/labels_trusted" in r]
    assert len(trained) == 4 and "reward/warm_start_mse" in trained[0]
    assert not any("reward/warm_start_mse" in r for r in trained[1:])
    for row in trained:
        verdicts = row["reward/labels_trusted"] + row["reward/labels_flipped"] + row["reward/labels_dropped"]
        assert 0 < verdicts <= row["labels/total"]
    assert "dropped by the label filter" in (out / "report.html").read_text()
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint is not None
    state = checkpoint["loop"]["label_filter"]
    assert state["updates"] >= 4 and state["loss_max"] > 0


def test_adaptive_l2_in_the_loop_logs_and_checkpoints_its_coefficient(tmp_path: Path) -> None:
    """--reward-regularization adaptive-l2: each round logs the coefficient, which moves from its start and is
    saved with the checkpoint for a resume to continue from."""
    out = tmp_path / "run"
    config = dataclasses.replace(
        TINY, teacher="mistake", teacher_epsilon=0.3, reward_regularization="adaptive-l2", eval_every=0, out=out
    )
    run_rlhf(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    coefficients = [r["reward/l2_coefficient"] for r in rows if "reward/l2_coefficient" in r]
    assert len(coefficients) == 4 and len(set(coefficients)) > 1
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint is not None
    assert checkpoint["loop"]["l2"] == {"coefficient": coefficients[-1]}


def test_reward_refit_trains_each_later_round_from_fresh_weights(tmp_path: Path) -> None:
    """--reward-refit: every round still trains (and logs) the reward model, the setting is saved with the run, and
    the final model is not the one that continuing from the earlier rounds' weights gives (same seed, same
    labels up to the last round)."""
    config = dataclasses.replace(TINY, teacher="mistake", teacher_epsilon=0.3, eval_every=0)
    for refit in (False, True):
        run_rlhf(dataclasses.replace(config, reward_refit=refit, out=tmp_path / str(refit)))
    rows = [json.loads(line) for line in (tmp_path / "True" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "reward/train_loss" in r]) == 4
    assert json.loads((tmp_path / "True" / "config.json").read_text())["reward_refit"] is True
    continued, refitted = (load_reward_model(tmp_path / name / "reward_model") for name in ("False", "True"))
    pairs = zip(continued.parameters(), refitted.parameters(), strict=True)
    assert max((a - b).abs().max().item() for a, b in pairs) > 1e-2


def test_reward_inputs_follow_the_env_row_unless_chosen(tmp_path: Path) -> None:
    """Pendulum's row reads observations alone (the action columns are the model's ignored features); chosen
    explicitly, the model reads the actions too."""
    pendulum = RLHFConfig(env="Pendulum-v1", labels=6, total_steps=2048, eval_episodes=1, eval_every=0)
    run_rlhf(dataclasses.replace(pendulum, out=tmp_path / "obs"))
    assert load_reward_model(tmp_path / "obs" / "reward_model").config.ignored_features == (3,)  # cos, sin, vel | u
    run_rlhf(dataclasses.replace(pendulum, reward_inputs="observations-actions", out=tmp_path / "obs-act"))
    assert load_reward_model(tmp_path / "obs-act" / "reward_model").config.ignored_features == ()


@pytest.mark.slow
def test_default_reward_learning_holds_a_teacher_that_makes_mistakes(tmp_path: Path) -> None:
    """Pendulum, a teacher that flips 10% of its answers, 200 labels, 100k steps, seeds 0-3: the default reward
    learning (observations alone, random-answer rate 0.1) swings the pendulum up on every seed, plain Bradley-Terry
    on observations and actions mostly does not (a swung-up policy scores above -250 on most episodes, one that
    never swings up about -1000 to -1500). The bar is issue 12's target for this teacher, median >= -250 and worst
    >= -500: defaults -144, -172, -177, -145 on one machine, -147, -408, -225, -161 on another (seed 1: mean -408,
    std 352 over 10 episodes, swung up on most and not on a few; a bar of -400 on the worst seed failed there),
    plain -1123, -321, -1360, -1464."""
    mistake = RLHFConfig(env="Pendulum-v1", teacher="mistake", labels=200, total_steps=100_000, eval_every=100_000)
    plain = dataclasses.replace(mistake, random_answer_rate=0.0, reward_inputs="observations-actions")
    robust_returns, plain_returns = [], []
    for seed in range(4):
        robust_returns.append(
            run_rlhf(dataclasses.replace(mistake, seed=seed, out=tmp_path / f"r{seed}"))["eval_return_mean"]
        )
        plain_returns.append(
            run_rlhf(dataclasses.replace(plain, seed=seed, out=tmp_path / f"p{seed}"))["eval_return_mean"]
        )
    assert statistics.median(robust_returns) >= -250 and min(robust_returns) >= -500, robust_returns
    assert sum(r < -500 for r in plain_returns) >= 2, plain_returns
    assert sum(robust_returns) / 4 > sum(plain_returns) / 4 + 300, (robust_returns, plain_returns)


@pytest.mark.parametrize(
    "args",
    [
        ["--total-steps", "2000", "--labels", "100000"],
        ["--total-steps", "100", "--labels", "2000"],
    ],
)
def test_a_label_budget_beyond_the_runs_pairs_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    start = time.perf_counter()
    assert main(["run", "--env", "CartPole-v1", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "distinct pairs of the about" in err and "lower --labels or raise --total-steps" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "x").exists()
    assert time.perf_counter() - start < 10  # refused before any rollout or allocation


def test_a_run_whose_labels_are_all_ties_warns_that_accuracy_is_unmeasured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataclasses.replace(
        TINY, teacher="equal", teacher_threshold=1e9, total_steps=2048, eval_episodes=1, out=tmp_path / "r"
    )
    summary = run_rlhf(config)  # every answer a tie: the model trains (0.5 targets), its accuracy has no labels
    assert summary["labels_used"] > 0 and math.isnan(summary["reward_model_accuracy"])
    assert "warning: reward_model_accuracy is NaN: no held-out label prefers one segment" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["reward_model_accuracy"] is None
    assert main(["export", "--workspace", str(tmp_path / "r"), "--out", str(tmp_path / "prefs")]) == 0
    assert main(["train-reward", "--data", str(tmp_path / "prefs"), "--epochs", "2", "--out", str(tmp_path / "m")]) == 0
    assert "rlhf train-reward: warning: reward_model_accuracy is NaN" in capsys.readouterr().err


def test_gpto_optimizes_the_learned_reward_with_its_settings_and_resumes(tmp_path: Path) -> None:
    """--algo gpto: the loop's policy is GPTO's (its trust statistics logged, --ppo-config's GPTO fields applied,
    the KL coefficient checkpointed), and a finished run resumes as GPTO."""
    out = tmp_path / "run"
    settings = tmp_path / "gpto.json"
    settings.write_text(json.dumps({"trust": "kl", "kl_penalty_coef": 0.3}))
    config = dataclasses.replace(TINY, algo="gpto", ppo_config=settings, eval_every=0, out=out)
    summary = run_rlhf(config)
    assert summary["policy_algo"] == "gpto"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    coefficients = [r["trust/kl_penalty_coef"] for r in rows if "trust/kl_penalty_coef" in r]
    assert len(coefficients) == 4096 // 256 and coefficients[0] == 0.3 and len(set(coefficients)) > 1
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint is not None and checkpoint["ppo"]["kl_penalty_coef"] != 0.3
    assert run_rlhf(RLHFConfig.cli_default(None, None, str(out)))["policy_algo"] == "gpto"
