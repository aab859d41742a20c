"""Saving and loading reward models: identical outputs after a round trip; damaged folders raise ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from baselines.common.errors import ConfigError
from rlhf.reward import RewardModelConfig, build_reward_model, load_reward_model, save_reward_model

CONFIGS = [
    RewardModelConfig(feature_dim=4, hidden_sizes=(8, 8), ensemble_size=2, activation="tanh", seed=3),
    RewardModelConfig(feature_dim=4, kind="transformer", embed_dim=16, n_head=2, max_length=5, seed=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["mlp", "transformer"])
def test_round_trip_gives_identical_outputs(config: RewardModelConfig, tmp_path: Path) -> None:
    model = build_reward_model(config)
    with torch.no_grad():  # move away from the seeded init, so loading cannot pass by re-initializing
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    folder = save_reward_model(model, tmp_path / "reward")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_reward_model(folder)
    assert loaded.config == config and not loaded.training
    features = torch.randn(3, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.segment_returns(features), model.eval().segment_returns(features))
        torch.testing.assert_close(loaded.step_rewards(features), model.step_rewards(features))


def test_missing_folder_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a saved reward model"):
        load_reward_model(tmp_path / "nowhere")


def test_corrupt_weights_raise_config_error(tmp_path: Path) -> None:
    folder = save_reward_model(build_reward_model(CONFIGS[0]), tmp_path / "reward")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="corrupt"):
        load_reward_model(folder)


def test_corrupt_config_raises_config_error(tmp_path: Path) -> None:
    folder = save_reward_model(build_reward_model(CONFIGS[0]), tmp_path / "reward")
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_reward_model(folder)
    (folder / "config.json").write_text(json.dumps({"format": "rlhf-reward-model/1", "feature_dim": 4, "color": 1}))
    with pytest.raises(ConfigError, match="unexpected or missing fields"):
        load_reward_model(folder)


def test_weights_of_another_model_raise_config_error(tmp_path: Path) -> None:
    folder = save_reward_model(build_reward_model(CONFIGS[0]), tmp_path / "reward")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_sizes": [16]}))
    with pytest.raises(ConfigError, match="does not match"):
        load_reward_model(folder)
