"""Proximal Policy Optimization (Schulman et al. 2017, https://arxiv.org/abs/1707.06347), top to bottom.

Vector envs, GAE, clipped surrogate, optional value clipping, entropy bonus, advantage normalization, gradient-norm
clipping, constant / linear / KL-adaptive learning rate, KL early stop, discrete and continuous (diagonal Gaussian,
clipped or tanh-squashed) actions, observation normalization and reward scaling. Config: ``baselines/ppo_config.py``.

The loss is ``ppo_loss``; the ``--device cuda`` learner differentiates it with autograd. On the CPU the update uses
its hand-written NumPy gradient (``baselines/ppo_gradient.py``, tested against autograd's), several times faster.
``rlhf`` reuses it: ``reward_fn`` replaces a rollout's rewards; ``init_ppo``/``collect_rollout``/``ppo_update``.

Data-parallel under ``torchrun`` (``baselines/common/distributed.py``): each rank steps ``num_envs / world size`` of
the envs (env ``i`` of the whole seeded as in one process), the ranks average each minibatch's flat gradient (and its
loss statistics, so that a KL early stop or a KL-adaptive rate decides alike) before the optimizer step, and merge the
observation and reward statistics after each rollout: the parameters stay identical. Each rank's minibatch is
``batch_size / world size`` of its own rollout. Rank 0 alone evaluates and writes the run folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from baselines.common.checkpoint import load_checkpoint, save_checkpoint
from baselines.common.config import resolve_resume
from baselines.common.distributed import SINGLE, World, init_world
from baselines.common.envs import make_vec_env
from baselines.common.errors import ConfigError, check
from baselines.common.evaluation import evaluate_policy
from baselines.common.flat_mlp import FlatAdam, FlatParameters, MLPSpec, limit_blas_threads
from baselines.common.normalization import ObsNormalizer, RewardScaler
from baselines.common.progress import progress_bar
from baselines.common.report import Report
from baselines.common.returns import gae
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir, next_due
from baselines.ppo_config import PPOConfig as PPOConfig  # re-exported: rlhf and the benchmarks import it from here
from baselines.ppo_gradient import log_prob, minibatch_gradients, normalize_advantages
from baselines.trust import Clip, TrustTerm


# --------------------------------------------------------------------------------------------------- the agent
class ActorCritic:
    """Separate actor and critic MLPs in one flat parameter buffer ``params`` (+ log-std for Box actions).

    The learner trains ``params`` on ``config.device``. Acting runs flat_mlp's NumPy forward on the CPU: on the
    parameters themselves when they live there, else on a CPU copy that ``refresh_cpu_copy`` updates.
    ``aux_outputs`` extra actor outputs follow the policy's (PPG's auxiliary value head, ``baselines/gpto.py``);
    ``policy_out`` drops them.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        config: PPOConfig,
        generator: torch.Generator,
        aux_outputs: int = 0,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(
                f"PPO here handles Box observations; {config.env} has {type(observation_space).__name__} "
                "observations (wrap the env to give a Box, e.g. one-hot for Discrete)"
            )
        self.obs_dim = int(np.prod(observation_space.shape))
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete = True
            self.action_dim = int(action_space.n)
            extras: list[tuple[str, int, float]] = []
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            self.action_dim = int(action_space.shape[0])
            self.low, self.high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            extras = [("log_std", self.action_dim, config.log_std_init)]
        else:
            raise ConfigError(f"PPO here handles Discrete or 1-D Box actions; {config.env} has {action_space}")
        self.squash = config.action_bounds == "squash"
        self.aux_outputs = aux_outputs
        actor_out = self.action_dim + aux_outputs
        actor = MLPSpec((self.obs_dim, *config.hidden_sizes, actor_out), config.activation, out_gain=0.01)
        critic = MLPSpec((self.obs_dim, *config.hidden_sizes, 1), config.activation, out_gain=1.0)
        self.params = FlatParameters([actor, critic], generator, device=config.device, extras=extras)
        self.actor, self.critic = self.params.mlps
        self.on_cpu = self.params.data.device.type == "cpu"
        self.cpu_data = self.params.data if self.on_cpu else torch.empty(self.params.data.shape)
        self.cpu_actor, self.cpu_critic = self.params.mlps if self.on_cpu else self.params.bind_copy(self.cpu_data)
        self.cpu_log_std = None if self.discrete else self.cpu_data[-self.action_dim :].numpy()  # extras come last

    def policy_out(self, out: Any) -> Any:
        """The policy's part of the actor's output (logits or Gaussian means), NumPy or torch."""
        return out[:, : self.action_dim] if self.aux_outputs else out

    def refresh_cpu_copy(self) -> None:
        """Copy the parameters to the CPU copy that acts (once per rollout; nothing to do when they live there)."""
        if not self.on_cpu:
            self.cpu_data.copy_(self.params.data)

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        """Sampled (or mode) actions for normalized observations; continuous actions are pre-bounds."""
        out = self.policy_out(self.cpu_actor.forward(obs, cache=False))
        if self.discrete:
            if deterministic:
                return out.argmax(axis=1)
            cdf = np.cumsum(np.exp(out - out.max(axis=1, keepdims=True)), axis=1)
            u = rng.random((out.shape[0], 1)) * cdf[:, -1:]
            return np.minimum((cdf < u).sum(axis=1), self.action_dim - 1)
        if deterministic:
            return out
        assert self.cpu_log_std is not None
        return out + np.exp(self.cpu_log_std) * rng.standard_normal(out.shape).astype(np.float32)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """What the env receives: discrete as is; continuous clipped, or tanh-squashed, to the bounds."""
        if self.discrete:
            return actions
        if self.squash:
            return self.low + (np.tanh(actions) + 1.0) * 0.5 * (self.high - self.low)
        return np.clip(actions, self.low, self.high)


# ------------------------------------------------------------------------------------------------ the rollout
@dataclass
class Rollout:
    """``T = num_steps`` steps of ``N = num_envs`` sub-envs (time-major). ``obs[t]``: what the policy saw at step t
    (raw; ``norm_obs`` normalized), ``next_obs[t]``: what followed (the final observation when the episode ended at
    t). ``true_rewards``: the env's; ``rewards``: what PPO optimizes (the env's, or ``reward_fn``'s)."""

    obs: np.ndarray
    next_obs: np.ndarray
    norm_obs: np.ndarray
    norm_next_obs: np.ndarray
    actions: np.ndarray
    env_actions: np.ndarray
    true_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


RewardFn = Callable[[Rollout], np.ndarray]


@dataclass
class PPOState:
    """Everything that changes while PPO trains."""

    config: PPOConfig
    envs: gym.vector.VectorEnv[Any, Any, Any]
    agent: ActorCritic
    optimizer: FlatAdam
    obs_normalizer: ObsNormalizer | None
    reward_scaler: RewardScaler | None
    rng: np.random.Generator
    generator: torch.Generator
    next_obs: np.ndarray
    global_step: int = 0
    update: int = 0
    clip_range: float = 0.2
    episode_return: np.ndarray = field(default_factory=lambda: np.zeros(0))
    episode_length: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    world: World = SINGLE
    """The ranks this learner is one of (one process: rank 0 of 1); ``config`` is this rank's share."""

    def normalize(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if self.obs_normalizer is None:
            return obs.reshape(obs.shape[0], -1).astype(np.float32)
        return self.obs_normalizer(obs.reshape(obs.shape[0], -1), update=update)

    def policy(self, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
        """Raw observations -> env actions, with the current weights and normalization (for evaluation)."""
        self.agent.refresh_cpu_copy()
        return lambda obs: self.agent.to_env(self.agent.act(self.normalize(obs), self.rng, deterministic))


def init_ppo(
    config: PPOConfig,
    aux_outputs: int = 0,
    envs: gym.vector.VectorEnv[Any, Any, Any] | None = None,
    world: World = SINGLE,
) -> PPOState:
    """Make the envs (unless given: a multi-task learner's) and the agent (``aux_outputs``: see ActorCritic).
    With several ranks, ``config`` is this rank's share (``rank_share``) and rank 0's weights are every rank's."""
    config.validate()
    torch.set_num_threads(config.torch_threads)
    limit_blas_threads(config.torch_threads)
    generator = torch.Generator().manual_seed(config.seed)
    # copy=False: collect_rollout copies each observation it keeps, once.
    if envs is None:
        envs = make_vec_env(config.env, config.num_envs, config.vectorization, copy=False)
    agent = ActorCritic(envs.single_observation_space, envs.single_action_space, config, generator, aux_outputs)
    world.broadcast_(agent.params.data)
    return PPOState(
        config=config,
        envs=envs,
        agent=agent,
        optimizer=FlatAdam(agent.params, config.learning_rate, eps=1e-5),
        obs_normalizer=ObsNormalizer((agent.obs_dim,)) if config.normalize_obs else None,
        reward_scaler=RewardScaler(config.num_envs, config.gamma) if config.normalize_reward else None,
        rng=np.random.default_rng(config.seed if world.rank == 0 else [config.seed, world.rank]),
        generator=generator,
        next_obs=envs.reset(seed=config.seed + world.rank * config.num_envs)[0].copy(),  # env i of all: seed + i
        clip_range=config.clip_range,
        episode_return=np.zeros(config.num_envs),
        episode_length=np.zeros(config.num_envs, dtype=np.int64),
        world=world,
    )


def rank_share(config: PPOConfig, world: World) -> PPOConfig:
    """One rank's share of ``config``: ``num_envs`` and ``batch_size`` divided by the world size (ConfigError
    unless they divide)."""
    if world.size == 1:
        return config
    for flag, value in (("--num-envs", config.num_envs), ("--batch-size", config.batch_size)):
        if value % world.size:
            raise ConfigError(f"{flag} {value} does not divide among {world.size} ranks: give a multiple of it")
    return dataclasses.replace(
        config, num_envs=config.num_envs // world.size, batch_size=config.batch_size // world.size
    )


def collect_rollout(state: PPOState) -> Rollout:
    """Step the envs ``num_steps`` times with sampled actions (values and log-probs come batched in the update)."""
    cfg, agent, envs = state.config, state.agent, state.envs
    agent.refresh_cpu_copy()
    shape = (cfg.num_steps, cfg.num_envs)
    obs = np.empty((*shape, *state.next_obs.shape[1:]), np.float32)
    norm_obs = np.empty((*shape, agent.obs_dim), np.float32)
    actions = np.empty(shape, np.int64) if agent.discrete else np.empty((*shape, agent.action_dim), np.float32)
    rewards = np.empty(shape, np.float32)  # the true rewards, and what PPO optimizes until a reward_fn replaces them
    r = Rollout(obs=obs, next_obs=np.empty_like(obs), norm_obs=norm_obs, norm_next_obs=np.empty_like(norm_obs),
                actions=actions, env_actions=np.empty_like(actions), true_rewards=rewards, rewards=rewards,
                terminated=np.empty(shape, bool), truncated=np.empty(shape, bool))  # fmt: skip
    current = state.next_obs
    synced = state.obs_normalizer.stats.state_dict() if state.obs_normalizer and state.world.size > 1 else None
    norm_current = state.normalize(current, update=True)
    for t in range(cfg.num_steps):
        action = agent.act(norm_current, state.rng)
        env_action = agent.to_env(action)
        following, reward, term, trunc, info = envs.step(env_action)
        following = following.copy()  # the env reuses its observation buffer (copy=False)
        r.obs[t], r.actions[t], r.env_actions[t], r.norm_obs[t] = current, action, env_action, norm_current
        r.true_rewards[t], r.terminated[t], r.truncated[t], r.next_obs[t] = reward, term, trunc, following
        state.episode_return += reward
        state.episode_length += 1
        norm_current = state.normalize(following, update=True)
        r.norm_next_obs[t] = norm_current
        done = term | trunc
        if done.any():  # same-step autoreset: the real next observation of a finished episode is in info
            r.next_obs[t][done] = np.stack(info["final_obs"][done])
            r.norm_next_obs[t][done] = state.normalize(r.next_obs[t][done])
            r.episode_returns.extend(state.episode_return[done].tolist())
            r.episode_lengths.extend(state.episode_length[done].tolist())
            state.episode_return[done] = 0.0
            state.episode_length[done] = 0
        current = following
    state.next_obs = current
    if synced is not None and state.obs_normalizer is not None:
        state.world.merge_stats_(state.obs_normalizer.stats, synced)
    state.global_step += r.true_rewards.size * state.world.size
    return r


# --------------------------------------------------------------------------------------------------- the loss
LOSS_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")  # what ppo_loss reports, in order


def ppo_loss(
    agent: ActorCritic,
    flat: torch.Tensor,
    cfg: PPOConfig,
    trust: TrustTerm,
    minibatch: Sequence[torch.Tensor],
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's loss on one minibatch, differentiable w.r.t. ``flat`` (parameters laid out as ``agent.params.data``).

    ``loss = trust(r, A) + vf_coef mean((V - R)^2) - ent_coef mean(H)`` with ``r = pi(a|s) / pi_old(a|s)`` (eq. 9
    of the paper, signs as SB3's); PPO's trust term is ``Clip``: ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``
    (eq. 7), GPTO's others are in ``baselines/trust.py``. With ``clip_range_vf``, ``V`` is held
    within the old value +- that (SB3's value clipping). Advantages are normalized over the minibatch (sample std)
    unless ``normalized`` says the caller did it.

    ``minibatch``: ``(obs, actions, logp_old, advantages, returns, values_old)``, row-aligned. Returns the loss and
    the LOSS_STATS (detached): approx_kl is the k3 estimator ``mean(r - 1 - log r)``, clipfrac the share of
    ``|r - 1| > trust.epsilon``.
    """
    obs, actions, logp_old, advantages, returns, values_old = minibatch
    if cfg.normalize_advantage and len(advantages) > 1 and not normalized:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    actor, critic = agent.params.bind_copy(flat)  # flat_mlp's torch forward, which autograd differentiates
    out, values = agent.policy_out(actor.forward(obs, cache=False)), critic.forward(obs, cache=False)[:, 0]
    dist: torch.distributions.Distribution
    if agent.discrete:
        dist = torch.distributions.Categorical(logits=out, validate_args=False)
    else:  # diagonal Gaussian; its log-std follows the two MLPs in the buffer
        log_std = flat[flat.numel() - agent.action_dim :]
        normal = torch.distributions.Normal(out, log_std.exp(), validate_args=False)
        dist = torch.distributions.Independent(normal, 1, validate_args=False)
    logp, entropy = dist.log_prob(actions), dist.entropy()  # type: ignore[no-untyped-call]
    log_ratio = logp - logp_old
    ratio = log_ratio.exp()
    policy_loss = trust.torch(ratio, advantages)
    if cfg.clip_range_vf is not None:
        values = values_old + (values - values_old).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
    value_loss = ((values - returns) ** 2).mean()
    loss = policy_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * value_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > trust.epsilon).float().mean()
        stats = torch.stack([policy_loss, value_loss, entropy.mean(), approx_kl, clip_fraction])
    return loss, stats


def autograd_gradients(
    agent: ActorCritic, cfg: PPOConfig, trust: TrustTerm, minibatch: Sequence[torch.Tensor], normalized: bool = False
) -> np.ndarray:
    """The ``--device cuda`` path: autograd's d(ppo_loss)/d(params) into ``agent.params.grad``; returns the stats."""
    flat = agent.params.data.detach().requires_grad_()
    loss, stats = ppo_loss(agent, flat, cfg, trust, minibatch, normalized)
    agent.params.grad.copy_(torch.autograd.grad(loss, flat)[0])
    return stats.cpu().numpy()


# ------------------------------------------------------------------------------------------------- the update
def ppo_update(state: PPOState, rollout: Rollout, autograd: bool = False) -> dict[str, float]:
    """GAE on ``rollout.rewards``, then ``n_epochs`` of minibatch PPO steps; returns namespaced metrics.

    Each step's gradient is ``minibatch_gradients`` (NumPy) when the parameters live on the CPU, else autograd's
    of ``ppo_loss`` (``autograd=True`` takes that path on the CPU too); then a global-norm clip and an Adam step.
    """
    cfg, agent = state.config, state.agent
    rewards = scaled_rewards(state, rollout)
    values, next_values = value_estimates(agent, rollout.norm_obs, rollout.norm_next_obs)
    advantages, returns = gae(
        rewards, values, next_values, rollout.terminated, rollout.truncated, cfg.gamma, cfg.gae_lambda
    )
    columns = policy_columns(agent, rollout.norm_obs, rollout.actions, advantages, returns, values)
    full_batch = cfg.batch_size >= len(columns[0])  # one minibatch per epoch: order does not matter, no shuffle
    if full_batch and cfg.normalize_advantage and len(columns[0]) > 1:  # the same minibatch every epoch: once
        columns = (*columns[:3], normalize_advantages(columns[3]), *columns[4:])
    means, stopped_early = optimize(state, columns, Clip(state.clip_range), full_batch, autograd)
    metrics = update_metrics(state, means, stopped_early, returns, values)
    state.update += 1
    state.optimizer.lr, state.clip_range = cfg.schedule(state.global_step, state.optimizer.lr, means["approx_kl"])
    return metrics


def scaled_rewards(state: PPOState, rollout: Rollout) -> np.ndarray:
    """``rollout.rewards`` as the update sees them: scaled by the running return std when normalize_reward."""
    rewards = rollout.rewards.astype(np.float32)
    if state.reward_scaler is not None:
        synced = state.reward_scaler.stats.state_dict()
        rewards = state.reward_scaler(rewards, rollout.terminated | rollout.truncated)
        state.world.merge_stats_(state.reward_scaler.stats, synced)
    return rewards


def value_estimates(agent: ActorCritic, norm_obs: np.ndarray, norm_next_obs: np.ndarray) -> np.ndarray:
    """``(values, next_values)`` stacked, each ``(T, N)``: one batched critic forward on the CPU."""
    agent.refresh_cpu_copy()
    steps, n = norm_obs.shape[:2]
    both = np.concatenate([norm_obs, norm_next_obs]).reshape(2 * steps * n, agent.obs_dim)
    return agent.cpu_critic.forward(both, cache=False).reshape(2, steps, n)


def log_probs(agent: ActorCritic, b_obs: np.ndarray, b_actions: np.ndarray) -> np.ndarray:
    """The current policy's log-probs of ``b_actions`` (flat batch), on the CPU copy."""
    return log_prob(agent.policy_out(agent.cpu_actor.forward(b_obs, cache=False)), b_actions, agent.cpu_log_std)[0]


def policy_columns(
    agent: ActorCritic,
    norm_obs: np.ndarray,
    actions: np.ndarray,
    advantages: np.ndarray,
    returns: np.ndarray,
    values: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The flat batch ``ppo_loss`` takes: ``(obs, actions, logp_old, advantages, returns, values_old)``, with
    ``logp_old`` the current policy's (the policy the update must stay near)."""
    batch = advantages.size
    b_obs = norm_obs.reshape(batch, agent.obs_dim)
    b_actions = actions.reshape(batch, *actions.shape[2:])
    b_logp_old = log_probs(agent, b_obs, b_actions)
    as_flat = (column.reshape(-1).astype(np.float32) for column in (advantages, returns, values))
    return (b_obs, b_actions, b_logp_old, *as_flat)


EpochGuard = Callable[[torch.Tensor], bool]
"""Called after each epoch with the parameters before it: may change them; False ends the update."""


def optimize(
    state: PPOState,
    columns: tuple[np.ndarray, ...],
    trust: TrustTerm,
    full_batch: bool,
    autograd: bool = False,
    epoch_guard: EpochGuard | None = None,
    normalized: bool | None = None,
) -> tuple[dict[str, float], bool]:
    """``n_epochs`` of minibatch steps on ``ppo_loss`` with ``trust``: the mean LOSS_STATS and grad norm, and
    whether the epochs stopped early (``max_kl`` or the epoch guard). ``normalized``: the advantages need no
    per-minibatch normalization (default: ``full_batch``, whose one minibatch the caller normalized)."""
    cfg, agent = state.config, state.agent
    use_autograd = autograd or not agent.on_cpu
    batch = len(columns[0])
    gradients: Callable[..., np.ndarray] = autograd_gradients if use_autograd else minibatch_gradients
    data: tuple[Any, ...] = columns
    if use_autograd:
        data = tuple(torch.from_numpy(column).to(cfg.device) for column in columns)
    sums, count, stopped_early = np.zeros(len(LOSS_STATS) + 1), 0, False  # sums: the loss stats, the grad norm
    for _epoch in range(cfg.n_epochs):
        before = agent.params.data.clone() if epoch_guard is not None else None
        perm = None if full_batch else state.rng.permutation(batch)
        for start in range(0, batch, cfg.batch_size):
            minibatch = data
            if perm is not None:
                idx = perm[start : start + cfg.batch_size]
                minibatch = tuple(column[torch.from_numpy(idx) if use_autograd else idx] for column in data)
            stats = gradients(agent, cfg, trust, minibatch, full_batch if normalized is None else normalized)
            if state.world.size > 1:  # one all-reduce: the flat gradient and the loss stats, averaged over ranks
                both = torch.cat([agent.params.grad.reshape(-1), torch.from_numpy(stats).to(agent.params.grad)])
                state.world.all_reduce_mean_(both)
                agent.params.grad.copy_(both[: agent.params.grad.numel()].reshape(agent.params.grad.shape))
                stats = both[agent.params.grad.numel() :].cpu().numpy().astype(stats.dtype)
            sums[:-1] += stats
            sums[-1] += state.optimizer.clipped_step(cfg.max_grad_norm)
            count += 1
            if cfg.max_kl is not None and stats[3] > cfg.max_kl:  # approx KL
                stopped_early = True
                break
        if before is not None and epoch_guard is not None and not epoch_guard(before):
            stopped_early = True  # the guard sees an epoch cut short by max_kl too
        if stopped_early:
            break
    return dict(zip((*LOSS_STATS, "grad_norm"), (sums / count).tolist(), strict=True)), stopped_early


def update_metrics(
    state: PPOState, means: dict[str, float], stopped_early: bool, returns: np.ndarray, values: np.ndarray
) -> dict[str, float]:
    """The update's namespaced metrics: mean loss stats, explained variance, early stop, rate and clip range."""
    variance = float(np.var(returns))
    explained = float("nan") if variance == 0 else 1.0 - float(np.var(returns - values)) / variance
    metrics = {f"losses/{name}": mean for name, mean in means.items()}
    metrics |= {"losses/explained_variance": explained, "losses/early_stop": float(stopped_early)}
    return metrics | {"charts/learning_rate": state.optimizer.lr, "charts/clip_range": state.clip_range}


# ----------------------------------------------------------------------------------------- checkpoints, train
def state_dict(state: PPOState) -> dict[str, Any]:
    return {
        "world_size": state.world.size,
        "config": {  # paths as text: a checkpoint loads with weights_only, which refuses pathlib objects
            name: str(value) if isinstance(value, Path) else value
            for name, value in dataclasses.asdict(state.config).items()
        }
        | {"out": str(state.config.out), "resume": None, "config": None},
        "params": state.agent.params.data.cpu(),
        "optimizer": state.optimizer.state_dict(),
        "obs_rms": state.obs_normalizer.stats.state_dict() if state.obs_normalizer else None,
        "reward_rms": state.reward_scaler.stats.state_dict() if state.reward_scaler else None,
        "global_step": state.global_step,
        "update": state.update,
        "clip_range": state.clip_range,
        "generator": state.generator.get_state(),
    }


def load_state(state: PPOState, checkpoint: dict[str, Any]) -> None:
    """Restore weights, optimizer, normalization statistics and counters from a checkpoint."""
    try:
        state.agent.params.data.copy_(checkpoint["params"])
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        if state.obs_normalizer is not None:
            state.obs_normalizer.stats.load_state_dict(checkpoint["obs_rms"])
        if state.reward_scaler is not None:
            state.reward_scaler.stats.load_state_dict(checkpoint["reward_rms"])
        state.global_step = int(checkpoint["global_step"])
        state.update = int(checkpoint["update"])
        state.clip_range = float(checkpoint["clip_range"])
        state.generator.set_state(checkpoint["generator"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise ConfigError(f"checkpoint does not fit this PPO config ({error})") from None
    rank, seed = state.world.rank, state.config.seed
    state.rng = np.random.default_rng([seed, state.global_step] + ([rank] if rank else []))
    state.next_obs = state.envs.reset(seed=seed + state.global_step + rank * state.config.num_envs)[0].copy()


class Learner(NamedTuple):
    """What an algorithm on PPO's rollouts supplies to the training loops (``train_ppo``, the RLHF loop)."""

    name: str
    init: Callable[[Any], PPOState]
    update: Callable[[Any, Rollout], dict[str, float]]
    state_dict: Callable[[Any], dict[str, Any]]
    load_state: Callable[[Any, dict[str, Any]], None]
    eval_envs: Callable[[Any], list[tuple[str, str, dict[str, Any]]]]
    """``(name, env id, make kwargs)`` of the envs a policy is evaluated on: the trained env, or each task."""


def ppo_eval_envs(config: PPOConfig) -> list[tuple[str, str, dict[str, Any]]]:
    return [(config.env, config.env, {})]


def evaluate(state: PPOState, learner: Learner) -> dict[str, np.ndarray]:
    """Deterministic-policy returns on each of the learner's evaluation envs, by name."""
    cfg = state.config
    return {
        name: evaluate_policy(state.policy(), env_id, cfg.eval_episodes, cfg.seed, kwargs)
        for name, env_id, kwargs in learner.eval_envs(cfg)
    }


PPO = Learner("ppo", init_ppo, ppo_update, state_dict, load_state, ppo_eval_envs)


def train_ppo(
    config: PPOConfig,
    reward_fn: RewardFn | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    learner: Learner = PPO,
) -> dict[str, Any]:
    """Train, evaluate, checkpoint and report into the run folder; return summary.json's content.

    Args:
        reward_fn: replaces each rollout's rewards (``(T, N)``) before GAE; the true reward is still logged.
        on_eval: called with ``(env_steps, eval_return_mean)`` after each evaluation (a tuner may raise there).
        learner: the algorithm (GPTO's is ``baselines.gpto.GPTO``).
    """
    world = init_world(config.device)
    check(world.size == 1 or learner is PPO, f"rlhf {learner.name} runs in one process; under torchrun: rlhf ppo")
    resuming = config.resume is not None
    new_out = world.broadcast_object(config.out or default_run_dir(learner.name, config.env))  # rank 0's stamp
    cfg = resolve_resume(config) if resuming else dataclasses.replace(config, out=new_out)
    cfg.validate()
    assert cfg.out is not None
    checkpoint = load_checkpoint(cfg.out / "checkpoint.pt") if resuming else None
    if checkpoint is not None and checkpoint.get("algo", "ppo") != learner.name:
        algo = checkpoint.get("algo", "ppo")
        raise ConfigError(f"{cfg.out} is a run of rlhf {algo}; continue it with rlhf {algo} --resume {cfg.out}")
    if checkpoint is not None and int(checkpoint.get("world_size", 1)) != world.size:
        raise ConfigError(f"{cfg.out} ran on {checkpoint.get('world_size', 1)} ranks; resume it on as many "
                          f"(here {world.size})")  # fmt: skip
    state = init_ppo(rank_share(cfg, world), world=world) if world.size > 1 else learner.init(cfg)
    if checkpoint is not None:
        learner.load_state(state, checkpoint)
    if not world.is_main:
        return _follow(state, cfg, learner, reward_fn)
    folder = RunFolder.create(cfg.out, cfg, resume_step=state.global_step if resuming else None)
    start_time, start_step = time.perf_counter(), state.global_step
    next_eval = next_due(state.global_step, cfg.eval_every)
    next_checkpoint = next_due(state.global_step, cfg.checkpoint_every)
    eval_returns: dict[str, np.ndarray] = {}
    recent_returns: list[float] = []
    try:
        bar_title = f"{learner.name} {cfg.env}"
        with MetricsLogger(folder, cfg, cfg.track) as logger, progress_bar(cfg.total_steps, bar_title) as bar:
            bar.update(state.global_step)
            while state.global_step < cfg.total_steps:
                rollout = collect_rollout(state)
                if reward_fn is not None:
                    rollout.rewards = reward_fn(rollout).astype(np.float32)
                metrics = learner.update(state, rollout)
                metrics["charts/SPS"] = (state.global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
                if rollout.episode_returns:
                    recent_returns = (recent_returns + rollout.episode_returns)[-20:]
                    metrics["charts/episodic_return"] = float(np.mean(rollout.episode_returns))
                    metrics["charts/episodic_length"] = float(np.mean(rollout.episode_lengths))
                if state.global_step >= next_eval or state.global_step >= cfg.total_steps:
                    eval_returns = evaluate(state, learner)
                    every = np.concatenate(list(eval_returns.values()))  # tasks: as many episodes each
                    metrics["eval/return_mean"] = float(every.mean())
                    metrics["eval/return_std"] = float(every.std())
                    if len(eval_returns) > 1:
                        metrics |= {f"eval/return_mean/{name}": float(r.mean()) for name, r in eval_returns.items()}
                    next_eval += cfg.eval_every
                    if on_eval is not None:
                        on_eval(state.global_step, float(every.mean()))
                logger.log(metrics, step=state.global_step)
                if state.global_step >= next_checkpoint:
                    save_checkpoint(folder.path / "checkpoint.pt", learner.state_dict(state))
                    next_checkpoint += cfg.checkpoint_every
                bar.update(cfg.rollout_steps)  # the whole config's: all ranks' steps
                if recent_returns:
                    bar.set_postfix(train_return=f"{np.mean(recent_returns):.1f}", refresh=False)
        if not eval_returns:  # a resumed run that had already finished: evaluate it once more
            eval_returns = evaluate(state, learner)
    finally:
        state.envs.close()
    save_checkpoint(folder.path / "checkpoint.pt", learner.state_dict(state))
    wall = time.perf_counter() - start_time
    every = np.concatenate(list(eval_returns.values()))
    summary: dict[str, Any] = {
        "algo": learner.name,
        "env_id": cfg.env,
        "seed": cfg.seed,
        "env_steps": state.global_step,
        "wall_seconds": wall,
        "steps_per_second": (state.global_step - start_step) / max(wall, 1e-9),
        "eval_return_mean": float(every.mean()),
        "eval_return_std": float(every.std()),
        "eval_episodes": len(every),
    }
    if len(eval_returns) > 1:
        summary["eval_task_returns"] = {name: float(returns.mean()) for name, returns in eval_returns.items()}
    if world.size > 1:
        summary["world_size"] = world.size
    folder.write_summary(summary)
    write_report(folder, summary)
    return summary


def _follow(state: PPOState, cfg: PPOConfig, learner: Learner, reward_fn: RewardFn | None) -> dict[str, Any]:
    """A rank other than 0: collect and update in step with the others (every collective of the update is matched
    there), writing nothing; rank 0 evaluates, logs and checkpoints."""
    try:
        while state.global_step < cfg.total_steps:
            rollout = collect_rollout(state)
            if reward_fn is not None:
                rollout.rewards = reward_fn(rollout).astype(np.float32)
            learner.update(state, rollout)
    finally:
        state.envs.close()
    return {"algo": learner.name, "env_id": cfg.env, "rank": state.world.rank, "env_steps": state.global_step}


def write_report(folder: RunFolder, summary: dict[str, Any]) -> None:
    """Learning curves and diagnostics from metrics.jsonl."""
    rows = folder.read_metrics()
    report = Report(
        f"{summary['algo'].upper()} on {summary['env_id']}",
        f"seed {summary['seed']}, {summary['env_steps']} env steps in {summary['wall_seconds']:.1f} s "
        f"({summary['steps_per_second']:.0f} steps/s); final eval return {summary['eval_return_mean']:.1f} "
        f"+- {summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes.",
    )
    report.returns_figure(rows, "Episodic return (mean of the episodes ended in each rollout; evaluations)")
    panels = [
        ("Losses", ["losses/policy_loss", "losses/value_loss"]),
        ("Entropy", ["losses/entropy"]),
        ("Approx KL and clip fraction", ["losses/approx_kl", "losses/clipfrac"]),
        ("Explained variance", ["losses/explained_variance"]),
        ("Learning rate and clip range", ["charts/learning_rate", "charts/clip_range"]),
        ("Steps per second", ["charts/SPS"]),
    ]
    report.metric_panels(rows, panels)
    report.write(folder.report_path)
