"""Exact maths of PPO's pieces: GAE, the clipped surrogate, running statistics, the KL-adaptive rate, log-probs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.common.normalization import ObsNormalizer, RewardScaler, RunningMeanStd
from baselines.common.returns import gae
from baselines.ppo_config import adapt_learning_rate
from baselines.trust import Clip


def test_gae_matches_hand_computation_with_termination_and_truncation() -> None:
    gamma, lam = 0.9, 0.5
    # One env, 4 steps: step 1 terminates, step 2 is truncated (bootstrap from its final obs value 10).
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.array([[0.5], [1.0], [1.5], [2.0]])
    next_values = np.array([[1.0], [99.0], [10.0], [3.0]])  # 99 must be ignored (terminal)
    terminated = np.array([[False], [True], [False], [False]])
    truncated = np.array([[False], [False], [True], [False]])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    d3 = 4.0 + 0.9 * 3.0 - 2.0  # 4.7, last step bootstraps from the value after the rollout
    d2 = 3.0 + 0.9 * 10.0 - 1.5  # 10.5, truncated: bootstrap, but no carry from step 3
    d1 = 2.0 - 1.0  # 1.0, terminated: no bootstrap
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    expected = [d0 + gamma * lam * d1, d1, d2, d3]
    np.testing.assert_allclose(adv[:, 0], expected)
    np.testing.assert_allclose(ret, adv + values)


def test_gae_is_vectorized_over_envs() -> None:
    rng = np.random.default_rng(0)
    shape = (6, 3)
    rewards, values, next_values = (rng.normal(size=shape) for _ in range(3))
    term, trunc = rng.random(shape) < 0.2, rng.random(shape) < 0.2
    adv, _ = gae(rewards, values, next_values, term, trunc, 0.99, 0.95)
    for env in range(3):
        col = slice(env, env + 1)
        single, _ = gae(rewards[:, col], values[:, col], next_values[:, col], term[:, col], trunc[:, col], 0.99, 0.95)
        np.testing.assert_allclose(adv[:, env], single[:, 0])


def test_clipped_surrogate_on_hand_made_ratios() -> None:
    ratio = np.array([0.5, 1.1, 1.5, 0.5, 1.5])
    adv = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
    loss, grad = Clip(0.2).numpy(ratio, adv)
    # min(r A, clip(r) A): 0.5 | 1.1 | 1.2 (clipped) | -0.8 (clipped) | -1.5
    assert loss == pytest.approx(-(0.5 + 1.1 + 1.2 - 0.8 - 1.5) / 5)
    # Gradient flows where the unclipped term is the minimum: items 0, 1 and 4.
    np.testing.assert_allclose(grad, [-0.2, -0.2, 0.0, 0.0, 0.2])
    ratio_t = torch.tensor(ratio, requires_grad=True)
    adv_t = torch.tensor(adv)
    (auto,) = torch.autograd.grad(-torch.minimum(ratio_t * adv_t, ratio_t.clamp(0.8, 1.2) * adv_t).mean(), ratio_t)
    np.testing.assert_allclose(grad, auto.numpy())


def test_running_mean_std_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 2))
    stats = RunningMeanStd((2,), epsilon=0.0)
    for chunk in np.split(data, [10, 300, 301, 700]):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, data.mean(axis=0))
    np.testing.assert_allclose(stats.var, data.var(axis=0))
    normalizer = ObsNormalizer((2,))
    normalizer(data, update=True)
    scaled = normalizer(data)
    assert abs(scaled.mean()) < 0.01 and abs(scaled.std() - 1.0) < 0.01


def test_reward_scaler_divides_by_return_std_and_resets_at_episode_ends() -> None:
    scaler = RewardScaler(num_envs=1, gamma=0.5)
    rewards = np.ones((4, 1))
    dones = np.array([[False], [True], [False], [False]])
    scaler(rewards, dones)
    # discounted returns seen: 1, 1.5, (reset) 1, 1.5
    assert scaler.stats.mean == pytest.approx(1.25, abs=1e-3)
    np.testing.assert_allclose(scaler.returns, [1.5])


def test_kl_adaptive_rate_moves_the_right_way() -> None:
    assert adapt_learning_rate(1e-3, approx_kl=0.05, target_kl=0.01, initial_lr=1e-3) == pytest.approx(1e-3 / 1.5)
    assert adapt_learning_rate(1e-3, approx_kl=0.001, target_kl=0.01, initial_lr=1e-3) == pytest.approx(1.5e-3)
    assert adapt_learning_rate(1e-3, approx_kl=0.01, target_kl=0.01, initial_lr=1e-3) == 1e-3
    assert adapt_learning_rate(1e-5, approx_kl=1.0, target_kl=0.01, initial_lr=1e-3) == pytest.approx(1e-5)  # floor
