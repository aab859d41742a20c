"""Exact updates of every bandit agent, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.bandits.agents import ActionValueAgent, GradientAgent, ThompsonAgent, UCBAgent, random_argmax
from baselines.bandits.spec import parse_agent_spec
from baselines.common.errors import ConfigError


def test_random_argmax_breaks_ties_uniformly() -> None:
    values = np.tile(np.array([1.0, 3.0, 3.0, 0.0]), (20_000, 1))
    picks = random_argmax(values, np.random.default_rng(0))
    assert set(np.unique(picks)) == {1, 2}
    assert abs((picks == 1).mean() - 0.5) < 0.02


def test_sample_average_and_constant_step_updates() -> None:
    rng = np.random.default_rng(0)
    avg = ActionValueAgent(1, 3, rng, alpha=None, q0=0.0)
    const = ActionValueAgent(1, 3, rng, alpha=0.5, q0=4.0)
    for reward in (2.0, 4.0, 9.0):
        avg.update(np.array([1]), np.array([reward]))
        const.update(np.array([1]), np.array([reward]))
    assert avg.q[0, 1] == pytest.approx(5.0)  # (2 + 4 + 9) / 3
    # 4 -> 3 -> 3.5 -> 6.25
    assert const.q[0, 1] == pytest.approx(6.25)
    assert avg.q[0, 0] == 0.0 and const.q[0, 2] == 4.0


def test_epsilon_greedy_explores_at_rate_epsilon() -> None:
    agent = ActionValueAgent(50_000, 10, np.random.default_rng(1), epsilon=0.2)
    agent.q[:, 3] = 1.0
    actions = agent.act()
    # Greedy picks 3; exploration picks uniformly, so 3 appears with prob 0.8 + 0.2 / 10.
    assert abs((actions == 3).mean() - 0.82) < 0.01


def test_ucb_tries_every_arm_first_then_uses_bonus() -> None:
    agent = UCBAgent(1, 4, np.random.default_rng(0), c=2.0)
    seen = []
    for reward in (1.0, 0.0, 0.0, 0.0):
        action = agent.act()
        seen.append(int(action[0]))
        agent.update(action, np.array([reward]))
    assert sorted(seen) == [0, 1, 2, 3]
    agent.n[0] = [10.0, 1.0, 1.0, 1.0]
    agent.q[0] = [1.0, 0.0, 0.0, 0.5]
    # t = 5: bonus 2 sqrt(ln 5 / N); arm 3: 0.5 + 2 sqrt(ln 5) beats arm 0: 1 + 2 sqrt(ln 5 / 10).
    assert int(agent.act()[0]) == 3


def test_gradient_bandit_update_matches_equation_2_12() -> None:
    agent = GradientAgent(1, 3, np.random.default_rng(0), alpha=0.5, baseline=True)
    agent.act()  # pi uniform: 1/3 each
    agent.update(np.array([2]), np.array([3.0]))
    # The baseline includes the current reward (mean = 3), so the advantage is 0: no change.
    np.testing.assert_allclose(agent.h, 0.0)
    agent.act()
    agent.update(np.array([0]), np.array([6.0]))
    # mean -> 4.5, advantage 1.5; H0 += 0.5 * 1.5 * (1 - 1/3), others -= 0.5 * 1.5 / 3
    np.testing.assert_allclose(agent.h[0], [0.5, -0.25, -0.25])
    no_base = GradientAgent(1, 2, np.random.default_rng(0), alpha=1.0, baseline=False)
    no_base.act()
    no_base.update(np.array([1]), np.array([2.0]))
    np.testing.assert_allclose(no_base.h[0], [-1.0, 1.0])


def test_gradient_sampling_follows_softmax() -> None:
    agent = GradientAgent(100_000, 3, np.random.default_rng(2))
    agent.h[:] = np.log([1.0, 2.0, 7.0])
    actions = agent.act()
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / 100_000, [0.1, 0.2, 0.7], atol=0.005)


def test_thompson_posterior_is_conjugate_gaussian() -> None:
    agent = ThompsonAgent(1, 2, np.random.default_rng(0), q0=0.0, prior_var=1.0)
    for reward in (1.0, 2.0, 3.0):
        agent.update(np.array([0]), np.array([reward]))
    # Posterior mean (0 * 1 + 6) / (1 + 3) = 1.5, precision 4.
    assert agent.mean[0, 0] == pytest.approx(1.5)
    assert agent.precision[0, 0] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("softmax", "unknown agent 'softmax'"),
        ("ucb:epsilon=0.1", "has no key 'epsilon'"),
        ("eps-greedy:epsilon=1.5", "epsilon must be in [0, 1]"),
        ("eps-greedy:alpha=0", "alpha must be in (0, 1]"),
        ("gradient:baseline=maybe", "baseline must be true or false"),
        ("ucb:c=-1", "c must be >= 0"),
        ("greedy:alpha", "expected key=value"),
        ("eps-greedy:epsilon=abc", "must be a number"),
    ],
)
def test_bad_specs_raise_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_agent_spec(text)


def test_spec_keeps_text_and_defaults() -> None:
    spec = parse_agent_spec("optimistic:q0=3")
    assert spec.text == "optimistic:q0=3"
    assert spec.params == {"q0": 3.0, "alpha": 0.1, "epsilon": 0.0}
