"""Environment factories with clear errors for bad env ids and unsupported spaces."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from baselines.common.errors import ConfigError

# MuJoCo picks its OpenGL backend when it is first imported: without a display, offscreen EGL (the default, GLFW,
# needs an X server). A user's own MUJOCO_GL wins.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

MUJOCO_INSTALL = 'pip install "rlhf-pipeline[mujoco]"'

# This package's envs by id. Entry points are strings: gymnasium imports the env's module at its first make.
ENTRY_POINTS = {
    "GridWorld-v0": "baselines.tabular.gridworld:GridWorldEnv",
    "KArmedBandit-v0": "baselines.bandits.env:BanditEnv",
}


def register_envs() -> None:
    """Register ``GridWorld-v0`` and ``KArmedBandit-v0`` with gymnasium; a second call does nothing."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def check_env_id(env_id: str) -> None:
    """Raise ConfigError naming close matches when gymnasium does not know ``env_id``."""
    register_envs()
    if env_id in gym.registry:
        if "mujoco" in str(gym.registry[env_id].entry_point):
            check_mujoco(env_id)
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; e.g. CartPole-v1, Pendulum-v1, Acrobot-v1"
    raise ConfigError(f"unknown env id '{env_id}'{hint}")


def check_mujoco(env_id: str) -> None:
    """Raise a one-line ConfigError when MuJoCo, which ``env_id`` needs, is not installed or cannot load."""
    try:
        import mujoco  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ConfigError(f"{env_id} needs MuJoCo, which is not installed: {MUJOCO_INSTALL}") from None
    except RuntimeError as error:  # e.g. an invalid MUJOCO_GL
        raise ConfigError(f"MuJoCo cannot load ({error}); unset MUJOCO_GL or set it to egl, osmesa or glfw") from None


def make_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env[Any, Any]:
    """``gym.make`` after checking the id; errors from the env's constructor become ConfigError."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except (gym.error.Error, TypeError, ImportError, ValueError) as error:
        raise ConfigError(f"cannot make env '{env_id}': {error}") from None


class SyncEnvs(gym.vector.VectorEnv[Any, Any, Any]):
    """Sub-envs stepped in turn, with same-step autoreset: gymnasium's ``SyncVectorEnv`` without its per-step
    generality (space iteration and checks, info merging, observation copies), which costs more than a classic
    control env's own step.

    Same seeding (``reset(seed=s)`` seeds sub-env i with ``s + i``) and the same transitions as ``SyncVectorEnv``
    with ``AutoresetMode.SAME_STEP``: a finished sub-env is reset in the step that finished it, the returned
    observation is the new episode's first, and the last one sits in ``infos["final_obs"]`` (mask
    ``infos["_final_obs"]``). The returned observations are this object's buffer, overwritten by the next call:
    callers copy what they keep. Sub-env infos other than the final observation are not passed on.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env[Any, Any]]]) -> None:
        self.envs = [make() for make in env_fns]
        first = self.envs[0]
        self.num_envs = len(self.envs)
        self.metadata = {**first.metadata, "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = gym.vector.utils.batch_space(first.observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(first.action_space, self.num_envs)
        self._discrete = isinstance(first.action_space, gym.spaces.Discrete)
        space = first.observation_space
        if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
            raise ConfigError(
                f"{first.spec.id if first.spec else first} has {space} observations; Box or Discrete needed"
            )
        self._obs: np.ndarray = np.zeros((self.num_envs, *(space.shape or ())), dtype=space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset(seed=None if seed is None else seed + i, options=options)[0]
        return self._obs, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        rewards = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        final_obs: np.ndarray | None = None
        final_mask = np.zeros(n, dtype=bool)
        # Discrete actions as Python ints: the envs' action checks are much cheaper on them than on NumPy ints.
        per_env = np.asarray(actions).tolist() if self._discrete else actions
        for i, (env, action) in enumerate(zip(self.envs, per_env, strict=True)):
            obs, reward, term, trunc, _ = env.step(action)
            if term or trunc:
                if final_obs is None:
                    final_obs = np.empty(n, dtype=object)
                final_obs[i], final_mask[i] = obs, True
                obs = env.reset()[0]
            self._obs[i] = obs
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
        infos = {} if final_obs is None else {"final_obs": final_obs, "_final_obs": final_mask}
        return self._obs, rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...]:
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_vec_env(
    env_id: str,
    num_envs: int,
    vectorization: Literal["sync", "async"] = "sync",
    copy: bool = True,
    **kwargs: Any,
) -> gym.vector.VectorEnv[Any, Any, Any]:
    """A vector env of ``num_envs`` copies: ``sync`` steps them in turn in this process, ``async`` runs one process
    per env (gymnasium's ``AsyncVectorEnv``).

    Autoreset is "same step": the observation returned with ``terminated``/``truncated`` already belongs to the
    next episode, and the final observation sits in ``info["final_obs"]``, so every returned step is a real
    transition (no masked no-op steps in the rollout).

    ``copy=False`` returns the env's own observation buffer, overwritten by the next step: callers that keep an
    observation across steps copy it themselves. ``sync`` with ``copy=False`` is :class:`SyncEnvs` (a visible
    share of a fast training loop cheaper than gymnasium's ``SyncVectorEnv``; Box or Discrete observations).
    """
    check_env_id(env_id)
    try:
        if vectorization == "sync" and not copy:
            return SyncEnvs([lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)])
        env_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
        return env_cls(
            [lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            copy=copy,
        )
    except (gym.error.Error, TypeError, ImportError, ValueError) as error:
        raise ConfigError(f"cannot make env '{env_id}': {error}") from None
