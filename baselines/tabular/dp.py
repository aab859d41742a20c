"""Dynamic programming on a known model (Sutton & Barto, 2nd ed., chapter 4).

Any env whose unwrapped form exposes FrozenLake's ``P[s][a] = [(prob, next_state, reward, terminated), ...]``
(GridWorld-v0, FrozenLake-v1, CliffWalking-v1, Taxi-v4) becomes dense arrays, and every sweep is one vectorized
Bellman backup over all states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.common.errors import ConfigError
from baselines.tabular.envs import table_shape


@dataclass(frozen=True)
class TabularModel:
    """A finite MDP as arrays.

    ``transitions[s, a, s']`` is the probability of moving to ``s'`` and going on; transitions that terminate are
    left out, so their next state never bootstraps (rows may sum to less than 1). ``rewards[s, a]`` is the expected
    immediate reward, terminating transitions included.
    """

    transitions: np.ndarray
    rewards: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.rewards.shape[1])


@dataclass(frozen=True)
class DPResult:
    """What a DP method returns.

    ``values`` (S,); ``policy`` (S, A) action probabilities (one-hot for control); ``iterations``: sweeps for
    evaluation and value iteration, improvement steps for policy iteration; ``deltas`` (iterations,): the largest
    value change of each iteration; ``policy_changes`` (iterations,): states whose greedy action changed.
    """

    values: np.ndarray
    policy: np.ndarray
    iterations: int
    converged: bool
    deltas: np.ndarray
    policy_changes: np.ndarray

    @property
    def actions(self) -> np.ndarray:
        """The greedy action of every state, shape (S,)."""
        return np.asarray(self.policy.argmax(axis=1))


def model_from_env(env: gym.Env[Any, Any], env_id: str = "this env") -> TabularModel:
    """Dense arrays from ``env.unwrapped.P``; raise ConfigError when the env has no transition model."""
    table = getattr(env.unwrapped, "P", None)
    if not isinstance(table, dict):
        raise ConfigError(
            f"dynamic programming needs a transition model P; {env_id} has none; "
            "use q-learning, sarsa, expected-sarsa or double-q instead"
        )
    n_states, n_actions = table_shape(env, env_id)
    transitions = np.zeros((n_states, n_actions, n_states))
    rewards = np.zeros((n_states, n_actions))
    for state, by_action in table.items():
        for action, outcomes in by_action.items():
            for prob, next_state, reward, terminated in outcomes:
                rewards[state, action] += prob * reward
                if not terminated:
                    transitions[state, action, next_state] += prob
    return TabularModel(transitions, rewards)


def q_values(model: TabularModel, values: np.ndarray, gamma: float) -> np.ndarray:
    """One Bellman backup: ``q[s, a] = r(s, a) + gamma * sum_s' p(s' | s, a) v(s')`` (S&B eq. 4.6), shape (S, A)."""
    return np.asarray(model.rewards + gamma * (model.transitions @ values))


def greedy_policy(q: np.ndarray, previous: np.ndarray | None = None, tolerance: float = 0.0) -> np.ndarray:
    """One-hot (S, A) policy of the argmax actions; keeps ``previous`` actions that are within ``tolerance`` of it.

    Keeping ties stable stops policy iteration from cycling between equally good actions.
    """
    actions = q.argmax(axis=1)
    if previous is not None:
        rows = np.arange(q.shape[0])
        keep = q[rows, previous] >= q[rows, actions] - tolerance
        actions = np.where(keep, previous, actions)
    return np.asarray(np.eye(q.shape[1])[actions])


def policy_evaluation(
    model: TabularModel,
    policy: np.ndarray,
    gamma: float,
    theta: float = 1e-8,
    max_iterations: int = 10_000,
    initial_values: np.ndarray | None = None,
) -> DPResult:
    """Iterative policy evaluation (S&B section 4.1) of a (S, A) stochastic policy, synchronous sweeps.

    Stops when no value changes by ``theta`` or more in a sweep, or after ``max_iterations`` sweeps.
    """
    if policy.shape != model.rewards.shape:
        raise ValueError(f"policy must have shape {model.rewards.shape}, got {policy.shape}")
    values = np.zeros(model.n_states) if initial_values is None else initial_values.astype(float)
    deltas: list[float] = []
    for _ in range(max_iterations):
        new_values = (policy * q_values(model, values, gamma)).sum(axis=1)
        deltas.append(float(np.abs(new_values - values).max()))
        values = new_values
        if deltas[-1] < theta:
            break
    converged = bool(deltas) and deltas[-1] < theta
    no_changes = np.zeros(len(deltas), dtype=int)
    return DPResult(values, policy, len(deltas), converged, np.array(deltas), no_changes)


def policy_iteration(model: TabularModel, gamma: float, theta: float = 1e-8, max_iterations: int = 10_000) -> DPResult:
    """Policy iteration (S&B section 4.3) from the equiprobable random policy.

    Each step evaluates the policy (warm-started from the last values) and makes it greedy; it stops when the
    greedy policy no longer changes. ``max_iterations`` caps both the improvement steps and each evaluation.
    """
    policy = np.full(model.rewards.shape, 1.0 / model.n_actions)
    values = np.zeros(model.n_states)
    actions: np.ndarray | None = None
    deltas: list[float] = []
    changes: list[int] = []
    converged = False
    for _ in range(max_iterations):
        evaluation = policy_evaluation(model, policy, gamma, theta, max_iterations, values)
        deltas.append(float(np.abs(evaluation.values - values).max()))
        values = evaluation.values
        policy = greedy_policy(q_values(model, values, gamma), actions, tolerance=theta)
        new_actions = policy.argmax(axis=1)
        changes.append(model.n_states if actions is None else int((new_actions != actions).sum()))
        actions = new_actions
        if changes[-1] == 0:
            converged = evaluation.converged
            break
    return DPResult(values, policy, len(deltas), converged, np.array(deltas), np.array(changes))


def value_iteration(model: TabularModel, gamma: float, theta: float = 1e-8, max_iterations: int = 10_000) -> DPResult:
    """Value iteration (S&B section 4.4): ``v <- max_a q(s, a)`` until no value changes by ``theta`` or more."""
    values = np.zeros(model.n_states)
    actions: np.ndarray | None = None
    deltas: list[float] = []
    changes: list[int] = []
    for _ in range(max_iterations):
        q = q_values(model, values, gamma)
        new_actions = q.argmax(axis=1)
        changes.append(model.n_states if actions is None else int((new_actions != actions).sum()))
        actions = new_actions
        new_values = q.max(axis=1)
        deltas.append(float(np.abs(new_values - values).max()))
        values = new_values
        if deltas[-1] < theta:
            break
    converged = bool(deltas) and deltas[-1] < theta
    policy = greedy_policy(q_values(model, values, gamma))
    return DPResult(values, policy, len(deltas), converged, np.array(deltas), np.array(changes))
