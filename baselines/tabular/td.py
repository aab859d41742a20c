"""TD control on a real gymnasium env (Sutton & Barto, 2nd ed., chapter 6): Q-learning, SARSA, expected SARSA and
double Q-learning, with epsilon-greedy, Boltzmann or count-based UCB exploration.

The update is ``Q(s, a) += alpha * (target - Q(s, a))`` with ``target = r`` when the episode terminated and
``target = r + gamma * bootstrap(s')`` otherwise, so a time-limit truncation still bootstraps:

- q-learning (eq. 6.8): ``max_a Q(s', a)``;
- sarsa (eq. 6.7): ``Q(s', a')`` with ``a'`` the action the behaviour policy takes next;
- expected-sarsa (eq. 6.9): ``sum_a pi(a | s') Q(s', a)`` under the behaviour policy;
- double-q (section 6.7): a coin picks the table to update, ``Q1(s, a) += alpha (r + gamma Q2(s', argmax Q1(s'))
  - Q1(s, a))`` or the mirror image; actions are chosen on ``Q1 + Q2``.

Per-step work is a handful of scalar operations on rows of a (S, A) array: these loops run inside the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np

from baselines.common.progress import progress
from baselines.tabular.envs import table_shape

TDAlgo = Literal["q-learning", "sarsa", "expected-sarsa", "double-q"]
ExplorationKind = Literal["epsilon-greedy", "boltzmann", "ucb"]
TD_ALGOS: tuple[str, ...] = get_args(TDAlgo)
EXPLORATIONS: tuple[str, ...] = get_args(ExplorationKind)


@dataclass(frozen=True)
class Exploration:
    """How the behaviour policy picks an action from the action values of a state."""

    kind: ExplorationKind = "epsilon-greedy"
    epsilon: float = 0.1
    """Probability of a uniformly random action (epsilon-greedy)."""
    epsilon_decay: float = 1.0
    """Epsilon is multiplied by this after every episode (1: constant)."""
    epsilon_min: float = 0.0
    """Epsilon never decays below this."""
    temperature: float = 1.0
    """Boltzmann: pi(a | s) is proportional to exp(Q(s, a) / temperature)."""
    ucb_c: float = 1.0
    """UCB: the greedy action of Q(s, a) + c sqrt(ln N(s) / N(s, a)); untried actions first."""

    def epsilon_at(self, episode: int) -> float:
        """Epsilon during ``episode`` (counted from 0)."""
        return max(self.epsilon_min, self.epsilon * self.epsilon_decay**episode)


@dataclass(frozen=True)
class TDRun:
    """One training run. ``q`` (S, A) (the mean of both tables for double-q); per episode: ``returns`` (the
    undiscounted sum of rewards) and ``lengths`` (steps), shape (episodes,)."""

    q: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray


class Behaviour:
    """The exploring policy: picks actions and gives their probabilities (for expected SARSA).

    Ties between greedy actions are broken uniformly at random, so an all-zero table does not always pick action 0.
    """

    def __init__(self, exploration: Exploration, n_states: int, n_actions: int, rng: np.random.Generator) -> None:
        self.exploration = exploration
        self.n_actions = n_actions
        self.rng = rng
        self.epsilon = exploration.epsilon
        self.state_counts = np.zeros(n_states)
        self.action_counts = np.zeros((n_states, n_actions))

    def act(self, q_row: np.ndarray, state: int) -> int:
        kind = self.exploration.kind
        if kind == "epsilon-greedy":
            if self.rng.random() < self.epsilon:
                return int(self.rng.integers(self.n_actions))
            return self.greedy(q_row)
        if kind == "boltzmann":
            cumulative = np.cumsum(self._softmax(q_row))
            return min(int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1])), self.n_actions - 1)
        return self.greedy(self._ucb_scores(q_row, state))

    def probabilities(self, q_row: np.ndarray, state: int) -> np.ndarray:
        """pi(. | state) of the action ``act`` would pick now, shape (A,)."""
        kind = self.exploration.kind
        if kind == "boltzmann":
            return self._softmax(q_row)
        scores = q_row if kind == "epsilon-greedy" else self._ucb_scores(q_row, state)
        greedy = (scores == scores.max()).astype(float)
        greedy /= greedy.sum()
        if kind == "ucb":
            return greedy
        return np.asarray(self.epsilon / self.n_actions + (1.0 - self.epsilon) * greedy)

    def count(self, state: int, action: int) -> None:
        """Record that ``action`` was taken in ``state`` (UCB's visit counts)."""
        self.state_counts[state] += 1
        self.action_counts[state, action] += 1

    def greedy(self, scores: np.ndarray) -> int:
        """The index of the highest score, ties broken at random."""
        best = np.flatnonzero(scores == scores.max())
        return int(best[0]) if best.size == 1 else int(self.rng.choice(best))

    def _softmax(self, q_row: np.ndarray) -> np.ndarray:
        logits = (q_row - q_row.max()) / self.exploration.temperature
        weights = np.exp(logits)
        return np.asarray(weights / weights.sum())

    def _ucb_scores(self, q_row: np.ndarray, state: int) -> np.ndarray:
        counts = self.action_counts[state]
        if not counts.all():
            return np.where(counts == 0, np.inf, q_row)
        bonus = self.exploration.ucb_c * np.sqrt(math.log(self.state_counts[state]) / counts)
        return np.asarray(q_row + bonus)


def train_td(
    env: gym.Env[Any, Any],
    algo: TDAlgo,
    episodes: int,
    alpha: float,
    gamma: float,
    exploration: Exploration,
    rng: np.random.Generator,
    env_seed: int | None = None,
    desc: str | None = None,
) -> TDRun:
    """Train one agent from an all-zero table for ``episodes`` episodes on ``env`` (discrete states and actions).

    ``rng`` drives exploration and double-q's coin; ``env_seed`` seeds the env's first reset. A progress bar is
    shown when ``desc`` is given.
    """
    if algo not in TD_ALGOS:
        raise ValueError(f"unknown TD algorithm {algo!r}; choose from {', '.join(TD_ALGOS)}")
    n_states, n_actions = table_shape(env)
    q = np.zeros((n_states, n_actions))
    q_other = np.zeros((n_states, n_actions))  # double-q's second table
    behaviour = Behaviour(exploration, n_states, n_actions, rng)
    double = algo == "double-q"

    def act(state: int) -> int:
        return behaviour.act(q[state] + q_other[state] if double else q[state], state)

    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=int)
    episode_iter = progress(range(episodes), desc=desc, leave=False) if desc is not None else range(episodes)
    for episode in episode_iter:
        behaviour.epsilon = exploration.epsilon_at(episode)
        state, _ = env.reset(seed=env_seed if episode == 0 else None)
        state = int(state)
        action = act(state)
        total, steps = 0.0, 0
        while True:
            behaviour.count(state, action)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            next_state, reward = int(next_obs), float(reward)
            total += reward
            steps += 1
            table, other = q, q_other
            if algo == "q-learning":
                bootstrap = q[next_state].max()
            elif algo == "sarsa":
                next_action = act(next_state)
                bootstrap = q[next_state, next_action]
            elif algo == "expected-sarsa":
                bootstrap = behaviour.probabilities(q[next_state], next_state) @ q[next_state]
            else:
                if rng.random() < 0.5:
                    table, other = q_other, q
                bootstrap = other[next_state, behaviour.greedy(table[next_state])]
            target = reward if terminated else reward + gamma * bootstrap
            table[state, action] += alpha * (target - table[state, action])
            if terminated or truncated:
                break
            state = next_state
            action = next_action if algo == "sarsa" else act(state)
        returns[episode], lengths[episode] = total, steps
    final_q = (q + q_other) / 2.0 if double else q
    return TDRun(final_q, returns, lengths)
