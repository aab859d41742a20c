"""Bandit agents vectorized over runs: every agent holds ``(runs, arms)`` arrays and acts for all runs at once.

Sutton & Barto, 2nd ed., chapter 2: action-value methods (greedy, epsilon-greedy, optimistic initial values,
sample averages or a constant step size), UCB (eq. 2.10), the gradient bandit (eq. 2.12), and Gaussian
Thompson sampling with known unit reward variance.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


def random_argmax(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax of ``(runs, arms)`` with ties broken uniformly at random."""
    is_max = values >= values.max(axis=1, keepdims=True)
    return np.argmax(np.where(is_max, rng.random(values.shape), -1.0), axis=1)


class BanditAgent(Protocol):
    """An agent for ``runs`` bandits of ``arms`` arms."""

    def act(self) -> np.ndarray:
        """Actions ``(runs,)`` (ints in ``[0, arms)``)."""
        ...

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from one reward per run."""
        ...


class ActionValueAgent:
    """Greedy / epsilon-greedy on action-value estimates ``Q`` with initial value ``q0``.

    ``alpha=None`` uses sample averages (step 1/N), else a constant step size (recency-weighted average).
    """

    def __init__(
        self,
        runs: int,
        arms: int,
        rng: np.random.Generator,
        epsilon: float = 0.0,
        alpha: float | None = None,
        q0: float = 0.0,
    ) -> None:
        self.rng = rng
        self.epsilon = epsilon
        self.alpha = alpha
        self.arms = arms
        self.q = np.full((runs, arms), float(q0))
        self.n = np.zeros((runs, arms))
        self._run_index = np.arange(runs)

    def act(self) -> np.ndarray:
        greedy = random_argmax(self.q, self.rng)
        if self.epsilon <= 0.0:
            return greedy
        explore = self.rng.random(greedy.shape[0]) < self.epsilon
        return np.where(explore, self.rng.integers(self.arms, size=greedy.shape[0]), greedy)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        idx = (self._run_index, actions)
        self.n[idx] += 1.0
        step = 1.0 / self.n[idx] if self.alpha is None else self.alpha
        self.q[idx] += step * (rewards - self.q[idx])


class UCBAgent:
    """Upper-confidence-bound action selection: ``argmax Q + c sqrt(ln t / N)``; untried arms first (eq. 2.10)."""

    def __init__(
        self, runs: int, arms: int, rng: np.random.Generator, c: float = 2.0, alpha: float | None = None
    ) -> None:
        self.rng = rng
        self.c = c
        self.alpha = alpha
        self.q = np.zeros((runs, arms))
        self.n = np.zeros((runs, arms))
        self.t = 0
        self._run_index = np.arange(runs)

    def act(self) -> np.ndarray:
        self.t += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = self.c * np.sqrt(np.log(self.t) / self.n)
        return random_argmax(np.where(self.n > 0, self.q + bonus, np.inf), self.rng)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        idx = (self._run_index, actions)
        self.n[idx] += 1.0
        step = 1.0 / self.n[idx] if self.alpha is None else self.alpha
        self.q[idx] += step * (rewards - self.q[idx])


class GradientAgent:
    """Gradient bandit: softmax over preferences ``H``, stochastic gradient ascent with a reward baseline.

    ``H(a) += alpha (R - baseline)(1[a=A] - pi(a))`` where the baseline is the running mean reward, or 0
    without baseline (eq. 2.12).
    """

    def __init__(
        self, runs: int, arms: int, rng: np.random.Generator, alpha: float = 0.1, baseline: bool = True
    ) -> None:
        self.rng = rng
        self.alpha = alpha
        self.baseline = baseline
        self.h = np.zeros((runs, arms))
        self.mean_reward = np.zeros(runs)
        self.t = 0
        self._run_index = np.arange(runs)
        self._pi = np.full((runs, arms), 1.0 / arms)

    def act(self) -> np.ndarray:
        z = np.exp(self.h - self.h.max(axis=1, keepdims=True))
        self._pi = z / z.sum(axis=1, keepdims=True)
        cdf = np.cumsum(self._pi, axis=1)
        u = self.rng.random((self.h.shape[0], 1)) * cdf[:, -1:]
        return np.minimum((cdf < u).sum(axis=1), self.h.shape[1] - 1)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.t += 1
        if self.baseline:
            self.mean_reward += (rewards - self.mean_reward) / self.t
        advantage = rewards - (self.mean_reward if self.baseline else 0.0)
        one_hot = np.zeros_like(self.h)
        one_hot[self._run_index, actions] = 1.0
        self.h += self.alpha * advantage[:, None] * (one_hot - self._pi)


class ThompsonAgent:
    """Gaussian Thompson sampling: prior ``N(q0, prior_var)`` per arm, known reward variance 1.

    Each step samples ``theta(a)`` from every arm's posterior and plays the argmax.
    """

    def __init__(self, runs: int, arms: int, rng: np.random.Generator, q0: float = 0.0, prior_var: float = 1.0) -> None:
        self.rng = rng
        self.precision = np.full((runs, arms), 1.0 / prior_var)
        self.mean = np.full((runs, arms), float(q0))
        self._run_index = np.arange(runs)

    def act(self) -> np.ndarray:
        theta = self.mean + self.rng.standard_normal(self.mean.shape) / np.sqrt(self.precision)
        return np.argmax(theta, axis=1)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        idx = (self._run_index, actions)
        new_precision = self.precision[idx] + 1.0
        self.mean[idx] += (rewards - self.mean[idx]) / new_precision
        self.precision[idx] = new_precision
