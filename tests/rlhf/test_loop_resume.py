"""The RLHF loop interrupted by Ctrl-C or killed, then resumed: every step is logged once, in order, no gaps."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import baselines.ppo
import rlhf.loop as loop_module
from baselines.common.checkpoint import load_checkpoint
from baselines.common.config import resume_default
from rlhf.cli import main
from rlhf.loop import RLHFConfig, run_rlhf
from rlhf.reward import LabelFilter
from rlhf.store import PreferenceStore
from tests.interrupt import interrupt_run, logged_steps

ARGS = ["run", "--env", "CartPole-v1", "--labels", "24", "--total-steps", "4096", "--segment-length", "20",
        "--label-rounds", "4", "--label-phase", "0.5", "--eval-episodes", "2", "--eval-every", "2048"]  # fmt: skip
ROLLOUT = 256  # CartPole's PPO rollout: 8 envs x 32 steps; the loop logs one row and saves a checkpoint per rollout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_interrupted_loop_resumes_with_each_step_logged_once(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    code = interrupt_run(ARGS, out, after_step=1024, sig=sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not (out / "summary.json").exists()
    assert main(["run", "--resume", str(out)]) == 0
    assert logged_steps(out) == list(range(ROLLOUT, 4096 + 1, ROLLOUT))
    assert logged_steps(out, "eval/return_mean") == [2048, 4096]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 4096 and summary["labels_used"] == 24
    assert len(PreferenceStore(out / "prefs.sqlite").effective_labels()) == 24  # no label lost or given twice


def test_a_round_stored_after_the_last_checkpoint_is_not_paid_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after a label round wrote its queries and labels to the store but before the checkpoint that counts
    them: the resumed run takes the counts from the store, so the label budget holds exactly."""
    out = tmp_path / "run"
    config = RLHFConfig(env="CartPole-v1", labels=24, total_steps=4096, segment_length=20, label_rounds=4,
                        label_phase=0.5, eval_episodes=2, out=out)  # fmt: skip
    real_save = loop_module._save

    def crash_after_the_second_round(out: Path, learner: Any, state: Any, learned_reward: Any, loop: Any) -> None:
        if loop.round >= 2:
            raise KeyboardInterrupt  # the checkpoint of the second round is never written
        real_save(out, learner, state, learned_reward, loop)

    monkeypatch.setattr(loop_module, "_save", crash_after_the_second_round)
    with pytest.raises(KeyboardInterrupt):
        run_rlhf(config)
    monkeypatch.setattr(loop_module, "_save", real_save)
    store = PreferenceStore(out / "prefs.sqlite")
    assert torch.load(out / "checkpoint.pt")["loop"]["round"] < 2 and len(store.effective_labels()) < 24
    summary = run_rlhf(RLHFConfig.cli_default(None, None, str(out)))
    assert summary["labels_used"] == 24 and len(store.effective_labels()) == 24


def test_a_run_whose_reward_model_never_trained_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A skip teacher (or people who have not labeled yet): checkpoints exist, a saved reward model does not."""
    out = tmp_path / "run"
    config = RLHFConfig(env="CartPole-v1", teacher="skip", teacher_threshold=1e9, labels=8, total_steps=2048,
                        segment_length=20, label_rounds=2, label_phase=0.5, eval_episodes=2, out=out)  # fmt: skip
    real_update = baselines.ppo.ppo_update
    calls = {"n": 0}

    def interrupt_after_three(*args: Any) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_update(*args)

    monkeypatch.setattr(loop_module, "PPO", baselines.ppo.PPO._replace(update=interrupt_after_three))
    with pytest.raises(KeyboardInterrupt):
        run_rlhf(config)
    monkeypatch.setattr(loop_module, "PPO", baselines.ppo.PPO)
    assert (out / "checkpoint.pt").exists() and not (out / "reward_model").exists()
    summary = run_rlhf(RLHFConfig.cli_default(None, None, str(out)))
    assert summary["env_steps"] == 2048 and summary["labels_used"] == 0  # skips train nothing
    status = PreferenceStore(out / "prefs.sqlite").loop_status()
    assert status is not None and status.env_steps == 2048
    steps = [point.env_steps for point in status.history]
    assert steps == sorted(set(steps))  # the redone steps are not in the history twice


def test_resume_keeps_what_a_run_saved_before_later_fields_existed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose config.json predates the robust-learning fields resumes as the experiment it was (actions read,
    plain Bradley-Terry, no filter), and changing one of them on resume is refused like any other field."""
    out = tmp_path / "old"
    assert main([*ARGS, "--total-steps", "1024", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    for name in RLHFConfig.FIELDS_ADDED_LATER:
        saved.pop(name)
    (out / "config.json").write_text(json.dumps(saved))
    resumed = resume_default(RLHFConfig, out)
    assert resumed.reward_inputs == "observations-actions" and resumed.random_answer_rate == 0.0
    assert resumed.label_filter == "none" and resumed.ending_pair_share == 0.0 and not resumed.reward_warm_start
    assert not resumed.reward_refit
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--label-filter", "rime"]) == 2
    assert "drop --label-filter" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--total-steps", "2048"]) == 0


def test_the_label_filter_state_carries_over_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config = RLHFConfig(env="CartPole-v1", labels=24, total_steps=2048, segment_length=20, label_rounds=4,
                        label_phase=1.0, eval_episodes=1, eval_every=0, label_filter="rime", out=out)  # fmt: skip
    run_rlhf(config)
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint is not None
    saved_state = checkpoint["loop"]["label_filter"]
    assert saved_state["updates"] >= 4
    loaded: list[dict[str, float]] = []
    original = LabelFilter.load_state_dict

    def spy(self: LabelFilter, state: dict[str, float]) -> None:
        loaded.append(dict(state))
        original(self, state)

    monkeypatch.setattr(LabelFilter, "load_state_dict", spy)
    run_rlhf(dataclasses.replace(RLHFConfig.cli_default(None, None, str(out)), total_steps=4096))
    assert loaded == [saved_state]
