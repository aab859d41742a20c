"""Preference export -> import gives the same pairs, in both formats; mismatched data is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.datasets import (
    META_FILE,
    ExportFormat,
    PreferenceExport,
    check_compatible,
    export_preferences,
    load_preferences,
)
from rlhf.segments import Segment
from rlhf.store import PreferenceStore
from tests.store.helpers import SEGMENT_LENGTH, FakeClock, make_segment

FORMATS: list[ExportFormat] = ["hf", "jsonl"]

ENVS: dict[str, tuple[str, tuple[int, ...], dict[str, Any], dict[str, Any]]] = {
    "discrete": ("CartPole-v1", (4,), {"type": "Discrete", "n": 2}, {"obs_dtype": np.float32}),
    "box": (
        "Pendulum-v1",
        (3,),
        {"type": "Box", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0]},
        {"obs_dtype": np.float64, "action_dim": 2},
    ),
    "image": ("MiniGrid-Empty-v0", (5, 5, 3), {"type": "Discrete", "n": 3}, {"obs_dtype": np.uint8}),
}


def build_store(path: Path, env: str) -> tuple[PreferenceStore, dict[str, Segment]]:
    """A store with 5 queries answered by two labelers: a, b, tie, skip, and one answer undone."""
    env_id, obs_shape, action_spec, segment_kwargs = ENVS[env]
    rng = np.random.default_rng(0)
    clock = FakeClock(now=1_700_000_000.123456)
    store = PreferenceStore(path, clock=clock)
    store.bind_env(env_id, obs_shape, action_spec, SEGMENT_LENGTH)
    segments = [make_segment(rng, real_steps=steps, obs_shape=obs_shape, **segment_kwargs) for steps in (6, 1, 4, 6, 2)]
    store.add_segments(segments)
    pairs = [(segments[i].id, segments[j].id) for i, j in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0))]
    query_ids = store.add_queries(pairs, [5, 4, 3, 2, 1], [True, False, True, False, True], round=1, labels_wanted=2)
    alice, _ = store.add_labeler("alice")
    teacher = store.get_or_create_labeler("teacher:oracle").id
    for query_id, choice in zip(query_ids, ["a", "b", "tie", "skip", "a"], strict=True):
        clock.advance(1.5)
        store.add_label(query_id, alice, choice, seconds_taken=2.25)
    store.undo_last(alice)  # voids alice's answer to the last query
    store.add_label(query_ids[0], teacher, "b", seconds_taken=0.0)
    return store, {segment.id: segment for segment in segments}


def assert_same_arrays(expected: Segment, actual: Segment) -> None:
    assert actual.id == expected.id
    for name in ("obs", "actions", "mask"):
        want, got = getattr(expected, name), getattr(actual, name)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert np.isnan(actual.true_rewards).all(), "true rewards are never exported into training segments"


@pytest.mark.parametrize("env", sorted(ENVS))
@pytest.mark.parametrize("format", FORMATS)
def test_export_then_load_gives_the_same_pairs(tmp_path: Path, env: str, format: ExportFormat) -> None:
    store, segments = build_store(tmp_path / "prefs.sqlite", env)
    expected = store.effective_labels(include_skips=False)
    assert [label.choice for label in expected] == ["a", "b", "tie", "b"]

    rows = export_preferences(store, tmp_path / "export", format=format)
    loaded = load_preferences(tmp_path / "export")

    assert rows == len(loaded) == len(expected)
    env_id, obs_shape, action_spec, _ = ENVS[env]
    assert (loaded.format, loaded.env_id, loaded.obs_shape) == (format, env_id, obs_shape)
    assert (loaded.action_spec, loaded.segment_length) == (action_spec, SEGMENT_LENGTH)
    for label, pair in zip(expected, loaded.pairs, strict=True):
        assert (pair.query_id, pair.label_id, pair.choice, pair.labeler) == (
            label.query_id,
            label.label_id,
            label.choice,
            label.labeler,
        )
        assert (pair.seconds_taken, pair.created_at, pair.round, pair.left_is_a) == (
            label.seconds_taken,
            label.created_at,
            label.round,
            label.left_is_a,
        )
        assert_same_arrays(segments[label.segment_a], pair.segment_a)
        assert_same_arrays(segments[label.segment_b], pair.segment_b)
        assert pair.true_return_a == segments[label.segment_a].true_return
        assert pair.true_return_b == segments[label.segment_b].true_return
    store.close()


@pytest.mark.parametrize("format", FORMATS)
def test_true_returns_are_optional(tmp_path: Path, format: ExportFormat) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "export", format=format, include_true_returns=False)
    loaded = load_preferences(tmp_path / "export")
    assert all(pair.true_return_a is None and pair.true_return_b is None for pair in loaded.pairs)
    assert "true_return_a_analysis_only" not in loaded.meta["columns"]
    store.close()


@pytest.mark.parametrize("format", FORMATS)
def test_empty_store_exports_and_loads(tmp_path: Path, format: ExportFormat) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.bind_env("CartPole-v1", (4,), {"type": "Discrete", "n": 2}, SEGMENT_LENGTH)
        assert export_preferences(store, tmp_path / "export", format=format) == 0
    loaded = load_preferences(tmp_path / "export")
    assert len(loaded) == 0 and loaded.env_id == "CartPole-v1"


def test_hf_export_is_a_plain_datasets_folder(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "box")
    export_preferences(store, tmp_path / "export", format="hf")
    dataset = datasets.load_from_disk(str(tmp_path / "export"))
    assert len(dataset) == 4
    assert np.asarray(dataset[0]["obs_a"]).shape == (SEGMENT_LENGTH, 3)
    assert np.asarray(dataset[0]["actions_b"]).shape == (SEGMENT_LENGTH, 2)
    assert json.loads(dataset.info.description)["env_id"] == "Pendulum-v1"
    # The metadata also travels in the dataset's description when the sidecar file is lost.
    (tmp_path / "export" / META_FILE).unlink()
    assert load_preferences(tmp_path / "export").env_id == "Pendulum-v1"
    store.close()


def test_jsonl_export_is_one_object_per_line(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "export", format="jsonl")
    lines = (tmp_path / "export" / "preferences.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["choice"] for row in rows] == ["a", "b", "tie", "b"]
    assert rows[0]["env_id"] == "CartPole-v1" and len(rows[0]["obs_a"]) == SEGMENT_LENGTH
    assert load_preferences(tmp_path / "export" / "preferences.jsonl").env_id == "CartPole-v1"
    store.close()


def test_check_compatible(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "export", format="jsonl")
    store.close()
    loaded: PreferenceExport = load_preferences(tmp_path / "export")
    check_compatible(loaded, "CartPole-v1", (4,))
    check_compatible(loaded, None, [4])
    with pytest.raises(ConfigError, match="collected on CartPole-v1, not Pendulum-v1"):
        check_compatible(loaded, "Pendulum-v1", (3,))
    with pytest.raises(ConfigError, match=r"shape \(4,\), not \(3,\)"):
        check_compatible(loaded, None, (3,))


def test_export_refusals(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    with pytest.raises(ConfigError, match="'hf' or 'jsonl'"):
        export_preferences(store, tmp_path / "export", format="csv")  # type: ignore[arg-type]
    export_preferences(store, tmp_path / "export", format="hf")
    with pytest.raises(ConfigError, match="already exists"):
        export_preferences(store, tmp_path / "export", format="jsonl")
    export_preferences(store, tmp_path / "export", format="jsonl", overwrite=True)
    assert load_preferences(tmp_path / "export").format == "jsonl"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="only replaces an earlier preference export"):
        export_preferences(store, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()
    store.close()
    with PreferenceStore(tmp_path / "unbound.sqlite") as unbound, pytest.raises(ConfigError, match="not bound"):
        export_preferences(unbound, tmp_path / "other")


def test_load_refuses_what_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a preference export"):
        load_preferences(tmp_path)
    (tmp_path / "preferences.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"no rlhf_preferences\.json"):
        load_preferences(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "rlhf-preferences", "format_version": 99}))
    with pytest.raises(ConfigError, match="format version 99"):
        load_preferences(tmp_path)


def _rewrite_first_row(path: Path, change: Any) -> None:
    lines = path.read_text().splitlines()
    lines[0] = change(json.loads(lines[0]))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda row: json.dumps({**row, "choice": "x"}), "choice must be one of a, b, tie, skip, got 'x'"),
        (lambda row: json.dumps({k: v for k, v in row.items() if k != "obs_a"}), "missing 'obs_a'"),
        (lambda row: json.dumps({**row, "obs_a": row["obs_a"][:-1]}), "cannot reshape"),
        (lambda row: json.dumps({**row, "obs_a": "abc"}), "could not convert"),
        (lambda row: json.dumps({**row, "mask_a": [False] * len(row["mask_a"])}), "at least one real step"),
        (lambda row: json.dumps([row]), "a row must be a JSON object, got list"),
    ],
)
def test_a_malformed_row_is_named_in_one_clear_error(tmp_path: Path, change: Any, reason: str) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "export", format="jsonl")
    store.close()
    _rewrite_first_row(tmp_path / "export" / "preferences.jsonl", change)
    with pytest.raises(ConfigError, match=r"row 1 of .* is malformed") as error:
        load_preferences(tmp_path / "export")
    assert reason in str(error.value)


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "export", format="jsonl")
    store.close()
    _rewrite_first_row(tmp_path / "export" / "preferences.jsonl", lambda row: "{not json")
    with pytest.raises(ConfigError, match=r"line 1 of .*preferences\.jsonl is not valid JSON \(Expecting property"):
        load_preferences(tmp_path / "export")


def test_malformed_metadata_and_corrupt_datasets_are_clear_errors(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "prefs.sqlite", "discrete")
    export_preferences(store, tmp_path / "jsonl", format="jsonl")
    export_preferences(store, tmp_path / "hf", format="hf")
    store.close()
    meta = json.loads((tmp_path / "jsonl" / META_FILE).read_text())
    (tmp_path / "jsonl" / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "env_id"}))
    with pytest.raises(ConfigError, match=r"metadata of .* is malformed \(missing 'env_id'\)"):
        load_preferences(tmp_path / "jsonl")
    (tmp_path / "jsonl" / META_FILE).write_text(json.dumps([meta]))
    with pytest.raises(ConfigError, match=r"no rlhf_preferences\.json describing"):
        load_preferences(tmp_path / "jsonl")
    for arrow in (tmp_path / "hf").glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    with pytest.raises(ConfigError, match="cannot be read as a preference export"):
        load_preferences(tmp_path / "hf")
