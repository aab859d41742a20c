"""Agent specs ``NAME[:key=value,...]`` (e.g. ``eps-greedy:epsilon=0.1,alpha=0.1``) -> bandit agents."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from baselines.bandits.agents import ActionValueAgent, BanditAgent, GradientAgent, ThompsonAgent, UCBAgent
from baselines.common.errors import ConfigError

# Per agent: the keys it accepts and their defaults (None: sample averages instead of a constant step size).
AGENT_DEFAULTS: dict[str, dict[str, float | bool | None]] = {
    "greedy": {"alpha": None, "q0": 0.0},
    "eps-greedy": {"epsilon": 0.1, "alpha": None, "q0": 0.0},
    "optimistic": {"q0": 5.0, "alpha": 0.1, "epsilon": 0.0},
    "ucb": {"c": 2.0, "alpha": None},
    "gradient": {"alpha": 0.1, "baseline": True},
    "thompson": {"q0": 0.0},
}


@dataclass(frozen=True)
class AgentSpec:
    """A parsed spec; ``text`` is the string as the user gave it (the key in summary.json)."""

    text: str
    name: str
    params: dict[str, float | bool | None] = field(default_factory=dict)

    def build(self, runs: int, arms: int, rng: np.random.Generator) -> BanditAgent:
        p = self.params
        if self.name == "greedy":
            return ActionValueAgent(runs, arms, rng, epsilon=0.0, alpha=_opt(p["alpha"]), q0=_num(p["q0"]))
        if self.name in ("eps-greedy", "optimistic"):
            return ActionValueAgent(
                runs, arms, rng, epsilon=_num(p["epsilon"]), alpha=_opt(p["alpha"]), q0=_num(p["q0"])
            )
        if self.name == "ucb":
            return UCBAgent(runs, arms, rng, c=_num(p["c"]), alpha=_opt(p["alpha"]))
        if self.name == "gradient":
            return GradientAgent(runs, arms, rng, alpha=_num(p["alpha"]), baseline=bool(p["baseline"]))
        return ThompsonAgent(runs, arms, rng, q0=_num(p["q0"]))


def _num(value: float | bool | None) -> float:
    assert value is not None and not isinstance(value, bool)
    return float(value)


def _opt(value: float | bool | None) -> float | None:
    return None if value is None else _num(value)


def _parse_value(name: str, key: str, raw: str) -> float | bool:
    if key == "baseline":
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"agent '{name}': baseline must be true or false, got '{raw}'")
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"agent '{name}': {key} must be a number, got '{raw}'") from None


def _validate(name: str, params: dict[str, float | bool | None]) -> None:
    epsilon = params.get("epsilon")
    if isinstance(epsilon, float) and not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"agent '{name}': epsilon must be in [0, 1], got {epsilon}")
    alpha = params.get("alpha")
    if isinstance(alpha, float):
        upper_ok = name == "gradient" or alpha <= 1.0
        if not (alpha > 0.0 and upper_ok):
            allowed = "> 0" if name == "gradient" else "in (0, 1]"
            raise ConfigError(f"agent '{name}': alpha must be {allowed}, got {alpha}")
    c = params.get("c")
    if isinstance(c, float) and c < 0.0:
        raise ConfigError(f"agent '{name}': c must be >= 0, got {c}")


def parse_agent_spec(text: str) -> AgentSpec:
    """Parse ``NAME[:key=value,...]``; unknown names, keys or out-of-range values raise ConfigError."""
    name, _, rest = text.strip().partition(":")
    if name not in AGENT_DEFAULTS:
        raise ConfigError(f"unknown agent '{name}' in '{text}'; choose from {', '.join(AGENT_DEFAULTS)}")
    params = dict(AGENT_DEFAULTS[name])
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"agent '{name}': expected key=value, got '{item}'")
        if key not in params:
            allowed = ", ".join(AGENT_DEFAULTS[name]) or "none"
            raise ConfigError(f"agent '{name}' has no key '{key}'; its keys: {allowed}")
        params[key] = _parse_value(name, key, raw)
    _validate(name, params)
    return AgentSpec(text=text, name=name, params=params)
