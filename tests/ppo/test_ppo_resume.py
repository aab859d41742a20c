"""PPO interrupted by Ctrl-C or killed, then resumed: every step is logged once, in order, without gaps."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from rlhf.cli import main
from tests.interrupt import interrupt_run, logged_steps

TOTAL = 8192
ROLLOUT = 256  # CartPole's rollout: 8 envs x 32 steps, one metrics row each
ARGS = ["ppo", "--env", "CartPole-v1", "--total-steps", str(TOTAL), "--checkpoint-every", str(2 * ROLLOUT),
        "--eval-every", "4096", "--eval-episodes", "2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_interrupted_ppo_resumes_with_each_step_logged_once(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    code = interrupt_run(ARGS, out, after_step=4 * ROLLOUT, sig=sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not (out / "summary.json").exists()
    saved_step = torch.load(out / "checkpoint.pt")["global_step"]
    assert 2 * ROLLOUT <= saved_step < TOTAL and max(logged_steps(out)) >= saved_step
    assert main(["ppo", "--resume", str(out)]) == 0
    assert logged_steps(out) == list(range(ROLLOUT, TOTAL + 1, ROLLOUT))
    assert logged_steps(out, "eval/return_mean") == [4096, 8192]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == TOTAL and summary["eval_episodes"] == 2
    assert torch.load(out / "checkpoint.pt")["global_step"] == TOTAL
