"""Reward models: shapes, the batched ensemble against a per-member loop, the transformer's sliding window,
every parameter trains (TRL style), bootstrap members differ, bad configs are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from rlhf.reward import (
    MLPEnsemble,
    PreferenceData,
    RewardModel,
    RewardModelConfig,
    RewardTrainerConfig,
    TransformerRewardModel,
    build_reward_model,
    load_reward_model,
    reinitialize,
    save_reward_model,
    train_reward_model,
)
from tests.reward.toy import toy_preferences

MLP = RewardModelConfig(feature_dim=4, hidden_sizes=(16, 16))
TRANSFORMER = RewardModelConfig(feature_dim=4, kind="transformer", embed_dim=16, n_head=2, max_length=6)


@pytest.mark.parametrize("config", [MLP, TRANSFORMER], ids=["mlp", "transformer"])
def test_output_shapes(config: RewardModelConfig) -> None:
    model = build_reward_model(config)
    members = model.ensemble_size
    assert members == (3 if config.kind == "mlp" else 1)
    assert model.segment_returns(torch.randn(5, 6, 4)).shape == (members, 5)
    assert model.member_step_rewards(torch.randn(7, 2, 4)).shape == (members, 7, 2)
    assert model.step_rewards(torch.randn(7, 2, 4)).shape == (7, 2)
    assert model.step_rewards(torch.randn(4)).shape == ()
    sequence = model.member_sequence_rewards(torch.randn(9, 2, 4), torch.zeros(9, 2, dtype=torch.bool), first_step=3)
    assert sequence.shape == (members, 6, 2)


def test_mlp_ensemble_equals_a_loop_over_members() -> None:
    model = MLPEnsemble(MLP)
    features = torch.randn(10, 4)
    for member in range(3):
        hidden = features
        for layer, (weight, bias) in enumerate(zip(model.weights, model.biases, strict=True)):
            hidden = hidden @ weight[member] + bias[member]
            if layer < len(model.weights) - 1:
                hidden = torch.nn.functional.leaky_relu(hidden, 0.01)
        torch.testing.assert_close(model.member_step_rewards(features)[member], hidden.squeeze(-1))
    segments = torch.randn(3, 5, 4)
    torch.testing.assert_close(model.segment_returns(segments), model.member_step_rewards(segments).sum(-1))


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    first, second = build_reward_model(TRANSFORMER), build_reward_model(TRANSFORMER)
    torch.testing.assert_close(first.state_dict(), second.state_dict())
    assert torch.equal(state, torch.random.get_rng_state())
    seeded_0, seeded_1 = (MLPEnsemble(RewardModelConfig(feature_dim=4, seed=seed)) for seed in (0, 1))
    assert not torch.equal(seeded_0.weights[0], seeded_1.weights[0])
    assert not torch.equal(seeded_0.weights[0][0], seeded_0.weights[0][1])  # members start apart


def test_transformer_segment_return_is_attention_weighted_sum_of_step_rewards() -> None:
    model = TransformerRewardModel(TRANSFORMER)
    features = torch.randn(3, 6, 4)
    rewards, weights = model.transformers[0](features)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(model.segment_returns(features)[0], (weights * rewards).sum(-1))


def test_transformer_sliding_window_matches_segment_step_rewards() -> None:
    model = TransformerRewardModel(TRANSFORMER).eval()
    member = model.transformers[0]
    features = torch.randn(14, 1, 4)  # one env, episodes start at rows 0 and 4; max_length is 6
    starts = torch.zeros(14, 1, dtype=torch.bool)
    starts[4] = True
    sequence = model.member_sequence_rewards(features, starts)[0, :, 0]
    with torch.no_grad():
        first_episode = member(features[None, :4, 0])[0][0]
        second_episode_head = member(features[None, 4:10, 0])[0][0]
        tail_window = member(features[None, 8:14, 0])[0][0]  # step 13 sees the 5 steps before it
    torch.testing.assert_close(sequence[:4], first_episode)
    torch.testing.assert_close(sequence[4:10], second_episode_head)
    torch.testing.assert_close(sequence[13], tail_window[-1])
    torch.testing.assert_close(model.member_sequence_rewards(features, starts, first_step=10)[0, :, 0], sequence[10:])


def test_transformer_step_rewards_read_each_step_alone() -> None:
    model = TransformerRewardModel(TRANSFORMER).eval()
    features = torch.randn(5, 4)
    with torch.no_grad():
        alone = torch.stack([model.transformers[0](step[None, None])[0][0, 0] for step in features])
        torch.testing.assert_close(model.step_rewards(features), alone)


def _train_one_step(model: RewardModel, data: PreferenceData) -> dict[str, torch.Tensor]:
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    config = RewardTrainerConfig(epochs=1, batch_size=len(data), val_fraction=0.0)
    train_reward_model(model, data, config, np.random.default_rng(0))
    return before


@pytest.mark.parametrize("config", [MLP, TRANSFORMER], ids=["mlp", "transformer"])
def test_every_trainable_parameter_changes_after_one_step(config: RewardModelConfig) -> None:
    model = build_reward_model(config)
    before = _train_one_step(model, toy_preferences(16, 6, np.random.default_rng(0)))
    assert before, "no trainable parameters"
    after = dict(model.named_parameters())
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name])]
    assert not unchanged, f"parameters that did not train: {unchanged}"
    if config.kind == "transformer":  # the unused token table stays frozen
        assert not after["transformers.0.gpt2.wte.weight"].requires_grad


def _identical_members(model: MLPEnsemble) -> MLPEnsemble:
    with torch.no_grad():
        for parameter in [*model.weights, *model.biases]:
            parameter[:] = parameter[0]
    return model


@pytest.mark.parametrize("bootstrap", [True, False])
def test_bootstrap_makes_members_differ(bootstrap: bool) -> None:
    # In float64: identical members without bootstrap get identical updates up to rounding in the batched
    # reductions, which AdamW amplifies over training (in float32, 1e-8 grew to 0.04 on one CPU); from 1e-16 it
    # stays far below the threshold on any CPU, while bootstrap resamples move members apart by ~0.1 or more.
    model = _identical_members(MLPEnsemble(MLP)).double()
    data = toy_preferences(64, 6, np.random.default_rng(0))
    config = RewardTrainerConfig(epochs=5, batch_size=16, lr=3e-3, val_fraction=0.0, bootstrap=bootstrap)
    train_reward_model(model, data, config, np.random.default_rng(0))
    returns = model.segment_returns(torch.from_numpy(data.features_a).double()).detach()  # mean |return| ~1
    spread = (returns - returns[0]).abs().max().item()
    assert (spread > 0.1) if bootstrap else (spread < 1e-6)


@pytest.mark.parametrize("config", [MLP, TRANSFORMER], ids=["mlp", "transformer"])
def test_reinitialize_draws_the_seeds_weights_with_a_scaled_output_layer(config: RewardModelConfig) -> None:
    model = build_reward_model(config)
    _train_one_step(model, toy_preferences(8, 6, np.random.default_rng(0)))
    reinitialize(model, seed=7, output_scale=0.25)
    fresh = build_reward_model(RewardModelConfig(**{**config.__dict__, "seed": 7}))
    scaled = {id(p) for p in model.output_parameters()}
    assert scaled and len(scaled) < len(list(model.parameters()))
    for (name, got), want in zip(model.named_parameters(), fresh.parameters(), strict=True):
        factor = 0.25 if id(got) in scaled else 1.0
        torch.testing.assert_close(got, want * factor, msg=name)
    with pytest.raises(ConfigError, match="output_scale"):
        reinitialize(model, seed=7, output_scale=0.0)
    with pytest.raises(ConfigError, match="output_scale"):
        reinitialize(model, seed=7, output_scale=float("nan"))


def test_bad_configs_and_inputs_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of n_head"):
        RewardModelConfig(feature_dim=4, kind="transformer", embed_dim=10, n_head=4)
    with pytest.raises(ConfigError, match="ensemble_size"):
        RewardModelConfig(feature_dim=4, ensemble_size=0)
    with pytest.raises(ConfigError, match="max_length"):
        build_reward_model(TRANSFORMER).segment_returns(torch.randn(2, 7, 4))
    with pytest.raises(ConfigError, match=r"\(N, L, 4\)"):
        build_reward_model(MLP).segment_returns(torch.randn(2, 7, 5))
    with pytest.raises(ConfigError, match="features per step"):
        train_reward_model(
            build_reward_model(MLP),
            PreferenceData(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), np.ones(2)),
            RewardTrainerConfig(),
            np.random.default_rng(0),
        )


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_ignored_features_never_move_the_reward(kind: str, tmp_path: Path) -> None:
    """A model told to ignore the action columns gives the same rewards whatever the actions were, and keeps
    ignoring them after a save and load; other columns still count."""
    config = RewardModelConfig(
        kind=kind,  # type: ignore[arg-type]
        feature_dim=6,
        ignored_features=(2, 3),
        embed_dim=16,
        n_head=2,
        max_length=5,
    )
    model = build_reward_model(config).eval()
    features = torch.randn(4, 5, 6)
    changed = features.clone()
    changed[..., 2:4] = torch.randn(4, 5, 2) * 10
    with torch.no_grad():
        assert torch.equal(model.segment_returns(features), model.segment_returns(changed))
        other = features.clone()
        other[..., 0] += 1.0
        assert not torch.allclose(model.segment_returns(features), model.segment_returns(other))
    save_reward_model(model, tmp_path / "model")
    loaded = load_reward_model(tmp_path / "model").eval()
    assert loaded.config.ignored_features == (2, 3)
    with torch.no_grad():
        assert torch.equal(loaded.segment_returns(features), loaded.segment_returns(changed))


def test_ignored_features_must_be_columns() -> None:
    with pytest.raises(ConfigError, match="ignored_features"):
        RewardModelConfig(feature_dim=4, ignored_features=(4,))
