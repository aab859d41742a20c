"""Builders shared by the store and datasets tests: a controllable clock, segments, a small populated store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhf.segments import Segment, new_segment_id
from rlhf.store import PreferenceStore

SEGMENT_LENGTH = 6
OBS_SHAPE = (4,)
DISCRETE_ACTIONS = {"type": "Discrete", "n": 2}


@dataclass
class FakeClock:
    """A clock the test moves by hand (lease expiry without sleeping)."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_segment(
    rng: np.random.Generator,
    real_steps: int = SEGMENT_LENGTH,
    length: int = SEGMENT_LENGTH,
    obs_shape: tuple[int, ...] = OBS_SHAPE,
    obs_dtype: type[np.generic] = np.float32,
    action_dim: int | None = None,
) -> Segment:
    """A segment with random real steps and absorbing (zero) padding; Discrete actions unless ``action_dim``."""
    mask = np.arange(length) < real_steps
    obs = rng.normal(size=(length, *obs_shape)).astype(obs_dtype) * mask.reshape(-1, *([1] * len(obs_shape)))
    if action_dim is None:
        actions: np.ndarray = rng.integers(0, 2, size=length) * mask
    else:
        actions = rng.uniform(-1, 1, size=(length, action_dim)).astype(np.float32) * mask[:, None]
    true_rewards = rng.normal(size=length) * mask
    return Segment(id=new_segment_id(), obs=obs, actions=actions, true_rewards=true_rewards, mask=mask)


def open_store(path: Path, clock: FakeClock | None = None) -> PreferenceStore:
    """A store bound to a CartPole-like env (obs (4,), 2 discrete actions, 6-step segments)."""
    store = PreferenceStore(path, clock=clock) if clock is not None else PreferenceStore(path)
    store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, SEGMENT_LENGTH)
    return store


def populate(
    store: PreferenceStore, rng: np.random.Generator, n_queries: int, labels_wanted: int = 1
) -> tuple[list[Segment], list[int]]:
    """Add ``n_queries + 1`` segments and chain them into ``n_queries`` queries with distinct priorities."""
    segments = [make_segment(rng, real_steps=int(rng.integers(1, SEGMENT_LENGTH + 1))) for _ in range(n_queries + 1)]
    store.add_segments(segments, round=0)
    pairs = [(segments[i].id, segments[i + 1].id) for i in range(n_queries)]
    priorities = [float(i) for i in range(n_queries)]
    left_is_a = [bool(b) for b in rng.integers(0, 2, size=n_queries)]
    query_ids = store.add_queries(pairs, priorities, left_is_a, round=0, labels_wanted=labels_wanted)
    return segments, query_ids
