"""GPTO's update: V-trace is GAE on-policy, an on-policy GPTO update is PPO's, the hard trust region never accepts a
step above its bound, the auxiliary phase keeps the policy within its KL bound, reuse trains on earlier rollouts,
a short seeded run learns CartPole, and bad settings are one-line errors."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from baselines.common.returns import gae, vtrace
from baselines.gpto import (
    GPTOConfig,
    KLGuard,
    StoredRollout,
    auxiliary_phase,
    batch_kl,
    gpto_update,
    init_gpto,
    policy_distribution,
    policy_kl,
    policy_mask,
    train_gpto,
)
from baselines.ppo import (
    collect_rollout,
    init_ppo,
    log_probs,
    optimize,
    policy_columns,
    ppo_update,
    value_estimates,
)
from baselines.trust import Surrogate
from rlhf.cli import main


def test_vtrace_on_policy_is_gae() -> None:
    rng, shape = np.random.default_rng(0), (7, 3)
    rewards, values, next_values = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    ends = rng.random(shape) < 0.15, rng.random(shape) < 0.15
    expected = gae(rewards, values, next_values, *ends, 0.99, 0.95)
    got = vtrace(rewards, values, next_values, *ends, 0.99, 0.95, np.zeros(shape, np.float32), rho_bar=1.0)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_vtrace_matches_hand_computation_with_truncated_weights() -> None:
    gamma, lam, rho_bar = 0.9, 0.5, 1.0
    rewards, values = np.array([[1.0], [2.0]]), np.array([[0.5], [1.0]])
    next_values = np.array([[1.0], [3.0]])
    no = np.zeros((2, 1), bool)
    log_rhos = np.log(np.array([[2.0], [0.5]]))  # rho: min(1, 2) = 1 at step 0; 0.5 at step 1
    adv, ret = vtrace(rewards, values, next_values, no, no, gamma, lam, log_rhos, rho_bar)
    a1 = 0.5 * (2.0 + 0.9 * 3.0 - 1.0)  # 1.85
    a0 = 1.0 * (1.0 + 0.9 * 1.0 - 0.5) + gamma * lam * 1.0 * a1  # c_0 = lambda * min(1, 2)
    np.testing.assert_allclose(adv[:, 0], [a0, a1])
    np.testing.assert_allclose(ret, adv + values)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_an_on_policy_clip_update_is_ppos(env_id: str) -> None:
    """reuse 1 and the clip: importance weights 1, V-trace = GAE, so GPTO's update lands where PPO's does."""
    cfg = GPTOConfig.defaults_for(env_id, num_steps=64, n_epochs=2, batch_size=64)
    ppo, gpto = init_ppo(cfg), init_gpto(cfg)
    np.testing.assert_array_equal(ppo.agent.params.data.numpy(), gpto.agent.params.data.numpy())
    rollouts = collect_rollout(ppo), collect_rollout(gpto)
    ppo_metrics, gpto_metrics = ppo_update(ppo, rollouts[0]), gpto_update(gpto, rollouts[1])
    np.testing.assert_allclose(ppo.agent.params.data.numpy(), gpto.agent.params.data.numpy(), rtol=1e-5, atol=1e-6)
    assert gpto_metrics["losses/approx_kl"] == pytest.approx(ppo_metrics["losses/approx_kl"], rel=1e-4, abs=1e-7)
    assert gpto_metrics["trust/kl"] > 0 and "trust/ratio_max" in gpto_metrics


def test_the_hard_trust_region_never_accepts_an_epoch_above_its_bound() -> None:
    bound = 2e-3
    cfg = GPTOConfig.defaults_for("CartPole-v1", trust="trust-region", kl_bound=bound, learning_rate=1e-2,
                                  n_epochs=8, batch_size=64, backtrack_steps=6)  # fmt: skip
    state = init_gpto(cfg)
    rollout = collect_rollout(state)
    values, _ = value_estimates(state.agent, rollout.norm_obs, rollout.norm_next_obs)
    advantages = np.random.default_rng(0).normal(size=values.shape).astype(np.float32)
    columns = policy_columns(state.agent, rollout.norm_obs, rollout.actions, advantages, values, values)
    b_obs, b_actions, b_logp_old = columns[:3]
    guard = KLGuard(state.agent, b_obs, b_actions, b_logp_old, bound, cfg.backtrack_steps)
    accepted_kls: list[float] = []

    def checked(before: torch.Tensor) -> bool:
        keep_going = guard(before)
        if keep_going:
            accepted_kls.append(batch_kl(state.agent, b_obs, b_actions, b_logp_old))
        else:  # a rejected epoch leaves the policy where it began (the critic keeps what it learned)
            policy = policy_mask(state.agent).numpy()
            np.testing.assert_allclose(state.agent.params.data.numpy()[policy], before.numpy()[policy], atol=1e-7)
            rejected.append(True)
        return keep_going

    rejected: list[bool] = []
    optimize(state, columns, Surrogate(0.2), full_batch=False, epoch_guard=checked)
    assert accepted_kls and max(accepted_kls) <= bound
    assert guard.halvings > 0  # the bound was reached: the test checked backtracking, not just small steps


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_auxiliary_phase_keeps_the_policy_within_its_bound_and_trains_the_values(env_id: str) -> None:
    cfg = GPTOConfig.defaults_for(env_id, aux_every=1, aux_kl_bound=1e-3, aux_clone_coef=0.01, learning_rate=1e-2,
                                  aux_epochs=4)  # fmt: skip
    state = init_gpto(cfg)
    obs = np.random.default_rng(0).normal(size=(512, state.agent.obs_dim)).astype(np.float32)
    targets = 5.0 + obs[:, 0] * 3.0  # far from the initial values: the phase must move the networks
    before = state.agent.params.data.clone()
    old_policy = policy_distribution(state.agent, before, torch.from_numpy(obs))
    critic_before = state.agent.critic.forward(obs, cache=False)[:, 0].copy()
    metrics = auxiliary_phase(state, obs, targets)
    kl = float(policy_kl(old_policy, slice(None), policy_distribution(state.agent, state.agent.params.data,
                                                                       torch.from_numpy(obs))))  # fmt: skip
    assert kl <= 1e-3 + 1e-9 and metrics["aux/kl"] == pytest.approx(kl, rel=1e-4, abs=1e-9)
    critic_after = state.agent.critic.forward(obs, cache=False)[:, 0]
    assert np.mean((critic_after - targets) ** 2) < 0.5 * np.mean((critic_before - targets) ** 2)
    assert metrics["aux/clone_kl"] > 0


def test_reuse_trains_on_earlier_rollouts_with_truncated_weights() -> None:
    cfg = GPTOConfig.defaults_for("CartPole-v1", reuse=3, num_steps=32)
    state = init_gpto(cfg)
    for _ in range(4):
        metrics = gpto_update(state, collect_rollout(state))
    assert len(state.memory) == 3  # the newest and two earlier ones
    assert metrics["losses/explained_variance"] == metrics["losses/explained_variance"]  # not NaN: 3 rollouts seen
    oldest: StoredRollout = state.memory[0]
    now = log_probs(state.agent, oldest.norm_obs.reshape(-1, state.agent.obs_dim), oldest.actions.reshape(-1))
    assert np.abs(now - oldest.behaviour_logp.reshape(-1)).max() > 1e-3  # the policy moved: earlier data is weighted


@pytest.mark.parametrize("trust", ["spo"])
def test_a_short_seeded_gpto_run_learns_cartpole(tmp_path: Path, trust: str) -> None:
    cfg = GPTOConfig.defaults_for("CartPole-v1", trust=trust, total_steps=40_000, eval_every=0, seed=3,
                                  out=tmp_path / "run")  # fmt: skip
    summary = train_gpto(cfg)
    assert summary["algo"] == "gpto" and summary["eval_return_mean"] >= 150.0  # random: ~22


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trust", "trust_region"], "invalid choice"),
        (["--kl-bound", "0"], "--kl-bound must be a positive number"),
        (["--kl-bound", "-0.1"], "--kl-bound must be a positive number"),
        (["--reuse", "0"], "--reuse must be at least 1"),
    ],
)
def test_bad_settings_are_one_line(capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) if flags[0] == "--trust" else contextlib.nullcontext():
        code = main(["gpto", *flags])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err
    if flags[0] != "--trust":
        assert len(err.strip().splitlines()) == 1


def test_an_unknown_trust_term_built_in_code_is_refused() -> None:
    with pytest.raises(ConfigError, match="--trust must be one of clip, kl, spo, trust-region"):
        dataclasses.replace(GPTOConfig(), trust="sbo").validate()  # type: ignore[arg-type]
