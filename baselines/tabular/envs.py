"""The envs tabular methods run on: opening one by id, asking it what runs and reports need (start states, goals,
how to draw it as a grid), and rolling out a fixed policy on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.toy_text.cliffwalking import CliffWalkingEnv
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from gymnasium.wrappers import TimeLimit

from baselines.common.errors import ConfigError, check
from baselines.tabular.gridworld import ARROWS, GridWorldEnv

GRIDWORLD_ID = "GridWorld-v0"
TABULAR_ENV_IDS = (GRIDWORLD_ID, "FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v1", "Taxi-v4")

# Whether an episode that terminated in ``state`` with last ``reward`` reached the goal.
GoalTest = Callable[[int, float], bool]


def make_env(env_id: str, preset: str | None = None, step_cap: int | None = None) -> gym.Env[Any, Any]:
    """``gym.make(env_id)``; ``preset`` goes to GridWorld-v0; envs with no time limit get ``step_cap``.

    Raises ConfigError for ids gymnasium does not know (naming envs that work here) or a preset on another env.
    """
    check(
        preset is None or env_id == GRIDWORLD_ID,
        f"--preset applies to {GRIDWORLD_ID} only, not {env_id}; drop --preset or use --env {GRIDWORLD_ID}",
    )
    kwargs: dict[str, Any] = {"preset": preset} if env_id == GRIDWORLD_ID else {}
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise ConfigError(
            f"cannot make env '{env_id}' ({str(error).rstrip('.')}); tabular envs include {', '.join(TABULAR_ENV_IDS)}"
        ) from None
    if step_cap is not None and (env.spec is None or env.spec.max_episode_steps is None):
        env = TimeLimit(env, max_episode_steps=step_cap)
    return env


def table_shape(env: gym.Env[Any, Any], env_id: str = "this env") -> tuple[int, int]:
    """(states, actions) of an env whose observations and actions are Discrete; ConfigError otherwise."""
    observations, actions = env.observation_space, env.action_space
    if not (isinstance(observations, gym.spaces.Discrete) and isinstance(actions, gym.spaces.Discrete)):
        raise ConfigError(
            f"tabular methods need discrete observations and actions; {env_id} has {type(observations).__name__} "
            f"observations and {type(actions).__name__} actions; try {', '.join(TABULAR_ENV_IDS)}"
        )
    return int(observations.n), int(actions.n)


def start_distribution(env: gym.Env[Any, Any]) -> np.ndarray:
    """The probability of each state at reset (toy-text envs store it; otherwise the state one reset gives)."""
    stored = getattr(env.unwrapped, "initial_state_distrib", None)
    if stored is not None:
        return np.asarray(stored, dtype=float)
    state, _ = env.reset(seed=0)
    distribution = np.zeros(table_shape(env)[0])
    distribution[int(state)] = 1.0
    return distribution


def goal_test(env: gym.Env[Any, Any]) -> GoalTest | None:
    """How to tell a successful episode, or None when the env has no goal.

    GridWorld: ended on a goal cell; FrozenLake: ended on a ``G`` tile; CliffWalking: terminated (only the goal
    ends it); any other env: ended with a positive reward (Taxi's drop-off).
    """
    base = env.unwrapped
    if isinstance(base, GridWorldEnv):
        goals = base.goal_states
        return (lambda state, reward: state in goals) if goals else None
    if isinstance(base, FrozenLakeEnv):
        goal_states = {int(s) for s in np.flatnonzero(np.asarray(base.desc).ravel() == b"G")}
        return lambda state, reward: state in goal_states
    if isinstance(base, CliffWalkingEnv):
        return lambda state, reward: True
    return lambda state, reward: reward > 0


@dataclass(frozen=True)
class GridView:
    """How to draw an env's states as a grid (row-major): a short label per cell (S start, G goal, H hole,
    T trap, # wall, C cliff, J jump), an arrow per action, and the absorbing states (shown without an arrow)."""

    shape: tuple[int, int]
    labels: list[list[str]]
    arrows: tuple[str, ...]
    absorbing: np.ndarray


def grid_view(env: gym.Env[Any, Any]) -> GridView | None:
    """A GridView for GridWorld, FrozenLake and CliffWalking; None for envs whose states are not grid cells."""
    base = env.unwrapped
    if isinstance(base, GridWorldEnv):
        shape, labels, arrows = base.layout.shape, base.cell_labels(), ARROWS
    elif isinstance(base, FrozenLakeEnv):
        letters = np.char.decode(np.asarray(base.desc)).tolist()
        labels = [["" if letter == "F" else letter for letter in row] for row in letters]
        shape, arrows = (len(labels), len(labels[0])), ARROWS
    elif isinstance(base, CliffWalkingEnv):
        # The documented layout: start (3, 0), goal (3, 11), the cliff in between; actions up, right, down, left.
        shape, arrows = (4, 12), ("↑", "→", "↓", "←")
        labels = [[""] * 12 for _ in range(4)]
        labels[3] = ["S"] + ["C"] * 10 + ["G"]
    else:
        return None
    return GridView(shape, labels, arrows, absorbing_states(base))


def absorbing_states(env: gym.Env[Any, Any]) -> np.ndarray:
    """(S,) bool: states whose every action stays put and terminates (FrozenLake's holes and goal), from ``P``."""
    table: dict[int, dict[int, list[tuple[float, int, float, bool]]]] = getattr(env.unwrapped, "P", {})
    absorbing = np.zeros(table_shape(env)[0], dtype=np.bool_)
    for state, by_action in table.items():
        absorbing[state] = all(
            len(outcomes) == 1 and outcomes[0][1] == state and outcomes[0][3] for outcomes in by_action.values()
        )
    return absorbing


def rollout(
    env: gym.Env[Any, Any], actions: np.ndarray, episodes: int, seed: int, reached_goal: GoalTest | None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the deterministic policy ``actions`` (S,) for ``episodes`` episodes; the env's time limit ends loops.

    Returns the undiscounted return and whether the goal was reached, each of shape (episodes,).
    """
    returns = np.zeros(episodes)
    successes = np.zeros(episodes, dtype=bool)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        total, reward, terminated, truncated = 0.0, 0.0, False, False
        while not (terminated or truncated):
            state, step_reward, terminated, truncated, _ = env.step(int(actions[int(state)]))
            reward = float(step_reward)
            total += reward
        returns[episode] = total
        successes[episode] = terminated and reached_goal is not None and reached_goal(int(state), reward)
    return returns, successes
