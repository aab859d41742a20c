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

import baselines.gpto as gpto_module
import baselines.ppo
from baselines.common.errors import ConfigError
from baselines.common.returns import gae, vtrace
from baselines.gpto import (
    GPTOConfig,
    GPTOState,
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
from baselines.gpto_config import GPTO_ENV_DEFAULTS
from baselines.ppo import (
    PPOConfig,
    collect_rollout,
    init_ppo,
    log_probs,
    optimize,
    policy_columns,
    ppo_update,
    value_estimates,
)
from baselines.trust import Clip, trust_term
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
    delta0, delta1 = 1.0 + 0.9 * 1.0 - 0.5, 2.0 + 0.9 * 3.0 - 1.0  # 1.4, 3.7
    d1 = 0.5 * delta1  # v_1 - V(s_1) = rho_1 delta_1 = 1.85
    d0 = 1.0 * delta0 + gamma * lam * 1.0 * d1  # rho_0 delta_0 + gamma c_0 D_1, c_0 = lambda min(1, 2)
    np.testing.assert_allclose(ret[:, 0], [0.5 + d0, 1.0 + d1])
    # The advantage of the action taken is not weighted at its own step (the loss weights it, once):
    np.testing.assert_allclose(adv[:, 0], [delta0 + gamma * lam * d1, delta1])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_an_on_policy_clip_update_is_ppos(env_id: str) -> None:
    """reuse 1 and the clip: importance weights 1, V-trace = GAE, so GPTO's update lands where PPO's does."""
    cfg = GPTOConfig.defaults_for(env_id, trust="clip", num_steps=64, n_epochs=2, batch_size=64)
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
    optimize(state, columns, Clip(0.2), full_batch=False, epoch_guard=checked)
    assert accepted_kls and max(accepted_kls) <= bound
    assert guard.halvings > 0  # the bound was reached: the test checked backtracking, not just small steps


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_auxiliary_phase_keeps_the_policy_within_its_bound_and_trains_the_values(env_id: str) -> None:
    bound = 1e-6  # tight: the phase's steps pass it, so the line search must pull the policy back
    cfg = GPTOConfig.defaults_for(env_id, aux_every=1, aux_kl_bound=bound, aux_clone_coef=0.01, learning_rate=1e-2,
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
    assert kl <= bound + 1e-9 and metrics["aux/kl"] == pytest.approx(kl, rel=1e-4, abs=1e-9)
    critic_after = state.agent.critic.forward(obs, cache=False)[:, 0]
    assert np.mean((critic_after - targets) ** 2) < 0.5 * np.mean((critic_before - targets) ** 2)
    assert metrics["aux/clone_kl"] > 0
    assert metrics["aux/backtracks"] > 0  # the bound was reached: the line search was exercised, not just small steps


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_truncated_importance_weights_on_policy_leave_ppos_update(env_id: str) -> None:
    """reuse 2 on its first update holds only the newest rollout, collected by the current policy: every weight
    min(rho_bar, pi/mu) is 1 and the weighted path (one normalization over the batch, here one minibatch as PPO's)
    lands where PPO's update does."""
    probe = GPTOConfig.defaults_for(env_id, trust="clip", num_steps=64, n_epochs=2)
    cfg = dataclasses.replace(probe, reuse=2, rho_bar=1.5, batch_size=probe.num_envs * probe.num_steps)
    ppo, gpto = init_ppo(cfg), init_gpto(cfg)
    ppo_update(ppo, collect_rollout(ppo))
    gpto_update(gpto, collect_rollout(gpto))
    assert len(gpto.memory) == 1
    np.testing.assert_allclose(ppo.agent.params.data.numpy(), gpto.agent.params.data.numpy(), rtol=1e-5, atol=1e-6)


def test_each_reused_sample_is_weighted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The advantage column of an earlier rollout is its V-trace advantage (normalized over the batch) times
    min(rho_bar, pi/mu), once: V-trace's own rho at step t is not applied a second time."""
    cfg = GPTOConfig.defaults_for("CartPole-v1", reuse=2, num_steps=32, n_epochs=4)
    state = init_gpto(cfg)
    gpto_update(state, collect_rollout(state))
    real_optimize = baselines.ppo.optimize
    checked: list[float] = []

    def spy(state_: GPTOState, columns: tuple[np.ndarray, ...], *args: object, **kwargs: object) -> object:
        raw, ratios = [], []  # from the memory and the networks as the update sees them, before it steps
        for stored in state_.memory:
            values, next_values = value_estimates(state_.agent, stored.norm_obs, stored.norm_next_obs)
            now = log_probs(state_.agent, stored.norm_obs.reshape(-1, state_.agent.obs_dim), stored.actions.reshape(-1))
            log_rhos = now.reshape(values.shape) - stored.behaviour_logp
            advantages, _ = vtrace(stored.rewards, values, next_values, stored.terminated, stored.truncated,
                                   cfg.gamma, cfg.gae_lambda, log_rhos, cfg.rho_bar)  # fmt: skip
            raw.append(advantages.reshape(-1))
            ratios.append(np.exp(log_rhos.reshape(-1)))
        unweighted = np.concatenate(raw)
        normalized = (unweighted - unweighted.mean()) / (unweighted.std(ddof=1) + 1e-8)
        weights = np.minimum(np.concatenate(ratios), cfg.rho_bar)
        np.testing.assert_allclose(columns[3], normalized * weights, rtol=1e-4, atol=1e-5)
        checked.append(float(weights.min()))
        return real_optimize(state_, columns, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpto_module, "optimize", spy)
    gpto_update(state, collect_rollout(state))
    assert checked and checked[0] < 0.99  # the earlier rollout is off-policy: some weights below 1


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


def test_a_short_seeded_gpto_run_learns_cartpole(tmp_path: Path) -> None:
    cfg = GPTOConfig.defaults_for("CartPole-v1", total_steps=40_000, eval_every=0, seed=3, out=tmp_path / "run")
    assert cfg.trust == "spo"  # GPTO's default on CartPole
    summary = train_gpto(cfg)
    assert summary["algo"] == "gpto" and summary["eval_return_mean"] >= 150.0  # random: ~22


def test_gptos_defaults_are_ppos_row_with_its_own_overrides() -> None:
    """GPTO_ENV_DEFAULTS changes only what it names; an env without a row runs PPO's update with PPO's settings."""
    for env_id in ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "InvertedDoublePendulum-v5"):
        gpto, ppo = GPTOConfig.defaults_for(env_id), PPOConfig.defaults_for(env_id)
        changed = {name for name in dataclasses.asdict(ppo) if getattr(gpto, name) != getattr(ppo, name)}
        assert changed == set() and gpto.reuse == 1 and gpto.aux_every == 0
        assert gpto.trust == GPTO_ENV_DEFAULTS.get(env_id, {}).get("trust", "clip")
    assert GPTOConfig.defaults_for("Pendulum-v1", trust="clip").trust == "clip"  # a flag still wins


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


def test_an_epoch_cut_short_by_max_kl_is_still_held_to_the_bound() -> None:
    bound = 1e-3
    cfg = GPTOConfig.defaults_for("CartPole-v1", trust="trust-region", kl_bound=bound, learning_rate=1e-2,
                                  batch_size=32, max_kl=5e-3, n_epochs=4)  # fmt: skip
    state = init_gpto(cfg)
    for _ in range(3):
        metrics = gpto_update(state, collect_rollout(state))
        assert metrics["trust/kl"] <= bound + 1e-9


def test_spo_at_a_clip_range_annealed_to_zero_keeps_the_policy() -> None:
    loss, grad = trust_term("spo", 0.0, 1.0).numpy(np.array([1.0, 1.0]), np.array([1.0, -1.0]))
    assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rho_bar": 0.5}, "--rho-bar must be at least 1"),
    ({"kl_penalty_target": 0.0}, "--kl-penalty-target must be a positive number"),
    ({"aux_every": -1}, "--aux-every must be >= 0"),
])  # fmt: skip
def test_settings_out_of_range_are_refused(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTOConfig.defaults_for("CartPole-v1", **overrides).validate()


def test_a_run_resumes_only_as_the_algorithm_it_was(tmp_path: Path) -> None:
    from baselines.common.config import resume_default
    from baselines.ppo import PPOConfig, train_ppo

    train_ppo(PPOConfig.defaults_for("CartPole-v1", total_steps=512, eval_episodes=2, out=tmp_path / "ppo"))
    with pytest.raises(ConfigError, match="is a run of rlhf ppo; continue it with rlhf ppo --resume"):
        train_gpto(resume_default(GPTOConfig, tmp_path / "ppo"))


@pytest.mark.parametrize("trust", ["kl", "spo", "trust-region"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_autograd_learner_lands_where_the_numpy_learner_lands(env_id: str, trust: str) -> None:
    """What --device cuda runs (autograd of ppo_loss with the trust term, the auxiliary phase, the line search),
    here on the CPU, from identical states: rounding moves a parameter by ~1e-7; the update by ~1e-3."""
    cfg = GPTOConfig.defaults_for(env_id, trust=trust, num_steps=64, batch_size=64, n_epochs=2, aux_every=1,
                                  aux_epochs=1, kl_bound=0.005)  # fmt: skip
    states = [init_gpto(cfg), init_gpto(cfg)]
    before = states[0].agent.params.data.clone()
    paths = [False, True]
    metrics = [
        gpto_update(state, collect_rollout(state), autograd=path) for state, path in zip(states, paths, strict=True)
    ]
    numpy_params, autograd_params = (state.agent.params.data for state in states)
    assert float((numpy_params - before).abs().max()) > 5e-4
    np.testing.assert_allclose(autograd_params.numpy(), numpy_params.numpy(), rtol=0, atol=5e-5)
    assert metrics[1]["trust/kl"] == pytest.approx(metrics[0]["trust/kl"], rel=1e-2, abs=1e-6)
    for state in states:
        state.envs.close()
