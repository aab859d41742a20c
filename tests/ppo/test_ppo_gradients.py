"""The hand-written PPO loss gradient equals autograd's on the same loss (discrete and continuous)."""

from __future__ import annotations

import dataclasses
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.ppo import ActorCritic, PPOConfig, minibatch_gradients


def _autograd_loss(
    agent: ActorCritic, flat: torch.Tensor, cfg: PPOConfig, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The same loss written plainly with torch.distributions-free autograd over a leaf copy of the parameters."""
    offset = 0

    def run(spec_sizes: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        h = x
        for i, (n_in, n_out) in enumerate(itertools.pairwise(spec_sizes)):
            weight = flat[offset : offset + n_in * n_out].view(n_out, n_in)
            offset += n_in * n_out
            bias = flat[offset : offset + n_out]
            offset += n_out
            h = F.linear(h, weight, bias)
            if i < len(spec_sizes) - 2:
                h = torch.tanh(h)
        return h

    out = run(agent.actor.spec.sizes, batch["obs"])
    values = run(agent.critic.spec.sizes, batch["obs"]).squeeze(-1)
    if agent.discrete:
        log_probs = torch.log_softmax(out, -1)
        logp = log_probs.gather(1, batch["actions"].long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
    else:
        log_std = flat[offset:]
        dist = torch.distributions.Normal(out, log_std.exp())
        logp = dist.log_prob(batch["actions"]).sum(-1)  # type: ignore[no-untyped-call]
        entropy = dist.entropy().sum(-1)  # type: ignore[no-untyped-call]
    adv = batch["adv"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (logp - batch["logp_old"]).exp()
    policy_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - 0.2, 1 + 0.2) * adv).mean()
    if cfg.clip_range_vf is not None:
        values = batch["values_old"] + (values - batch["values_old"]).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
    value_loss = F.mse_loss(batch["returns"], values)
    return policy_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * value_loss


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("clip_range_vf", [None, 0.05])
def test_hand_written_gradient_matches_autograd(env_id: str, clip_range_vf: float | None, backend: str) -> None:
    cfg = dataclasses.replace(
        PPOConfig.defaults_for(env_id), ent_coef=0.01, clip_range_vf=clip_range_vf, log_std_init=-0.3
    )
    env = gym.make(env_id)
    agent = ActorCritic(env.observation_space, env.action_space, cfg, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    n = 64
    obs = torch.randn(n, agent.obs_dim, generator=gen)
    if agent.discrete:
        actions = torch.randint(0, agent.action_dim, (n,), generator=gen)
    else:
        actions = torch.randn(n, agent.action_dim, generator=gen)
    batch = {
        "obs": obs,
        "actions": actions,
        "logp_old": torch.randn(n, generator=gen) * 0.3 - 1.0,
        "adv": torch.randn(n, generator=gen),
        "returns": torch.randn(n, generator=gen),
        "values_old": torch.randn(n, generator=gen) * 0.1,
    }
    names = ("obs", "actions", "logp_old", "adv", "returns", "values_old")
    if backend == "numpy":
        minibatch_gradients(agent, cfg, 0.2, *(batch[k].numpy() for k in names))
    else:
        minibatch_gradients(agent, cfg, 0.2, *(batch[k] for k in names))
    flat = agent.params.data.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(_autograd_loss(agent, flat, cfg, batch), flat)
    np.testing.assert_allclose(agent.params.grad.numpy(), expected.numpy(), rtol=2e-4, atol=2e-6)
