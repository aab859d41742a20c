"""Round trips of workspace metadata, segments and queries; refusals of bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.store import (
    InvalidLabelError,
    PreferenceStore,
    Segment,
    StoreError,
    UnknownQueryError,
    UnknownSegmentError,
)
from tests.store.helpers import DISCRETE_ACTIONS, OBS_SHAPE, SEGMENT_LENGTH, FakeClock, make_segment, open_store


def assert_same_segment(expected: Segment, actual: Segment) -> None:
    assert actual.id == expected.id
    for name in ("obs", "actions", "true_rewards", "mask"):
        want, got = getattr(expected, name), getattr(actual, name)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_meta_round_trip(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        assert store.get_meta("missing", default=3) == 3
        store.set_meta("media_dir", "clips")
        store.set_meta("media_dir", "clips2")
        assert store.get_meta("media_dir") == "clips2"
        with pytest.raises(ConfigError, match="reserved"):
            store.set_meta("rlhf.env", "x")


def test_bind_env_records_first_use_and_refuses_another_env(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as store:
        assert store.env() is None
        binding = store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, SEGMENT_LENGTH)
        assert binding.obs_shape == (4,)
        assert store.bind_env("CartPole-v1", [4], dict(DISCRETE_ACTIONS), SEGMENT_LENGTH) == binding
    with PreferenceStore(path) as store:
        with pytest.raises(ConfigError, match=r"holds CartPole-v1 segments, not Pendulum-v1"):
            store.bind_env("Pendulum-v1", (3,), {"type": "Box", "shape": [1]}, SEGMENT_LENGTH)
        with pytest.raises(ConfigError, match=r"obs shape \(4,\), not \(5,\)"):
            store.bind_env("CartPole-v1", (5,), DISCRETE_ACTIONS, SEGMENT_LENGTH)
        with pytest.raises(ConfigError, match="of 6 steps, not 7"):
            store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, 7)
        with pytest.raises(ConfigError, match="actions"):
            store.bind_env("CartPole-v1", OBS_SHAPE, {"type": "Discrete", "n": 3}, SEGMENT_LENGTH)
        assert store.env() == binding


@pytest.mark.parametrize(
    ("obs_shape", "obs_dtype", "action_dim"),
    [((4,), np.float32, None), ((3,), np.float64, 2), ((8, 8, 3), np.uint8, None)],
)
def test_segments_round_trip_exactly(
    tmp_path: Path, obs_shape: tuple[int, ...], obs_dtype: type[np.generic], action_dim: int | None
) -> None:
    rng = np.random.default_rng(0)
    segments = [
        make_segment(rng, real_steps=steps, obs_shape=obs_shape, obs_dtype=obs_dtype, action_dim=action_dim)
        for steps in (SEGMENT_LENGTH, 3, 1)
    ]
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as store:
        store.add_segments(segments, round=2)
    with PreferenceStore(path) as store:
        reversed_ids = [segment.id for segment in reversed(segments)]
        for expected, actual in zip(reversed(segments), store.get_segments(reversed_ids), strict=True):
            assert_same_segment(expected, actual)
            assert actual.frames is None
        assert_same_segment(segments[1], store.get_segment(segments[1].id))
        assert store.segment_ids(round=2) == sorted(segment.id for segment in segments)
        assert store.segment_ids(round=3) == []


def test_clip_paths(tmp_path: Path) -> None:
    segment = make_segment(np.random.default_rng(0))
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.add_segments([segment])
        assert store.get_clip_path(segment.id) is None
        store.set_clip_path(segment.id, Path("clips") / f"{segment.id}.mp4")
        assert store.get_clip_path(segment.id) == f"clips/{segment.id}.mp4"
        with pytest.raises(UnknownSegmentError):
            store.set_clip_path("0" * 32, "x.mp4")
        with pytest.raises(UnknownSegmentError):
            store.get_clip_path("0" * 32)


def test_segment_refusals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with open_store(tmp_path / "prefs.sqlite") as store:
        segment = make_segment(rng)
        store.add_segments([segment])
        with pytest.raises(StoreError, match="already stored"):
            store.add_segments([make_segment(rng), segment])
        assert len(store.segment_ids()) == 1, "a refused batch stores nothing"
        with pytest.raises(StoreError, match="same segment id twice"):
            other = make_segment(rng)
            store.add_segments([other, other])
        bad_id = make_segment(rng)
        with pytest.raises(StoreError, match="segment ids are"):
            store.add_segments([Segment("../etc/passwd", bad_id.obs, bad_id.actions, bad_id.true_rewards, bad_id.mask)])
        with pytest.raises(ConfigError, match="obs shape"):
            store.add_segments([make_segment(rng, obs_shape=(3,))])
        with pytest.raises(ConfigError, match="steps"):
            store.add_segments([make_segment(rng, real_steps=2, length=4)])
        with pytest.raises(UnknownSegmentError, match="unknown segment ids"):
            store.get_segments([segment.id, "f" * 32])


def test_queries_round_trip_and_sides(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clock = FakeClock(now=50.0)
    with open_store(tmp_path / "prefs.sqlite", clock) as store:
        a, b, c = (make_segment(rng) for _ in range(3))
        store.add_segments([a, b, c])
        ids = store.add_queries([(a.id, b.id), (b.id, c.id)], [0.5, 2.0], [True, False], round=3, labels_wanted=2)
        assert ids == sorted(ids) and len(set(ids)) == 2
        first, second = store.get_query(ids[0]), store.get_query(ids[1])
        assert (first.segment_a, first.segment_b, first.priority, first.left_is_a) == (a.id, b.id, 0.5, True)
        assert (first.round, first.created_at, first.labels_wanted, first.lease_labeler) == (3, 50.0, 2, None)
        assert (first.left_segment, first.right_segment) == (a.id, b.id)
        assert (second.left_segment, second.right_segment) == (c.id, b.id)
        assert first.choice_for_side("left") == "a" and second.choice_for_side("left") == "b"
        assert first.choice_for_side("right") == "b" and second.choice_for_side("right") == "a"
        assert second.choice_for_side("tie") == "tie"
        with pytest.raises(InvalidLabelError):
            second.choice_for_side("up")  # type: ignore[arg-type]
        assert store.add_queries([], [], [], round=0) == []


def test_query_refusals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with open_store(tmp_path / "prefs.sqlite") as store:
        a, b = make_segment(rng), make_segment(rng)
        store.add_segments([a, b])
        with pytest.raises(StoreError, match="one priority and one left_is_a per pair"):
            store.add_queries([(a.id, b.id)], [1.0, 2.0], [True], round=0)
        with pytest.raises(StoreError, match="two different segments"):
            store.add_queries([(a.id, a.id)], [1.0], [True], round=0)
        with pytest.raises(StoreError, match="finite"):
            store.add_queries([(a.id, b.id)], [float("nan")], [True], round=0)
        with pytest.raises(StoreError, match="labels_wanted"):
            store.add_queries([(a.id, b.id)], [1.0], [True], round=0, labels_wanted=0)
        with pytest.raises(UnknownSegmentError, match="unknown segments"):
            store.add_queries([(a.id, "e" * 32)], [1.0], [True], round=0)
        with pytest.raises(UnknownQueryError):
            store.get_query(12345)
        assert store.stats().queries == 0
