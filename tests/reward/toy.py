"""A toy preference task with a known reward, shared by the reward-model tests."""

from __future__ import annotations

import numpy as np

from rlhf.reward import PreferenceData

TRUE_WEIGHTS = np.array([0.5, -1.0, 0.25, 0.75])


def true_step_rewards(features: np.ndarray) -> np.ndarray:
    """``tanh(w . x)`` for features ``(..., 4)`` -> ``(...)``."""
    return np.tanh(features @ TRUE_WEIGHTS)


def toy_preferences(num_pairs: int, segment_length: int, rng: np.random.Generator) -> PreferenceData:
    """Random 4-wide features; the oracle prefers the segment with the higher true return."""
    features_a, features_b = (rng.normal(size=(num_pairs, segment_length, 4)).astype(np.float32) for _ in range(2))
    true_returns_a, true_returns_b = (true_step_rewards(f).sum(axis=-1) for f in (features_a, features_b))
    return PreferenceData(features_a, features_b, (true_returns_a > true_returns_b).astype(np.float32))
