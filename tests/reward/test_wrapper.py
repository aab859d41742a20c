"""The learned reward as the policy sees it: zero at the absorbing state, scaled by a running RMS, the PPO
adapter (with transformer context across rollouts), and the vector-env wrapper on a real CartPole."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines.common.errors import ConfigError
from baselines.common.normalization import RunningMeanStd
from baselines.ppo import Rollout
from rlhf.reward import (
    LearnedReward,
    LearnedRewardVecEnv,
    RewardModel,
    RewardModelConfig,
    as_ppo_reward_fn,
    build_reward_model,
)
from rlhf.segments import absorbing_features

ACTION_SPACE = gym.spaces.Discrete(2)
FEATURE_DIM = 4 + 2 + 1  # CartPole observation, one-hot action, absorbed flag
MLP = RewardModelConfig(feature_dim=FEATURE_DIM, hidden_sizes=(16, 16))
TRANSFORMER = RewardModelConfig(feature_dim=FEATURE_DIM, kind="transformer", embed_dim=16, n_head=2, max_length=4)


def _learned(config: RewardModelConfig) -> LearnedReward:
    return LearnedReward(build_reward_model(config), absorbing_features(4, ACTION_SPACE), ACTION_SPACE)


def _steps(steps: int, num_envs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, num_envs, 4)).astype(np.float32), rng.integers(0, 2, size=(steps, num_envs))


def test_absorbing_state_is_worth_zero() -> None:
    learned = _learned(MLP)
    obs, actions = _steps(6, 3)
    absorbed = np.zeros((6, 3), dtype=bool)
    absorbed[4:, 1] = True
    rewards = learned.centered_rewards(obs, actions, absorbed=absorbed)
    np.testing.assert_allclose(rewards[absorbed], 0.0, atol=1e-6)
    assert np.all(rewards[~absorbed] != 0.0)


def test_absorbing_state_alone_is_worth_zero_for_the_transformer() -> None:
    learned = _learned(TRANSFORMER)
    obs, actions = _steps(5, 2)
    every_step_alone = np.ones((5, 2), dtype=bool)
    rewards = learned.centered_rewards(obs, actions, np.ones((5, 2), dtype=bool), episode_starts=every_step_alone)
    np.testing.assert_allclose(rewards, 0.0, atol=1e-6)


def test_rewards_are_divided_by_a_running_rms_without_a_mean_shift() -> None:
    learned = _learned(MLP)
    obs, actions = _steps(50, 4)
    centered = learned.centered_rewards(obs, actions)
    rewards = learned(obs, actions)
    assert rewards.dtype == np.float32 and rewards.shape == (50, 4)
    np.testing.assert_allclose(rewards, centered / np.sqrt(np.mean(centered**2)), rtol=1e-3)
    assert abs(rewards.mean()) > 0.1  # the mean is kept: only the scale changed
    # A reward that is mostly an offset (CartPole's "still alive") stays near 1 per step instead of being divided
    # by its small spread.
    offset = 5.0 + 0.01 * centered
    learned.stats = RunningMeanStd(())
    learned.stats.update(offset.reshape(-1).astype(np.float64))
    assert 0.9 < float(np.mean(offset / learned.scale)) < 1.001
    stats = learned.state_dict()
    evaluated = learned(obs[:5], actions[:5], update_stats=False)
    assert learned.state_dict() == stats
    restored = _learned(MLP)
    restored.load_state_dict(stats)
    np.testing.assert_array_equal(restored(obs[:5], actions[:5], update_stats=False), evaluated)
    learned(10 * obs, actions)  # statistics move with every call
    assert learned.state_dict() != stats


def test_features_of_another_env_raise_config_error() -> None:
    learned = _learned(MLP)
    with pytest.raises(ConfigError, match="features per step"):
        learned(np.zeros((2, 1, 3), dtype=np.float32), np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(ConfigError, match="absorbing features"):
        LearnedReward(build_reward_model(MLP), np.zeros(3, dtype=np.float32), ACTION_SPACE)


def _rollout(obs: np.ndarray, actions: np.ndarray, done: np.ndarray) -> Rollout:
    zeros = np.zeros(done.shape, dtype=np.float32)
    return Rollout(
        obs=obs,
        next_obs=obs,
        norm_obs=obs,
        norm_next_obs=obs,
        actions=actions,
        env_actions=actions,
        true_rewards=zeros,
        terminated=done,
        truncated=np.zeros_like(done),
    )


def test_ppo_reward_fn_scores_a_rollout() -> None:
    obs, actions = _steps(8, 2)
    reward_fn = as_ppo_reward_fn(_learned(MLP))
    expected = _learned(MLP)(obs, actions)
    np.testing.assert_allclose(reward_fn(_rollout(obs, actions, np.zeros((8, 2), dtype=bool))), expected, rtol=1e-6)


def test_ppo_reward_fn_carries_transformer_context_across_rollouts() -> None:
    obs, actions = _steps(12, 2)
    done = np.zeros((12, 2), dtype=bool)
    done[[2, 7], 0] = True  # env 0: episodes end at steps 2 and 7; the second rollout starts at step 6
    learned = _learned(TRANSFORMER)
    reward_fn = as_ppo_reward_fn(learned)
    parts = []
    for rows in (slice(0, 6), slice(6, 12)):
        scaled = reward_fn(_rollout(obs[rows], actions[rows], done[rows]))
        parts.append(scaled * learned.scale)
    starts = np.zeros_like(done)
    starts[1:] = done[:-1]
    expected = _learned(TRANSFORMER).centered_rewards(obs, actions, episode_starts=starts)
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=1e-4, atol=1e-5)


def _run_wrapped(
    env: gym.vector.VectorEnv, reference: gym.vector.VectorEnv, model: RewardModel, steps: int
) -> tuple[list[dict[str, np.ndarray]], LearnedReward]:
    learned = LearnedReward(model, absorbing_features(4, ACTION_SPACE), ACTION_SPACE)
    wrapped = LearnedRewardVecEnv(env, learned)
    obs, _ = wrapped.reset(seed=3)
    reference.reset(seed=3)
    rng = np.random.default_rng(0)
    records = []
    for _ in range(steps):
        actions = rng.integers(0, 2, size=env.num_envs)
        next_obs, rewards, terminated, truncated, info = wrapped.step(actions)
        reference_obs_next, true_rewards, ref_terminated, ref_truncated, _ = reference.step(actions)
        np.testing.assert_array_equal(next_obs, reference_obs_next)
        np.testing.assert_array_equal(info["true_reward"], true_rewards)
        np.testing.assert_array_equal(terminated, ref_terminated)
        np.testing.assert_array_equal(truncated, ref_truncated)
        centered = rewards * learned.scale
        records.append({"obs": obs, "actions": actions, "centered": centered, "done": terminated | truncated})
        obs = next_obs
    return records, learned


def test_vec_env_wrapper_replaces_the_reward_and_keeps_the_true_one() -> None:
    model = build_reward_model(MLP)
    env, reference = gym.make_vec("CartPole-v1", 4), gym.make_vec("CartPole-v1", 4)  # next-step autoreset
    records, learned = _run_wrapped(env, reference, model, steps=80)
    obs, actions = np.stack([r["obs"] for r in records]), np.stack([r["actions"] for r in records])
    done, centered = np.stack([r["done"] for r in records]), np.stack([r["centered"] for r in records])
    resetting = np.zeros_like(done)
    resetting[1:] = done[:-1]  # the step after an episode's end only resets that sub-env
    assert resetting.sum() >= 4
    np.testing.assert_array_equal(centered[resetting], 0.0)
    expected = learned.centered_rewards(obs, actions)
    np.testing.assert_allclose(centered[~resetting], expected[~resetting], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP])
def test_vec_env_wrapper_gives_the_transformer_its_episode_context(mode: gym.vector.AutoresetMode) -> None:
    model = build_reward_model(TRANSFORMER)
    env, reference = (gym.make_vec("CartPole-v1", 2, "sync", vector_kwargs={"autoreset_mode": mode}) for _ in range(2))
    records, learned = _run_wrapped(env, reference, model, steps=50)
    obs, actions = np.stack([r["obs"] for r in records]), np.stack([r["actions"] for r in records])
    done, centered = np.stack([r["done"] for r in records]), np.stack([r["centered"] for r in records])
    ended = np.zeros_like(done)
    ended[1:] = done[:-1]
    assert ended.any()
    if mode == gym.vector.AutoresetMode.SAME_STEP:
        absorbed, starts = np.zeros_like(done), ended
    else:  # the reset-only step reads as absorbing (after its episode, like padding); the next step starts anew
        absorbed, starts = ended, np.zeros_like(done)
        starts[1:] = ended[:-1]
    expected = learned.centered_rewards(obs, actions, absorbed=absorbed, episode_starts=starts)
    expected[absorbed] = 0.0
    np.testing.assert_allclose(centered, expected, rtol=1e-4, atol=1e-5)
    each_step_alone = learned.centered_rewards(obs, actions, absorbed, episode_starts=np.ones_like(done))
    assert not np.allclose(expected[~absorbed], each_step_alone[~absorbed], atol=1e-3)  # the context mattered
