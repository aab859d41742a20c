"""DQN's config: per-env defaults (rl-zoo's rows, as its hyperparams/dqn.yml keeps them), the fields with their
``--help`` text, and the checks a run's values must pass. The trainer is ``baselines/dqn.py``.

``defaults_for(env)`` is GENERIC (rl-zoo's Acrobot and LunarLander row) updated by the env's row, plus three
changes that made rl-zoo's settings more reliable here: double DQN, 3-step returns and the learning rate decayed
linearly to 0, which damps the collapses DQN suffers late in training; and for CartPole-v1 64 gradient steps per
256 env steps instead of rl-zoo's 128. The seeds and returns behind these choices are in
``benchmarks/dqn_reliability.py``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym

from baselines.common.config import cli_default, flag, resolve_resume
from baselines.common.envs import make_env
from baselines.common.errors import check, check_device, check_hidden_sizes, check_seed
from baselines.common.runs import default_run_dir

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

    def epsilon(self, progress: float) -> float:
        """Epsilon after ``progress`` (the fraction of total_steps done): linear from the initial to the final value
        over the first ``exploration_fraction``, then the final value (SB3's LinearSchedule)."""
        start, end, fraction = self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
        return end if fraction <= 0 or progress >= fraction else start + progress * (end - start) / fraction

    def learning_rate_at(self, progress: float) -> float:
        """The learning rate after ``progress`` (the fraction of total_steps done): constant, or linear to 0."""
        return self.learning_rate * (1.0 - progress if self.lr_schedule == "linear" else 1.0)

    def per_beta(self, progress: float) -> float:
        """The importance-weight exponent, annealed linearly from ``per_beta0`` to 1 over training."""
        return self.per_beta0 + (1.0 - self.per_beta0) * progress

    @property
    def updates_per_burst(self) -> int:
        """``gradient_steps``, or for -1 as many as the env steps between bursts."""
        return self.gradient_steps if self.gradient_steps > 0 else self.train_freq * self.num_envs

    @property
    def target_update_every(self) -> int:
        """``target_update_interval`` in vector-env steps, as SB3 counts it."""
        return max(self.target_update_interval // self.num_envs, 1)

    @classmethod
    def defaults_for(cls, env: str, **overrides: Any) -> DQNConfig:
        """GENERIC, then the env's row of ENV_DEFAULTS, then ``overrides``."""
        return cls(env=env, **{**GENERIC, **ENV_DEFAULTS.get(env, {}), **overrides})

    @classmethod
    def cli_default(cls, env: str | None, config_file: str | None, resume: str | None) -> DQNConfig:
        """The default instance the CLI shows and overrides (``baselines.common.config.cli_default``)."""
        return cli_default(cls, env, config_file, resume)

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
        check_hidden_sizes(self.hidden_sizes)
        check(self.torch_threads >= 1, f"--torch-threads must be at least 1, got {self.torch_threads}")
        check_seed(self.seed)
        for name in ("learning_rate", "max_grad_norm", "per_eps"):
            check(math.isfinite(values[name]), f"{flag(name)} must be a finite number, got {values[name]}")
        check_device(self.device)
