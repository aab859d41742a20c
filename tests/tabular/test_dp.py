"""Dynamic programming against Sutton & Barto's numbers and hand-computed backups."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines.common.errors import ConfigError
from baselines.tabular.dp import (
    TabularModel,
    model_from_env,
    policy_evaluation,
    policy_iteration,
    q_values,
    value_iteration,
)
from baselines.tabular.gridworld import GridWorldEnv


def grid_model(preset: str) -> TabularModel:
    return model_from_env(gym.make("GridWorld-v0", preset=preset))


def test_policy_evaluation_reproduces_example_4_1() -> None:
    """Figure 4.1: the equiprobable random policy on the 4x4 grid, gamma 1."""
    model = grid_model("sutton-4x4")
    result = policy_evaluation(model, np.full((16, 4), 0.25), gamma=1.0, theta=1e-10)
    book = [[0, -14, -20, -22], [-14, -18, -20, -20], [-20, -20, -18, -14], [-22, -20, -14, 0]]
    assert result.converged
    np.testing.assert_allclose(result.values.reshape(4, 4), book, atol=1e-7)


def test_value_iteration_reproduces_example_3_5() -> None:
    """Figure 3.5: v* of the 5x5 grid with jumps A -> A' (+10) and B -> B' (+5), gamma 0.9."""
    result = value_iteration(grid_model("sutton-5x5"), gamma=0.9, theta=1e-10)
    book = [
        [22.0, 24.4, 22.0, 19.4, 17.5],
        [19.8, 22.0, 19.8, 17.8, 16.0],
        [17.8, 19.8, 17.8, 16.0, 14.4],
        [16.0, 17.8, 16.0, 14.4, 13.0],
        [14.4, 16.0, 14.4, 13.0, 11.7],
    ]
    assert result.converged
    np.testing.assert_array_equal(result.values.reshape(5, 5).round(1), book)
    # v*(A) = 10 / (1 - 0.9^5) exactly: jump to A' and walk the four cells back up.
    assert result.values[1] == pytest.approx(10 / (1 - 0.9**5), abs=1e-8)


@pytest.mark.parametrize(("env_id", "expected"), [("FrozenLake-v1", 0.542), ("FrozenLake8x8-v1", 0.4146)])
def test_frozenlake_optimal_start_value(env_id: str, expected: float) -> None:
    """Slippery FrozenLake, gamma 0.99: V*(start) = 0.542 (4x4) and 0.4146 (8x8)."""
    model = model_from_env(gym.make(env_id))
    for solve in (value_iteration, policy_iteration):
        result = solve(model, 0.99, 1e-10, 10_000)
        assert result.converged
        assert round(float(result.values[0]), len(str(expected)) - 2) == expected


@pytest.mark.parametrize(("preset", "expected"), [("windy", -15.0), ("cliff", -13.0)])
def test_shortest_paths_of_windy_and_cliff(preset: str, expected: float) -> None:
    """Undiscounted -1 per step: V*(start) is minus the shortest path (15 moves in Example 6.5, 13 in 6.6)."""
    env = GridWorldEnv(preset)
    result = value_iteration(model_from_env(env), gamma=1.0)
    assert result.values[env.start_state] == expected


@pytest.mark.parametrize(("preset", "gamma"), [("sutton-4x4", 1.0), ("sutton-5x5", 0.9), ("cliff", 1.0)])
def test_policy_iteration_agrees_with_value_iteration(preset: str, gamma: float) -> None:
    model = grid_model(preset)
    by_values = value_iteration(model, gamma, theta=1e-10)
    by_policies = policy_iteration(model, gamma, theta=1e-10)
    assert by_policies.converged and by_policies.iterations < 10
    np.testing.assert_allclose(by_policies.values, by_values.values, atol=1e-6)
    # Both greedy policies are optimal: each picks an action whose value equals the optimum.
    q = q_values(model, by_values.values, gamma)
    rows = np.arange(model.n_states)
    np.testing.assert_allclose(q[rows, by_policies.actions], by_values.values, atol=1e-6)


class TwoStateEnv(gym.Env[np.int64, np.int64]):
    """Action 0 in state 0 ends the episode (+1) or stays (+0.5), half the time each."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.Discrete(2)
        self.P = {
            0: {0: [(0.5, 1, 1.0, True), (0.5, 0, 0.5, False)], 1: [(1.0, 1, 0.0, False)]},
            1: {0: [(1.0, 1, 2.0, False)], 1: [(1.0, 0, 0.0, False)]},
        }


def test_terminating_transitions_do_not_bootstrap() -> None:
    model = model_from_env(TwoStateEnv())
    np.testing.assert_array_equal(model.transitions[0, 0], [0.5, 0.0])
    np.testing.assert_array_equal(model.transitions[0, 1], [0.0, 1.0])
    np.testing.assert_array_equal(model.rewards, [[0.75, 0.0], [2.0, 0.0]])
    values = np.array([10.0, 100.0])
    # q(0, 0) = 0.5 * 1 + 0.5 * (0.5 + 0.9 * v(0)): the terminating half adds no 0.9 * v(1).
    q = q_values(model, values, 0.9)
    np.testing.assert_allclose(q, [[0.5 + 0.5 * (0.5 + 9.0), 90.0], [2.0 + 90.0, 9.0]])


def test_iteration_cap_reports_no_convergence() -> None:
    result = value_iteration(grid_model("windy"), gamma=1.0, theta=1e-8, max_iterations=3)
    assert not result.converged and result.iterations == 3 and len(result.deltas) == 3


def test_env_without_transition_model_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="needs a transition model P; CartPole-v1 has none"):
        model_from_env(gym.make("CartPole-v1"), "CartPole-v1")
