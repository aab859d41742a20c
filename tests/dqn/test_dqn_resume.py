"""DQN interrupted by Ctrl-C or killed, then resumed: every step is logged once, in order, no gaps."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from rlhf.cli import main
from tests.interrupt import interrupt_run, logged_steps

TOTAL, LOG_EVERY = 6000, 30  # a statistics row every total_steps // 200 env steps
ARGS = ["dqn", "--env", "CartPole-v1", "--total-steps", str(TOTAL), "--hidden-sizes", "16", "16",
        "--learning-starts", "300", "--train-freq", "64", "--gradient-steps", "8", "--eval-every", "0",
        "--checkpoint-every", "600", "--eval-episodes", "2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_interrupted_dqn_resumes_with_each_step_logged_once(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    code = interrupt_run(ARGS, out, after_step=1500, sig=sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not (out / "summary.json").exists()
    interrupted_at = max(logged_steps(out))
    assert interrupted_at < TOTAL
    assert main(["dqn", "--resume", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == TOTAL and 0 < summary["resumed_from_step"] <= interrupted_at  # a checkpoint's step
    assert logged_steps(out, "charts/SPS") == list(range(LOG_EVERY, TOTAL + 1, LOG_EVERY))
    episode_ends = logged_steps(out, "charts/episodic_return")
    assert episode_ends == sorted(set(episode_ends))  # one env: no two episodes end at one step, none logged twice
    assert len(episode_ends) == summary["episodes"]
    assert logged_steps(out, "eval/return_mean") == [TOTAL]
