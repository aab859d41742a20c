"""Exact maths of the trust terms: each loss and its gradient w.r.t. the ratio against hand-computed values, NumPy
against torch, and through the whole network the hand-written gradient against autograd of ppo_loss."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.gpto_config import GPTOConfig
from baselines.ppo import ActorCritic, ppo_loss
from baselines.ppo_gradient import minibatch_gradients
from baselines.trust import SPO, Clip, KLPenalty, TrustTerm, adapt_kl_coef

RATIO = np.array([0.5, 1.1, 1.5])
ADVANTAGES = np.array([1.0, -2.0, 0.5])


def test_spo_on_hand_made_ratios() -> None:
    loss, grad = SPO(0.2).numpy(RATIO, ADVANTAGES)
    # r A - |A| / (2 eps) (r - 1)^2: 0.5 - 2.5 * 0.25 | -2.2 - 5 * 0.01 | 0.75 - 1.25 * 0.25
    assert loss == pytest.approx(-(-0.125 - 2.25 + 0.4375) / 3)
    # -(A - |A| / eps (r - 1)) / n: the pull back toward 1 grows with the distance, past the boundary too
    np.testing.assert_allclose(grad, [-3.5 / 3, 3.0 / 3, 0.75 / 3])


def test_kl_penalty_on_hand_made_ratios() -> None:
    loss, grad = KLPenalty(beta=0.5, epsilon=0.2).numpy(RATIO, ADVANTAGES)
    k3 = RATIO - 1.0 - np.log(RATIO)  # 0.19315, 0.00469, 0.09453
    assert k3 == pytest.approx([0.5 * 2 * math.log(2) - 0.5, 0.1 - math.log(1.1), 0.5 - math.log(1.5)])
    assert loss == pytest.approx((-0.5 + 0.5 * k3[0] + 2.2 + 0.5 * k3[1] - 0.75 + 0.5 * k3[2]) / 3)
    # (-A + beta (1 - 1/r)) / n
    np.testing.assert_allclose(grad, [(-1.0 - 0.5) / 3, (2.0 + 0.5 / 11) / 3, (-0.5 + 0.5 / 3) / 3])


def test_clip_on_hand_made_ratios() -> None:
    loss, grad = Clip(0.2).numpy(RATIO, ADVANTAGES)
    assert loss == pytest.approx(-(0.5 - 2.2 + 0.6) / 3)  # min(r A, clip(r) A): item 2 clipped at 1.2
    np.testing.assert_allclose(grad, [-1.0 / 3, 2.0 / 3, 0.0])


@pytest.mark.parametrize("term", [Clip(0.2), KLPenalty(0.7, 0.2), SPO(0.2)], ids=repr)
def test_numpy_form_matches_autograd_of_the_torch_form(term: TrustTerm) -> None:
    rng = np.random.default_rng(0)
    ratio, advantages = np.exp(rng.normal(0.0, 0.3, 200)), rng.normal(size=200)
    loss, grad = term.numpy(ratio, advantages)
    ratio_t = torch.tensor(ratio, requires_grad=True)
    loss_t = term.torch(ratio_t, torch.tensor(advantages))
    (auto,) = torch.autograd.grad(loss_t, ratio_t)
    assert loss == pytest.approx(loss_t.item(), rel=1e-9)
    np.testing.assert_allclose(grad, auto.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("trust", ["clip", "kl", "spo"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_hand_written_network_gradient_matches_autograd_for_every_term(env_id: str, trust: str) -> None:
    cfg = GPTOConfig.defaults_for(env_id, ent_coef=0.01, log_std_init=-0.3)
    env = gym.make(env_id)
    agent = ActorCritic(env.observation_space, env.action_space, cfg, torch.Generator().manual_seed(0), aux_outputs=1)
    gen = torch.Generator().manual_seed(1)
    n = 64
    actions = (
        torch.randint(0, agent.action_dim, (n,), generator=gen)
        if agent.discrete
        else torch.randn(n, agent.action_dim, generator=gen)
    )
    old_logp = torch.randn(n, generator=gen) * 0.3 - 1.0  # far from the new: ratios on both sides of 1 +- eps
    minibatch = (torch.randn(n, agent.obs_dim, generator=gen), actions, old_logp, torch.randn(n, generator=gen),
                 torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 0.1)  # fmt: skip
    terms: dict[str, TrustTerm] = {"clip": Clip(0.2), "kl": KLPenalty(0.5, 0.2), "spo": SPO(0.2)}
    term = terms[trust]
    stats = minibatch_gradients(agent, cfg, term, [column.numpy() for column in minibatch])
    flat = agent.params.data.clone().requires_grad_(True)
    loss, expected_stats = ppo_loss(agent, flat, cfg, term, minibatch)
    (expected,) = torch.autograd.grad(loss, flat)
    np.testing.assert_allclose(agent.params.grad.numpy(), expected.numpy(), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(stats, expected_stats.numpy(), rtol=1e-4, atol=1e-6)
    last_layer = agent.actor.weight_grads[-1].numpy()  # (out, in): the aux head is the last row
    assert not last_layer[agent.action_dim :].any() and last_layer[: agent.action_dim].any()  # the loss spares it


def test_adaptive_kl_coefficient_follows_the_ppo_paper() -> None:
    assert adapt_kl_coef(1.0, 0.001, 0.01) == 0.5  # KL < target / 1.5: halve
    assert adapt_kl_coef(1.0, 0.02, 0.01) == 2.0  # KL > target * 1.5: double
    assert adapt_kl_coef(1.0, 0.012, 0.01) == 1.0  # within: keep
    assert adapt_kl_coef(100.0, 1.0, 0.01) == 100.0  # bounded
