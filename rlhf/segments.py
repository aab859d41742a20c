"""Trajectories from PPO rollouts -> fixed-length segments, and the per-step features reward models see.

A segment is a window of ``segment_length`` consecutive steps of one episode. When the episode ends inside the
window, the remaining steps are padded with an *absorbing state*: zero observation, zero action, an "absorbed"
flag set, and zero true reward. Variable-horizon envs (CartPole, Acrobot, MountainCar) then give informative
comparisons (surviving longer is visibly better) instead of ties or refusals, and the reward model learns one
constant reward for the absorbing state, which the learned-reward env wrapper subtracts so that ending an episode
means the same for the policy as it does in the segments.

The :class:`Segment` record itself belongs to the preference store (:mod:`rlhf.store.records`), which keeps
segments without knowing about envs; it is re-exported here.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.common.errors import ConfigError
from rlhf.store import Segment

__all__ = [
    "Segment",
    "SegmentCutter",
    "SegmentPool",
    "absorbing_features",
    "action_columns",
    "action_feature_dim",
    "describe_action_space",
    "new_segment_id",
    "segment_features",
    "step_features",
]


def new_segment_id() -> str:
    return uuid.uuid4().hex


def describe_action_space(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON description of a Discrete or Box action space, for :meth:`rlhf.store.PreferenceStore.bind_env`."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": [int(d) for d in space.shape],
            "low": np.asarray(space.low).tolist(),
            "high": np.asarray(space.high).tolist(),
        }
    raise ConfigError(f"the preference store records Discrete or Box action spaces, not {space}")


def action_feature_dim(action_space: gym.Space[object]) -> int:
    """Width of the action part of a feature vector: one-hot for Discrete, the vector for Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.Box):
        return int(np.prod(action_space.shape))
    raise ConfigError(f"reward models handle Discrete or Box actions, not {action_space}")


def step_features(
    obs: np.ndarray, actions: np.ndarray, absorbed: np.ndarray, action_space: gym.Space[object]
) -> np.ndarray:
    """Per-step features ``[obs, action (one-hot if discrete), absorbed flag]`` of shape ``(..., F)``.

    Args:
        obs: ``(..., *obs_shape)``; actions: ``(...)`` ints or ``(..., action_dim)`` floats; absorbed: ``(...)`` bool.
    """
    batch_shape = absorbed.shape
    flat_obs = obs.reshape(*batch_shape, -1).astype(np.float32)
    if isinstance(action_space, gym.spaces.Discrete):
        action_part = np.eye(int(action_space.n), dtype=np.float32)[actions.astype(np.int64)]
    else:
        action_part = actions.reshape(*batch_shape, -1).astype(np.float32)
    features = np.concatenate([flat_obs, action_part, absorbed[..., None].astype(np.float32)], axis=-1)
    features[absorbed] = 0.0
    features[absorbed, -1] = 1.0
    return features


def segment_features(segments: Sequence[Segment], action_space: gym.Space[object]) -> np.ndarray:
    """Features of a batch of equal-length segments, ``(N, L, F)``."""
    obs = np.stack([s.obs for s in segments])
    actions = np.stack([s.actions for s in segments])
    absorbed = ~np.stack([s.mask for s in segments])
    return step_features(obs, actions, absorbed, action_space)


def action_columns(obs_dim: int, action_space: gym.Space[object]) -> tuple[int, ...]:
    """Indices of the action part in a feature vector (for a reward model that reads observations alone)."""
    return tuple(range(obs_dim, obs_dim + action_feature_dim(action_space)))


def absorbing_features(obs_dim: int, action_space: gym.Space[object]) -> np.ndarray:
    """The feature vector of the absorbing state, ``(F,)``."""
    features = np.zeros(obs_dim + action_feature_dim(action_space) + 1, dtype=np.float32)
    features[-1] = 1.0
    return features


class SegmentCutter:
    """Cuts segments from consecutive rollouts of a vector env (episodes may span rollouts).

    Steps are buffered per sub-env until the episode ends; then non-overlapping windows of ``segment_length``
    steps are cut from a random offset. A window may run past a *terminated* end (padded with the absorbing
    state); never past a truncation (a time limit is not an end of the task) nor past the rollout's edge.
    Episodes longer than ``max_pending`` steps are cut as they go.
    """

    def __init__(self, num_envs: int, segment_length: int, rng: np.random.Generator, max_pending: int = 1000) -> None:
        if segment_length < 1:
            raise ConfigError(f"segment length must be at least 1, got {segment_length}")
        self.segment_length = segment_length
        self.rng = rng
        self.max_pending = max(max_pending, 2 * segment_length)
        self._pending: list[list[tuple[np.ndarray, np.ndarray, float, np.ndarray | None]]] = [
            [] for _ in range(num_envs)
        ]

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        true_rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        frames: np.ndarray | None = None,
    ) -> list[Segment]:
        """Feed one rollout (time-major ``(T, N, ...)`` arrays); return the segments completed by it."""
        segments: list[Segment] = []
        steps, num_envs = terminated.shape
        for env in range(num_envs):
            pending = self._pending[env]
            for t in range(steps):
                frame = frames[t, env] if frames is not None else None
                pending.append((obs[t, env], actions[t, env], float(true_rewards[t, env]), frame))
                if terminated[t, env] or truncated[t, env]:
                    segments.extend(self._cut(pending, allow_padding=bool(terminated[t, env])))
                    pending.clear()
                elif len(pending) >= self.max_pending:
                    keep = len(pending) % self.segment_length
                    segments.extend(self._cut(pending[: len(pending) - keep], allow_padding=False, offset=0))
                    del pending[: len(pending) - keep]
        return segments

    def _cut(
        self,
        steps: Sequence[tuple[np.ndarray, np.ndarray, float, np.ndarray | None]],
        allow_padding: bool,
        offset: int | None = None,
    ) -> list[Segment]:
        length, count = self.segment_length, len(steps)
        if offset is None:
            offset = int(self.rng.integers(0, min(length, count)))
        out = []
        for start in range(offset, count, length):
            real = min(length, count - start)
            if real < length and not allow_padding:
                break
            window = steps[start : start + real]
            obs = np.zeros((length, *np.shape(window[0][0])), dtype=np.float32)
            actions = np.zeros((length, *np.shape(window[0][1])), dtype=np.asarray(window[0][1]).dtype)
            rewards = np.zeros(length, dtype=np.float32)
            mask = np.zeros(length, dtype=bool)
            obs[:real] = [s[0] for s in window]
            actions[:real] = [s[1] for s in window]
            rewards[:real] = [s[2] for s in window]
            mask[:real] = True
            frames = np.stack([s[3] for s in window]) if window[0][3] is not None else None  # type: ignore[misc]
            out.append(Segment(new_segment_id(), obs, actions, rewards, mask, frames))
        return out


class SegmentPool:
    """The most recent segments, from which query pairs are drawn."""

    def __init__(self, capacity: int) -> None:
        self.segments: deque[Segment] = deque(maxlen=capacity)

    def extend(self, segments: Iterable[Segment]) -> None:
        self.segments.extend(segments)

    def __len__(self) -> int:
        return len(self.segments)

    def sample_pairs(
        self, count: int, rng: np.random.Generator, ending_share: float = 0.0
    ) -> list[tuple[Segment, Segment]]:
        """``count`` pairs of distinct segments, uniformly at random (with replacement across pairs).

        ``ending_share``: that share of the pairs (rounded) puts a segment that reaches its episode's termination
        (padded with the absorbing state) first, while the pool holds any. In a sparse-goal env (Acrobot,
        MountainCar) only such segments differ in true return; drawn uniformly, almost every early pair is two
        equal segments, a tie that teaches nothing.
        """
        if len(self.segments) < 2:
            raise ValueError("need at least two segments to form a pair")
        pool = list(self.segments)
        first = rng.integers(0, len(pool), size=count)
        ending = np.flatnonzero([not segment.mask.all() for segment in pool])
        forced = min(count, round(count * ending_share)) if len(ending) else 0
        first[:forced] = rng.choice(ending, size=forced)
        second = (first + rng.integers(1, len(pool), size=count)) % len(pool)
        return [(pool[i], pool[j]) for i, j in zip(first, second, strict=True)]
