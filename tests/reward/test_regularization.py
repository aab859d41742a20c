"""Christiano et al.'s adaptive L2: the band rule and penalty against hand-computed values, its state, and its use
in training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from rlhf.reward import RewardModelConfig, RewardTrainerConfig, build_reward_model, train_reward_model
from rlhf.reward.regularization import AdaptiveL2
from tests.reward.toy import toy_preferences


def test_the_coefficient_moves_toward_the_band_one_step_per_epoch() -> None:
    l2 = AdaptiveL2(coefficient=1e-2, low=1.1, high=1.5, step=2.0)
    assert l2.update(train_loss=0.4, val_loss=0.8) == pytest.approx(2e-2)  # ratio 2 > 1.5: overfitting, tighten
    assert l2.update(train_loss=0.4, val_loss=0.52) == pytest.approx(2e-2)  # ratio 1.3: inside the band
    assert l2.update(train_loss=0.4, val_loss=0.41) == pytest.approx(1e-2)  # ratio 1.025 < 1.1: loosen
    for train_loss, val_loss in [(0.0, 0.5), (math.nan, 0.5), (0.4, math.inf)]:  # nothing to compare: no move
        assert l2.update(train_loss, val_loss) == pytest.approx(1e-2)


def test_the_coefficient_stays_within_its_bounds() -> None:
    l2 = AdaptiveL2(coefficient=5.0, step=4.0, max_coefficient=10.0, min_coefficient=1e-3)
    assert l2.update(0.1, 1.0) == 10.0
    for _ in range(20):
        l2.update(1.0, 1.0)
    assert l2.coefficient == 1e-3


def test_the_penalty_sums_squared_weight_matrices_not_biases() -> None:
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, -4.0]]))
        layer.bias.fill_(100.0)
    assert AdaptiveL2(coefficient=0.5).penalty(layer).item() == pytest.approx(0.5 * 25.0)


def test_state_round_trips_and_bad_state_or_settings_are_refused() -> None:
    l2 = AdaptiveL2()
    l2.update(0.1, 1.0)
    restored = AdaptiveL2()
    restored.load_state_dict(l2.state_dict())
    assert restored.coefficient == l2.coefficient
    with pytest.raises(ConfigError, match="outside"):
        AdaptiveL2().load_state_dict({"coefficient": -1.0})
    for kwargs in [{"low": 1.5, "high": 1.1}, {"low": 0.5}, {"step": 1.0}, {"coefficient": 0.0}, {"step": math.nan}]:
        with pytest.raises(ConfigError):
            AdaptiveL2(**kwargs)


def test_in_training_the_penalty_pulls_weights_in_and_the_coefficient_is_reported() -> None:
    """A coefficient carried in from earlier rounds (1.0) keeps the weights of the returned (early-stopped) model
    well below those of the same training without the penalty; with far fewer held-out than training labels
    losing, the coefficient moves and is reported."""
    rng = np.random.default_rng(0)
    data = toy_preferences(200, 10, rng)
    wrong = rng.random(len(data)) < 0.2
    data.targets[:] = np.where(wrong, 1.0 - data.targets, data.targets)
    config = RewardTrainerConfig(epochs=20, val_fraction=0.3, weight_decay=0.0)
    norms = {}
    for name, l2 in [("plain", None), ("l2", AdaptiveL2(coefficient=1.0))]:
        model = build_reward_model(RewardModelConfig(feature_dim=4, hidden_sizes=(128, 128), ensemble_size=2, seed=0))
        fit = train_reward_model(model, data, config, np.random.default_rng(1), l2=l2)
        assert fit["best_epoch"] > 0  # the returned weights were trained, not the starting ones
        norms[name] = sum(float(p.detach().square().sum()) for p in model.parameters() if p.ndim >= 2)
        if l2 is not None:
            assert fit["l2_coefficient"] == l2.coefficient != 1.0
        else:
            assert "l2_coefficient" not in fit
    assert norms["l2"] < 0.8 * norms["plain"]
