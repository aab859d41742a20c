"""Running statistics for observation normalization and reward scaling (as SB3's VecNormalize)."""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningMeanStd:
    """Mean and variance over a stream of batches (parallel algorithm of Chan et al.)."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = epsilon

    def update(self, batch: np.ndarray) -> None:
        """Fold in ``batch`` of shape ``(n, *shape)``."""
        self.merge(batch.shape[0], batch.mean(axis=0), batch.var(axis=0))

    def merge(self, batch_count: float, batch_mean: np.ndarray, batch_var: np.ndarray) -> None:
        """Fold in a batch given by its count, mean and variance (another rank's data, say)."""
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def since(self, start: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray]:
        """Count, mean and variance of what was folded in after ``start`` (an earlier ``state_dict()``)."""
        earlier = RunningMeanStd.from_state(start)
        count = self.count - earlier.count
        if count <= 0:
            return 0.0, np.zeros_like(self.mean), np.zeros_like(self.var)
        mean = (self.mean * self.count - earlier.mean * earlier.count) / count
        delta = mean - earlier.mean
        m2 = self.var * self.count - earlier.var * earlier.count - delta**2 * earlier.count * count / self.count
        return count, mean, np.maximum(m2 / count, 0.0)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningMeanStd:
        stats = cls()
        stats.load_state_dict(state)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.var = np.asarray(state["var"], dtype=np.float64)
        self.count = float(state["count"])


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)``; statistics update only while training."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.stats = RunningMeanStd(shape)
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if update:
            self.stats.update(obs)
        scaled = (obs - self.stats.mean) / np.sqrt(self.stats.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (no mean shift), then clip.

    One discounted-return accumulator per env, reset at episode ends (as VecNormalize's ``norm_reward``).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.stats = RunningMeanStd(())
        self.returns = np.zeros(num_envs)
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scale rewards ``(T, N)`` of a rollout in time order, updating the statistics step by step."""
        scaled = np.empty_like(rewards, dtype=np.float32)
        for t in range(rewards.shape[0]):
            self.returns = self.returns * self.gamma + rewards[t]
            self.stats.update(self.returns)
            scaled[t] = np.clip(rewards[t] / np.sqrt(self.stats.var + self.epsilon), -self.clip, self.clip)
            self.returns[dones[t]] = 0.0
        return scaled
