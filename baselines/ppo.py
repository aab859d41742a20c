"""Proximal Policy Optimization (Schulman et al. 2017, https://arxiv.org/abs/1707.06347), top to bottom.

Vector envs (sync or async), GAE, clipped surrogate, optional value clipping, entropy bonus, advantage
normalization, gradient-norm clipping, constant / linear / KL-adaptive learning rate, KL early stop, discrete and
continuous (diagonal Gaussian, clipped or tanh-squashed) actions, observation normalization and reward scaling.

Speed: the actor acts in NumPy during the rollout (sampling only actions), values and old log-probs come from one
batched forward afterwards, and the update uses a hand-written backward on one flat parameter buffer with one
Adam step and one norm for clipping (``baselines.common.flat_mlp``). The maths equals SB3's PPO.

Seams for RLHF (``rlhf`` reuses this file, it does not copy it): ``reward_fn`` replaces the env reward of a
rollout, ``on_rollout`` sees every rollout with its true rewards (and frames when ``render``), and
``init_ppo`` / ``collect_rollout`` / ``ppo_update`` let a caller drive the loop itself.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import gymnasium as gym
import numpy as np
import torch

from baselines.common.checkpoint import load_checkpoint, save_checkpoint
from baselines.common.config import flag, read_config_file, resolve_resume, resume_default
from baselines.common.envs import check_env_id, make_vec_env
from baselines.common.errors import ConfigError, check, check_seed
from baselines.common.evaluation import evaluate_policy
from baselines.common.flat_mlp import FlatAdam, FlatParameters, MLPSpec, limit_blas_threads
from baselines.common.normalization import ObsNormalizer, RewardScaler
from baselines.common.progress import progress_bar
from baselines.common.report import Report
from baselines.common.returns import gae
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir, next_due

# Per-env defaults (rl-zoo's tuned PPO hyperparameters, so comparisons with SB3 are like for like).
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "total_steps": 100_000,
        "num_envs": 8,
        "num_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "lr_schedule": "linear",
        "clip_range": 0.2,
        "clip_schedule": "linear",
    },
    "Pendulum-v1": {
        "total_steps": 200_000,
        "num_envs": 4,
        "num_steps": 1024,
        "batch_size": 64,
        "gae_lambda": 0.95,
        "gamma": 0.9,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
    },
    "Acrobot-v1": {
        "total_steps": 200_000,
        "num_envs": 16,
        "num_steps": 256,
        "batch_size": 64,
        "gae_lambda": 0.94,
        "gamma": 0.99,
        "n_epochs": 4,
        "ent_coef": 0.0,
        "normalize_obs": True,
        "normalize_reward": True,
    },
    "MountainCar-v0": {
        "total_steps": 1_000_000,
        "num_envs": 16,
        "num_steps": 16,
        "gae_lambda": 0.98,
        "gamma": 0.99,
        "n_epochs": 4,
        "ent_coef": 0.0,
        "normalize_obs": True,
        "normalize_reward": True,
    },
}
# MuJoCo locomotion (rl-zoo's PPO settings for the v4/v5 tasks): normalized observations and rewards, 1 env.
for _mujoco in ("InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"):
    ENV_DEFAULTS[_mujoco] = {
        "total_steps": 1_000_000,
        "num_envs": 1,
        "num_steps": 512 if _mujoco.startswith("Inverted") else 2048,
        "batch_size": 64,
        "normalize_obs": True,
        "normalize_reward": True,
    }


@dataclass(frozen=True)
class PPOConfig:
    """PPO on a gymnasium env. Defaults shown are for --env; other envs start from their row of ENV_DEFAULTS."""

    env: str = "CartPole-v1"
    """Gymnasium env id (Box observations; Discrete or Box actions)."""
    total_steps: int = 100_000
    """Env steps to train for (over all sub-envs)."""
    seed: int = 0
    """Seed of envs, initialization and sampling."""
    num_envs: int = 8
    """Parallel sub-envs."""
    num_steps: int = 32
    """Steps per sub-env per rollout."""
    vectorization: Literal["sync", "async"] = "sync"
    """sync: sub-envs in this process; async: one process per sub-env."""
    batch_size: int = 256
    """Minibatch size of a gradient step."""
    n_epochs: int = 20
    """Passes over each rollout."""
    gamma: float = 0.98
    """Discount."""
    gae_lambda: float = 0.8
    """GAE lambda."""
    learning_rate: float = 1e-3
    """Initial Adam learning rate."""
    lr_schedule: Literal["constant", "linear", "adaptive"] = "linear"
    """constant, linear annealing to 0, or adaptive (scale by 1.5 to hold approx KL near target_kl)."""
    target_kl: float = 0.01
    """KL target of the adaptive learning-rate schedule."""
    max_kl: float | None = None
    """Stop the update's epochs early once a minibatch's approx KL exceeds this (None: never)."""
    clip_range: float = 0.2
    """PPO clip epsilon."""
    clip_schedule: Literal["constant", "linear"] = "linear"
    """constant, or linear annealing of the clip range to 0."""
    clip_range_vf: float | None = None
    """Clip value predictions to old value +- this (None: no value clipping)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    normalize_advantage: bool = True
    """Normalize advantages per minibatch."""
    normalize_obs: bool = False
    """Normalize observations with running statistics (saved in checkpoints)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return (saved in checkpoints)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the actor and of the critic (separate networks)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (continuous actions)."""
    action_bounds: Literal["clip", "squash"] = "clip"
    """Continuous actions: clip samples to the bounds, or squash them with tanh."""
    eval_every: int = 20_000
    """Evaluate the deterministic policy every this many env steps (0: only at the end), and at the end."""
    eval_episodes: int = 10
    """Episodes per evaluation, on a separate env."""
    checkpoint_every: int = 50_000
    """Save a checkpoint every this many env steps (0: only at the end), and at the end."""
    torch_threads: int = 1
    """torch and BLAS threads (1 is fastest for these small networks)."""
    device: str = "cpu"
    """Learner device (cpu or cuda); acting always runs on the CPU in NumPy."""
    out: Path | None = None
    """Run folder (default runs/ppo-<env>-<time>)."""
    track: bool = False
    """Also log to wandb (offline unless logged in)."""
    resume: Path | None = None
    """Continue the run in this folder from its last checkpoint."""
    config: Path | None = None
    """JSON file of field values (e.g. a tuner's best config); flags given on the command line win."""

    @classmethod
    def defaults_for(cls, env: str, **overrides: Any) -> PPOConfig:
        """The config for ``env``: generic defaults, then the env's row of ENV_DEFAULTS, then ``overrides``."""
        generic = {
            "total_steps": 1_000_000,
            "num_envs": 1,
            "num_steps": 2048,
            "batch_size": 64,
            "n_epochs": 10,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "learning_rate": 3e-4,
            "lr_schedule": "constant",
            "clip_range": 0.2,
            "clip_schedule": "constant",
            "ent_coef": 0.0,
            "normalize_obs": False,
            "normalize_reward": False,
        }
        return cls(env=env, **{**generic, **ENV_DEFAULTS.get(env, {}), **overrides})

    @classmethod
    def cli_default(cls, env: str | None, config_file: str | None, resume: str | None) -> PPOConfig:
        """The default instance the CLI shows and overrides: a resumed run's config, a file, or the env's row."""
        if resume is not None:
            return resume_default(cls, Path(resume))
        file_values = read_config_file(cls, Path(config_file)) if config_file else {}
        env_id = env or file_values.get("env") or cls.env
        return cls.defaults_for(env_id, **{k: v for k, v in file_values.items() if k != "env"})

    @property
    def rollout_steps(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.rollout_steps)

    def validate(self) -> None:
        check_env_id(self.env)
        check_seed(self.seed)
        check(self.total_steps > 0, f"--total-steps must be positive, got {self.total_steps}")
        check(self.torch_threads >= 1, f"--torch-threads must be at least 1, got {self.torch_threads}")
        check(self.num_envs >= 1 and self.num_steps >= 1, "--num-envs and --num-steps must be at least 1")
        check(
            1 <= self.batch_size <= self.rollout_steps,
            f"--batch-size must be in [1, num_envs * num_steps = {self.rollout_steps}], got {self.batch_size}",
        )
        check(0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1, "--gamma must be in (0, 1], --gae-lambda in [0, 1]")
        check(self.learning_rate > 0 and self.clip_range > 0, "--learning-rate and --clip-range must be positive")
        finite = ("learning_rate", "clip_range", "max_grad_norm", "target_kl", "vf_coef", "ent_coef", "log_std_init")
        for name in finite:
            value = getattr(self, name)
            check(math.isfinite(value), f"{flag(name)} must be a finite number, got {value}")
        check(self.max_grad_norm > 0 and self.target_kl > 0, "--max-grad-norm and --target-kl must be positive")
        check(self.vf_coef >= 0, f"--vf-coef must be >= 0, got {self.vf_coef}")
        for name in ("max_kl", "clip_range_vf"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{flag(name)} must be positive when given, got {value}")
        check(self.n_epochs >= 1 and self.eval_episodes >= 1, "--n-epochs and --eval-episodes must be at least 1")
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(self, name)
            check(value >= 0, f"{flag(name)} must be >= 0 (0: only at the end), got {value}")
        check(bool(self.hidden_sizes) and min(self.hidden_sizes) >= 1, "--hidden-sizes needs positive sizes")
        check(
            self.device == "cpu" or self.device.startswith("cuda"), f"--device must be cpu or cuda, got {self.device}"
        )
        if self.device.startswith("cuda"):
            check(torch.cuda.is_available(), "--device cuda was asked for but torch sees no CUDA device")


# --------------------------------------------------------------------------------------------------- the agent
class ActorCritic:
    """Separate actor and critic MLPs in one flat parameter buffer (+ log-std for Box actions).

    ``act`` runs the actor in NumPy for one batch of observations (rollouts and evaluation);
    ``forward_train`` runs both in torch with caches for the hand-written backward.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        config: PPOConfig,
        generator: torch.Generator,
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
            self.low = action_space.low.astype(np.float32)
            self.high = action_space.high.astype(np.float32)
            extras = [("log_std", self.action_dim, config.log_std_init)]
        else:
            raise ConfigError(f"PPO here handles Discrete or 1-D Box actions; {config.env} has {action_space}")
        self.squash = config.action_bounds == "squash"
        hidden = tuple(config.hidden_sizes)
        self.params = FlatParameters(
            [
                MLPSpec((self.obs_dim, *hidden, self.action_dim), config.activation, 0.01),
                MLPSpec((self.obs_dim, *hidden, 1), config.activation, 1.0),
            ],
            generator,
            device=config.device,
            extras=extras,
        )
        self.actor, self.critic = self.params.mlps
        self.activation = config.activation
        self._numpy_layers: list[tuple[np.ndarray, np.ndarray]] = []

    def sync_numpy(self) -> None:
        """Refresh the NumPy actor weights (views on CPU, so this is free; a copy from a GPU)."""
        data = self.params.data.detach().cpu().numpy()
        self._numpy_data = data
        self._numpy_layers = []
        offset = 0
        for weight, bias in zip(self.actor.weights, self.actor.biases, strict=True):
            w = data[offset : offset + weight.numel()].reshape(weight.shape)
            offset += weight.numel()
            b = data[offset : offset + bias.numel()]
            offset += bias.numel()
            self._numpy_layers.append((w, b))
        self._numpy_log_std = data[-self.action_dim :] if not self.discrete else None

    def actor_numpy(self, obs: np.ndarray) -> np.ndarray:
        """Logits (discrete) or Gaussian means (continuous), ``(batch, action_dim)``."""
        h = obs
        for i, (w, b) in enumerate(self._numpy_layers):
            h = h @ w.T + b
            if i < len(self._numpy_layers) - 1:
                h = np.tanh(h) if self.activation == "tanh" else np.maximum(h, 0.0)
        return h

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        """Sampled (or mode) actions for normalized observations; continuous actions are pre-bounds."""
        out = self.actor_numpy(obs)
        if self.discrete:
            if deterministic:
                return out.argmax(axis=1)
            z = np.exp(out - out.max(axis=1, keepdims=True))
            cdf = np.cumsum(z, axis=1)
            u = rng.random((out.shape[0], 1)) * cdf[:, -1:]
            return np.minimum((cdf < u).sum(axis=1), self.action_dim - 1)
        if deterministic:
            return out
        assert self._numpy_log_std is not None
        return out + np.exp(self._numpy_log_std) * rng.standard_normal(out.shape).astype(np.float32)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """What the env receives: discrete as is; continuous clipped, or tanh-squashed, to the bounds."""
        if self.discrete:
            return actions
        if self.squash:
            return self.low + (np.tanh(actions) + 1.0) * 0.5 * (self.high - self.low)
        return np.clip(actions, self.low, self.high)

    @property
    def numpy_backend(self) -> bool:
        """The learner computes in NumPy (views of the parameters) when they live on the CPU."""
        return self.params.data.device.type == "cpu"

    def log_std(self, numpy: bool) -> tuple[Any, Any]:
        """The log-std parameter and its gradient slot, as NumPy views or torch tensors."""
        value, grad = self.params.extra["log_std"], self.params.extra_grad["log_std"]
        return (value.numpy(), grad.numpy()) if numpy else (value, grad)


# ------------------------------------------------------------------------------------------------ the rollout
@dataclass
class Rollout:
    """One rollout of ``T = num_steps`` steps from ``N = num_envs`` sub-envs (time-major arrays).

    ``obs[t]`` is what the policy saw at step t (raw, before normalization) and ``next_obs[t]`` the observation
    that followed (the final observation when the episode ended at t). ``true_rewards`` are the env's rewards;
    ``rewards`` are what PPO optimizes (the env's, or ``reward_fn``'s). ``frames``: ``(T, N, H, W, 3)`` when rendered.
    """

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
    frames: np.ndarray | None = None
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

    def normalize(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if self.obs_normalizer is None:
            return obs.reshape(obs.shape[0], -1).astype(np.float32)
        return self.obs_normalizer(obs.reshape(obs.shape[0], -1), update=update)

    def policy(self, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
        """Raw observations -> env actions, with the current weights and normalization (for evaluation)."""
        self.agent.sync_numpy()
        return lambda obs: self.agent.to_env(self.agent.act(self.normalize(obs), self.rng, deterministic))


def init_ppo(config: PPOConfig, render: bool = False) -> PPOState:
    """Make the envs and the agent; ``render`` makes the training envs return ``rgb_array`` frames."""
    config.validate()
    torch.set_num_threads(config.torch_threads)
    limit_blas_threads(config.torch_threads)
    generator = torch.Generator().manual_seed(config.seed)
    envs = make_vec_env(  # collect_rollout copies each observation it keeps, once
        config.env,
        config.num_envs,
        config.vectorization,
        copy=False,
        **({"render_mode": "rgb_array"} if render else {}),
    )
    agent = ActorCritic(envs.single_observation_space, envs.single_action_space, config, generator)
    obs = envs.reset(seed=config.seed)[0].copy()
    return PPOState(
        config=config,
        envs=envs,
        agent=agent,
        optimizer=FlatAdam(agent.params, config.learning_rate, eps=1e-5),
        obs_normalizer=ObsNormalizer((agent.obs_dim,)) if config.normalize_obs else None,
        reward_scaler=RewardScaler(config.num_envs, config.gamma) if config.normalize_reward else None,
        rng=np.random.default_rng(config.seed),
        generator=generator,
        next_obs=obs,
        clip_range=config.clip_range,
        episode_return=np.zeros(config.num_envs),
        episode_length=np.zeros(config.num_envs, dtype=np.int64),
    )


def collect_rollout(state: PPOState, render: bool = False) -> Rollout:
    """Step the envs ``num_steps`` times with sampled actions (no torch, no values: those come batched later)."""
    cfg, agent, envs = state.config, state.agent, state.envs
    agent.sync_numpy()
    steps, n = cfg.num_steps, cfg.num_envs
    obs_shape = state.next_obs.shape[1:]
    obs = np.empty((steps, n, *obs_shape), dtype=np.float32)
    next_obs = np.empty_like(obs)
    norm_obs = np.empty((steps, n, agent.obs_dim), dtype=np.float32)
    norm_next_obs = np.empty_like(norm_obs)
    actions = np.empty(
        (steps, n) if agent.discrete else (steps, n, agent.action_dim), dtype=np.int64 if agent.discrete else np.float32
    )
    env_actions = np.empty_like(actions)
    rewards = np.empty((steps, n), dtype=np.float32)
    terminated = np.empty((steps, n), dtype=bool)
    truncated = np.empty((steps, n), dtype=bool)
    frames: list[np.ndarray] = []
    episode_returns: list[float] = []
    episode_lengths: list[int] = []
    current = state.next_obs
    norm_current = state.normalize(current, update=True)
    for t in range(steps):
        if render:
            frames.append(np.stack(envs.render()))  # type: ignore[arg-type]
        action = agent.act(norm_current, state.rng)
        env_action = agent.to_env(action)
        following, reward, term, trunc, info = envs.step(env_action)
        following = following.copy()  # the env reuses its observation buffer (copy=False)
        obs[t], actions[t], env_actions[t], norm_obs[t] = current, action, env_action, norm_current
        rewards[t], terminated[t], truncated[t] = reward, term, trunc
        done = term | trunc
        next_obs[t] = following
        if done.any():  # same-step autoreset: the real next observation of a finished episode is in info
            final = np.stack(info["final_obs"][done])
            next_obs[t][done] = final
            state.episode_return += reward
            state.episode_length += 1
            episode_returns.extend(state.episode_return[done].tolist())
            episode_lengths.extend(state.episode_length[done].tolist())
            state.episode_return[done] = 0.0
            state.episode_length[done] = 0
        else:
            state.episode_return += reward
            state.episode_length += 1
        norm_current = state.normalize(following, update=True)
        norm_next_obs[t] = norm_current
        if done.any():
            norm_next_obs[t][done] = state.normalize(next_obs[t][done])
        current = following
    state.next_obs = current
    state.global_step += steps * n
    return Rollout(
        obs=obs,
        next_obs=next_obs,
        norm_obs=norm_obs,
        norm_next_obs=norm_next_obs,
        actions=actions,
        env_actions=env_actions,
        true_rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        rewards=rewards,
        frames=np.stack(frames) if render else None,
        episode_returns=episode_returns,
        episode_lengths=episode_lengths,
    )


# ------------------------------------------------------------------------------------------------- the update
# The update runs on one array backend: NumPy views of the parameters on the CPU (cheaper per call at these
# sizes), torch tensors on a GPU. The maths below is written once for both; these helpers cover the differences.
Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _row_sum(x: Array) -> Array:
    """Sum over the last axis of a 2-D array (NumPy: a matrix-vector product, several times faster than sum)."""
    if isinstance(x, np.ndarray):
        return x @ np.ones(x.shape[1], dtype=x.dtype)
    return x.sum(-1)


def _row_max(x: Array) -> Array:
    """Max over the last axis of a 2-D array (NumPy: column by column, faster than a row reduction for few columns)."""
    if isinstance(x, np.ndarray):
        if x.shape[1] > 16:
            return x.max(axis=1)
        result = x[:, 0].copy()
        for column in range(1, x.shape[1]):
            np.maximum(result, x[:, column], out=result)
        return result
    return x.amax(-1)


def _mean(x: Array) -> Array:
    """Mean of a 1-D array (NumPy's mean() costs several times its sum at these sizes)."""
    return x.sum() * (1.0 / x.shape[0])


def _log_softmax(x: Array) -> Array:
    if isinstance(x, np.ndarray):
        z = x - _row_max(x)[:, None]
        return z - np.log(_row_sum(np.exp(z)))[:, None]
    return torch.log_softmax(x, dim=-1)


def _pick(x: Array, index: Array) -> Array:
    """``x[i, index[i]]`` for every row i."""
    if isinstance(x, np.ndarray):
        return x[np.arange(x.shape[0]), index.astype(np.intp, copy=False)]
    assert isinstance(index, torch.Tensor)
    return x.gather(1, index.long().unsqueeze(-1)).squeeze(-1)


def _one_hot(index: Array, like: Array) -> Array:
    if isinstance(like, np.ndarray):
        return (index[:, None] == np.arange(like.shape[1])).astype(like.dtype)
    assert isinstance(index, torch.Tensor)
    return torch.zeros_like(like).scatter_(1, index.long().unsqueeze(-1), 1.0)


def _clip(x: Array, low: float, high: float) -> Array:
    if isinstance(x, np.ndarray):
        return np.minimum(np.maximum(x, low), high)  # np.clip costs more per call
    return x.clamp(low, high)


def _std(x: Array) -> Array:
    """Sample standard deviation (n - 1), as torch's default."""
    if isinstance(x, np.ndarray):
        centered = x - _mean(x)
        return np.sqrt((centered @ centered) / (x.shape[0] - 1))
    return x.std()


def _stack(values: list[Any]) -> Any:
    """Scalars into one 1-D array (torch: stays on the device, no host sync)."""
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    return np.array([float(value) for value in values])


def normalize_advantages(advantages: Array) -> Array:
    """Zero mean, unit (sample) standard deviation, as SB3 per minibatch."""
    return (advantages - _mean(advantages)) / (_std(advantages) + 1e-8)


def _as_float(mask: Array) -> Array:
    return mask.astype(np.float32) if isinstance(mask, np.ndarray) else mask.to(torch.float32)


def _xp(x: np.ndarray | torch.Tensor) -> Any:
    return np if isinstance(x, np.ndarray) else torch


def clipped_surrogate(ratio: Array, advantages: Array, clip_range: float) -> tuple[Array, Array]:
    """PPO's clipped objective as a loss, and d(loss)/d(ratio) (eq. 7 of the paper, averaged over the batch).

    ``loss = -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A))``; the gradient flows only where the
    unclipped term is the minimum.
    """
    xp = _xp(ratio)
    unclipped = ratio * advantages
    clipped = _clip(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -_mean(xp.minimum(unclipped, clipped))
    grad_ratio = -(advantages * (unclipped <= clipped)) / ratio.shape[0]
    return loss, grad_ratio


def adapt_learning_rate(lr: float, approx_kl: float, target_kl: float, initial_lr: float) -> float:
    """KL-adaptive rate: divide by 1.5 when KL > 2 target, multiply by 1.5 when KL < target / 2 (bounded)."""
    if approx_kl > 2.0 * target_kl:
        lr /= 1.5
    elif approx_kl < 0.5 * target_kl:
        lr *= 1.5
    return float(min(max(lr, initial_lr / 100.0), initial_lr * 10.0))


def ppo_update(state: PPOState, rollout: Rollout) -> dict[str, float]:
    """GAE on ``rollout.rewards``, then ``n_epochs`` of minibatch PPO steps; returns namespaced metrics."""
    cfg, agent = state.config, state.agent
    steps, n = rollout.true_rewards.shape
    batch = steps * n
    rewards = rollout.rewards.astype(np.float32)
    if state.reward_scaler is not None:
        rewards = state.reward_scaler(rewards, rollout.terminated | rollout.truncated)

    def to_backend(array: np.ndarray) -> Any:
        return array if agent.numpy_backend else torch.from_numpy(array).to(cfg.device)

    def to_numpy(array: Any) -> np.ndarray:
        return array if isinstance(array, np.ndarray) else array.cpu().numpy()

    # Values of every observation and of every next observation, in one batched forward.
    both = np.concatenate([rollout.norm_obs, rollout.norm_next_obs]).reshape(2 * batch, agent.obs_dim)
    all_values = to_numpy(agent.critic.forward(to_backend(both), cache=False)).reshape(2, steps, n)
    values, next_values = all_values[0], all_values[1]
    advantages, returns = gae(
        rewards, values, next_values, rollout.terminated, rollout.truncated, cfg.gamma, cfg.gae_lambda
    )
    b_obs = to_backend(rollout.norm_obs.reshape(batch, agent.obs_dim))
    b_actions = to_backend(rollout.actions.reshape(batch, *rollout.actions.shape[2:]))
    b_advantages = to_backend(advantages.reshape(-1).astype(np.float32))
    b_returns = to_backend(returns.reshape(-1).astype(np.float32))
    b_values = to_backend(values.reshape(-1).astype(np.float32))
    b_logp_old = _log_prob(agent, agent.actor.forward(b_obs, cache=False), b_actions)[0]

    sums = np.zeros(6)  # policy loss, value loss, entropy, approx kl, clip fraction, grad norm
    count = 0
    stopped_early = False
    full_batch = cfg.batch_size >= batch  # one minibatch per epoch: order does not matter, skip the shuffle
    if full_batch and cfg.normalize_advantage and batch > 1:
        b_advantages = normalize_advantages(b_advantages)  # the same minibatch every epoch: normalize it once
    columns = (b_obs, b_actions, b_logp_old, b_advantages, b_returns, b_values)
    for _epoch in range(cfg.n_epochs):
        perm = None if full_batch else state.rng.permutation(batch)
        for start in range(0, batch, cfg.batch_size):
            if perm is None:
                minibatch = columns
            else:
                idx = to_backend(perm[start : start + cfg.batch_size])
                minibatch = tuple(column[idx] for column in columns)
            stats = minibatch_gradients(agent, cfg, state.clip_range, *minibatch, normalized=full_batch)
            grad_norm = agent.params.clip_grad_norm(cfg.max_grad_norm)
            state.optimizer.step()
            stats_np = to_numpy(stats)
            sums[:5] += stats_np
            sums[5] += grad_norm
            count += 1
            if cfg.max_kl is not None and stats_np[3] > cfg.max_kl:
                stopped_early = True
                break
        if stopped_early:
            break
    means = (sums / count).tolist()
    variance = float(np.var(returns))
    explained = float("nan") if variance == 0 else 1.0 - float(np.var(returns - values)) / variance
    metrics = {
        "losses/policy_loss": means[0],
        "losses/value_loss": means[1],
        "losses/entropy": means[2],
        "losses/approx_kl": means[3],
        "losses/clipfrac": means[4],
        "losses/grad_norm": means[5],
        "losses/explained_variance": explained,
        "losses/early_stop": float(stopped_early),
        "charts/learning_rate": state.optimizer.lr,
        "charts/clip_range": state.clip_range,
    }
    state.update += 1
    _schedule(state, approx_kl=means[3])
    return metrics


def minibatch_gradients(
    agent: ActorCritic,
    cfg: PPOConfig,
    clip_range: float,
    mb_obs: Array,
    mb_actions: Array,
    mb_logp_old: Array,
    mb_advantages: Array,
    mb_returns: Array,
    mb_values_old: Array,
    *,
    normalized: bool = False,
) -> Array:
    """Write d(loss)/d(params) of one minibatch into ``agent.params.grad`` (hand-written backward).

    ``loss = clipped surrogate - ent_coef * mean(entropy) + vf_coef * mean((V - R)^2)`` as in SB3. Arrays are
    all NumPy (parameters on the CPU) or all torch. ``normalized``: the advantages were already normalized over
    exactly this minibatch (the whole batch, normalized once per update instead of once per epoch).

    Returns:
        ``[policy_loss, value_loss, entropy, approx_kl, clip_fraction]`` as one array (no host sync on a GPU).
    """
    xp = _xp(mb_obs)
    size = mb_obs.shape[0]
    if cfg.normalize_advantage and size > 1 and not normalized:
        mb_advantages = normalize_advantages(mb_advantages)
    out = agent.actor.forward(mb_obs)
    logp, entropy, dlogp_dout, dentropy_dout = _log_prob(agent, out, mb_actions, with_grads=True)
    log_ratio = logp - mb_logp_old
    ratio = xp.exp(log_ratio)
    policy_loss, grad_ratio = clipped_surrogate(ratio, mb_advantages, clip_range)
    # d(loss)/d(out): the surrogate through the log-prob, minus the entropy bonus.
    grad_logp = grad_ratio * ratio
    grad_out = grad_logp[:, None] * dlogp_dout
    if cfg.ent_coef != 0.0:
        grad_out = grad_out - (cfg.ent_coef / size) * dentropy_dout
    if not agent.discrete:  # log-std: d logp / d log_std = z^2 - 1 per dim; d H / d log_std = 1
        log_std, log_std_grad = agent.log_std(numpy=xp is np)
        z2 = ((mb_actions - out) / xp.exp(log_std)) ** 2
        log_std_grad[:] = (grad_logp[:, None] * (z2 - 1.0)).sum(0) - cfg.ent_coef
    agent.actor.backward(grad_out)

    new_values = agent.critic.forward(mb_obs)[:, 0]
    if cfg.clip_range_vf is not None:  # SB3's value clipping: predictions held within old +- clip
        delta = new_values - mb_values_old
        predicted = mb_values_old + _clip(delta, -cfg.clip_range_vf, cfg.clip_range_vf)
        value_error = (predicted - mb_returns) * (xp.abs(delta) <= cfg.clip_range_vf)
    else:
        predicted = new_values
        value_error = predicted - mb_returns
    residual = predicted - mb_returns
    value_loss = _mean(residual * residual)
    agent.critic.backward((cfg.vf_coef * 2.0 / size) * value_error[:, None])
    approx_kl = _mean((ratio - 1.0) - log_ratio)  # k3 estimator, as SB3 and CleanRL
    clip_fraction = _mean(_as_float(xp.abs(ratio - 1.0) > clip_range))
    return _stack([policy_loss, value_loss, _mean(entropy), approx_kl, clip_fraction])


def _log_prob(
    agent: ActorCritic, out: Array, actions: Array, with_grads: bool = False
) -> tuple[Array, Array, Array, Array]:
    """Log-probs and entropies ``(batch,)`` and, when ``with_grads``, their derivatives w.r.t. the actor output."""
    xp = _xp(out)
    if agent.discrete:
        log_probs = _log_softmax(out)
        logp = _pick(log_probs, actions)
        probs = xp.exp(log_probs)
        entropy = -_row_sum(probs * log_probs)
        if not with_grads:
            return logp, entropy, out, out
        # d logp / d logits = onehot - p ; d H / d logits_j = -p_j (log p_j + H)
        return logp, entropy, _one_hot(actions, out) - probs, -probs * (log_probs + entropy[:, None])
    log_std = agent.log_std(numpy=xp is np)[0]
    z = (actions - out) / xp.exp(log_std)
    logp = -0.5 * (z**2).sum(-1) - log_std.sum() - 0.5 * agent.action_dim * math.log(2 * math.pi)
    entropy = xp.zeros_like(logp) + (log_std.sum() + 0.5 * agent.action_dim * (1.0 + math.log(2 * math.pi)))
    if not with_grads:
        return logp, entropy, out, out
    return logp, entropy, z / xp.exp(log_std), xp.zeros_like(out)


def _schedule(state: PPOState, approx_kl: float) -> None:
    """Learning rate and clip range for the next update (linear schedules follow SB3's progress_remaining)."""
    cfg = state.config
    remaining = max(0.0, 1.0 - state.global_step / cfg.total_steps)
    if cfg.lr_schedule == "linear":
        state.optimizer.lr = cfg.learning_rate * remaining
    elif cfg.lr_schedule == "adaptive":
        state.optimizer.lr = adapt_learning_rate(state.optimizer.lr, approx_kl, cfg.target_kl, cfg.learning_rate)
    state.clip_range = cfg.clip_range * remaining if cfg.clip_schedule == "linear" else cfg.clip_range


# ----------------------------------------------------------------------------------------- checkpoints, train
def state_dict(state: PPOState) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(state.config) | {"out": str(state.config.out), "resume": None, "config": None},
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
    state.rng = np.random.default_rng([state.config.seed, state.global_step])
    state.next_obs = state.envs.reset(seed=state.config.seed + state.global_step)[0].copy()


def train_ppo(
    config: PPOConfig,
    reward_fn: RewardFn | None = None,
    on_rollout: Callable[[PPOState, Rollout], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """Train, evaluate, checkpoint and report into the run folder; return summary.json's content.

    Args:
        reward_fn: replaces each rollout's rewards (``(T, N)``) before GAE; the true reward is still logged.
        on_rollout: called after every rollout (e.g. to cut segments from it).
        on_eval: called with ``(env_steps, eval_return_mean)`` after each evaluation (a tuner may raise there).
        render: collect ``rgb_array`` frames in every rollout.
    """
    resuming = config.resume is not None
    cfg = (
        resolve_resume(config)
        if resuming
        else dataclasses.replace(config, out=config.out or default_run_dir("ppo", config.env))
    )
    cfg.validate()
    assert cfg.out is not None
    checkpoint = load_checkpoint(cfg.out / "checkpoint.pt") if resuming else None
    state = init_ppo(cfg, render=render)
    if checkpoint is not None:
        load_state(state, checkpoint)
    folder = RunFolder.create(cfg.out, cfg, resume_step=state.global_step if resuming else None)
    start_time = time.perf_counter()
    start_step = state.global_step
    next_eval, next_checkpoint = (
        next_due(state.global_step, cfg.eval_every),
        next_due(state.global_step, cfg.checkpoint_every),
    )
    eval_returns = np.zeros(0)
    recent_returns: list[float] = []
    try:
        with (
            MetricsLogger(folder, cfg, cfg.track) as logger,
            progress_bar(cfg.total_steps, f"ppo {cfg.env}") as bar,
        ):
            bar.update(state.global_step)
            while state.global_step < cfg.total_steps:
                rollout = collect_rollout(state, render=render)
                if reward_fn is not None:
                    rollout.rewards = reward_fn(rollout).astype(np.float32)
                if on_rollout is not None:
                    on_rollout(state, rollout)
                metrics = ppo_update(state, rollout)
                elapsed = time.perf_counter() - start_time
                metrics["charts/SPS"] = (state.global_step - start_step) / max(elapsed, 1e-9)
                if rollout.episode_returns:
                    recent_returns = (recent_returns + rollout.episode_returns)[-20:]
                    metrics["charts/episodic_return"] = float(np.mean(rollout.episode_returns))
                    metrics["charts/episodic_length"] = float(np.mean(rollout.episode_lengths))
                if state.global_step >= next_eval or state.global_step >= cfg.total_steps:
                    eval_returns = evaluate_policy(state.policy(), cfg.env, cfg.eval_episodes, cfg.seed)
                    metrics["eval/return_mean"] = float(eval_returns.mean())
                    metrics["eval/return_std"] = float(eval_returns.std())
                    next_eval += cfg.eval_every
                    if on_eval is not None:
                        on_eval(state.global_step, float(eval_returns.mean()))
                logger.log(metrics, step=state.global_step)
                if state.global_step >= next_checkpoint:
                    save_checkpoint(folder.path / "checkpoint.pt", state_dict(state))
                    next_checkpoint += cfg.checkpoint_every
                bar.update(cfg.rollout_steps)
                if recent_returns:
                    bar.set_postfix(train_return=f"{np.mean(recent_returns):.1f}", refresh=False)
        if len(eval_returns) == 0:  # a resumed run that had already finished: evaluate it once more
            eval_returns = evaluate_policy(state.policy(), cfg.env, cfg.eval_episodes, cfg.seed)
    finally:
        state.envs.close()
    save_checkpoint(folder.path / "checkpoint.pt", state_dict(state))
    wall = time.perf_counter() - start_time
    summary = {
        "algo": "ppo",
        "env_id": cfg.env,
        "seed": cfg.seed,
        "env_steps": state.global_step,
        "wall_seconds": wall,
        "steps_per_second": (state.global_step - start_step) / max(wall, 1e-9),
        "eval_return_mean": float(eval_returns.mean()),
        "eval_return_std": float(eval_returns.std()),
        "eval_episodes": len(eval_returns),
    }
    folder.write_summary(summary)
    write_report(folder, summary)
    return summary


def write_report(folder: RunFolder, summary: dict[str, Any]) -> None:
    """Learning curves and diagnostics from metrics.jsonl."""
    rows = folder.read_metrics()
    report = Report(
        f"PPO on {summary['env_id']}",
        f"seed {summary['seed']}, {summary['env_steps']} env steps in {summary['wall_seconds']:.1f} s "
        f"({summary['steps_per_second']:.0f} steps/s); final eval return {summary['eval_return_mean']:.1f} "
        f"+- {summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes.",
    )
    panels = [
        ("Episodic return", ["charts/episodic_return", "eval/return_mean"]),
        ("Losses", ["losses/policy_loss", "losses/value_loss"]),
        ("Entropy", ["losses/entropy"]),
        ("Approx KL and clip fraction", ["losses/approx_kl", "losses/clipfrac"]),
        ("Explained variance", ["losses/explained_variance"]),
        ("Learning rate and clip range", ["charts/learning_rate", "charts/clip_range"]),
        ("Steps per second", ["charts/SPS"]),
    ]
    report.metric_panels(rows, panels)
    report.write(folder.report_path)
