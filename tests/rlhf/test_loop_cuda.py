"""The RLHF loop with ``--device cuda`` (PPO's learner on the GPU; skipped without one) runs, and resumes on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlhf.loop import RLHFConfig, run_rlhf
from tests.cuda import needs_cuda

pytestmark = needs_cuda

# test_loop's TINY (that module imports the CLI and Hugging Face datasets, which a GPU machine may lack).
TINY = RLHFConfig(
    env="CartPole-v1", labels=24, total_steps=4096, segment_length=20, label_rounds=4, label_phase=0.5, eval_episodes=3
)


def test_a_short_loop_with_a_cuda_learner_completes_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = run_rlhf(dataclasses.replace(TINY, device="cuda", eval_every=0, out=out))
    assert summary["labels_used"] == 24 and summary["env_steps"] >= 4096 and summary["eval_episodes"] == 3
    assert summary["reward_model_accuracy"] is not None
    saved = RLHFConfig.cli_default(None, None, str(out))
    assert saved.device == "cuda"
    resumed = run_rlhf(dataclasses.replace(saved, device="cpu", total_steps=summary["env_steps"] + 1024))
    assert resumed["env_steps"] == summary["env_steps"] + 1024 and resumed["labels_used"] == 24
