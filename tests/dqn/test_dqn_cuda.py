"""DQN's ``--device cuda`` path on a GPU (skipped without one): dqn_loss and a burst of autograd steps agree with the
CPU's fast path, a short run learns CartPole, and a run saved on the GPU resumes on the CPU."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.checkpoint import load_checkpoint
from baselines.common.config import resume_default
from baselines.dqn import DQNConfig, QNetwork, dqn_loss, q_learning_burst, train_dqn
from tests.cuda import needs_cuda
from tests.dqn.test_dqn import TINY, _state

pytestmark = needs_cuda


@pytest.mark.parametrize(("dueling", "double_dqn"), [(False, False), (True, True)])
def test_dqn_loss_and_its_gradient_on_cuda_match_the_cpu(dueling: bool, double_dqn: bool) -> None:
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(64, 64), dueling=dueling)
    gen, batch = torch.Generator().manual_seed(1), 64
    obs, next_obs, next_q_target = (torch.randn(batch, width, generator=gen) for width in (4, 4, 2))
    actions = torch.randint(0, 2, (batch,), generator=gen)
    weights, returns = torch.rand(batch, generator=gen), torch.randn(batch, generator=gen) * 3
    discounts = torch.full((batch,), 0.99**3)
    results = []
    for device in ("cpu", "cuda"):
        q = QNetwork(4, 2, dataclasses.replace(cfg, device=device), torch.Generator().manual_seed(0))
        flat = q.params.data.detach().requires_grad_()
        q_online = functools.partial(q.q_values, mlp=q.params.bind_copy(flat)[0])
        o, a, w, r, d, o2, q2 = (
            t.to(device) for t in (obs, actions, weights, returns, discounts, next_obs, next_q_target)
        )
        loss, td_errors, _ = dqn_loss(q_online, o, a, w, r, d, o2, q2, double_dqn)
        (grad,) = torch.autograd.grad(loss, flat)
        assert grad.device.type == device
        results.append((loss.detach().cpu(), td_errors.cpu(), grad.cpu()))
    (cpu_loss, cpu_td, cpu_grad), (cuda_loss, cuda_td, cuda_grad) = results
    assert cpu_td.abs().max() > 1 and cpu_td.abs().min() < 1  # both branches of the Huber loss
    torch.testing.assert_close(cuda_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_td, cpu_td, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cuda_grad, cpu_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("dueling", [False, True])
def test_a_cuda_burst_lands_where_the_cpu_fast_path_lands(dueling: bool, prioritized: bool) -> None:
    """Six gradient steps from identical states and draws: the autograd steps on the GPU against the scripted fast
    path on the CPU, compared relative to the update (the bound test_dqn's burst test explains)."""
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(64, 64), batch_size=32, dueling=dueling,
                                 prioritized=prioritized, max_grad_norm=0.5, learning_rate=1e-2)  # fmt: skip
    steps, logs = 6, []
    states = [_state(cfg), _state(dataclasses.replace(cfg, device="cuda"))]
    start = states[0].q.params.data.clone()
    for state in states:
        if state.sampler is not None:
            state.sampler.add(np.arange(len(state.buffer)))
        state.rng = np.random.default_rng(3)
        td_log = torch.zeros(steps, cfg.batch_size, device=state.config.device)
        q_learning_burst(state, steps, 0.4, td_log, torch.zeros_like(td_log))
        logs.append(td_log.cpu())
    cpu, cuda = (state.q.params.data for state in states)
    assert cuda.device.type == "cuda"
    first = logs[0][0]
    torch.testing.assert_close(logs[1][0], first, rtol=1e-5, atol=1e-5 * float(first.abs().max()))
    update = (cpu - start).norm()
    assert update > 10 * cfg.learning_rate
    assert (cuda.cpu() - cpu).norm() < 0.05 * update
    if prioritized:  # the GPU's TD errors came back as the priorities of the transitions drawn
        assert states[0].sampler is not None and states[1].sampler is not None
        np.testing.assert_allclose(states[1].sampler.tree.nodes, states[0].sampler.tree.nodes, rtol=1e-3)


def test_a_cuda_run_with_every_option_completes_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train_dqn(
        DQNConfig(
            total_steps=1200, learning_starts=200, train_freq=64, gradient_steps=8, eval_every=600, out=out,
            num_envs=2, double_dqn=True, dueling=True, n_step=3, prioritized=True, device="cuda",
            **TINY,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    assert summary["env_steps"] == 1200 and summary["gradient_steps"] > 0 and summary["eval_episodes"] == 2
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert all(checkpoint[key].device.type == "cpu" for key in ("params", "target", "exp_avg", "adam_step"))
    saved = resume_default(DQNConfig, out)
    assert saved.device == "cuda"
    resumed = train_dqn(dataclasses.replace(saved, device="cpu", total_steps=1500))
    assert resumed["resumed_from_step"] == 1200 and resumed["env_steps"] == 1500
    assert resumed["gradient_steps"] > summary["gradient_steps"]


@pytest.mark.slow
def test_a_short_cuda_run_learns_cartpole(tmp_path: Path) -> None:
    """test_dqn's learning check on the GPU: 10k steps (random play: ~20; CPU seeds 0-3 scored 374-500)."""
    config = DQNConfig(total_steps=10_000, hidden_sizes=(64, 64), lr_schedule="linear", n_step=3, train_freq=64,
                       gradient_steps=64, target_update_interval=100, eval_every=0, eval_episodes=5, seed=0,
                       device="cuda", out=tmp_path / "run")  # fmt: skip
    summary = train_dqn(config)
    assert summary["eval_return_mean"] >= 200, summary
