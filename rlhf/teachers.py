"""Simulated teachers from B-Pref (Lee et al. 2021, https://arxiv.org/abs/2111.03026).

One parameterized teacher covers the family: it compares (discounted) true segment returns and can be
irrational (Bradley-Terry with rationality ``beta``), myopic (``gamma`` < 1 weights later steps more), make
mistakes (flip with probability ``epsilon``), skip queries whose segments are both bad (``skip_threshold``) and
call near-equal segments a tie (``equal_threshold``). Teachers answer queries from the store exactly as a person
does in the browser: lease the next query, look at both segments, submit a choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from baselines.common.errors import ConfigError
from rlhf.store import Choice, Segment

TEACHERS = ("oracle", "noisy", "myopic", "mistake", "skip", "equal")


@dataclass(frozen=True)
class SimulatedTeacher:
    """B-Pref's simulated teacher. The defaults are the oracle: higher true return wins, equal returns tie."""

    name: str = "oracle"
    beta: float = math.inf
    """Rationality of Bradley-Terry choices, P(a) = sigmoid(beta (R_a - R_b)); inf chooses deterministically."""
    gamma: float = 1.0
    """Myopia: R = sum_t gamma^(L-1-t) r_t weights the end of the segment more when gamma < 1."""
    epsilon: float = 0.0
    """Probability of flipping a non-tie answer (a mistake)."""
    skip_threshold: float | None = None
    """Skip when both segments' returns are below this."""
    equal_threshold: float | None = None
    """Answer tie when the returns differ by less than this."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"teacher beta must be positive, got {self.beta}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"teacher gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.epsilon <= 1:
            raise ConfigError(f"teacher epsilon must be in [0, 1], got {self.epsilon}")
        if self.equal_threshold is not None and self.equal_threshold < 0:
            raise ConfigError(f"teacher equal threshold must be >= 0, got {self.equal_threshold}")

    def segment_return(self, segment: Segment) -> float:
        weights = self.gamma ** np.arange(segment.length - 1, -1, -1)
        return float((weights * segment.true_rewards).sum())

    def choose(self, a: Segment, b: Segment, rng: np.random.Generator) -> Choice:
        """The answer to "which segment is better?" for segments ``a`` and ``b``."""
        return_a, return_b = self.segment_return(a), self.segment_return(b)
        if self.skip_threshold is not None and max(return_a, return_b) < self.skip_threshold:
            return "skip"
        if self.equal_threshold is not None and abs(return_a - return_b) < self.equal_threshold:
            return "tie"
        choice: Choice
        if math.isinf(self.beta):
            if return_a == return_b:
                return "tie"
            choice = "a" if return_a > return_b else "b"
        else:
            p_a = 1.0 / (1.0 + math.exp(-min(max(self.beta * (return_a - return_b), -60.0), 60.0)))
            choice = "a" if rng.random() < p_a else "b"
        if self.epsilon > 0 and rng.random() < self.epsilon:
            choice = "b" if choice == "a" else "a"
        return choice


def make_teacher(
    name: str,
    beta: float | None = None,
    gamma: float | None = None,
    epsilon: float | None = None,
    threshold: float | None = None,
) -> SimulatedTeacher:
    """A B-Pref teacher by name with its parameter (defaults: noisy beta=1, myopic gamma=0.9, mistake eps=0.1).

    ``threshold`` is the skip threshold for ``skip`` and the tie margin for ``equal``; both need one.
    """
    if name not in TEACHERS:
        raise ConfigError(f"unknown teacher '{name}'; choose from {', '.join(TEACHERS)} (or human)")
    teacher = SimulatedTeacher(name=name)
    if name == "noisy":
        teacher = replace(teacher, beta=1.0 if beta is None else beta)
    elif name == "myopic":
        teacher = replace(teacher, gamma=0.9 if gamma is None else gamma)
    elif name == "mistake":
        teacher = replace(teacher, epsilon=0.1 if epsilon is None else epsilon)
    elif name in ("skip", "equal"):
        if threshold is None:
            raise ConfigError(f"teacher '{name}' needs --teacher-threshold (a segment return)")
        if name == "skip":
            teacher = replace(teacher, skip_threshold=threshold)
        else:
            teacher = replace(teacher, equal_threshold=threshold)
    return teacher
