"""The loop's status record: what the loop reports, merged into what the labeling service reads, checked on read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from rlhf.store import LoopPoint, LoopStatus, PreferenceStore, StoreError
from rlhf.store.schema import LOOP_STATUS_KEY, meta_table
from tests.store.helpers import FakeClock


def _report(round: int, labels: int, steps: int, **measures: Any) -> LoopStatus:
    return LoopStatus(round, labels, 100, steps, 10_000, **measures)


def test_reports_merge_counters_measurements_and_history(tmp_path: Path) -> None:
    clock = FakeClock()
    with PreferenceStore(tmp_path / "prefs.sqlite", clock=clock) as store:
        assert store.loop_status() is None
        store.record_loop_status(_report(1, 10, 500))
        clock.advance(5.0)
        store.record_loop_status(_report(1, 10, 500, reward_val_accuracy=0.6, reward_return_correlation=0.3))
        clock.advance(5.0)
        store.record_loop_status(_report(2, 20, 1000, policy_true_return=-300.0))
        store.record_loop_status(_report(3, 30, 1500))
    with PreferenceStore(tmp_path / "prefs.sqlite", clock=clock) as reopened:
        status = reopened.loop_status()
    assert status is not None
    assert (status.round, status.labels_used, status.label_budget, status.env_steps, status.total_steps) == (
        3, 30, 100, 1500, 10_000
    )  # fmt: skip
    # Measurements a report leaves out keep their last value; each one made joins the history once.
    assert (status.reward_val_accuracy, status.reward_return_correlation, status.policy_true_return) == (
        0.6, 0.3, -300.0
    )  # fmt: skip
    assert status.history == (LoopPoint(500, 10, 0.6, None), LoopPoint(1000, 20, None, -300.0))
    assert status.updated_at == clock.now


def test_history_keeps_the_newest_points(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        for step in range(LoopStatus.HISTORY_POINTS + 5):
            stored = store.record_loop_status(_report(0, 0, step, policy_true_return=float(step)))
    assert len(stored.history) == LoopStatus.HISTORY_POINTS
    assert stored.history[0].env_steps == 5 and stored.history[-1].env_steps == LoopStatus.HISTORY_POINTS + 4


def test_an_undefined_measurement_is_unknown_not_nan(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.record_loop_status(
            _report(1, 4, 100, reward_val_accuracy=np.float32(0.75), reward_return_correlation=math.nan)
        )
        status = store.loop_status()
    assert status is not None and status.reward_return_correlation is None
    assert status.reward_val_accuracy == pytest.approx(0.75) and type(status.reward_val_accuracy) is float


@pytest.mark.parametrize(
    "fields",
    [
        {"round": -1},
        {"labels_used": 2.5},
        {"env_steps": True},
        {"reward_val_accuracy": "0.5"},
        {"policy_true_return": math.inf},
    ],
)
def test_malformed_reports_are_refused(fields: dict[str, object]) -> None:
    values: dict[str, object] = {"round": 1, "labels_used": 1, "label_budget": 10, "env_steps": 1, "total_steps": 9}
    with pytest.raises(StoreError, match=next(iter(fields))):
        LoopStatus(**{**values, **fields})  # type: ignore[arg-type]


def test_a_report_carries_no_history(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        with pytest.raises(StoreError, match="history"):
            store.record_loop_status(LoopStatus(1, 1, 10, 1, 9, history=(LoopPoint(1, 1, 0.5),)))
        assert store.loop_status() is None


@pytest.mark.parametrize(
    "stored",
    [
        "not json",
        json.dumps({"round": 1}),
        json.dumps([1, 2]),
        json.dumps({**_report(1, 1, 1).to_json(), "round": "one"}),
        json.dumps({**_report(1, 1, 1).to_json(), "history": [[1, 2, 3, 4, 5]]}),
    ],
)
def test_a_damaged_stored_status_is_one_clear_error(tmp_path: Path, stored: str) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.record_loop_status(_report(1, 1, 1))
        with store._engine.begin() as conn:
            conn.execute(update(meta_table).where(meta_table.c.key == LOOP_STATUS_KEY).values(value=stored))
        with pytest.raises(StoreError, match=r"loop status .* is malformed"):
            store.loop_status()


def test_a_resumed_run_rewinds_the_history_to_its_checkpoint(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        for steps in (100, 200, 300):
            store.record_loop_status(_report(1, 10, steps, policy_true_return=-float(steps)))
        status = store.record_loop_status(_report(1, 10, 200), rewind_to=200)  # resumed from step 200
        assert [point.env_steps for point in status.history] == [100, 200]
        assert status.env_steps == 200
        status = store.record_loop_status(_report(1, 12, 300, policy_true_return=-1.0))
        assert [point.env_steps for point in status.history] == [100, 200, 300]
        assert status.history[-1].policy_true_return == -1.0


def test_phase_awaited_labels_and_the_policy_clip_are_reported(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        assert store.record_loop_status(_report(1, 5, 100)).phase == "running"
        waiting = store.record_loop_status(_report(1, 5, 100, phase="waiting", labels_awaited=3, policy_clip="p.mp4"))
        assert (waiting.phase, waiting.labels_awaited, waiting.policy_clip) == ("waiting", 3, "p.mp4")
        # Phase and awaited labels are the report's; a report without a clip keeps the last one.
        going_on = store.record_loop_status(_report(2, 8, 200))
        assert (going_on.phase, going_on.labels_awaited, going_on.policy_clip) == ("running", 0, "p.mp4")
        store.record_loop_status(_report(2, 8, 300, phase="finished", policy_clip="q.mp4"))
    with PreferenceStore(tmp_path / "prefs.sqlite") as reopened:
        status = reopened.loop_status()
    assert status is not None and (status.phase, status.policy_clip) == ("finished", "q.mp4")


def test_a_status_recorded_before_the_phase_existed_reads_as_running(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.record_loop_status(_report(1, 1, 1))
        old = {key: value for key, value in _report(1, 1, 1).to_json().items()
               if key not in ("phase", "labels_awaited", "policy_clip")}  # fmt: skip
        with store._engine.begin() as conn:
            conn.execute(update(meta_table).where(meta_table.c.key == LOOP_STATUS_KEY).values(value=json.dumps(old)))
        status = store.loop_status()
    assert status is not None and (status.phase, status.labels_awaited, status.policy_clip) == ("running", 0, None)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"phase": "paused"}, "phase"),
        ({"labels_awaited": -1}, "labels_awaited"),
        ({"policy_clip": "../clips/x.mp4"}, "policy_clip"),
        ({"policy_clip": ""}, "policy_clip"),
    ],
)
def test_malformed_phase_awaited_or_clip_is_refused(fields: dict[str, object], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        LoopStatus(1, 1, 10, 1, 9, **fields)  # type: ignore[arg-type]
