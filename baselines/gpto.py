"""GPTO (Generalized Policy Trust Optimization): PPO with a pluggable trust term, rollout reuse and PPG's
auxiliary phase, top to bottom. No paper carries the name; docs/gpto.md defines it and reports what each piece earns.

PPO's rollouts, GAE, loss and flat-buffer learner are ``baselines/ppo.py``'s, reused. An update:

1. **Data.** The newest rollout and up to ``reuse - 1`` earlier ones (stored with the log-probs ``mu`` of the policy
   that collected them). Advantages and value targets are V-trace's (``baselines.common.returns.vtrace``) with the
   current policy ``pi_old`` and critic; each sample's advantage is weighted by ``min(rho_bar, pi_old / mu)`` (the
   decoupled PPO objective of Hilton et al. 2021, https://arxiv.org/abs/2110.00641). With ``reuse`` 1 the data is
   on-policy: the weights are 1 and the advantages GAE's, exactly PPO's update.
2. **Policy phase.** ``n_epochs`` of minibatch steps on ``ppo_loss`` with the trust term (``baselines/trust.py``):
   clip, adaptive KL penalty, SPO, or the clip under a hard KL bound, where the policy's change over
   an epoch whose batch KL from ``pi_old`` exceeds ``kl_bound`` is halved until it fits, or undone and the update
   ends.
3. **Auxiliary phase** (PPG, Cobbe et al. 2021, https://arxiv.org/abs/2009.04416), every ``aux_every`` updates:
   ``aux_epochs`` over the states of those rollouts of ``0.5 (V_aux(s) - V_targ)^2 + beta_clone KL(pi_before ||
   pi) + 0.5 (V(s) - V_targ)^2``, ``V_aux`` a head on the policy network; then the policy's change is backtracked
   until ``KL(pi_before || pi) <= aux_kl_bound``.

Logged per update, for every term: ``trust/kl`` (the batch KL from ``pi_old`` after the update), the ratio's range
and mean deviation, the share outside ``1 +- epsilon``, and the term's own state (KL coefficient, backtracks).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common.checkpoint import load_checkpoint
from baselines.common.errors import ConfigError
from baselines.common.returns import vtrace
from baselines.gpto_config import GPTOConfig as GPTOConfig  # re-exported beside the trainer, as PPOConfig
from baselines.ppo import (
    ActorCritic,
    Learner,
    PPOState,
    RewardFn,
    Rollout,
    init_ppo,
    load_state,
    log_probs,
    optimize,
    policy_columns,
    ppo_eval_envs,
    scaled_rewards,
    state_dict,
    train_ppo,
    update_metrics,
    value_estimates,
)
from baselines.ppo_gradient import normalize_advantages
from baselines.tasks import TASK_ENV_ID, TaskRewardScaler, make_task_envs, parse_tasks, register_task_env
from baselines.trust import adapt_kl_coef, trust_term


@dataclass
class StoredRollout:
    """What reuse keeps of a rollout: the normalized observations the policy saw, its actions, the scaled rewards
    the update used, the episode ends, and ``behaviour_logp``, the log-probs of the policy that acted (``(T, N)``)."""

    norm_obs: np.ndarray
    norm_next_obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    behaviour_logp: np.ndarray


@dataclass
class GPTOState(PPOState):
    """PPO's state and GPTO's: the KL coefficient, the stored rollouts, the auxiliary phase's buffer and, with
    tasks, the per-task reward scaler (in place of PPO's one)."""

    config: GPTOConfig
    kl_penalty_coef: float = 1.0
    task_scaler: TaskRewardScaler | None = None
    memory: deque[StoredRollout] = field(default_factory=deque)
    aux_obs: list[np.ndarray] = field(default_factory=list)
    aux_targets: list[np.ndarray] = field(default_factory=list)


def init_gpto(config: GPTOConfig) -> GPTOState:
    """PPO's envs (or the tasks') and agent (with PPG's auxiliary value head when the phase is on), GPTO's state,
    and with ``init_from`` that run's weights and observation statistics."""
    config.validate()
    envs, task_scaler = None, None
    if config.tasks is not None:
        tasks = parse_tasks(config.tasks)
        envs = make_task_envs(tasks, config.num_envs, config.vectorization)
        if config.normalize_reward:
            task_scaler = TaskRewardScaler(np.arange(config.num_envs) % len(tasks), config.gamma)
    base = init_ppo(config, aux_outputs=1 if config.aux_every else 0, envs=envs)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(PPOState)}
    if task_scaler is not None:
        fields["reward_scaler"] = None
    memory: deque[StoredRollout] = deque(maxlen=config.reuse)
    state = GPTOState(**fields | {"config": config}, kl_penalty_coef=config.kl_penalty_coef, memory=memory,
                      task_scaler=task_scaler)  # fmt: skip
    if config.init_from is not None and config.resume is None:  # resuming, the run's own checkpoint is loaded
        start_from(state, config.init_from)
    return state


def start_from(state: GPTOState, folder: Path) -> None:
    """Copy the weights and observation statistics of ``folder``'s checkpoint into a new run's state."""
    checkpoint = load_checkpoint(folder / "checkpoint.pt")  # a missing or corrupt file: one-line ConfigError
    if "params" not in checkpoint and "ppo" in checkpoint:
        raise ConfigError(f"--init-from {folder}: an rlhf run folder; give a run of rlhf ppo or rlhf gpto")
    saved = checkpoint.get("config") or {}
    differ = [f"{name} {saved[name]} (here {getattr(state.config, name)})"
              for name in ("activation", "hidden_sizes", "normalize_obs", "action_bounds")
              if name in saved and _plain(saved[name]) != _plain(getattr(state.config, name))]  # fmt: skip
    if differ:
        raise ConfigError(f"--init-from {folder}: that run had {'; '.join(differ)}")
    params = checkpoint.get("params")
    if not isinstance(params, torch.Tensor) or params.shape != state.agent.params.data.shape:
        raise ConfigError(f"--init-from {folder}: its network does not fit this config (other env, tasks or sizes)")
    state.agent.params.data.copy_(params)
    if state.obs_normalizer is not None and checkpoint.get("obs_rms") is not None:
        state.obs_normalizer.stats.load_state_dict(checkpoint["obs_rms"])


def _plain(value: Any) -> Any:
    """A config value as a checkpoint keeps it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------------------------- the update
def gpto_update(state: GPTOState, rollout: Rollout, autograd: bool = False) -> dict[str, float]:
    """One GPTO update (module docstring: data, policy phase, auxiliary phase); returns namespaced metrics."""
    cfg, agent = state.config, state.agent
    if state.task_scaler is not None:
        rewards = state.task_scaler(rollout.rewards.astype(np.float32), rollout.terminated | rollout.truncated)
    else:
        rewards = scaled_rewards(state, rollout)
    newest_obs = rollout.norm_obs.reshape(rollout.rewards.size, agent.obs_dim)
    behaviour = log_probs(agent, newest_obs, rollout.actions.reshape(rollout.rewards.size, *rollout.actions.shape[2:]))
    state.memory.append(
        StoredRollout(rollout.norm_obs, rollout.norm_next_obs, rollout.actions, rewards, rollout.terminated,
                      rollout.truncated, behaviour.reshape(rewards.shape))
    )  # fmt: skip

    # 1. Data: V-trace advantages and targets under the current policy; each sample's weight min(rho_bar, pi/mu).
    parts, weights, all_returns, all_values = [], [], [], []
    for stored in state.memory:
        values, next_values = value_estimates(agent, stored.norm_obs, stored.norm_next_obs)
        zeros = np.zeros_like(values)
        part = policy_columns(agent, stored.norm_obs, stored.actions, zeros, zeros, values)
        log_rhos = (part[2] - stored.behaviour_logp.reshape(-1)).reshape(values.shape)
        advantages, returns = vtrace(
            stored.rewards, values, next_values, stored.terminated, stored.truncated, cfg.gamma, cfg.gae_lambda,
            log_rhos, cfg.rho_bar,
        )  # fmt: skip
        parts.append((*part[:3], advantages.reshape(-1), returns.reshape(-1), part[5]))
        weights.append(np.minimum(np.exp(log_rhos.reshape(-1)), cfg.rho_bar))
        all_returns.append(returns)
        all_values.append(values)
    columns = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    batch = len(columns[0])
    full_batch = cfg.batch_size >= batch
    normalized = full_batch
    if cfg.reuse > 1:  # normalize once over all the rollouts, then weight: the minibatch sees weighted advantages
        advantages = normalize_advantages(columns[3]) if cfg.normalize_advantage and batch > 1 else columns[3]
        columns = (*columns[:3], (advantages * np.concatenate(weights)).astype(np.float32), *columns[4:])
        normalized = True
    elif full_batch and cfg.normalize_advantage and batch > 1:  # as ppo_update
        columns = (*columns[:3], normalize_advantages(columns[3]), *columns[4:])

    # 2. Policy phase with the trust term. The KL is measured on the newest rollout, which pi_old sampled.
    trust = trust_term(cfg.trust, state.clip_range, state.kl_penalty_coef)
    n_obs, n_actions, n_logp = (column[batch - rewards.size :] for column in columns[:3])
    guard = KLGuard(agent, n_obs, n_actions, n_logp, cfg.kl_bound, cfg.backtrack_steps)
    means, stopped_early = optimize(
        state, columns, trust, full_batch, autograd, guard if cfg.trust == "trust-region" else None, normalized
    )
    returns, values = np.concatenate(all_returns, axis=None), np.concatenate(all_values, axis=None)
    metrics = update_metrics(state, means, stopped_early, returns, values)
    metrics |= ratio_stats(agent, n_obs, n_actions, n_logp, trust.epsilon)
    metrics |= {
        "trust/kl_penalty_coef": state.kl_penalty_coef,
        "trust/backtracks": guard.halvings,
        "trust/rejected": guard.rejected,
    }
    if cfg.trust == "kl":
        state.kl_penalty_coef = adapt_kl_coef(state.kl_penalty_coef, metrics["trust/kl"], cfg.kl_penalty_target)

    # 3. PPG's auxiliary phase on the newest rollouts' states and value targets.
    if cfg.aux_every:
        state.aux_obs.append(newest_obs)
        state.aux_targets.append(all_returns[-1].reshape(-1))
        if len(state.aux_obs) >= cfg.aux_every:
            metrics |= auxiliary_phase(state, np.concatenate(state.aux_obs), np.concatenate(state.aux_targets))
            state.aux_obs.clear()
            state.aux_targets.clear()
    state.update += 1
    state.optimizer.lr, state.clip_range = cfg.schedule(state.global_step, state.optimizer.lr, means["approx_kl"])
    return metrics


def batch_kl(agent: ActorCritic, b_obs: np.ndarray, b_actions: np.ndarray, b_logp_old: np.ndarray) -> float:
    """The k3 estimate ``mean(r - 1 - log r)`` of ``KL(pi_old || pi)`` over a batch ``pi_old`` sampled."""
    return ratio_stats(agent, b_obs, b_actions, b_logp_old, 1.0)["trust/kl"]


class KLGuard:
    """The hard trust region, after each epoch: the policy's change over the epoch is halved while the batch KL
    from ``pi_old`` exceeds ``bound`` (``backtrack``); an epoch still above it after ``steps`` halvings leaves the
    policy where the epoch began and ends the update."""

    def __init__(
        self, agent: ActorCritic, b_obs: np.ndarray, b_actions: np.ndarray, b_logp_old: np.ndarray, bound: float,
        steps: int,
    ) -> None:  # fmt: skip
        self.agent, self.batch, self.bound, self.steps = agent, (b_obs, b_actions, b_logp_old), bound, steps
        self.halvings, self.rejected = 0, 0

    def __call__(self, before: torch.Tensor) -> bool:
        _, halvings, accepted = backtrack(self.agent, before, lambda: batch_kl(self.agent, *self.batch), self.bound,
                                          self.steps)  # fmt: skip
        self.halvings += halvings
        self.rejected += not accepted
        return accepted


def backtrack(
    agent: ActorCritic, before: torch.Tensor, kl: Callable[[], float], bound: float, steps: int
) -> tuple[float, int, bool]:
    """Line search on the policy's change since ``before`` (the actor, with any auxiliary head, and the log-std;
    the critic keeps its change): halve it until ``kl()`` is within ``bound``, at most ``steps`` times, else put the
    policy back where it was. Returns the final KL, the halvings, and whether a change was kept."""
    data, mask = agent.params.data, policy_mask(agent)
    change = torch.where(mask, data - before, torch.zeros_like(data))
    start = data - change
    for halving in range(steps + 1):
        value = kl()
        if value <= bound:
            return value, halving, True
        if halving < steps:
            data.copy_(start + change * 0.5 ** (halving + 1))
    data.copy_(torch.where(mask, before, data))
    return kl(), steps, False


def policy_mask(agent: ActorCritic) -> torch.Tensor:
    """True at the policy's entries of the flat buffer (``FlatParameters``: actor, critic, then the log-std)."""
    mask = torch.zeros_like(agent.params.data, dtype=torch.bool)
    mask[: sum(w.numel() + b.numel() for w, b in zip(agent.actor.weights, agent.actor.biases, strict=True))] = True
    if not agent.discrete:
        mask[mask.numel() - agent.action_dim :] = True
    return mask


def ratio_stats(
    agent: ActorCritic, b_obs: np.ndarray, b_actions: np.ndarray, b_logp_old: np.ndarray, epsilon: float
) -> dict[str, float]:
    """How far the update moved the policy on its batch: KL, the ratio's range, mean |r - 1|, share outside eps."""
    agent.refresh_cpu_copy()
    log_ratio = log_probs(agent, b_obs, b_actions) - b_logp_old
    ratio = np.exp(log_ratio)
    return {
        "trust/kl": float(np.mean(ratio - 1.0 - log_ratio)),
        "trust/ratio_min": float(ratio.min()),
        "trust/ratio_max": float(ratio.max()),
        "trust/ratio_deviation": float(np.mean(np.abs(ratio - 1.0))),
        "trust/outside_epsilon": float(np.mean(np.abs(ratio - 1.0) > epsilon)),
    }


# -------------------------------------------------------------------------------------- the auxiliary phase
def auxiliary_phase(state: GPTOState, obs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """PPG's auxiliary phase (module docstring, 3) on ``obs`` (normalized, flat) and their value targets."""
    cfg, agent = state.config, state.agent
    device = agent.params.data.device
    obs_t, targets_t = torch.from_numpy(obs).to(device), torch.from_numpy(targets.astype(np.float32)).to(device)
    before = agent.params.data.clone()
    with torch.no_grad():
        old_policy = policy_distribution(agent, before, obs_t)
    losses = np.zeros(3)
    count, size = 0, -(-len(obs) // cfg.aux_minibatches)
    for _epoch in range(cfg.aux_epochs):
        perm = torch.from_numpy(state.rng.permutation(len(obs))).to(device)
        for start in range(0, len(obs), size):
            idx = perm[start : start + size]
            flat = agent.params.data.detach().requires_grad_()
            actor, critic = agent.params.bind_copy(flat)
            out = actor.forward(obs_t[idx], cache=False)
            aux_value, values = out[:, agent.action_dim], critic.forward(obs_t[idx], cache=False)[:, 0]
            kl = policy_kl(old_policy, idx, policy_distribution(agent, flat, obs_t[idx], out))
            aux_loss = 0.5 * ((aux_value - targets_t[idx]) ** 2).mean()
            value_loss = 0.5 * ((values - targets_t[idx]) ** 2).mean()
            loss = aux_loss + cfg.aux_clone_coef * kl + value_loss
            agent.params.grad.copy_(torch.autograd.grad(loss, flat)[0])
            state.optimizer.clipped_step(cfg.max_grad_norm)
            losses += [aux_loss.item(), kl.item(), value_loss.item()]
            count += 1

    def exact_kl() -> float:
        with torch.no_grad():
            return float(policy_kl(old_policy, slice(None), policy_distribution(agent, agent.params.data, obs_t)))

    kl_after, halvings, _ = backtrack(agent, before, exact_kl, cfg.aux_kl_bound, cfg.backtrack_steps)
    aux_loss, clone_kl, value_loss = (losses / count).tolist()
    return {"aux/value_loss": value_loss, "aux/aux_value_loss": aux_loss, "aux/clone_kl": clone_kl,
            "aux/kl": kl_after, "aux/backtracks": float(halvings)}  # fmt: skip


PolicyDistribution = tuple[torch.Tensor, torch.Tensor | None]
"""Categorical log-probs ``(batch, actions)`` and None, or Gaussian means and the log-std."""


def policy_distribution(
    agent: ActorCritic, flat: torch.Tensor, obs: torch.Tensor, out: torch.Tensor | None = None
) -> PolicyDistribution:
    """The policy at parameters ``flat`` on ``obs`` (``out``: the actor's output there, when already computed)."""
    if out is None:
        out = agent.params.bind_copy(flat)[0].forward(obs, cache=False)
    out = agent.policy_out(out)
    if agent.discrete:
        return torch.log_softmax(out, dim=1), None
    return out, flat[flat.numel() - agent.action_dim :]


def policy_kl(old: PolicyDistribution, idx: torch.Tensor | slice, new: PolicyDistribution) -> torch.Tensor:
    """Mean exact ``KL(old || new)`` over the rows ``idx`` of ``old`` (the rows of ``new``)."""
    old_out, old_log_std = old[0][idx], old[1]
    new_out, new_log_std = new
    if old_log_std is None or new_log_std is None:
        return (old_out.exp() * (old_out - new_out)).sum(1).mean()
    variance_ratio = torch.exp(2.0 * (old_log_std - new_log_std))
    mean_term = ((old_out - new_out) / new_log_std.exp()) ** 2
    return 0.5 * (variance_ratio + mean_term - 1.0 - torch.log(variance_ratio)).sum(1).mean()


# ----------------------------------------------------------------------------------------- checkpoints, train
def gpto_state_dict(state: GPTOState) -> dict[str, Any]:
    """PPO's checkpoint, the KL coefficient and the task scaler (stored rollouts and the auxiliary buffer start
    empty on resume)."""
    task_rms = state.task_scaler.state_dict() if state.task_scaler is not None else None
    return state_dict(state) | {"algo": "gpto", "kl_penalty_coef": state.kl_penalty_coef, "task_rms": task_rms}


def load_gpto_state(state: GPTOState, checkpoint: dict[str, Any]) -> None:
    load_state(state, checkpoint)
    state.kl_penalty_coef = float(checkpoint.get("kl_penalty_coef", state.config.kl_penalty_coef))
    if state.task_scaler is not None:
        state.task_scaler.load_state_dict(checkpoint["task_rms"])


def gpto_eval_envs(config: GPTOConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """The tasks' envs (each with its task input), or --env alone."""
    if config.tasks is None:
        return ppo_eval_envs(config)
    register_task_env()
    return [(task.name, TASK_ENV_ID, task.kwargs) for task in parse_tasks(config.tasks)]


GPTO = Learner("gpto", init_gpto, gpto_update, gpto_state_dict, load_gpto_state, gpto_eval_envs)


def train_gpto(config: GPTOConfig, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """Train GPTO in PPO's loop (evaluation, checkpoints, report); return summary.json's content."""
    return train_ppo(config, reward_fn, learner=GPTO)
