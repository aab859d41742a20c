"""Task families for multi-task policies: variants of an env that share its spaces, each seen with a task input.

A task is an env id, physical attributes set on the unwrapped env (a pole's mass, gravity), and a context vector
appended to every observation so that one policy can tell the tasks apart: the attributes relative to the env's
defaults for a family (a held-out variant gets a meaningful input), a one-hot for a list of env ids. Every task runs
as ``rlhf/Task-v0`` with its kwargs, so vector envs and evaluation build it like any registered env.

``--tasks`` takes a family name (its training variants), ``NAME/held-out`` (the family's held-out variant alone:
adaptation and PPO from scratch run on it) or env ids joined by commas, which must share their spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.common.envs import SyncEnvs, check_env_id
from baselines.common.errors import ConfigError, check
from baselines.common.normalization import RewardScaler

TASK_ENV_ID = "rlhf/Task-v0"


@dataclass(frozen=True)
class TaskFamily:
    """Variants of ``env_id`` that differ in ``attributes`` (name -> value; the env's defaults in ``defaults``)."""

    env_id: str
    defaults: dict[str, float]
    train: tuple[dict[str, float], ...]
    held_out: dict[str, float]


# Pendulum: gravity and mass move the torque a swing-up needs (max torque 2 is fixed); CartPole: a heavier, longer
# pole falls differently. The held-out variant lies inside the training range, off its grid.
TASK_FAMILIES: dict[str, TaskFamily] = {
    "pendulum-masses": TaskFamily(
        "Pendulum-v1",
        {"g": 10.0, "m": 1.0},
        tuple({"g": g, "m": m} for g in (8.0, 12.0) for m in (0.8, 1.2)),
        {"g": 11.0, "m": 1.1},
    ),
    "cartpole-poles": TaskFamily(
        "CartPole-v1",
        {"masspole": 0.1, "length": 0.5},
        tuple({"masspole": mass, "length": length} for mass in (0.05, 0.4) for length in (0.25, 1.0)),
        {"masspole": 0.2, "length": 0.75},
    ),
}


@dataclass(frozen=True)
class Task:
    env_id: str
    attributes: tuple[tuple[str, float], ...]
    context: tuple[float, ...]

    @property
    def kwargs(self) -> dict[str, Any]:
        """``gym.make(TASK_ENV_ID, **kwargs)`` builds this task."""
        return {"env_id": self.env_id, "attributes": dict(self.attributes), "context": self.context}

    @property
    def name(self) -> str:
        values = ",".join(f"{key}={value:g}" for key, value in self.attributes)
        return f"{self.env_id}[{values}]" if values else self.env_id


def parse_tasks(spec: str) -> list[Task]:
    """The tasks ``--tasks`` names (module docstring); a one-line ConfigError for a name it does not know or env
    ids whose spaces differ."""
    family_name, _, part = spec.partition("/")
    if family_name in TASK_FAMILIES:
        check(part in ("", "held-out"), f"--tasks {spec}: after '/' only 'held-out' is known")
        family = TASK_FAMILIES[family_name]
        variants = (family.held_out,) if part else family.train
        return [_family_task(family, variant) for variant in variants]
    env_ids = [env_id.strip() for env_id in spec.split(",") if env_id.strip()]
    check(len(env_ids) >= 1, f"--tasks is empty; give a task family ({', '.join(TASK_FAMILIES)}) or env ids")
    for env_id in env_ids:
        try:
            check_env_id(env_id)
        except ConfigError as error:
            raise ConfigError(f"--tasks: {error} (task families: {', '.join(TASK_FAMILIES)})") from None
    spaces = [_spaces(env_id) for env_id in env_ids]
    observations = spaces[0][0]
    if not isinstance(observations, gym.spaces.Box) or len(observations.shape) != 1:
        raise ConfigError(f"--tasks: {env_ids[0]} has {observations} observations; tasks need a flat Box")
    for env_id, (obs_space, action_space) in zip(env_ids[1:], spaces[1:], strict=True):
        if (obs_space, action_space) != spaces[0]:
            raise ConfigError(
                f"the tasks' spaces differ: {env_ids[0]} has {spaces[0][0]} observations and {spaces[0][1]} "
                f"actions, {env_id} has {obs_space} and {action_space}"
            )
    one_hot = np.eye(len(env_ids)) if len(env_ids) > 1 else np.zeros((1, 0))
    return [Task(env_id, (), tuple(float(x) for x in row)) for env_id, row in zip(env_ids, one_hot, strict=True)]


def _spaces(env_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _family_task(family: TaskFamily, variant: dict[str, float]) -> Task:
    context = tuple(variant[key] / family.defaults[key] - 1.0 for key in family.defaults)
    return Task(family.env_id, tuple(variant.items()), context)


class TaskEnv(gym.Wrapper[np.ndarray, Any, np.ndarray, Any]):
    """``env_id`` with ``attributes`` set on the unwrapped env and ``context`` appended to each observation."""

    def __init__(self, env_id: str, attributes: dict[str, float], context: tuple[float, ...], **kwargs: Any) -> None:
        env = gym.make(env_id, **kwargs)
        super().__init__(env)
        base = env.unwrapped
        for key, value in attributes.items():
            check(hasattr(base, key), f"{env_id} has no attribute {key!r} to vary")
            setattr(base, key, value)
        if hasattr(base, "polemass_length"):  # CartPole derives these from the pole once, in __init__
            base.total_mass = base.masspole + base.masscart  # type: ignore[attr-defined]
            base.polemass_length = base.masspole * base.length  # type: ignore[attr-defined]
        self.context = np.asarray(context, dtype=np.float32)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box) and len(space.shape) == 1, "tasks need flat Box observations"
        low = np.concatenate([space.low, np.full(len(context), -np.inf, np.float32)])
        high = np.concatenate([space.high, np.full(len(context), np.inf, np.float32)])
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))

    def _with_context(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32), self.context])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._with_context(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._with_context(obs), reward, terminated, truncated, info


def register_task_env() -> None:
    if TASK_ENV_ID not in gym.registry:
        gym.register(id=TASK_ENV_ID, entry_point=make_task_env, disable_env_checker=True)


def make_task_env(**kwargs: Any) -> gym.Env[Any, Any]:
    """The entry point of ``rlhf/Task-v0``: ``TaskEnv(env_id=..., attributes=..., context=...)``."""
    return TaskEnv(**kwargs)


def make_task_envs(
    tasks: list[Task], num_envs: int, vectorization: str = "sync"
) -> gym.vector.VectorEnv[Any, Any, Any]:
    """``num_envs`` sub-envs (``num_envs`` a multiple of the task count), sub-env ``i`` running task
    ``i % len(tasks)``, stepped as ``make_vec_env`` steps them (same-step autoreset)."""
    register_task_env()
    fns = [partial(gym.make, TASK_ENV_ID, **tasks[i % len(tasks)].kwargs) for i in range(num_envs)]
    if vectorization == "sync":
        return SyncEnvs(fns)
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)


class TaskRewardScaler:
    """Per-task return normalization: each task's sub-envs share a RewardScaler of their own, so a task with
    large returns does not set the scale, nor dominate the gradient, for the others."""

    def __init__(self, task_of_env: np.ndarray, gamma: float) -> None:
        self.task_of_env = task_of_env
        self.scalers = [RewardScaler(int((task_of_env == t).sum()), gamma) for t in range(task_of_env.max() + 1)]

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        scaled = np.empty_like(rewards, dtype=np.float32)
        for task, scaler in enumerate(self.scalers):
            columns = self.task_of_env == task
            scaled[:, columns] = scaler(rewards[:, columns], dones[:, columns])
        return scaled

    def state_dict(self) -> list[dict[str, Any]]:
        return [scaler.stats.state_dict() for scaler in self.scalers]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        for scaler, stats in zip(self.scalers, state, strict=True):
            scaler.stats.load_state_dict(stats)
