"""Reward models on a GPU (skipped without one): Bradley-Terry training of both kinds on cuda lands where training on
the CPU lands, and the learned reward, pair selection and saving read a cuda model as they read a CPU one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlhf.query import preference_probabilities
from rlhf.reward import (
    LabelFilter,
    LearnedReward,
    PreferenceData,
    RewardModel,
    RewardModelConfig,
    RewardTrainerConfig,
    build_reward_model,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)
from rlhf.reward.trainer import pair_returns
from rlhf.reward.warm_start import state_entropy_rewards, warm_start
from rlhf.segments import absorbing_features
from tests.cuda import needs_cuda
from tests.reward.toy import toy_preferences

pytestmark = needs_cuda

ACTION_SPACE = gym.spaces.Discrete(2)
FEATURE_DIM = 4 + 2 + 1  # CartPole observation, one-hot action, absorbed flag
CONFIGS = {
    "mlp": RewardModelConfig(feature_dim=FEATURE_DIM, hidden_sizes=(32, 32)),
    "transformer": RewardModelConfig(feature_dim=FEATURE_DIM, kind="transformer", embed_dim=32, n_head=2, max_length=8),
}


def _cpu_and_cuda(config: RewardModelConfig) -> tuple[RewardModel, RewardModel]:
    cpu = build_reward_model(config)
    return cpu, build_reward_model(config).to("cuda")


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_training_on_cuda_lands_where_training_on_the_cpu_lands(kind: str) -> None:
    """Same data, same draws (bootstrap, shuffles), all epochs (no held-out labels, so no early-stopping decision
    that a rounding difference could flip): the two devices' preference margins ``R_a - R_b`` differ by a small
    fraction of what training changed them. Margins, not weights: the MLP's output bias cancels from every margin,
    so its gradient is rounding noise, which Adam turns into steps of ~lr in a direction each device rounds its own
    way (on an H200 it drifted 0.02 apart in 32 steps, 95% of the weights' whole difference)."""
    config = dataclasses.replace(CONFIGS[kind], feature_dim=4, max_length=10)
    data = toy_preferences(256, 10, np.random.default_rng(0))
    trainer = RewardTrainerConfig(epochs=4, batch_size=32, val_fraction=0.0)
    cpu, cuda = _cpu_and_cuda(config)
    start = _margins(cpu, data)
    fits = [train_reward_model(model, data, trainer, np.random.default_rng(1)) for model in (cpu, cuda)]
    assert all(p.device.type == "cuda" for p in cuda.parameters())
    cpu_margins, cuda_margins = _margins(cpu, data), _margins(cuda, data)
    changed = (cpu_margins - start).norm()
    assert changed > 0.5 * start.norm()
    assert (cuda_margins - cpu_margins).norm() < 0.05 * changed
    assert fits[1]["train_accuracy"] > 0.75 and fits[0]["train_accuracy"] > 0.75, fits
    assert fits[1]["train_loss"] == pytest.approx(fits[0]["train_loss"], rel=1e-2)


def _margins(model: RewardModel, data: PreferenceData) -> torch.Tensor:
    """Each member's ``R_a - R_b`` on every pair, ``(E, N)``, on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        returns_a, returns_b = pair_returns(
            model, torch.from_numpy(data.features_a).to(device), torch.from_numpy(data.features_b).to(device)
        )
    return (returns_a - returns_b).cpu()


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_the_learned_reward_of_a_cuda_model_is_numpy_and_matches_the_cpu(kind: str) -> None:
    cpu, cuda = _cpu_and_cuda(CONFIGS[kind])
    rng = np.random.default_rng(0)
    obs, actions = rng.normal(size=(12, 3, 4)).astype(np.float32), rng.integers(0, 2, size=(12, 3))
    starts = rng.random((12, 3)) < 0.2
    rewards = [
        LearnedReward(model, absorbing_features(4, ACTION_SPACE), ACTION_SPACE)(
            obs, actions, episode_starts=starts, context_steps=2
        )
        for model in (cpu, cuda)
    ]
    assert isinstance(rewards[1], np.ndarray) and rewards[1].dtype == np.float32 and rewards[1].shape == (10, 3)
    np.testing.assert_allclose(rewards[1], rewards[0], rtol=1e-4, atol=1e-5)


def test_pair_probabilities_of_a_cuda_model_match_the_cpu() -> None:
    cpu, cuda = _cpu_and_cuda(CONFIGS["mlp"])
    rng = np.random.default_rng(0)
    features_a, features_b = (rng.normal(size=(20, 8, FEATURE_DIM)).astype(np.float32) for _ in range(2))
    probabilities = [preference_probabilities(model, features_a, features_b) for model in (cpu, cuda)]
    assert isinstance(probabilities[1], np.ndarray) and probabilities[1].shape == (3, 20)
    np.testing.assert_allclose(probabilities[1], probabilities[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_a_cuda_model_saves_and_loads_on_the_cpu(kind: str, tmp_path: Path) -> None:
    _, cuda = _cpu_and_cuda(CONFIGS[kind])
    with torch.no_grad():
        for parameter in cuda.parameters():
            parameter.add_(0.01)  # not the freshly built weights that loading could rebuild from the config
    save_reward_model(cuda, tmp_path / "model")
    loaded = load_reward_model(tmp_path / "model")
    features = torch.randn(5, 8, FEATURE_DIM)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    cuda.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.segment_returns(features), cuda.segment_returns(features.cuda()).cpu())


def test_building_a_transformer_leaves_the_cuda_generator_alone() -> None:
    torch.cuda.init()  # type: ignore[no-untyped-call]
    before = torch.cuda.get_rng_state()
    build_reward_model(CONFIGS["transformer"])
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_the_label_filter_weights_ignored_columns_and_warm_start_run_on_cuda(kind: str) -> None:
    """Issue 12's additions on a cuda model: RIME's filter over weighted labels with early stopping, a model that
    ignores the action columns, and the warm start, all on the model's device, landing near the CPU's."""
    config = dataclasses.replace(CONFIGS[kind], feature_dim=4, max_length=10, ignored_features=(2,))
    data = toy_preferences(200, 10, np.random.default_rng(0))
    weighted = PreferenceData(data.features_a, data.features_b, data.targets, np.linspace(0.5, 1.5, 200))
    trainer = RewardTrainerConfig(epochs=5, batch_size=32, val_fraction=0.1)
    cpu, cuda = _cpu_and_cuda(config)
    targets = state_entropy_rewards(data.features_a[..., :3])
    for model in (cpu, cuda):
        warm_start(model, data.features_a, targets, np.random.default_rng(2), epochs=2)
    fits = [
        train_reward_model(model, weighted, trainer, np.random.default_rng(1), LabelFilter()) for model in (cpu, cuda)
    ]
    assert all(p.device.type == "cuda" for p in cuda.parameters())
    assert fits[1]["labels_trusted"] + fits[1]["labels_flipped"] + fits[1]["labels_dropped"] == fits[1]["num_train"]
    assert fits[1]["train_accuracy"] > 0.7 and fits[0]["train_accuracy"] > 0.7, fits
    changed = data.features_a.copy()
    changed[..., 2] += 5.0
    with torch.no_grad():
        a = cuda.segment_returns(torch.from_numpy(data.features_a).cuda())
        b = cuda.segment_returns(torch.from_numpy(changed).cuda())
    assert torch.allclose(a, b)
