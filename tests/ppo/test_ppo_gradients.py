"""The fast path checked against the loss: the hand-written NumPy gradient equals autograd's gradient of ppo_loss,
and an update through autograd (the --device cuda path, here on the CPU) lands where the NumPy update lands."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.ppo import ActorCritic, PPOConfig, collect_rollout, init_ppo, ppo_loss, ppo_update
from baselines.ppo_gradient import minibatch_gradients
from baselines.trust import Clip


def _agent_and_minibatch(cfg: PPOConfig, n: int = 64) -> tuple[ActorCritic, tuple[torch.Tensor, ...]]:
    env = gym.make(cfg.env)
    agent = ActorCritic(env.observation_space, env.action_space, cfg, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    if agent.discrete:
        actions = torch.randint(0, agent.action_dim, (n,), generator=gen)
    else:
        actions = torch.randn(n, agent.action_dim, generator=gen)
    minibatch = (
        torch.randn(n, agent.obs_dim, generator=gen),
        actions,
        torch.randn(n, generator=gen) * 0.3 - 1.0,  # old log-probs far from the new: ratios clip both ways
        torch.randn(n, generator=gen),
        torch.randn(n, generator=gen),
        torch.randn(n, generator=gen) * 0.1,
    )
    return agent, minibatch


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("clip_range_vf", [None, 0.05])
@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
@pytest.mark.parametrize("normalize_advantage", [True, False])
def test_hand_written_gradient_matches_autograd_of_ppo_loss(
    env_id: str, clip_range_vf: float | None, ent_coef: float, normalize_advantage: bool
) -> None:
    cfg = PPOConfig.defaults_for(
        env_id,
        ent_coef=ent_coef,
        clip_range_vf=clip_range_vf,
        normalize_advantage=normalize_advantage,
        log_std_init=-0.3,
        vf_coef=0.7,
    )
    agent, minibatch = _agent_and_minibatch(cfg)
    stats = minibatch_gradients(agent, cfg, Clip(0.2), [column.numpy() for column in minibatch])
    flat = agent.params.data.clone().requires_grad_(True)
    loss, expected_stats = ppo_loss(agent, flat, cfg, Clip(0.2), minibatch)
    (expected,) = torch.autograd.grad(loss, flat)
    np.testing.assert_allclose(agent.params.grad.numpy(), expected.numpy(), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(stats, expected_stats.numpy(), rtol=1e-4, atol=1e-6)
    assert 0.05 < stats[4] < 0.95  # some ratios clipped, some not: both branches of the surrogate are checked
    if clip_range_vf is not None:
        values = agent.critic.forward(minibatch[0].numpy(), cache=False)[:, 0]
        clipped = np.abs(values - minibatch[5].numpy()) > clip_range_vf
        assert 0 < clipped.sum() < len(clipped)  # and both branches of the value clipping


def test_normalized_flag_skips_the_minibatch_normalization() -> None:
    cfg = PPOConfig.defaults_for("CartPole-v1")
    agent, minibatch = _agent_and_minibatch(cfg)
    advantages = minibatch[3]
    normalized = (*minibatch[:3], (advantages - advantages.mean()) / (advantages.std() + 1e-8), *minibatch[4:])
    flat = agent.params.data.clone().requires_grad_(True)
    (once,) = torch.autograd.grad(ppo_loss(agent, flat, cfg, Clip(0.2), minibatch)[0], flat)
    (given,) = torch.autograd.grad(ppo_loss(agent, flat, cfg, Clip(0.2), normalized, normalized=True)[0], flat)
    np.testing.assert_allclose(once.numpy(), given.numpy(), rtol=1e-4, atol=1e-7)
    minibatch_gradients(agent, cfg, Clip(0.2), [column.numpy() for column in normalized], normalized=True)
    np.testing.assert_allclose(agent.params.grad.numpy(), given.numpy(), rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize(
    ("env_id", "overrides"),
    [
        ("CartPole-v1", {"num_steps": 32, "batch_size": 128, "n_epochs": 2, "ent_coef": 0.01}),  # shuffled
        ("Pendulum-v1", {"num_steps": 64, "batch_size": 256, "n_epochs": 3, "clip_range_vf": 0.2}),  # full batch
    ],
)
def test_autograd_update_lands_where_the_numpy_update_lands(env_id: str, overrides: dict[str, object]) -> None:
    """One update through ppo_loss and autograd (what --device cuda runs) against one through the NumPy gradient,
    from identical states: rounding moves a parameter by ~1e-7; the update moves them by ~1e-3."""
    cfg = PPOConfig.defaults_for(env_id, **overrides)
    states = [init_ppo(cfg), init_ppo(cfg)]
    before = states[0].agent.params.data.clone()
    metrics = [
        ppo_update(state, collect_rollout(state), autograd=path)
        for state, path in zip(states, [False, True], strict=True)
    ]
    numpy_params, autograd_params = (state.agent.params.data for state in states)
    assert float((numpy_params - before).abs().max()) > 5e-4
    np.testing.assert_allclose(autograd_params.numpy(), numpy_params.numpy(), rtol=0, atol=2e-5)
    for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/grad_norm"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-5), key  # the policy loss is ~0
    for state in states:
        state.envs.close()


def test_cuda_learner_on_a_gpu_matches_the_cpu_learner() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cfg = PPOConfig.defaults_for("CartPole-v1", num_steps=32, batch_size=128, n_epochs=2)
    states = [init_ppo(cfg), init_ppo(dataclasses.replace(cfg, device="cuda"))]
    for state in states:
        ppo_update(state, collect_rollout(state))
    np.testing.assert_allclose(
        states[1].agent.params.data.cpu().numpy(), states[0].agent.params.data.numpy(), rtol=0, atol=2e-5
    )
    for state in states:
        state.envs.close()
