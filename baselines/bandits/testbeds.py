"""k-armed bandit testbeds, vectorized over independent runs (Sutton & Barto, 2nd ed., section 2.3).

Arrays have shape ``(runs, arms)``: every run is its own bandit problem, stepped together.
"""

from __future__ import annotations

import numpy as np

from baselines.common.errors import check


class BanditTestbed:
    """``runs`` independent k-armed bandits; rewards are ``N(q*(a), 1)``.

    Stationary: ``q*(a) ~ N(mean_offset, 1)`` drawn once. Non-stationary (Exercise 2.5): every ``q*(a)``
    starts at ``mean_offset`` and takes an independent random walk with ``walk_std`` per step.
    """

    def __init__(
        self,
        runs: int,
        arms: int,
        rng: np.random.Generator,
        nonstationary: bool = False,
        mean_offset: float = 0.0,
        walk_std: float = 0.01,
    ) -> None:
        check(runs >= 1, f"runs must be at least 1, got {runs}")
        check(arms >= 2, f"a bandit needs at least 2 arms, got {arms}")
        check(walk_std >= 0, f"walk_std must be non-negative, got {walk_std}")
        self.runs = runs
        self.arms = arms
        self.rng = rng
        self.nonstationary = nonstationary
        self.walk_std = walk_std
        self._run_index = np.arange(runs)
        if nonstationary:
            self.q_star = np.full((runs, arms), float(mean_offset))
        else:
            self.q_star = rng.normal(mean_offset, 1.0, size=(runs, arms))
        self._refresh_best()

    def _refresh_best(self) -> None:
        self.best_action = self.q_star.argmax(axis=1)
        self.best_value = self.q_star[self._run_index, self.best_action]

    def true_values(self, actions: np.ndarray) -> np.ndarray:
        """``q*(A_t)`` per run ``(runs,)``."""
        return self.q_star[self._run_index, actions]

    def pull(self, actions: np.ndarray, true_values: np.ndarray | None = None) -> np.ndarray:
        """Rewards ``(runs,)`` for one action per run (pass ``true_values`` when already looked up)."""
        values = self.true_values(actions) if true_values is None else true_values
        return values + self.rng.standard_normal(values.shape[0])

    def regret(self, actions: np.ndarray) -> np.ndarray:
        """Expected regret ``max_a q*(a) - q*(A_t)`` per run, for the actions just taken."""
        return self.best_value - self.true_values(actions)

    def is_optimal(self, actions: np.ndarray) -> np.ndarray:
        """Whether each action is the optimal arm. With ties in q* (non-stationary start), any maximizer counts."""
        return self.true_values(actions) >= self.best_value

    def advance(self) -> None:
        """Move the random walks one step (no-op when stationary)."""
        if self.nonstationary:
            self.q_star += self.rng.normal(0.0, self.walk_std, size=self.q_star.shape)
            self._refresh_best()
