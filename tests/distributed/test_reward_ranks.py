"""Reward-model training over two gloo ranks: the same steps as one process, every pair's gradient counted once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.distributed import SINGLE, World, init_world
from rlhf.reward import LabelFilter, RewardModelConfig, RewardTrainerConfig, build_reward_model, train_reward_model
from rlhf.reward.models import RewardModel
from tests.distributed.test_ppo_ranks import run_ranks
from tests.reward.toy import toy_preferences

TRAINER = RewardTrainerConfig(epochs=12, batch_size=64, patience=100)


def _fit(world: World, rime: bool) -> tuple[RewardModel, dict[str, float], list[np.ndarray], np.ndarray]:
    """Train on the toy task; the flat parameters after every optimizer step, and the first step's gradient."""
    data = toy_preferences(400, 10, np.random.default_rng(0))
    model = build_reward_model(RewardModelConfig(feature_dim=4, ensemble_size=3, seed=1))
    snapshots: list[np.ndarray] = []
    gradients: list[np.ndarray] = []
    original_step = torch.optim.AdamW.step

    def step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        if not gradients:
            gradients.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).numpy())
        result = original_step(self, *args, **kwargs)
        snapshots.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy())
        return result

    torch.optim.AdamW.step = step  # type: ignore[method-assign,assignment]
    try:
        fit = train_reward_model(model, data, TRAINER, np.random.default_rng(2), LabelFilter() if rime else None,
                                 world=world)  # fmt: skip
    finally:
        torch.optim.AdamW.step = original_step  # type: ignore[method-assign]
    return model, fit, snapshots, gradients[0].copy()


def _train_rank(rank: int, out: Path, rime: bool) -> None:
    _, fit, snapshots, gradient = _fit(init_world(), rime)
    np.savez(out / f"rank{rank}.npz", steps=np.stack(snapshots), val_accuracy=fit["val_accuracy"],
             first_gradient=gradient)  # fmt: skip


@pytest.mark.slow
def test_two_ranks_keep_identical_parameters_after_every_step_and_learn_as_one_process(tmp_path: Path) -> None:
    for rime in (False, True):  # RIME's selection, judged by rank 0, too
        folder = tmp_path / ("rime" if rime else "plain")
        folder.mkdir()
        assert run_ranks(_train_rank, folder, rime) == [0, 0]
        zero, one = (np.load(folder / f"rank{rank}.npz") for rank in (0, 1))
        assert len(zero["steps"]) == len(one["steps"]) > 50
        np.testing.assert_array_equal(zero["steps"], one["steps"])
        _, alone, snapshots, gradient = _fit(SINGLE, rime)
        assert len(snapshots) == len(zero["steps"])  # the same minibatches: each rank took half of each
        # The summed gradient is one process's (each pair counted once) up to the order of float additions, and the
        # model learns as well (the toy task: ~0.9 accuracy; a random model ~0.5).
        np.testing.assert_allclose(zero["first_gradient"], gradient, rtol=1e-4, atol=1e-7)
        assert float(zero["val_accuracy"]) >= 0.8 and abs(float(zero["val_accuracy"]) - alone["val_accuracy"]) <= 0.05


def _transformer_rank(rank: int, out: Path) -> None:
    data = toy_preferences(11, 10, np.random.default_rng(3))  # minibatches of 5, 5 and 1: rank 1 gets no pair once
    model = build_reward_model(RewardModelConfig(feature_dim=4, kind="transformer", max_length=10, embed_dim=16,
                                                 n_head=2, seed=4))  # fmt: skip
    config = RewardTrainerConfig(epochs=2, batch_size=5, val_fraction=0.0)
    train_reward_model(model, data, config, np.random.default_rng(5), world=init_world())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.save(out / f"rank{rank}.npy", flat)


def test_a_rank_without_a_pair_of_a_minibatch_still_takes_the_step(tmp_path: Path) -> None:
    assert run_ranks(_transformer_rank, tmp_path) == [0, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy"))
