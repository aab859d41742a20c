"""A workspace to try the labeling service without training anything: real env segments, clips and queued pairs.

``python -m rlhf.sample_workspace DIR`` rolls out a random policy in a gymnasium env with ``render_mode="rgb_array"``,
cuts the episodes into segments (padding after episode ends, as the loop does), renders their clips and queues
random pairs; then ``rlhf serve --workspace DIR`` serves them. Tests and ``benchmarks/ui_load.py`` build their
workspaces with it too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro

from baselines.common.errors import ConfigError
from rlhf.render import MUJOCO_VIEWS, render_segments
from rlhf.segments import Segment, SegmentCutter, describe_action_space
from rlhf.store import PreferenceStore


def collect_segments(env_id: str, count: int, segment_length: int, seed: int, frames: bool = True) -> list[Segment]:
    """``count`` segments of a random policy, with ``(L_real, H, W, 3)`` frames of their real steps if ``frames``."""
    env = gym.make(env_id, render_mode="rgb_array" if frames else None)
    rng = np.random.default_rng(seed)
    cutter = SegmentCutter(1, segment_length, rng)
    env.action_space.seed(seed)
    segments: list[Segment] = []
    obs, _ = env.reset(seed=seed)
    try:
        while len(segments) < count:
            frame = env.render() if frames else None
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            segments.extend(
                cutter.add(
                    np.asarray(obs)[None, None],
                    np.asarray(action)[None, None],
                    np.array([[reward]], dtype=np.float32),
                    np.array([[terminated]]),
                    np.array([[truncated]]),
                    None if frame is None else np.asarray(frame)[None, None],
                )
            )
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return segments[:count]


def build_workspace(
    path: str | Path,
    env_id: str = "CartPole-v1",
    segments: int = 12,
    queries: int = 30,
    segment_length: int = 25,
    labels_wanted: int = 1,
    clips: bool = True,
    seed: int = 0,
    db_url: str | None = None,
) -> PreferenceStore:
    """Create ``path`` with ``prefs.sqlite`` (bound to ``env_id``), ``clips/`` and ``queries`` queued pairs.

    ``db_url`` puts the store in another database (an empty one, e.g. PostgreSQL) instead of ``prefs.sqlite``.

    Pairs are drawn uniformly (with repeats once the distinct pairs run out); which segment is shown left is drawn
    per query. Returns the open store (close it when done).
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if segments < 2:
        raise ConfigError(f"a workspace needs at least two segments, not {segments}")
    rng = np.random.default_rng(seed)
    # MuJoCo clips are drawn from the observations afterwards (rlhf.render.mujoco_frames), as the loop draws them.
    mujoco = env_id in MUJOCO_VIEWS
    collected = collect_segments(env_id, segments, segment_length, seed, frames=clips and not mujoco)
    store = PreferenceStore(db_url or folder / "prefs.sqlite")
    env = gym.make(env_id)
    try:
        obs_shape = tuple(env.observation_space.shape or ())
        store.bind_env(env_id, obs_shape, describe_action_space(env.action_space), segment_length)
    finally:
        env.close()
    store.add_segments(collected)
    if clips:
        render_segments(store, collected, folder / "clips", env_id=env_id)  # at the env's clip rate (env_fps)
    add_random_queries(store, [s.id for s in collected], queries, rng, labels_wanted)
    return store


def add_random_queries(
    store: PreferenceStore,
    segment_ids: list[str],
    count: int,
    rng: np.random.Generator,
    labels_wanted: int = 1,
    round: int = 0,
) -> list[int]:
    """Queue ``count`` random pairs of ``segment_ids`` with random priorities and sides."""
    first = rng.integers(0, len(segment_ids), size=count)
    second = (first + rng.integers(1, len(segment_ids), size=count)) % len(segment_ids)
    pairs = [(segment_ids[i], segment_ids[j]) for i, j in zip(first, second, strict=True)]
    return store.add_queries(
        pairs,
        rng.random(count).tolist(),
        (rng.random(count) < 0.5).tolist(),
        round=round,
        labels_wanted=labels_wanted,
    )


@dataclass(frozen=True)
class SampleWorkspaceConfig:
    """Build a sample workspace for the labeling service."""

    path: tyro.conf.Positional[Path]
    """Folder to create."""
    env: str = "CartPole-v1"
    """Gymnasium env id with an rgb_array renderer."""
    segments: int = 20
    """Segments to collect and render."""
    queries: int = 50
    """Pairs to queue."""
    segment_length: int = 50
    """Steps per segment."""
    labels_per_pair: int = 1
    """Labels wanted per pair."""
    seed: int = 0
    """Seed of the env, the policy and the pairs."""


def main() -> int:
    config = tyro.cli(SampleWorkspaceConfig, prog="python -m rlhf.sample_workspace")
    try:
        store = build_workspace(
            config.path,
            config.env,
            config.segments,
            config.queries,
            config.segment_length,
            config.labels_per_pair,
            seed=config.seed,
        )
    except ConfigError as error:
        print(f"rlhf.sample_workspace: error: {error}", file=sys.stderr)
        return 2
    store.close()
    print(f"Workspace ready: rlhf serve --workspace {config.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
