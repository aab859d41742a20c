"""Reward learning from preferences: models (MLP ensemble, Preference Transformer), the Bradley-Terry trainer,
saving and loading, and the learned reward as the policy sees it (a callable, a PPO ``reward_fn``, a vector env)."""

from rlhf.reward.io import load_reward_model, save_reward_model
from rlhf.reward.label_filter import LabelFilter, LabelFilterConfig, Selection
from rlhf.reward.models import (
    MLPEnsemble,
    PreferenceTransformer,
    RewardModel,
    RewardModelConfig,
    TransformerRewardModel,
    build_reward_model,
    reinitialize,
)
from rlhf.reward.trainer import (
    CHOICE_TARGETS,
    PreferenceData,
    RewardTrainerConfig,
    bradley_terry_loss,
    evaluate_reward_model,
    preference_data,
    smooth_targets,
    train_reward_model,
    validation_mask,
    warn_if_unmeasured,
)
from rlhf.reward.wrapper import LearnedReward, LearnedRewardVecEnv, PPORewardFn, as_ppo_reward_fn

__all__ = [
    "CHOICE_TARGETS",
    "LabelFilter",
    "LabelFilterConfig",
    "LearnedReward",
    "LearnedRewardVecEnv",
    "MLPEnsemble",
    "PPORewardFn",
    "PreferenceData",
    "PreferenceTransformer",
    "RewardModel",
    "RewardModelConfig",
    "RewardTrainerConfig",
    "Selection",
    "TransformerRewardModel",
    "as_ppo_reward_fn",
    "bradley_terry_loss",
    "build_reward_model",
    "evaluate_reward_model",
    "load_reward_model",
    "preference_data",
    "reinitialize",
    "save_reward_model",
    "smooth_targets",
    "train_reward_model",
    "validation_mask",
    "warn_if_unmeasured",
]
