"""PPO beside SB3: both libraries run and report, and recorded runs are not run twice."""

from __future__ import annotations

import json
from pathlib import Path

import ppo_vs_sb3
import pytest
from run_records import load_records


@pytest.mark.slow
def test_both_sides_run_report_and_resume_from_their_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "runs.jsonl"
    argv = ["--env", "CartPole-v1", "--seeds", "2", "--sb3-seeds", "1", "--total-steps", "1024",
            "--results", str(results)]  # fmt: skip
    ppo_vs_sb3.main(argv)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["lib"], r["seed"]) for r in records) == [("ours", 0), ("ours", 1), ("sb3", 0)]
    assert all(r["steps_per_second"] > 0 and r["total_steps"] == 1024 for r in records)
    assert len({r["key"] for r in records}) == 3
    out = capsys.readouterr().out
    assert "3 runs to do" in out and "speed ratio ours / sb3" in out and "1024 steps" in out

    ppo_vs_sb3.main(argv)  # everything recorded: nothing runs, the same report
    assert "0 runs to do (3 already in" in capsys.readouterr().out

    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])  # killed while writing the third record
    ppo_vs_sb3.main(argv)
    assert "1 runs to do" in capsys.readouterr().out
    assert len(load_records(results)) == 3

    ppo_vs_sb3.main([*argv[:-2], "--results", str(results), "--seeds", "3", "--sb3-seeds", "0", "--no-run"])
    out = capsys.readouterr().out
    assert "runs to do" not in out and "(1 of 3 not run yet)" in out and "speed ratio" not in out


def test_runs_are_keyed_by_library_settings_and_seed() -> None:
    ours, theirs = ppo_vs_sb3.Job("ours", "CartPole-v1", 0), ppo_vs_sb3.Job("sb3", "CartPole-v1", 0)
    assert len({ours.key, theirs.key, ppo_vs_sb3.Job("ours", "CartPole-v1", 1).key}) == 3
    assert ours.key != ppo_vs_sb3.Job("ours", "CartPole-v1", 0, total_steps=2048).key
    assert ours.key == ppo_vs_sb3.Job("ours", "CartPole-v1", 0).key


def test_no_run_without_a_results_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ppo_vs_sb3.main(["--no-run"])
    assert exit_info.value.code == 2 and "--no-run needs --results" in capsys.readouterr().err
