"""The RLHF loop over two gloo ranks: every rank's segments reach the one store through rank 0, once each."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlhf.segments import Segment, SegmentCutter
from rlhf.store import PreferenceStore
from tests.distributed.test_ppo_ranks import run_ranks

STEPS = 8192


def _run(rank: int, out: Path) -> None:
    import rlhf.loop
    from rlhf.cli import main

    cut: list[str] = []
    trained: list[str] = []  # the reward model's weights and the learned reward's scale after each training
    original = SegmentCutter.add
    original_training = getattr(rlhf.loop, "train_reward_model")  # noqa: B009 (not a re-exported name)

    def recording_training(model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        fit = original_training(model, *args, **kwargs)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
        trained.append(hashlib.sha256(flat.tobytes()).hexdigest())
        return fit

    def recording(self: SegmentCutter, *args: Any, **kwargs: Any) -> list[Segment]:
        segments = original(self, *args, **kwargs)
        cut.extend(segment.id for segment in segments)
        return segments

    SegmentCutter.add = recording  # type: ignore[method-assign]
    setattr(rlhf.loop, "train_reward_model", recording_training)  # noqa: B010 (not a re-exported name)
    code = main(["run", "--env", "CartPole-v1", "--total-steps", str(STEPS), "--labels", "60", "--label-rounds", "3",
                 "--out", str(out / "run"), "--eval-episodes", "3", "--seed", "2"])  # fmt: skip
    assert code == 0
    (out / f"cut{rank}.json").write_text(json.dumps({"segments": cut, "reward_models": trained}))


@pytest.mark.slow
def test_two_ranks_store_every_segment_once_and_train_one_reward(tmp_path: Path) -> None:
    assert run_ranks(_run, tmp_path) == [0, 0]
    records = [json.loads((tmp_path / f"cut{rank}.json").read_text()) for rank in (0, 1)]
    cut = [record["segments"] for record in records]
    assert cut[0] and cut[1]  # both ranks stepped envs and cut segments
    # Every training, on both ranks, ended in the same weights: both optimize the same reward.
    assert len(records[0]["reward_models"]) >= 2 and records[0]["reward_models"] == records[1]["reward_models"]
    store = PreferenceStore(tmp_path / "run" / "prefs.sqlite")
    try:
        stored = store.segment_ids()
        labels = len(store.effective_labels(include_skips=False))
    finally:
        store.close()
    assert sorted(stored) == sorted(cut[0] + cut[1])  # all of them, none twice
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["env_steps"] >= STEPS and summary["labels_used"] == labels == 60
    assert np.isfinite(summary["reward_model_accuracy"]) and summary["reward_model_accuracy"] > 0.6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut0.json", "cut1.json", "run"]


def _run_and_resume(rank: int, out: Path, phase: str) -> None:
    import rlhf.loop
    from rlhf.cli import main

    rewards: list[str] = []  # the reward model each rollout is scored with, and its running scale
    original = getattr(rlhf.loop, "as_ppo_reward_fn")  # noqa: B009 (not a re-exported name)

    def recording(learned_reward: Any, *args: Any, **kwargs: Any) -> Any:
        scored = original(learned_reward, *args, **kwargs)

        def score(rollout: Any) -> Any:
            flat = torch.cat([p.detach().reshape(-1) for p in learned_reward.model.parameters()]).numpy()
            scale = json.dumps(learned_reward.state_dict(), sort_keys=True).encode()
            rewards.append(hashlib.sha256(flat.tobytes() + scale).hexdigest())
            return scored(rollout)

        return score

    setattr(rlhf.loop, "as_ppo_reward_fn", recording)  # noqa: B010 (not a re-exported name)
    run = str(out / "run")
    flags = ["--total-steps", "8192", "--resume", run] if phase == "resumed" else [
        "--env", "CartPole-v1", "--total-steps", "4096", "--labels", "60", "--label-rounds", "3", "--out", run,
        "--eval-episodes", "3", "--seed", "2"]  # fmt: skip
    assert main(["run", *flags]) == 0
    (out / f"{phase}{rank}.json").write_text(json.dumps(rewards))


@pytest.mark.slow
def test_two_ranks_resume_a_run_and_score_every_rollout_with_one_reward(tmp_path: Path) -> None:
    assert run_ranks(_run_and_resume, tmp_path, "first") == [0, 0]
    assert run_ranks(_run_and_resume, tmp_path, "resumed") == [0, 0]
    for phase in ("first", "resumed"):
        scored = [json.loads((tmp_path / f"{phase}{rank}.json").read_text()) for rank in (0, 1)]
        # Every rollout, on both ranks, is scored by the same weights and running scale: resumed, rank 1 took up
        # rank 0's trained model and scale from the run folder, not a fresh model.
        assert len(scored[0]) > 0 and scored[0] == scored[1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["env_steps"] == 8192 and summary["labels_used"] == 60
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 8192
    alone = subprocess.run(
        [sys.executable, "-m", "rlhf", "run", "--resume", str(tmp_path / "run"), "--total-steps", "12288"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 2 and "ran on 2 ranks; resume it on as many (here 1)" in alone.stderr, alone.stderr
