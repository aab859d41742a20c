"""Testbed statistics and the single-bandit gymnasium Env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from baselines.bandits.agents import ActionValueAgent
from baselines.bandits.env import BanditEnv
from baselines.bandits.testbeds import BanditTestbed


def test_stationary_testbed_draws_true_values_around_offset() -> None:
    testbed = BanditTestbed(5000, 10, np.random.default_rng(0), mean_offset=4.0)
    assert testbed.q_star.shape == (5000, 10)
    assert abs(testbed.q_star.mean() - 4.0) < 0.02
    assert abs(testbed.q_star.std() - 1.0) < 0.02
    actions = np.zeros(5000, dtype=int)
    rewards = testbed.pull(actions)
    assert abs((rewards - testbed.q_star[:, 0]).std() - 1.0) < 0.03
    assert np.all(testbed.regret(testbed.best_action) == 0.0)


def test_nonstationary_testbed_walks_with_given_std() -> None:
    testbed = BanditTestbed(2000, 10, np.random.default_rng(0), nonstationary=True, walk_std=0.01)
    assert np.all(testbed.q_star == 0.0)
    assert np.all(testbed.is_optimal(np.arange(2000) % 10))  # all arms tie at the start
    for _ in range(100):
        testbed.advance()
    assert abs(testbed.q_star.std() - 0.1) < 0.005  # sqrt(100) * 0.01


def test_bandit_env_passes_checker_and_runs_an_agent_step_by_step() -> None:
    check_env(BanditEnv())
    env = BanditEnv(arms=5, max_steps=300)
    obs, info = env.reset(seed=3)
    assert obs == 0 and info["q_star"].shape == (5,)
    agent = ActionValueAgent(1, 5, np.random.default_rng(0), epsilon=0.1)
    truncated, steps, optimal = False, 0, 0
    while not truncated:
        action = agent.act()
        _, reward, terminated, truncated, info = env.step(int(action[0]))
        agent.update(action, np.array([reward]))
        optimal += int(action[0]) == info["optimal_action"]
        steps += 1
        assert not terminated
    assert steps == 300
    assert optimal / steps > 0.5  # epsilon-greedy finds the best arm of one easy problem


def test_bandit_env_is_registered() -> None:
    env = gym.make("KArmedBandit-v0", arms=4)
    env.reset(seed=0)
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 4
