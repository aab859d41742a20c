"""The GPTO ablation benchmark: steps to a threshold on hand-made curves, and both parts run end to end on tiny
budgets, record their runs and resume."""

from __future__ import annotations

from pathlib import Path

import gpto_ablation
import numpy as np
import pytest
from gpto_ablation import steps_share, steps_to


def _runs(curves: list[list[float]]) -> list[dict[str, object]]:
    return [{"curve": [(1000 * (i + 1), value) for i, value in enumerate(curve)]} for curve in curves]


def test_steps_to_reads_the_iqm_curve() -> None:
    curves = np.array([[0.0, 5.0, 10.0], [0.0, 6.0, 10.0], [1.0, 9.0, 12.0], [0.0, 4.0, 9.0]])
    steps = np.array([1000.0, 2000.0, 3000.0])
    assert steps_to(curves, steps, 5.5) == 2000.0  # IQM at 2000: mean(5, 6) = 5.5
    assert steps_to(curves, steps, 10.1) == float("inf")


def test_a_variant_twice_as_fast_needs_half_the_steps() -> None:
    ppo = _runs([[0, 2, 4, 6, 8, 10], [0, 2, 4, 6, 8, 10], [0, 2, 4, 6, 8, 10]])
    fast = _runs([[0, 4, 8, 10, 10, 10], [0, 4, 8, 10, 10, 10], [0, 4, 8, 10, 10, 10]])
    assert steps_share(ppo, ppo, reps=50) == (1.0, 1.0, 1.0)
    point, low, high = steps_share(fast, ppo, reps=50)
    assert point == 4000 / 6000 and low == high == point


def test_never_reaching_the_threshold_is_inf_not_nan() -> None:
    ppo = _runs([[0, 5, 10], [0, 5, 10]])
    slow = _runs([[0, 1, 2], [0, 1, 2]])
    assert steps_share(slow, ppo, reps=20) == (float("inf"), float("inf"), float("inf"))


@pytest.mark.slow
def test_the_ablation_runs_records_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.jsonl"
    argv = ["--envs", "CartPole-v1", "--variants", "ppo,spo", "--total-steps", "2048", "--num-seeds", "2",
            "--jobs", "1", "--reps", "50", "--results", str(results)]  # fmt: skip
    assert gpto_ablation.main(argv) == 0
    assert len(results.read_text().splitlines()) == 4
    out = capsys.readouterr().out
    assert "CartPole-v1  spo" in out and "2 of 2 runs" not in out and "4 of 4 runs recorded" in out
    assert gpto_ablation.main(argv) == 0
    assert "0 runs to do (4 already in" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 4


@pytest.mark.slow
def test_the_multitask_part_fine_tunes_on_the_held_out_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.jsonl"
    argv = ["--part", "multitask", "--families", "cartpole-poles", "--total-steps", "2048", "--num-seeds", "1",
            "--jobs", "1", "--reps", "20", "--results", str(results)]  # fmt: skip
    assert gpto_ablation.main(argv) == 0
    records = [line for line in results.read_text().splitlines()]
    assert (
        len(records) == 2 and '"zero_shot"' in (records[0] + records[1]) and '"fine_tuned"' in records[0] + records[1]
    )
    assert "cartpole-poles  1" in capsys.readouterr().out


def test_unknown_variants_and_families_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpto_ablation.main(["--variants", "ppo,sbo", "--no-run"]) == 2
    assert "unknown variants ['sbo']" in capsys.readouterr().err
    assert gpto_ablation.main(["--part", "multitask", "--families", "hopper", "--no-run"]) == 2
    assert "unknown task families ['hopper']" in capsys.readouterr().err
