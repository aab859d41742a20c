"""A single k-armed bandit as a gymnasium Env, so an agent can be used one step at a time."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.bandits.testbeds import BanditTestbed
from baselines.common.envs import register_envs


class BanditEnv(gym.Env[np.int64, np.int64]):
    """One bandit: a single dummy observation (0), ``arms`` actions, reward ``N(q*(a), 1)``.

    ``info`` reports the optimal arm and the expected regret of the action taken. Episodes are truncated after
    ``max_steps`` pulls; every reset draws a new problem from the seeded generator.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's own class attribute)

    def __init__(
        self,
        arms: int = 10,
        nonstationary: bool = False,
        mean_offset: float = 0.0,
        walk_std: float = 0.01,
        max_steps: int = 1000,
    ) -> None:
        self.arms = arms
        self.nonstationary = nonstationary
        self.mean_offset = mean_offset
        self.walk_std = walk_std
        self.max_steps = max_steps
        self.observation_space = gym.spaces.Discrete(1)
        self.action_space = gym.spaces.Discrete(arms)
        self._testbed: BanditTestbed | None = None
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self._testbed = BanditTestbed(1, self.arms, self.np_random, self.nonstationary, self.mean_offset, self.walk_std)
        self._steps = 0
        return np.int64(0), {"q_star": self._testbed.q_star[0].copy()}

    def step(self, action: np.int64 | int) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        assert self._testbed is not None, "call reset() before step()"
        assert self.action_space.contains(np.int64(action)), f"invalid action {action!r}"
        actions = np.array([int(action)])
        reward = float(self._testbed.pull(actions)[0])
        info = {
            "optimal_action": int(self._testbed.best_action[0]),
            "regret": float(self._testbed.regret(actions)[0]),
        }
        self._testbed.advance()
        self._steps += 1
        return np.int64(0), reward, False, self._steps >= self.max_steps, info


register_envs()  # importing the env's module makes gym.make("KArmedBandit-v0") work
