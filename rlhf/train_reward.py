"""`rlhf train-reward`: a reward model trained from exported preferences alone (an `rlhf export` dataset), and
optionally PPO on it. Under ``torchrun`` both train data-parallel (``train_reward_model``'s ``world``; PPO's), and
rank 0 alone writes the run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from baselines.common.distributed import init_world
from baselines.common.envs import make_env
from baselines.common.errors import check
from baselines.common.runs import RunFolder, default_run_dir
from baselines.ppo import train_ppo
from rlhf.datasets import check_compatible, load_preferences
from rlhf.loop import RLHFConfig
from rlhf.reward import (
    LabelFilter,
    LearnedReward,
    RewardModelConfig,
    RewardTrainerConfig,
    as_ppo_reward_fn,
    build_reward_model,
    preference_data,
    save_reward_model,
    train_reward_model,
    warn_if_unmeasured,
)
from rlhf.segments import absorbing_features, action_columns, action_feature_dim


@dataclass(frozen=True)
class TrainRewardConfig:
    """Train a reward model from exported preferences alone; with --ppo-steps, then train PPO on it.

    The reward-learning defaults are ``rlhf run``'s (``RLHFConfig``), so a model trained here matches the loop's.
    """

    data: Path
    """An export of `rlhf export` (HF dataset folder or JSONL folder)."""
    env: str | None = None
    """Env to train for (default: the dataset's); its observation shape must match the dataset's."""
    reward_model: Literal["mlp", "transformer"] = "mlp"
    """MLP ensemble or Preference Transformer."""
    reward_inputs: Literal["observations", "observations-actions"] = "observations"
    """What the reward model reads of a step: the observation alone, or the observation and the action."""
    ensemble_size: int = RLHFConfig.ensemble_size
    """MLP ensemble members."""
    epochs: int = 100
    """Maximum epochs (early stopping on held-out labels)."""
    lr: float = RLHFConfig.reward_lr
    """Learning rate."""
    label_smoothing: float = RLHFConfig.label_smoothing
    """Label smoothing of the targets."""
    random_answer_rate: float = RLHFConfig.random_answer_rate
    """Assumed share of random answers in the likelihood (Christiano et al. 2017): in [0, 0.5); 0: plain
    Bradley-Terry."""
    label_filter: Literal["none", "rime"] = RLHFConfig.label_filter
    """rime: before each epoch, leave out labels the model contradicts beyond an adaptive threshold and flip
    confidently contradicted ones (Cheng et al. 2024)."""
    val_fraction: float = 0.1
    """Held-out share of the labels for validation accuracy and early stopping."""
    ppo_steps: int = 0
    """Then train PPO on the learned reward for this many env steps (0: only the reward model)."""
    seed: int = 0
    """Seed."""
    out: Path | None = None
    """Run folder (default runs/train-reward-<env>-<time>); the model is saved to OUT/reward_model."""


def run_train_reward(config: TrainRewardConfig) -> dict[str, Any]:
    check(config.epochs >= 1 and config.ensemble_size >= 1, "--epochs and --ensemble-size must be at least 1")
    check(config.ppo_steps >= 0, "--ppo-steps must be >= 0")
    trainer = RewardTrainerConfig(  # checks its values before anything is written
        epochs=config.epochs,
        lr=config.lr,
        label_smoothing=config.label_smoothing,
        random_answer_rate=config.random_answer_rate,
        val_fraction=config.val_fraction,
        split_seed=config.seed,
    )
    export = load_preferences(config.data)
    env_id = config.env or export.env_id
    env = make_env(env_id)
    obs_shape = tuple(env.observation_space.shape or ())
    check_compatible(export, env_id, obs_shape)
    pairs = [p for p in export.pairs if p.choice != "skip"]
    check(len(pairs) >= 2, f"{config.data} holds {len(pairs)} labeled pairs; at least 2 are needed")
    action_space = env.action_space
    world = init_world()  # the CPU's gloo: the reward model trains on the CPU
    out = world.broadcast_object(config.out or default_run_dir("train-reward", env_id))  # rank 0's time stamp
    folder = RunFolder.create(out, config) if world.is_main else None
    start = time.perf_counter()
    data = preference_data([(p.segment_a, p.segment_b, p.choice) for p in pairs], action_space)
    obs_dim = int(np.prod(obs_shape))
    model = build_reward_model(
        RewardModelConfig(
            kind=config.reward_model,
            feature_dim=obs_dim + action_feature_dim(action_space) + 1,
            ensemble_size=config.ensemble_size if config.reward_model == "mlp" else 1,
            max_length=export.segment_length,
            seed=config.seed,
            ignored_features=action_columns(obs_dim, action_space) if config.reward_inputs == "observations" else (),
        )
    )
    label_filter = LabelFilter() if config.label_filter == "rime" else None
    fit = train_reward_model(model, data, trainer, np.random.default_rng(config.seed), label_filter, world=world)
    if folder is not None:
        warn_if_unmeasured(float(fit["val_accuracy"]), "rlhf train-reward")
        save_reward_model(model, out / "reward_model")
    summary: dict[str, Any] = {
        "algo": "train-reward",
        "env_id": env_id,
        "seed": config.seed,
        "pairs": len(pairs),
        "reward_model": config.reward_model,
        "reward_model_accuracy": float(fit["val_accuracy"]),
        "train_loss": float(fit["train_loss"]),
        "reward_seconds": time.perf_counter() - start,
    }
    if config.ppo_steps > 0:
        learned = LearnedReward(model, absorbing_features(obs_dim, action_space), action_space)
        loop_ppo = RLHFConfig(env=env_id, total_steps=config.ppo_steps, seed=config.seed).ppo()
        ppo = replace(loop_ppo, out=out / "ppo")
        ppo_summary = train_ppo(ppo, reward_fn=as_ppo_reward_fn(learned, actions="env", world=world))
        if folder is not None:
            keys = ("env_steps", "eval_return_mean", "eval_return_std", "eval_episodes")
            summary |= {k: ppo_summary[k] for k in keys}
    if folder is None:  # another rank than 0: rank 0 writes and speaks for the run
        return {"algo": "train-reward", "rank": world.rank}
    if world.size > 1:
        summary["world_size"] = world.size
    folder.write_summary(summary)
    return summary
