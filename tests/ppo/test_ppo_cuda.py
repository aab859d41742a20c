"""PPO's ``--device cuda`` learner on a GPU (skipped without one): ppo_loss and a whole autograd update agree with
the CPU's, a short run learns CartPole, and its checkpoint resumes on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.common.checkpoint import load_checkpoint
from baselines.common.config import resume_default
from baselines.ppo import ActorCritic, PPOConfig, collect_rollout, init_ppo, load_state, ppo_loss, ppo_update, train_ppo
from baselines.trust import Clip
from tests.cuda import needs_cuda

pytestmark = needs_cuda


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_loss_and_its_gradient_on_cuda_match_the_cpu(env_id: str) -> None:
    cfg = PPOConfig.defaults_for(env_id, ent_coef=0.01, clip_range_vf=0.05, log_std_init=-0.3)
    env = gym.make(env_id)
    spaces = (env.observation_space, env.action_space)
    agents = [
        ActorCritic(*spaces, dataclasses.replace(cfg, device=device), torch.Generator().manual_seed(0))
        for device in ("cpu", "cuda")
    ]
    torch.testing.assert_close(agents[1].params.data.cpu(), agents[0].params.data)  # the same initial weights
    gen, n = torch.Generator().manual_seed(1), 256
    actions = torch.randint(0, 2, (n,), generator=gen) if env_id == "CartPole-v1" else torch.randn(n, 1, generator=gen)
    obs, advantages, returns = (torch.randn(n, *shape, generator=gen) for shape in ((agents[0].obs_dim,), (), ()))
    logp_old, values_old = torch.randn(n, generator=gen) * 0.3 - 1.0, torch.randn(n, generator=gen) * 0.1
    minibatch = (obs, actions, logp_old, advantages, returns, values_old)  # old log-probs far off: ratios clip
    results = []
    for agent, device in zip(agents, ("cpu", "cuda"), strict=True):
        flat = agent.params.data.clone().requires_grad_(True)
        loss, stats = ppo_loss(agent, flat, cfg, Clip(0.2), [column.to(device) for column in minibatch])
        (grad,) = torch.autograd.grad(loss, flat)
        assert grad.device.type == device
        results.append((loss.detach().cpu(), stats.cpu(), grad.cpu()))
    (cpu_loss, cpu_stats, cpu_grad), (cuda_loss, cuda_stats, cuda_grad) = results
    torch.testing.assert_close(cuda_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_stats, cpu_stats, rtol=1e-4, atol=1e-6)
    assert 0.05 < float(cpu_stats[4]) < 0.95  # some ratios clipped, some not
    torch.testing.assert_close(cuda_grad, cpu_grad, rtol=1e-4, atol=1e-6)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "overrides"),
    [
        ("CartPole-v1", {"num_steps": 32, "batch_size": 128, "n_epochs": 2, "ent_coef": 0.01}),  # shuffled
        ("Pendulum-v1", {"num_steps": 64, "batch_size": 256, "n_epochs": 3, "clip_range_vf": 0.2}),  # full batch
    ],
)
def test_an_autograd_update_on_cuda_lands_where_the_cpu_update_lands(env_id: str, overrides: dict[str, object]) -> None:
    """The same rollout (acting runs on the CPU either way), one ppo_update(autograd=True) on each device: rounding
    moves a parameter by ~1e-7, the update by ~1e-3."""
    cfg = PPOConfig.defaults_for(env_id, **overrides)
    states = [init_ppo(cfg), init_ppo(dataclasses.replace(cfg, device="cuda"))]
    before = states[0].agent.params.data.clone()
    metrics = [ppo_update(state, collect_rollout(state), autograd=True) for state in states]
    cpu_params, cuda_params = (state.agent.params.data for state in states)
    assert cuda_params.device.type == "cuda" and states[1].optimizer.exp_avg.device.type == "cuda"
    assert float((cpu_params - before).abs().max()) > 5e-4
    np.testing.assert_allclose(cuda_params.cpu().numpy(), cpu_params.numpy(), rtol=0, atol=2e-5)
    for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/grad_norm", "losses/approx_kl"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-3, abs=1e-5), key
    assert states[1].optimizer.step_count == states[0].optimizer.step_count > 0
    for state in states:
        state.envs.close()


@pytest.mark.slow
def test_a_short_cuda_run_learns_cartpole_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    """20k steps on two seeds (random play: ~20; five CPU seeds gave 206-500 at 20k), then the first run resumed
    with ``device cpu`` from its checkpoint: it starts from the learned weights, so it still balances."""
    short = PPOConfig.defaults_for("CartPole-v1", total_steps=20_000, eval_every=20_000, device="cuda")
    summaries = [train_ppo(dataclasses.replace(short, seed=seed, out=tmp_path / f"r{seed}")) for seed in (0, 1)]
    assert all(s["eval_return_mean"] >= 100.0 for s in summaries), [s["eval_return_mean"] for s in summaries]
    out = tmp_path / "r0"
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["params"].device.type == "cpu" and checkpoint["optimizer"]["exp_avg"].device.type == "cpu"
    saved = resume_default(PPOConfig, out)
    assert saved.device == "cuda"
    cpu_state = init_ppo(dataclasses.replace(saved, device="cpu", resume=None))
    load_state(cpu_state, checkpoint)  # what a resumed run does first
    assert cpu_state.agent.on_cpu and cpu_state.optimizer.step_count == checkpoint["optimizer"]["step"]
    torch.testing.assert_close(cpu_state.agent.params.data, checkpoint["params"])
    cpu_state.envs.close()
    steps = summaries[0]["env_steps"]
    resumed = train_ppo(dataclasses.replace(saved, device="cpu", total_steps=steps + 2048))
    assert resumed["env_steps"] == steps + 2048
    assert resumed["eval_return_mean"] >= 100.0, resumed["eval_return_mean"]
