"""TD control: bootstrapping on truncation but not termination, exploration maths, and Example 6.6's numbers."""

from __future__ import annotations

import itertools
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest

from baselines.tabular import envs
from baselines.tabular.td import EXPLORATIONS, TD_ALGOS, Behaviour, Exploration, ExplorationKind, TDAlgo, train_td


class OneStepEnv(gym.Env[int, int]):
    """One state, two actions, reward 1 per step; every step either terminates or is truncated."""

    def __init__(self, ends_by: str) -> None:
        self.observation_space = gym.spaces.Discrete(1)  # type: ignore[assignment]
        self.action_space = gym.spaces.Discrete(2)  # type: ignore[assignment]
        self.ends_by = ends_by

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        return 0, 1.0, self.ends_by == "terminated", self.ends_by == "truncated", {}


@pytest.mark.parametrize("algo", TD_ALGOS)
@pytest.mark.parametrize(("ends_by", "expected"), [("terminated", 1.0), ("truncated", 2.0)])
def test_truncation_bootstraps_and_termination_does_not(algo: TDAlgo, ends_by: str, expected: float) -> None:
    """With gamma 0.5 the fixed point is Q = 1 after termination and Q = 1 + 0.5 Q = 2 after a time limit."""
    run = train_td(OneStepEnv(ends_by), algo, 400, 0.5, 0.5, Exploration(epsilon=0.5), np.random.default_rng(0))
    np.testing.assert_allclose(run.q, expected, atol=1e-6)
    np.testing.assert_array_equal(run.returns, 1.0)
    np.testing.assert_array_equal(run.lengths, 1)


@pytest.mark.slow
def test_cliff_walking_reproduces_example_6_6() -> None:
    """Figure 6.4 (alpha 0.5, epsilon 0.1, gamma 1): online return per episode about -25 for SARSA (the safe path)
    and about -50 for Q-learning (the optimal path along the cliff, with exploratory falls); Q-learning's greedy
    path returns -13."""
    env = gym.make("GridWorld-v0", preset="cliff")
    online: dict[str, float] = {}
    for algo in ("sarsa", "q-learning"):
        runs = [
            train_td(env, algo, 500, 0.5, 1.0, Exploration(epsilon=0.1), np.random.default_rng(run), env_seed=run)
            for run in range(10)
        ]
        online[algo] = float(np.mean([run.returns[100:] for run in runs]))
        if algo == "q-learning":
            eval_env = gym.make("GridWorld-v0", preset="cliff", max_episode_steps=100)
            for run in runs:
                returns, reached = envs.rollout(eval_env, run.q.argmax(axis=1), 1, 0, envs.goal_test(eval_env))
                assert returns[0] == -13.0 and reached[0]
    assert -32.0 < online["sarsa"] < -20.0
    assert -58.0 < online["q-learning"] < -42.0


@pytest.mark.parametrize(("algo", "kind"), list(itertools.product(TD_ALGOS, EXPLORATIONS)))
def test_every_algorithm_and_exploration_finds_the_shortest_path(algo: TDAlgo, kind: str) -> None:
    """Example 4.1's grid from (3, 0): the greedy policy reaches a terminal corner in 3 moves."""
    env = gym.make("GridWorld-v0", preset="sutton-4x4")
    exploration = Exploration(cast(ExplorationKind, kind), epsilon=0.1, temperature=1.0, ucb_c=1.0)
    run = train_td(env, algo, 200, 0.5, 1.0, exploration, np.random.default_rng(0), env_seed=0)
    eval_env = gym.make("GridWorld-v0", preset="sutton-4x4", max_episode_steps=50)
    returns, _ = envs.rollout(eval_env, run.q.argmax(axis=1), 1, 0, None)
    assert returns[0] == -3.0


def test_same_seeds_give_the_same_run() -> None:
    env = gym.make("GridWorld-v0", preset="windy", slip=0.1)
    first, second = (
        train_td(env, "double-q", 30, 0.5, 1.0, Exploration(), np.random.default_rng(7), env_seed=3) for _ in range(2)
    )
    np.testing.assert_array_equal(first.q, second.q)
    np.testing.assert_array_equal(first.returns, second.returns)


def test_epsilon_decays_per_episode_down_to_its_floor() -> None:
    exploration = Exploration(epsilon=0.5, epsilon_decay=0.5, epsilon_min=0.1)
    assert [exploration.epsilon_at(k) for k in range(4)] == [0.5, 0.25, 0.125, 0.1]


def test_epsilon_greedy_probabilities_split_ties() -> None:
    behaviour = Behaviour(Exploration(epsilon=0.2), 1, 4, np.random.default_rng(0))
    probs = behaviour.probabilities(np.array([1.0, 3.0, 3.0, 0.0]), 0)
    np.testing.assert_allclose(probs, [0.05, 0.45, 0.45, 0.05])


def test_boltzmann_probabilities_are_a_softmax() -> None:
    behaviour = Behaviour(Exploration("boltzmann", temperature=2.0), 1, 3, np.random.default_rng(0))
    q_row = np.array([0.0, 2.0, 4.0])
    expected = np.exp(q_row / 2.0) / np.exp(q_row / 2.0).sum()
    np.testing.assert_allclose(behaviour.probabilities(q_row, 0), expected)
    picks = np.bincount([behaviour.act(q_row, 0) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(picks, expected, atol=0.03)


def test_ucb_tries_every_action_then_adds_the_count_bonus() -> None:
    behaviour = Behaviour(Exploration("ucb", ucb_c=2.0), 1, 3, np.random.default_rng(0))
    q_row = np.array([0.0, 0.5, 0.0])
    tried = set()
    for _ in range(3):
        action = behaviour.act(q_row, 0)
        tried.add(action)
        behaviour.count(0, action)
    assert tried == {0, 1, 2}
    for action in (1, 1, 2):  # counts (1, 3, 2) after 6 visits of the state
        behaviour.count(0, action)
    scores = q_row + 2.0 * np.sqrt(np.log(6) / np.array([1.0, 3.0, 2.0]))  # (2.68, 2.05, 1.89)
    assert behaviour.act(q_row, 0) == int(scores.argmax()) == 0
    np.testing.assert_array_equal(behaviour.probabilities(q_row, 0), [1.0, 0.0, 0.0])


def test_unknown_algorithm_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown TD algorithm"):
        train_td(OneStepEnv("terminated"), "td-lambda", 1, 0.5, 0.5, Exploration(), np.random.default_rng(0))  # type: ignore[arg-type]
