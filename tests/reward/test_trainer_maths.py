"""Exact maths of the trainer: Bradley-Terry loss (ties included), label smoothing, data validation, the split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from rlhf.reward import (
    PreferenceData,
    RewardModelConfig,
    RewardTrainerConfig,
    bradley_terry_loss,
    build_reward_model,
    smooth_targets,
    train_reward_model,
    validation_mask,
)
from rlhf.reward.trainer import _evaluate, pair_returns
from tests.reward.toy import toy_preferences

LOG_SIGMOID_1 = -math.log1p(math.exp(-1.0))  # log sigmoid(1) = -0.31326...
LOG_SIGMOID_M1 = -math.log1p(math.exp(1.0))  # log sigmoid(-1) = -1.31326...


def test_bradley_terry_loss_matches_hand_computation() -> None:
    returns_a = torch.tensor([1.0, 0.0, 2.0, 1.0])
    returns_b = torch.tensor([0.0, 0.0, 3.0, 0.0])
    targets = torch.tensor([1.0, 0.5, 0.0, 0.5])
    expected = [
        -LOG_SIGMOID_1,  # a preferred, R_a - R_b = 1
        math.log(2.0),  # tie at equal returns: -(0.5 log 0.5 + 0.5 log 0.5)
        -LOG_SIGMOID_1,  # b preferred, R_a - R_b = -1, so P(b > a) = sigmoid(1)
        -(0.5 * LOG_SIGMOID_1 + 0.5 * LOG_SIGMOID_M1),  # tie, but a scored 1 higher: 0.81326...
    ]
    losses = bradley_terry_loss(returns_a, returns_b, targets, reduction="none")
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(bradley_terry_loss(returns_a, returns_b, targets).item(), np.mean(expected), rtol=1e-6)


def test_bradley_terry_gradient_is_probability_minus_target() -> None:
    returns_a = torch.tensor([1.0, 0.0, 0.3], requires_grad=True)
    returns_b = torch.zeros(3)
    targets = torch.tensor([1.0, 0.5, 0.5])
    torch.autograd.backward(bradley_terry_loss(returns_a, returns_b, targets, reduction="none").sum())
    assert returns_a.grad is not None
    expected = torch.sigmoid(torch.tensor([1.0, 0.0, 0.3])) - targets  # a tie at equal returns: zero gradient
    np.testing.assert_allclose(returns_a.grad.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_bradley_terry_loss_is_per_member_over_an_ensemble() -> None:
    returns_a, returns_b = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 2)  # (E=2, N=2)
    losses = bradley_terry_loss(returns_a, returns_b, torch.tensor([1.0, 0.5]), reduction="none")
    np.testing.assert_allclose(losses.numpy(), [[-LOG_SIGMOID_1, math.log(2)], [math.log(2), math.log(2)]], rtol=1e-6)


def test_random_answer_likelihood_matches_hand_computation() -> None:
    # P(a > b) = 0.9 sigmoid(R_a - R_b) + 0.05 with a 10% random-answer rate (Christiano et al. 2017, 2.2.3).
    returns_a, returns_b = torch.tensor([0.0, 1.0, 10.0, 10.0]), torch.zeros(4)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.5])
    p_a = [0.9 / (1.0 + math.exp(-x)) + 0.05 for x in (0.0, 1.0, 10.0, 10.0)]
    expected = [-math.log(p_a[0]), -math.log(p_a[1]), -math.log(1.0 - p_a[2]),
                -(0.5 * math.log(p_a[3]) + 0.5 * math.log(1.0 - p_a[3]))]  # fmt: skip
    losses = bradley_terry_loss(returns_a, returns_b, targets, reduction="none", random_answer_rate=0.1)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-5)
    assert losses[2].item() < -math.log(0.05)  # a confidently contradicted label costs at most -log(e / 2)
    plain = bradley_terry_loss(returns_a, returns_b, targets, reduction="none", random_answer_rate=0.0)
    np.testing.assert_array_equal(plain.numpy(), bradley_terry_loss(returns_a, returns_b, targets, "none").numpy())


def test_a_confidently_contradicted_label_stops_pulling_under_the_random_answer_rate() -> None:
    gradients = []
    for rate in (0.0, 0.1):
        returns_a = torch.tensor([10.0], requires_grad=True)  # the model is sure a is better; the label says b
        torch.autograd.backward(
            bradley_terry_loss(returns_a, torch.zeros(1), torch.tensor([0.0]), random_answer_rate=rate)
        )
        assert returns_a.grad is not None
        gradients.append(returns_a.grad.item())
    # Plain: sigmoid(10) ~ 1, full strength. Robust: 0.9 sigmoid(10) sigmoid(-10) / P(b > a) ~ 8e-4.
    assert gradients[0] > 0.99 and 0 < gradients[1] < 1e-2


@pytest.mark.parametrize("rate", [-0.1, 0.5, 0.7, float("nan")])
def test_a_random_answer_rate_outside_0_to_one_half_is_refused(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"random_answer_rate must be in \[0, 0.5\)"):
        RewardTrainerConfig(random_answer_rate=rate)


def test_label_smoothing_mixes_targets_toward_one_half() -> None:
    smoothed = smooth_targets(torch.tensor([1.0, 0.0, 0.5]), 0.2)
    np.testing.assert_allclose(smoothed.numpy(), [0.9, 0.1, 0.5], rtol=1e-6)
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), smoothed[:1])
    np.testing.assert_allclose(loss.item(), -(0.9 * LOG_SIGMOID_1 + 0.1 * LOG_SIGMOID_M1), rtol=1e-6)
    np.testing.assert_array_equal(smooth_targets(torch.tensor([1.0, 0.0]), 0.0).numpy(), [1.0, 0.0])


def test_preference_data_validates_itself() -> None:
    features = np.zeros((3, 5, 2))
    data = PreferenceData(features, features, np.array([1, 0, 0.5]))
    assert data.features_a.dtype == np.float32 and data.targets.dtype == np.float32
    assert (len(data), data.segment_length, data.feature_dim) == (3, 5, 2)
    with pytest.raises(ConfigError, match="targets must be 1"):
        PreferenceData(features, features, np.array([1, 0, 0.7]))
    with pytest.raises(ConfigError, match=r"targets must be \(3,\)"):
        PreferenceData(features, features, np.array([1, 0]))
    with pytest.raises(ConfigError, match="must both be"):
        PreferenceData(features, np.zeros((3, 4, 2)), np.array([1, 0, 1]))
    with pytest.raises(ConfigError, match="NaN"):
        PreferenceData(np.full((3, 5, 2), np.nan), features, np.array([1, 0, 1]))


def test_validation_split_is_stable_as_labels_are_added() -> None:
    early, late = validation_mask(50, 0.2, split_seed=3), validation_mask(500, 0.2, split_seed=3)
    np.testing.assert_array_equal(early, late[:50])
    assert 0.1 < late.mean() < 0.3
    assert not validation_mask(100, 0.0, split_seed=3).any()


def test_trainer_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        RewardTrainerConfig(label_smoothing=1.5)
    with pytest.raises(ConfigError, match="val_fraction"):
        RewardTrainerConfig(val_fraction=1.0)


def test_early_stopping_reads_the_held_out_labels_as_training_weighs_them() -> None:
    """The held-out loss is the label-weighted mean (hand-checked on two pairs), and held-out labels that all weigh 0
    leave no early stopping: every epoch runs instead of the untrained weights coming back."""
    model = build_reward_model(RewardModelConfig(feature_dim=4, hidden_sizes=(8,), ensemble_size=1, seed=0))
    data = toy_preferences(2, 3, np.random.default_rng(0))
    features_a, features_b = torch.from_numpy(data.features_a), torch.from_numpy(data.features_b)
    targets = torch.from_numpy(data.targets)
    with torch.no_grad():
        returns_a, returns_b = pair_returns(model, features_a, features_b)
        per_pair = bradley_terry_loss(returns_a, returns_b, targets, "none")[0].numpy()
    weighted, _ = _evaluate(model, features_a, features_b, targets, np.arange(2), label_weights=np.array([3.0, 1.0]))
    assert weighted == pytest.approx((3 * per_pair[0] + per_pair[1]) / 4, rel=1e-5)

    data = toy_preferences(60, 5, np.random.default_rng(1))
    config = RewardTrainerConfig(epochs=7, val_fraction=0.3, patience=1)
    held_out = validation_mask(len(data), config.val_fraction, config.split_seed)
    weights = np.where(held_out, 0.0, 1.0)
    weighted_data = PreferenceData(data.features_a, data.features_b, data.targets, weights)
    model = build_reward_model(RewardModelConfig(feature_dim=4))
    fit = train_reward_model(model, weighted_data, config, np.random.default_rng(0))
    assert fit["epochs_run"] == 7 and fit["best_epoch"] == 7
