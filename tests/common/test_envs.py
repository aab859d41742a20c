"""The lean synchronous vector env against gymnasium's SyncVectorEnv with same-step autoreset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines.common.envs import SyncEnvs, make_vec_env
from baselines.common.errors import ConfigError


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sync_envs_give_gymnasiums_transitions(env_id: str) -> None:
    def make() -> gym.Env[np.ndarray, np.ndarray]:
        return gym.make(env_id, max_episode_steps=30)  # short episodes: many same-step resets

    reference = gym.vector.SyncVectorEnv([make] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    ours = make_vec_env(env_id, 3, copy=False, max_episode_steps=30)
    assert isinstance(ours, SyncEnvs)
    assert ours.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert ours.single_action_space == reference.single_action_space
    assert ours.observation_space == reference.observation_space
    np.testing.assert_array_equal(ours.reset(seed=7)[0], reference.reset(seed=7)[0])
    reference.action_space.seed(0)
    endings = 0
    for _ in range(200):
        actions = reference.action_space.sample()
        got, want = ours.step(actions), reference.step(actions)
        for mine, theirs in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert ("final_obs" in got[4]) == ("final_obs" in want[4])
        if "final_obs" in want[4]:
            np.testing.assert_array_equal(got[4]["_final_obs"], want[4]["_final_obs"])
            for i in np.flatnonzero(want[4]["_final_obs"]):
                np.testing.assert_array_equal(got[4]["final_obs"][i], want[4]["final_obs"][i])
                endings += 1
    assert endings >= 10, "the comparison covered episode ends"
    ours.close()
    reference.close()


def test_sync_envs_render_and_copy_semantics() -> None:
    envs = make_vec_env("CartPole-v1", 2, copy=False, render_mode="rgb_array")
    first = envs.reset(seed=0)[0]
    kept = first.copy()
    frames = np.stack(envs.render())  # type: ignore[arg-type]
    assert frames.shape[0] == 2 and frames.shape[-1] == 3
    after = envs.step(np.array([0, 1]))[0]
    assert after is first, "copy=False hands back the same buffer"
    assert not np.array_equal(after, kept)
    assert isinstance(make_vec_env("CartPole-v1", 2), gym.vector.SyncVectorEnv), "copy=True keeps gymnasium's"
    envs.close()


def test_sync_envs_refuse_structured_observations() -> None:
    with pytest.raises(ConfigError, match=r"Blackjack-v1 has Tuple.*Box or Discrete needed"):
        make_vec_env("Blackjack-v1", 2, copy=False)
