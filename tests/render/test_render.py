"""Clips: H.264 MP4 in yuv420p with faststart and even sizes, padded steps frozen and dimmed, paths in the store."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import gymnasium as gym
import imageio_ffmpeg  # type: ignore[import-untyped]
import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.render import clip_name, frames_from_obs, pad_frames, render_clip, render_segments
from rlhf.sample_workspace import collect_segments
from rlhf.segments import Segment, describe_action_space
from rlhf.store import PreferenceStore


def _decode(path: Path) -> tuple[dict[str, object], np.ndarray]:
    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    width, height = meta["size"]
    decoded = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames])
    return meta, decoded


@pytest.fixture(scope="module")
def cartpole_segments() -> list[Segment]:
    """Real CartPole segments (random policy) with rgb_array frames; some end early and are padded."""
    return collect_segments("CartPole-v1", count=6, segment_length=30, seed=3)


def test_pad_frames_freezes_and_dims_the_last_frame() -> None:
    frames = np.full((3, 4, 6, 3), 200, dtype=np.uint8)
    frames[-1] = 100
    clip = pad_frames(frames, 5, dim_factor=0.5)
    assert clip.shape == (5, 4, 6, 3)
    np.testing.assert_array_equal(clip[:3], frames)
    assert (clip[3:] == 50).all()
    assert pad_frames(frames, 3) is frames


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((3, 4, 6), np.uint8), "uint8"),
        (np.zeros((3, 4, 6, 3), np.float32), "uint8"),
        (np.zeros((0, 4, 6, 3), np.uint8), "1 to 5 real frames"),
        (np.zeros((6, 4, 6, 3), np.uint8), "1 to 5 real frames"),
    ],
)
def test_pad_frames_refuses_bad_input(frames: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        pad_frames(frames, 5)


def test_render_clip_of_a_real_segment(cartpole_segments: list[Segment], tmp_path: Path) -> None:
    padded = next(s for s in cartpole_segments if s.real_steps < s.length)
    assert padded.frames is not None and padded.frames.shape[1:] == (400, 600, 3)
    clip = render_clip(padded.frames, padded.length, tmp_path / "clip.mp4", fps=50)
    assert clip.frames == padded.length and clip.path.is_file() and clip.bytes < 30_000
    data = clip.path.read_bytes()
    assert data[4:8] == b"ftyp"
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    meta, decoded = _decode(clip.path)
    assert meta["codec"] == "h264" and str(meta["pix_fmt"]).startswith("yuv420p")
    assert meta["fps"] == 50.0
    assert len(decoded) == padded.length
    width, height = cast(tuple[int, int], meta["size"])
    assert (width, height) == (320, 214) and width % 2 == 0 and height % 2 == 0
    last_real = decoded[padded.real_steps - 1].astype(float).mean()
    padding = decoded[padded.real_steps :].astype(float).mean(axis=(1, 2, 3))
    assert np.all(padding < 0.6 * last_real)  # dimmed
    assert np.ptp(padding) < 2.0  # frozen


def test_render_clip_pads_odd_sizes_and_keeps_small_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(4, 33, 51, 3), dtype=np.uint8)
    clip = render_clip(frames, 4, tmp_path / "odd.mp4", fps=10, max_width=None)
    meta, decoded = _decode(clip.path)
    assert meta["size"] == (52, 34) and len(decoded) == 4


def test_render_clip_errors(tmp_path: Path) -> None:
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ConfigError, match="does not exist"):
        render_clip(frames, 2, tmp_path / "missing" / "x.mp4", fps=10)
    with pytest.raises(ConfigError, match="fps"):
        render_clip(frames, 2, tmp_path / "x.mp4", fps=0)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_render_segments_records_clip_paths(cartpole_segments: list[Segment], tmp_path: Path) -> None:
    store = PreferenceStore(tmp_path / "prefs.sqlite")
    store.bind_env("CartPole-v1", (4,), describe_action_space(gym.spaces.Discrete(2)), 30)
    no_frames = Segment(
        "noframes", *(getattr(cartpole_segments[0], n) for n in ("obs", "actions", "true_rewards", "mask"))
    )
    segments = [*cartpole_segments[:3], no_frames]
    store.add_segments(segments)
    clips = render_segments(store, segments, tmp_path / "clips", fps=50)
    assert [c.segment_id for c in clips] == [s.id for s in cartpole_segments[:3]]
    for segment in cartpole_segments[:3]:
        assert store.get_clip_path(segment.id) == clip_name(segment.id)
        assert (tmp_path / "clips" / clip_name(segment.id)).is_file()
    assert store.get_clip_path("noframes") is None
    assert all(c.seconds < 5 for c in clips)
    mask = np.arange(30) < 3
    bad = Segment(
        "bad", no_frames.obs, no_frames.actions, no_frames.true_rewards, mask, np.zeros((1, 8, 8, 3), np.uint8)
    )
    with pytest.raises(ConfigError, match="3 real steps but 1 frames"):
        render_segments(store, [bad], tmp_path / "clips", fps=50)
    store.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0"])
def test_frames_rebuilt_from_observations_match_the_rendered_ones(env_id: str) -> None:
    """The frames recorded during the rollout (rendered before each step) equal the ones rebuilt from obs."""
    segment = collect_segments(env_id, count=1, segment_length=12, seed=1)[0]
    assert segment.frames is not None
    rebuilt = frames_from_obs(env_id, segment.obs[: segment.real_steps], segment.actions[: segment.real_steps])
    assert rebuilt.shape == segment.frames.shape and rebuilt.dtype == np.uint8
    # Pendulum draws the previous torque: unknown for a segment's first frame unless it follows a reset.
    first = 1 if env_id == "Pendulum-v1" else 0
    np.testing.assert_array_equal(rebuilt[first:], segment.frames[first:])


def test_render_segments_rebuilds_missing_frames(cartpole_segments: list[Segment], tmp_path: Path) -> None:
    store = PreferenceStore(tmp_path / "prefs.sqlite")
    store.bind_env("CartPole-v1", (4,), describe_action_space(gym.spaces.Discrete(2)), 30)
    source = cartpole_segments[0]
    bare = Segment("bare", source.obs, source.actions, source.true_rewards, source.mask)
    store.add_segments([bare])
    (clip,) = render_segments(store, [bare], tmp_path / "clips", env_id="CartPole-v1")
    assert store.get_clip_path("bare") == "bare.mp4" and clip.frames == 30
    assert _decode(clip.path)[0]["fps"] == 50.0  # the env's render_fps
    with pytest.raises(ConfigError, match="cannot be rebuilt from observations"):
        frames_from_obs("LunarLander-v3", np.zeros((2, 8)))
    store.close()
