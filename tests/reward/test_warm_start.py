"""RIME's warm start: the state-entropy target against hand-computed values, and the fit it starts from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from rlhf.reward import RewardModelConfig, build_reward_model
from rlhf.reward.warm_start import state_entropy_rewards, warm_start


def test_state_entropy_reads_the_kth_neighbour_distance() -> None:
    # Four points on a line at 0, 1, 3, 7; k = 1: nearest distances 1, 1, 2, 4.
    observations = np.array([[[0.0], [1.0]], [[3.0], [7.0]]])
    raw = np.log1p(np.array([1.0, 1.0, 2.0, 4.0]))
    expected = ((raw - raw.mean()) / raw.std()).reshape(2, 2)
    np.testing.assert_allclose(state_entropy_rewards(observations, k=1), expected, rtol=1e-5)
    # An isolated state is worth the most.
    assert state_entropy_rewards(observations, k=1).argmax() == 3


def test_state_entropy_needs_more_steps_than_k() -> None:
    with pytest.raises(ConfigError, match="more than k"):
        state_entropy_rewards(np.zeros((1, 3, 2)), k=5)


def test_warm_start_fits_the_target_in_every_member() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 10, 4)).astype(np.float32)
    targets = np.tanh(features[..., 0] - features[..., 1]).astype(np.float32)
    model = build_reward_model(RewardModelConfig(feature_dim=4, hidden_sizes=(32, 32), ensemble_size=3, seed=0))
    with torch.no_grad():
        before = float(
            ((model.member_step_rewards(torch.from_numpy(features)) - torch.from_numpy(targets)) ** 2).mean()
        )
    after = warm_start(model, features, targets, rng, epochs=60)
    assert after < 0.25 * before and after < 0.1
    with torch.no_grad():
        per_member = ((model.member_step_rewards(torch.from_numpy(features)) - torch.from_numpy(targets)) ** 2).mean(
            (1, 2)
        )
    assert bool((per_member < 0.15).all()) and not math.isnan(float(per_member.sum()))


def test_padded_steps_are_neither_scored_nor_neighbours_and_memory_stays_bounded() -> None:
    # The same four real points as above, plus padded zeros that would otherwise sit next to the point at 0.
    observations = np.array([[[0.0], [1.0], [0.0]], [[3.0], [7.0], [0.0]]])
    mask = np.array([[True, True, False], [True, True, False]])
    raw = np.log1p(np.array([1.0, 1.0, 2.0, 4.0]))
    expected = np.zeros((2, 3))
    expected[mask] = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(state_entropy_rewards(observations, k=1, mask=mask), expected, rtol=1e-5, atol=1e-6)
    # 20k steps against a 1k reference subset: runs in chunks, every real step scored.
    many = np.random.default_rng(0).normal(size=(400, 50, 3))
    rewards = state_entropy_rewards(many, max_reference=1000)
    assert rewards.shape == (400, 50) and np.isfinite(rewards).all() and abs(rewards.mean()) < 1e-4
