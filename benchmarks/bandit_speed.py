"""Bandit speed: one agent, 2000 runs x 1000 steps, 10 arms, on one core. Target: at most 1 second each.

Run: ``.venv/bin/python benchmarks/bandit_speed.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import time

from baselines.bandits.experiment import simulate
from baselines.bandits.spec import parse_agent_spec

SPECS = (
    "greedy",
    "eps-greedy:epsilon=0.1",
    "eps-greedy:epsilon=0.1,alpha=0.1",
    "optimistic:q0=5,alpha=0.1",
    "ucb:c=2",
    "gradient:alpha=0.1,baseline=true",
    "thompson",
)


def main() -> None:
    print(f"{'agent':<36}{'seconds':>10}{'target':>10}")
    worst = 0.0
    for spec in SPECS:
        start = time.perf_counter()
        simulate(parse_agent_spec(spec), runs=2000, steps=1000, seed=0)
        seconds = time.perf_counter() - start
        worst = max(worst, seconds)
        print(f"{spec:<36}{seconds:>10.3f}{'<= 1.0':>10}")
    print(f"slowest agent: {worst:.3f} s ({'meets' if worst <= 1.0 else 'MISSES'} the 1 s target)")


if __name__ == "__main__":
    main()
