"""Deep Q-Networks (Mnih et al. 2015, https://www.nature.com/articles/nature14236), top to bottom.

Optional: Double DQN targets (van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461), a dueling head (Wang et
al. 2016, https://arxiv.org/abs/1511.06581), prioritized replay (Schaul et al. 2016,
https://arxiv.org/abs/1511.05952) and n-step returns (Sutton & Barto 2018, ch. 7). With all four off this is SB3's
DQN: Huber loss, Adam, gradient-norm clipping, linear epsilon, ``train_freq`` env steps between bursts of
``gradient_steps`` updates, a target network updated every ``target_update_interval`` env steps (copy, or Polyak
with ``tau < 1``), and random actions before ``learning_starts``.

Speed (SB3 spends ~80% of a CartPole run in framework overhead around 256x256 matmuls): parameters and gradients
live in one flat buffer (``flat_mlp.FlatParameters``); forward, hand-written backward, loss gradient, clipping and a
fused Adam run as one TorchScript loop over a burst's gradient steps; the target network's values for a burst come
from one batched forward over the distinct transitions drawn (exact: see ``q_learning_burst``); and one env's
greedy action comes from a NumPy forward over the live weights. benchmarks/dqn_speed.py measures it against SB3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import plotly.graph_objects as go
import torch

from baselines.common.checkpoint import load_checkpoint, save_checkpoint
from baselines.common.config import flag, read_config_file, resolve_resume, resume_default
from baselines.common.envs import make_env, make_vec_env
from baselines.common.errors import ConfigError, check, check_seed
from baselines.common.evaluation import evaluate_policy
from baselines.common.flat_mlp import FlatParameters, MLPSpec
from baselines.common.progress import progress_bar
from baselines.common.replay import PrioritizedSampler, ReplayBuffer
from baselines.common.report import Report, color, metric_series, smooth
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir, next_due

# Per-env defaults, as rl-zoo keeps them (hyperparams/dqn.yml): ``defaults_for(env)`` is GENERIC (rl-zoo's Acrobot
# and LunarLander row) updated by the env's row, plus three changes that made rl-zoo's settings more reliable here:
# double DQN, 3-step returns and the learning rate decayed linearly to 0, which damps the collapses DQN suffers late
# in training. Greedy return at the end of training (benchmarks/dqn_reliability.py and ad-hoc runs, seeds 0-1...):
# CartPole-v1 at 50k, >= 475 on: rl-zoo's row 2/8 seeds; + double DQN, n-step 3, dueling and PER 4/8 (dueling and
# PER cost time and gave nothing here); + double DQN, n-step 3 and the decay 26/30 (seeds 0-29); and with 64
# gradient steps per 256 env steps instead of rl-zoo's 128, 29/30 at half the compute (32 steps: 4/10, 96: 9/10;
# learning rate 1e-3 instead: 9/10; n-step 1: 7/10; train_freq 128 with 64 steps: 7/10). Acrobot-v1 at 100k: rl-zoo's
# row -74, -72 (the second passed -462 at 90k); with the changes -78, -72, -79. MountainCar-v0 at 120k: rl-zoo's
# row -153, -181; with the changes -100, -98.
GENERIC: dict[str, Any] = {
    "total_steps": 100_000,
    "num_envs": 1,
    "hidden_sizes": (256, 256),
    "learning_rate": 6.3e-4,
    "lr_schedule": "linear",
    "batch_size": 128,
    "buffer_size": 50_000,
    "learning_starts": 0,
    "gamma": 0.99,
    "target_update_interval": 250,
    "tau": 1.0,
    "train_freq": 4,
    "gradient_steps": -1,
    "exploration_fraction": 0.12,
    "exploration_initial_eps": 1.0,
    "exploration_final_eps": 0.1,
    "max_grad_norm": 10.0,
    "double_dqn": True,
    "dueling": False,
    "n_step": 3,
    "prioritized": False,
    "per_alpha": 0.6,
    "per_beta0": 0.4,
    "per_eps": 1e-6,
    "eval_every": 10_000,
}
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "total_steps": 50_000,
        "learning_rate": 2.3e-3,
        "batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "target_update_interval": 10,
        "train_freq": 256,
        "gradient_steps": 64,
        "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04,
        "eval_every": 5_000,
    },
    "Acrobot-v1": {},
    "LunarLander-v3": {},
    "MountainCar-v0": {
        "total_steps": 120_000,
        "learning_rate": 4e-3,
        "buffer_size": 10_000,
        "learning_starts": 1000,
        "gamma": 0.98,
        "target_update_interval": 600,
        "train_freq": 16,
        "gradient_steps": 8,
        "exploration_fraction": 0.2,
        "exploration_final_eps": 0.07,
        "eval_every": 12_000,
    },
}


@dataclass(frozen=True)
class DQNConfig:
    """Train DQN on a discrete-action env. Defaults follow --env (rl-zoo's tuned settings); --config FILE, then
    flags, override them."""

    # In code, build configs with ``DQNConfig.defaults_for(env, **fields)``: the defaults below are CartPole-v1's.

    env: str = "CartPole-v1"
    """Gymnasium env id with discrete actions (CartPole-v1, Acrobot-v1, MountainCar-v0, LunarLander-v3, ...)."""
    total_steps: int = 50_000
    """Env steps to train for (transitions over all envs)."""
    seed: int = 0
    """Seed of the network init, exploration, replay sampling and envs."""
    num_envs: int = 1
    """Training envs stepped together (a sync vector env)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the Q-network (ReLU)."""
    learning_rate: float = 2.3e-3
    """Adam learning rate (the initial one under a linear schedule)."""
    lr_schedule: Literal["constant", "linear"] = "linear"
    """Learning rate over training: constant, or linear decay to 0 at total_steps (rl-zoo's lin_<lr>)."""
    batch_size: int = 64
    """Transitions per gradient step."""
    buffer_size: int = 100_000
    """Replay capacity in transitions."""
    learning_starts: int = 1000
    """Env steps of uniformly random actions before learning starts."""
    gamma: float = 0.99
    """Discount factor."""
    target_update_interval: int = 10
    """Env steps between target-network updates."""
    tau: float = 1.0
    """Target update weight: 1 copies the online network, < 1 is a Polyak average."""
    train_freq: int = 256
    """Vector-env steps between bursts of gradient steps."""
    gradient_steps: int = 64
    """Gradient steps per burst; -1: as many as transitions collected since the last burst."""
    exploration_fraction: float = 0.16
    """Fraction of total_steps over which epsilon falls linearly from its initial to its final value."""
    exploration_initial_eps: float = 1.0
    """Initial epsilon of the epsilon-greedy behaviour policy."""
    exploration_final_eps: float = 0.04
    """Final epsilon."""
    max_grad_norm: float = 10.0
    """Clip the global gradient norm to this value."""
    double_dqn: bool = True
    """Double DQN targets: the online network picks the next action, the target network values it."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    n_step: int = 3
    """Steps of reward summed before bootstrapping (1: the usual one-step target)."""
    prioritized: bool = False
    """Proportional prioritized replay with importance weights."""
    per_alpha: float = 0.6
    """Prioritization exponent alpha (0: uniform)."""
    per_beta0: float = 0.4
    """Initial importance-weight exponent beta, annealed linearly to 1 over training."""
    per_eps: float = 1e-6
    """Added to |TD error| so every transition keeps a chance of being replayed."""
    eval_every: int = 5_000
    """Env steps between greedy evaluations (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation, on a separate env."""
    checkpoint_every: int = 0
    """Env steps between checkpoints (0: at every evaluation); there is always one at the end."""
    torch_threads: int = 1
    """Torch CPU threads (1 is fastest at these sizes)."""
    device: str = "cpu"
    """Torch device of the networks: cpu or cuda."""
    out: Path | None = None
    """Run folder (default runs/dqn-<env>-<time>)."""
    track: bool = False
    """Also log to wandb (offline unless logged in)."""
    resume: Path | None = None
    """Continue the interrupted run in this folder from its last checkpoint."""
    config: Path | None = None
    """JSON file of field values (e.g. a tuner's best_config.json) over the env's defaults; flags win."""

    @classmethod
    def defaults_for(cls, env: str, **overrides: Any) -> DQNConfig:
        """GENERIC, then the env's row of ENV_DEFAULTS, then the values in ``overrides["config"]`` (a JSON file,
        if given), then ``overrides``. Unknown fields in the file raise ConfigError naming them."""
        config_file = overrides.get("config")
        file_values = read_config_file(cls, Path(config_file)) if config_file is not None else {}
        for key in ("env", "out", "resume", "config"):  # a run's config.json may serve as a config file
            file_values.pop(key, None)
        return cls(env=env, **{**GENERIC, **ENV_DEFAULTS.get(env, {}), **file_values, **overrides})

    @classmethod
    def cli_default(cls, env: str | None, config_file: str | None, resume: str | None) -> DQNConfig:
        """The instance the CLI shows and overrides: a resumed run's config, or the env's row (+ a config file)."""
        if resume is not None:
            return resume_default(cls, Path(resume))
        file_env = read_config_file(cls, Path(config_file)).get("env") if config_file else None
        config = {"config": Path(config_file)} if config_file else {}
        return cls.defaults_for(env or file_env or cls.env, **config)

    def resolved(self) -> DQNConfig:
        """Validated, with the run folder filled in; a resume takes the saved config (changing only what may)."""
        if self.resume is not None:
            cfg = resolve_resume(self)
        else:
            cfg = dataclasses.replace(self, out=self.out or default_run_dir("dqn", self.env))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError (one line, before anything is written) on values no run can use."""
        env = make_env(self.env)
        try:
            check(
                isinstance(env.action_space, gym.spaces.Discrete),
                f"DQN needs discrete actions; {self.env} has {env.action_space} (use PPO for continuous actions)",
            )
            check(
                isinstance(env.observation_space, gym.spaces.Box),
                f"DQN here needs Box observations; {self.env} has {env.observation_space}",
            )
        finally:
            env.close()
        values = dataclasses.asdict(self)
        positive = ("total_steps", "num_envs", "learning_rate", "batch_size", "buffer_size", "train_freq")
        for name in (*positive, "target_update_interval", "n_step", "max_grad_norm", "eval_episodes", "per_eps"):
            check(values[name] > 0, f"{flag(name)} must be positive, got {values[name]}")
        for name in ("learning_starts", "per_alpha", "eval_every", "checkpoint_every"):
            check(values[name] >= 0, f"{flag(name)} must be >= 0, got {values[name]}")
        for name in ("exploration_fraction", "exploration_initial_eps", "exploration_final_eps", "per_beta0"):
            check(0 <= values[name] <= 1, f"{flag(name)} must be in [0, 1], got {values[name]}")
        check(0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}")
        check(0 < self.tau <= 1, f"--tau must be in (0, 1], got {self.tau}")
        check(self.gradient_steps == -1 or self.gradient_steps >= 1, "--gradient-steps must be >= 1 or -1")
        check(
            self.buffer_size >= self.batch_size,
            f"--buffer-size ({self.buffer_size}) must be at least --batch-size ({self.batch_size})",
        )
        check(bool(self.hidden_sizes) and min(self.hidden_sizes) >= 1, "--hidden-sizes needs positive sizes")
        check(self.torch_threads >= 1, f"--torch-threads must be at least 1, got {self.torch_threads}")
        check_seed(self.seed)
        for name in ("learning_rate", "max_grad_norm", "per_eps"):
            check(math.isfinite(values[name]), f"{flag(name)} must be a finite number, got {values[name]}")
        check(
            self.device == "cpu" or self.device.startswith("cuda"), f"--device must be cpu or cuda, got {self.device}"
        )
        if self.device.startswith("cuda"):
            check(torch.cuda.is_available(), "--device cuda was asked for but torch sees no CUDA device")


# ------------------------------------------------------------------------------------------------- the network
class QNetwork:
    """Q(s, .) from an MLP with ReLU hidden layers (as SB3's QNetwork) in one flat buffer, and its target copy.

    With ``dueling`` the last layer outputs ``[V(s), A(s, .)]`` and ``Q = V + A - mean(A)`` (Wang et al. 2016,
    eq. 9) through the fixed matrix ``head``; the hidden layers are shared. Parameters and gradients are
    ``FlatParameters``' views; ``q_values`` (eager) serves acting and targets, ``q_forward``/``q_backward_``
    (TorchScript) serve the gradient steps.
    """

    def __init__(self, obs_dim: int, n_actions: int, cfg: DQNConfig, generator: torch.Generator) -> None:
        spec = MLPSpec((obs_dim, *cfg.hidden_sizes, n_actions + bool(cfg.dueling)), "relu")
        self.params = FlatParameters([spec], generator, cfg.device)
        online = self.params.mlps[0]
        self.weights, self.biases = online.weights, online.biases
        self.weight_grads, self.bias_grads = online.weight_grads, online.bias_grads
        self.weights_t = [w.t() for w in self.weights]  # views made once; they follow in-place updates
        self.target_data = self.params.data.clone()
        target = self.params.bind_copy(self.target_data)[0]
        self.target_weights_t, self.target_biases = [w.t() for w in target.weights], target.biases
        self.n_actions = n_actions
        self.head: torch.Tensor | None = None
        if cfg.dueling:
            head = torch.full((n_actions + 1, n_actions), -1.0 / n_actions)
            head[0] = 1.0
            head[1:] += torch.eye(n_actions)
            self.head = head.to(cfg.device)
        self.device = torch.device(cfg.device)
        cpu = self.device.type == "cpu"  # CPU tensors share memory with NumPy arrays
        self._numpy_layers = (
            [(w.numpy(), b.numpy()) for w, b in zip(self.weights_t, self.biases, strict=True)] if cpu else None
        )
        self._numpy_head = self.head.numpy() if cpu and self.head is not None else None

    def q_values(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """``(batch, n_actions)`` from the online or the target network (eager: cheaper to call than a script)."""
        weights_t, biases = (self.target_weights_t, self.target_biases) if target else (self.weights_t, self.biases)
        h = obs
        for i, (weight_t, bias) in enumerate(zip(weights_t, biases, strict=True)):
            h = torch.addmm(bias, h, weight_t)
            if i < len(weights_t) - 1:
                h = h.relu_()
        return h if self.head is None else h @ self.head

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """``argmax_a Q(obs, a)`` for a batch of observations ``(batch, ...)``.

        One observation on CPU (one training env: every env step) goes through NumPy over the live weights, ~15 us
        less than torch. Batches go through torch: NumPy's BLAS runs products of 4+ rows on extra threads, which
        stall for ~0.4 ms a call when another process holds the other core (one-row products stay on one thread).
        """
        if self._numpy_layers is None or len(obs) != 1:
            obs_t = torch.from_numpy(obs.reshape(len(obs), -1)).to(self.device, torch.float32)
            return self.q_values(obs_t).argmax(dim=1).cpu().numpy()
        h = obs.reshape(1, -1).astype(np.float32, copy=False)
        for i, (weight_t, bias) in enumerate(self._numpy_layers):
            h = h @ weight_t + bias
            if i < len(self._numpy_layers) - 1:
                np.maximum(h, 0.0, out=h)
        return (h if self._numpy_head is None else h @ self._numpy_head).argmax(axis=1)

    def update_target(self, weight: float) -> None:
        """``target <- target + weight * (online - target)``; weight 1 copies."""
        if weight >= 1.0:
            self.target_data.copy_(self.params.data)
        elif weight > 0.0:
            self.target_data.lerp_(self.params.data, weight)


class ClippedAdam:
    """State of ``clip_grad_norm_`` + ``torch.optim.Adam`` (SB3's DQN optimizer, eps 1e-8) on the flat buffer;
    ``clipped_adam_`` updates it."""

    def __init__(self, params: FlatParameters, lr: float, max_grad_norm: float) -> None:
        self.lr = lr
        self.max_grad_norm = max_grad_norm
        self.exp_avg = torch.zeros_like(params.data)
        self.exp_avg_sq = torch.zeros_like(params.data)
        self.step_count = torch.zeros((), device=params.data.device)
        # [params], [grads], [exp_avgs], [exp_avg_sqs], [steps]: the lists clipped_adam_ takes, made once.
        self.state = [[params.data], [params.grad], [self.exp_avg], [self.exp_avg_sq], [self.step_count]]

    def step(self) -> torch.Tensor:
        """One update from the gradient; returns the gradient norm before clipping."""
        return clipped_adam_(*self.state, self.lr, self.max_grad_norm)


# ------------------------------------------------------------------------------------------------- the update
# The gradient steps run as TorchScript: the script interpreter dispatches the ~30 small ops of a step faster than
# Python does (measured 443 -> 402 us a CartPole step, interleaved runs). The maths is written out below and checked
# against autograd, smooth_l1_loss, clip_grad_norm_ and torch.optim.Adam in tests/dqn.
@torch.jit.script
def td_targets(
    next_q_target: torch.Tensor, next_q_online: torch.Tensor | None, returns: torch.Tensor, discounts: torch.Tensor
) -> torch.Tensor:
    """``returns + discounts * Q_target(s', a*)`` with ``a* = argmax_a Q_target(s', a)`` (DQN) or, given
    ``next_q_online``, ``a* = argmax_a Q_online(s', a)`` (Double DQN). Q inputs ``(batch, n_actions)``."""
    if next_q_online is None:
        next_values = next_q_target.amax(dim=1)
    else:
        next_values = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return returns + discounts * next_values


@torch.jit.script
def loss_gradient(td_errors: torch.Tensor, scaled_onehot: torch.Tensor) -> torch.Tensor:
    """d/dQ of ``mean_i w_i * smooth_l1(Q(s_i, a_i) - target_i)`` (beta 1, SB3's loss), ``(batch, n_actions)``.

    The Huber derivative is ``clamp(td, -1, 1)``; only the taken action's column gets it. ``scaled_onehot`` is
    ``w_i * onehot(a_i) / batch`` (importance weights ``w_i``, 1 without prioritized replay).
    """
    return scaled_onehot * td_errors.clamp(-1.0, 1.0).unsqueeze(1)


@torch.jit.script
def q_forward(
    obs: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], head: torch.Tensor | None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Q values ``(batch, n_actions)`` and the activations ``q_backward_`` needs (the input, each hidden output).

    ``linear``, not ``addmm``: TorchScript splits ``addmm`` into a product and a separate bias addition."""
    activations = [obs]
    h = obs
    for i in range(len(weights)):
        h = torch.nn.functional.linear(h, weights[i], biases[i])
        if i < len(weights) - 1:
            h = torch.relu_(h)
            activations.append(h)
    return (h if head is None else h @ head), activations


@torch.jit.script
def q_backward_(
    grad_q: torch.Tensor,
    activations: list[torch.Tensor],
    weights: list[torch.Tensor],
    weight_grads: list[torch.Tensor],
    bias_grads: list[torch.Tensor],
    head: torch.Tensor | None,
) -> None:
    """Write d(loss)/d(params) into the gradient views, given d(loss)/dQ (``flat_mlp.MLP.backward`` for ReLU, with
    a fused ReLU mask and the first layer's weight gradient as a transposed product: ~60 us less a step)."""
    grad = grad_q if head is None else grad_q @ head.t()
    for i in range(len(weights) - 1, 0, -1):
        torch.mm(grad.t(), activations[i], out=weight_grads[i])
        torch.sum(grad, dim=[0], out=bias_grads[i])
        grad = torch.ops.aten.threshold_backward(grad.mm(weights[i]), activations[i], 0.0)
    weight_grads[0].copy_(torch.mm(activations[0].t(), grad).t())
    torch.sum(grad, dim=[0], out=bias_grads[0])


@torch.jit.script
def clipped_adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: float,
    max_grad_norm: float,
) -> torch.Tensor:
    """``clip_grad_norm_(max_grad_norm)`` then Adam (Kingma & Ba 2015) with one norm and one fused kernel: the clip
    coefficient enters as the kernel's ``grad_scale`` (which divides the gradient). Returns the norm.

    Lists as torch's fused Adam takes them, of one flat tensor each. They must come from the caller: TorchScript
    drops a mutating op whose list arguments it built itself.
    """
    norm = torch.linalg.vector_norm(grads[0])
    grad_scale = torch.clamp_min((norm + 1e-6) / max_grad_norm, 1.0)
    steps[0].add_(1)
    torch._fused_adam_(
        params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.0,
        eps=1e-8, amsgrad=False, maximize=False, grad_scale=grad_scale, found_inf=None,
    )  # fmt: skip
    return norm


@torch.jit.script
def gradient_steps(
    obs: torch.Tensor,
    actions: torch.Tensor,
    scaled_onehot: torch.Tensor,
    targets: torch.Tensor | None,
    next_obs: torch.Tensor,
    next_q_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    weight_grads: list[torch.Tensor],
    bias_grads: list[torch.Tensor],
    head: torch.Tensor | None,
    adam_state: list[list[torch.Tensor]],
    lr: float,
    max_grad_norm: float,
    td_log: torch.Tensor,
    q_log: torch.Tensor,
) -> None:
    """Gradient step ``j`` for ``j < len(obs)`` on the batch ``obs[j]`` (all inputs ``(steps, batch, ...)``).

    TD targets are ``targets[j]``, or, for Double DQN (``targets`` None), made here from ``next_q_target[j]`` with
    the actions this step's online network picks. ``adam_state`` is ``ClippedAdam.state``.
    Writes each step's TD errors and Q(s, a) into ``td_log[j]`` and ``q_log[j]``.
    """
    for j in range(obs.shape[0]):
        if targets is None:
            next_q_online, _ = q_forward(next_obs[j], weights, biases, head)
            step_targets = td_targets(next_q_target[j], next_q_online, returns[j], discounts[j])
        else:
            step_targets = targets[j]
        q_all, activations = q_forward(obs[j], weights, biases, head)
        q_taken = q_all.gather(1, actions[j]).squeeze(1)
        td_errors = q_taken - step_targets
        td_log[j] = td_errors
        q_log[j] = q_taken
        q_backward_(loss_gradient(td_errors, scaled_onehot[j]), activations, weights, weight_grads, bias_grads, head)
        clipped_adam_(adam_state[0], adam_state[1], adam_state[2], adam_state[3], adam_state[4], lr, max_grad_norm)


def q_learning_burst(
    q: QNetwork,
    optimizer: ClippedAdam,
    buffer: ReplayBuffer,
    sampler: PrioritizedSampler | None,
    cfg: DQNConfig,
    n_updates: int,
    beta: float,
    rng: np.random.Generator,
    td_log: torch.Tensor,
    q_log: torch.Tensor,
) -> None:
    """``n_updates`` gradient steps on replayed batches; each step's TD errors and Q(s, a) go to the logs.

    The target network only changes between bursts (its updates are counted in env steps, as SB3 does, and the
    online network only changes inside bursts), so it is constant here. Without prioritized replay (whose draws
    depend on the previous step's priorities) all batches of the burst are drawn at once and their target values
    come from one batched forward over the distinct transitions drawn: the same targets as one forward per step,
    at a fraction of the overhead.
    """
    batch_size = cfg.batch_size
    block = 1 if sampler is not None else n_updates  # gradient steps whose batches are drawn together
    device = q.device
    for start in range(0, n_updates, block):
        if sampler is None:
            batch = buffer.gather(buffer.sample_indices(block * batch_size, rng), cfg.n_step, cfg.gamma)
        else:
            indices, weights = sampler.sample(batch_size, len(buffer), beta, rng)
            batch = buffer.gather(indices, cfg.n_step, cfg.gamma, weights)
        _, first, inverse = np.unique(batch.indices, return_index=True, return_inverse=True)
        obs, next_obs, distinct_next_obs, returns, discounts = (
            torch.from_numpy(array).to(device)
            for array in (batch.obs, batch.next_obs, batch.next_obs[first], batch.returns, batch.discounts)
        )
        actions = torch.from_numpy(batch.actions).to(device).unsqueeze(1)
        weights_t = torch.from_numpy(batch.weights).to(device).mul_(1.0 / batch_size).unsqueeze(1)
        scaled_onehot = torch.zeros(len(actions), q.n_actions, device=device).scatter_(1, actions, weights_t)
        with torch.no_grad():
            chunks = range(0, len(distinct_next_obs), _TARGET_CHUNK)
            next_q_target = torch.cat(
                [q.q_values(distinct_next_obs[i : i + _TARGET_CHUNK], target=True) for i in chunks]
            )[torch.from_numpy(inverse).to(device)]
        targets = None if cfg.double_dqn else td_targets(next_q_target, None, returns, discounts)

        def steps(t: torch.Tensor) -> torch.Tensor:
            return t.view(block, batch_size, *t.shape[1:])

        gradient_steps(
            steps(obs), steps(actions), steps(scaled_onehot), None if targets is None else steps(targets),
            steps(next_obs), steps(next_q_target), steps(returns), steps(discounts),
            q.weights, q.biases, q.weight_grads, q.bias_grads, q.head,
            optimizer.state, optimizer.lr, optimizer.max_grad_norm,
            td_log[start : start + block], q_log[start : start + block],
        )  # fmt: skip
        if sampler is not None:
            sampler.update(batch.indices, td_log[start].cpu().numpy())


_TARGET_CHUNK = 256  # rows per target forward: large enough to amortize overhead, small enough to stay in cache


def linear_schedule(start: float, end: float, fraction: float, progress: float) -> float:
    """``start`` -> ``end`` linearly over the first ``fraction`` of training, then ``end`` (SB3's LinearSchedule)."""
    if fraction <= 0 or progress >= fraction:
        return end
    return start + progress * (end - start) / fraction


# ------------------------------------------------------------------------------------------------- training
@dataclass
class Counters:
    """Where training stands (saved in checkpoints)."""

    global_step: int = 0  # env steps (transitions) so far
    vector_steps: int = 0
    pending_target_updates: int = 0  # counted in env steps, applied before the next burst
    gradient_steps: int = 0
    episodes: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: the speed measure that other processes on the machine disturb least


def train_dqn(config: DQNConfig, on_eval: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train, evaluate, checkpoint and report into the run folder; return summary.json's content.

    ``on_eval(env_steps, eval_return_mean)`` is called after each periodic evaluation (a tuner raises there to
    prune). Every user error raises ConfigError before anything is written.
    """
    cfg = config.resolved()
    assert cfg.out is not None
    checkpoint = load_checkpoint(cfg.out / "checkpoint.pt") if cfg.resume is not None else None
    if checkpoint is None:
        RunFolder.check_new(cfg.out)
    torch.set_num_threads(cfg.torch_threads)
    envs = make_vec_env(cfg.env, cfg.num_envs, copy=False)  # observations are copied below, once
    obs_dim = math.prod(envs.single_observation_space.shape or (1,))
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    rng = np.random.default_rng(cfg.seed)
    q = QNetwork(obs_dim, n_actions, cfg, torch.Generator().manual_seed(cfg.seed))
    optimizer = ClippedAdam(q.params, cfg.learning_rate, cfg.max_grad_norm)
    buffer = ReplayBuffer(cfg.buffer_size, (obs_dim,), cfg.num_envs)
    sampler = PrioritizedSampler(buffer.capacity, cfg.per_alpha, cfg.per_eps) if cfg.prioritized else None
    counters = Counters()
    if checkpoint is not None:
        _restore(checkpoint, q, optimizer, buffer, sampler, rng, counters)
        check(counters.global_step < cfg.total_steps, f"{cfg.out} already ran {counters.global_step} steps")
        buffer.cut_episodes()  # the envs restart: no n-step return may run on into a new episode
    folder = RunFolder.create(cfg.out, cfg, resume_step=counters.global_step if checkpoint is not None else None)
    start_step = global_step = counters.global_step

    n_updates = cfg.gradient_steps if cfg.gradient_steps > 0 else cfg.train_freq * cfg.num_envs
    target_every = max(cfg.target_update_interval // cfg.num_envs, 1)  # in vector steps, as SB3 counts
    td_log = torch.zeros(n_updates, cfg.batch_size, device=cfg.device)
    q_log = torch.zeros_like(td_log)
    loss_sum, q_sum, logged_updates = torch.zeros((), device=cfg.device), torch.zeros((), device=cfg.device), 0
    log_every = max(cfg.total_steps // 200, 1)
    checkpoint_every = cfg.checkpoint_every or cfg.eval_every
    next_log, next_eval, next_checkpoint = (
        next_due(start_step, every) for every in (log_every, cfg.eval_every, checkpoint_every)
    )
    obs = envs.reset(seed=cfg.seed + start_step)[0].reshape(cfg.num_envs, obs_dim).copy()
    episode_return = np.zeros(cfg.num_envs)
    episode_length = np.zeros(cfg.num_envs, dtype=np.int64)
    recent_returns: list[float] = []
    eval_returns, eval_step = np.zeros(0), -1
    previous_wall, previous_cpu = counters.wall_seconds, counters.cpu_seconds  # of the sessions before a resume
    start_time, start_cpu = time.perf_counter(), time.process_time()
    with MetricsLogger(folder, cfg, cfg.track) as logger, progress_bar(cfg.total_steps, f"dqn {cfg.env}") as bar:
        bar.update(global_step)
        try:
            while global_step < cfg.total_steps:
                # Act: uniformly random before learning_starts, then epsilon-greedy with a linear epsilon.
                progress = global_step / cfg.total_steps
                epsilon = linear_schedule(
                    cfg.exploration_initial_eps, cfg.exploration_final_eps, cfg.exploration_fraction, progress
                )
                explore = rng.random(cfg.num_envs) < (1.0 if global_step < cfg.learning_starts else epsilon)
                if explore.all():
                    actions = rng.integers(n_actions, size=cfg.num_envs)
                else:
                    actions = q.greedy_actions(obs)
                    if explore.any():
                        actions[explore] = rng.integers(n_actions, size=int(explore.sum()))
                next_obs, rewards, terminated, truncated, infos = envs.step(actions)
                next_obs = next_obs.reshape(cfg.num_envs, obs_dim).copy()  # the env reuses its buffer
                global_step += cfg.num_envs
                counters.vector_steps += 1
                episode_return += rewards
                episode_length += 1
                done = terminated | truncated
                if not done.any():
                    written = buffer.add(obs, actions, rewards, next_obs, terminated, truncated)
                else:  # autoreset already began new episodes: a transition's true s' is its final observation
                    final_obs = next_obs.copy()
                    for i in np.flatnonzero(done):
                        final_obs[i] = np.reshape(infos["final_obs"][i], obs_dim)
                        row = {"charts/episodic_return": episode_return[i], "charts/episodic_length": episode_length[i]}
                        logger.log(row, step=global_step)
                        recent_returns = [*recent_returns[-19:], float(episode_return[i])]
                        counters.episodes += 1
                    written = buffer.add(obs, actions, rewards, final_obs, terminated, truncated)
                    episode_return[done], episode_length[done] = 0.0, 0
                if sampler is not None:
                    sampler.add(written)
                obs = next_obs

                # Learn. Target updates are counted in env steps and applied lazily, right before the next burst:
                # m Polyak steps towards an unchanged online network are one step of weight 1 - (1 - tau)^m.
                if counters.vector_steps % target_every == 0:
                    counters.pending_target_updates += 1
                if counters.vector_steps % cfg.train_freq == 0 and global_step > cfg.learning_starts:
                    q.update_target(1.0 - (1.0 - cfg.tau) ** counters.pending_target_updates)
                    counters.pending_target_updates = 0
                    beta = cfg.per_beta0 + (1.0 - cfg.per_beta0) * progress
                    optimizer.lr = cfg.learning_rate * (1.0 - progress if cfg.lr_schedule == "linear" else 1.0)
                    q_learning_burst(q, optimizer, buffer, sampler, cfg, n_updates, beta, rng, td_log, q_log)
                    counters.gradient_steps += n_updates
                    loss_sum += torch.nn.functional.smooth_l1_loss(td_log, torch.zeros_like(td_log), reduction="sum")
                    q_sum += q_log.sum()
                    logged_updates += td_log.numel()

                # Record: training statistics, checkpoints, greedy evaluation on a separate env.
                if global_step >= next_log:
                    sps = (global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
                    stats = {
                        "charts/epsilon": epsilon,
                        "charts/SPS": sps,
                        "charts/gradient_steps": counters.gradient_steps,
                    }
                    stats["charts/learning_rate"] = optimizer.lr
                    if sampler is not None:
                        stats["charts/per_beta"] = cfg.per_beta0 + (1.0 - cfg.per_beta0) * progress
                    if logged_updates:
                        stats["losses/td_loss"] = loss_sum.item() / logged_updates
                        stats["losses/q_values"] = q_sum.item() / logged_updates
                        loss_sum.zero_(), q_sum.zero_()
                        logged_updates = 0
                    logger.log(stats, step=global_step)
                    next_log += log_every
                    bar.update(global_step - bar.n)
                    if recent_returns:
                        bar.set_postfix(train_return=f"{np.mean(recent_returns):.1f}", refresh=False)
                if global_step >= next_checkpoint:
                    counters.global_step = global_step
                    counters.wall_seconds = previous_wall + time.perf_counter() - start_time
                    counters.cpu_seconds = previous_cpu + time.process_time() - start_cpu
                    save_checkpoint(
                        folder.path / "checkpoint.pt", _state(cfg, q, optimizer, buffer, sampler, rng, counters)
                    )
                    next_checkpoint += checkpoint_every
                if global_step >= next_eval:
                    eval_returns, eval_step = _evaluate(q, cfg), global_step
                    logger.log(
                        {"eval/return_mean": eval_returns.mean(), "eval/return_std": eval_returns.std()},
                        step=global_step,
                    )
                    next_eval += cfg.eval_every
                    if on_eval is not None:
                        on_eval(global_step, float(eval_returns.mean()))
            if eval_step != global_step:
                eval_returns = _evaluate(q, cfg)
                logger.log(
                    {"eval/return_mean": eval_returns.mean(), "eval/return_std": eval_returns.std()}, step=global_step
                )
            bar.update(global_step - bar.n)
        finally:
            envs.close()
    counters.global_step = global_step
    counters.wall_seconds = previous_wall + time.perf_counter() - start_time
    counters.cpu_seconds = previous_cpu + time.process_time() - start_cpu
    save_checkpoint(folder.path / "checkpoint.pt", _state(cfg, q, optimizer, buffer, sampler, rng, counters))
    summary = {
        "algo": "dqn",
        "env_id": cfg.env,
        "seed": cfg.seed,
        "env_steps": global_step,
        "wall_seconds": counters.wall_seconds,
        "steps_per_second": global_step / max(counters.wall_seconds, 1e-9),
        "cpu_seconds": counters.cpu_seconds,
        "eval_return_mean": float(eval_returns.mean()),
        "eval_return_std": float(eval_returns.std()),
        "eval_episodes": len(eval_returns),
        "gradient_steps": counters.gradient_steps,
        "episodes": counters.episodes,
        "resumed_from_step": start_step if cfg.resume is not None else None,
    }
    folder.write_summary(summary)
    write_report(folder, cfg, summary)
    return summary


def _evaluate(q: QNetwork, cfg: DQNConfig) -> np.ndarray:
    """Greedy returns on a separate env (seeds apart from training's)."""
    return evaluate_policy(q.greedy_actions, cfg.env, cfg.eval_episodes, cfg.seed)


def _state(
    cfg: DQNConfig,
    q: QNetwork,
    optimizer: ClippedAdam,
    buffer: ReplayBuffer,
    sampler: PrioritizedSampler | None,
    rng: np.random.Generator,
    counters: Counters,
) -> dict[str, Any]:
    return {
        "algo": "dqn",
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "params": q.params.data.cpu(),
        "target": q.target_data.cpu(),
        "exp_avg": optimizer.exp_avg.cpu(),
        "exp_avg_sq": optimizer.exp_avg_sq.cpu(),
        "adam_step": optimizer.step_count.cpu(),
        "buffer": buffer.state_dict(),
        "sampler": sampler.state_dict() if sampler is not None else None,
        "rng": rng.bit_generator.state,
        "counters": dataclasses.asdict(counters),
    }


def _restore(
    checkpoint: dict[str, Any],
    q: QNetwork,
    optimizer: ClippedAdam,
    buffer: ReplayBuffer,
    sampler: PrioritizedSampler | None,
    rng: np.random.Generator,
    counters: Counters,
) -> None:
    check(checkpoint.get("algo") == "dqn", "the checkpoint was not written by rlhf dqn")
    try:
        q.params.data.copy_(checkpoint["params"])
        q.target_data.copy_(checkpoint["target"])
        optimizer.exp_avg.copy_(checkpoint["exp_avg"])
        optimizer.exp_avg_sq.copy_(checkpoint["exp_avg_sq"])
        optimizer.step_count.copy_(checkpoint["adam_step"])
        buffer.load_state_dict(checkpoint["buffer"])
        if sampler is not None:
            sampler.load_state_dict(checkpoint["sampler"])
        rng.bit_generator.state = checkpoint["rng"]
        for key, value in checkpoint["counters"].items():
            setattr(counters, key, type(getattr(counters, key))(value))
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"checkpoint does not fit this DQN config ({str(error)[:120]})") from None


# ------------------------------------------------------------------------------------------------- report
def write_report(folder: RunFolder, cfg: DQNConfig, summary: dict[str, Any]) -> None:
    """Learning curves, TD loss, Q values and epsilon from metrics.jsonl, and the config."""
    rows = folder.read_metrics()

    report = Report(
        f"DQN on {cfg.env}",
        f"seed {cfg.seed}, {summary['env_steps']} env steps in {summary['wall_seconds']:.1f} s "
        f"({summary['steps_per_second']:.0f} steps/s), {summary['gradient_steps']} gradient steps; final greedy "
        f"eval return {summary['eval_return_mean']:.1f} +- {summary['eval_return_std']:.1f} over "
        f"{summary['eval_episodes']} episodes.",
    )
    fig = go.Figure()
    steps, returns = metric_series(rows, "charts/episodic_return")
    if len(steps):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=returns,
                mode="markers",
                name="training episode",
                opacity=0.25,
                marker={"color": color(0), "size": 4},
            )
        )
        fig.add_trace(
            go.Scatter(x=steps, y=smooth(returns, 20), name="training (mean of 20)", line={"color": color(0)})
        )
    eval_steps, eval_mean = metric_series(rows, "eval/return_mean")
    _, eval_std = metric_series(rows, "eval/return_std")
    if len(eval_steps):
        fig.add_trace(
            go.Scatter(
                x=eval_steps,
                y=eval_mean,
                name="greedy eval (mean +- std)",
                mode="lines+markers",
                error_y={"type": "data", "array": eval_std},
                line={"color": color(1)},
            )
        )
    fig.update_layout(title="Episodic return", xaxis_title="env steps", yaxis_title="return", height=420)
    report.figure(fig)
    panels: list[tuple[str, list[str]]] = [
        ("TD loss (Huber, mean over each logging window) (log)", ["losses/td_loss"]),
        ("Q(s, a) of replayed transitions (mean)", ["losses/q_values"]),
        ("Epsilon", ["charts/epsilon"]),
        ("Learning rate", ["charts/learning_rate"]),
        ("Steps per second", ["charts/SPS"]),
    ]
    if cfg.prioritized:
        panels.append(("Importance-weight exponent beta", ["charts/per_beta"]))
    report.metric_panels(rows, panels, first_color=2)
    report.heading("Config")
    report.table(["field", "value"], [[k, str(v)] for k, v in dataclasses.asdict(cfg).items()])
    report.write(folder.report_path)
