"""Environment factories with clear errors for bad env ids and unsupported spaces."""

from __future__ import annotations

import difflib
from typing import Any, Literal

import gymnasium as gym

from baselines.common.errors import ConfigError


def check_env_id(env_id: str) -> None:
    """Raise ConfigError naming close matches when gymnasium does not know ``env_id``."""
    import baselines  # noqa: F401  (registers this package's envs)

    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; e.g. CartPole-v1, Pendulum-v1, Acrobot-v1"
    raise ConfigError(f"unknown env id '{env_id}'{hint}")


def make_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env[Any, Any]:
    """``gym.make`` after checking the id; errors from the env's constructor become ConfigError."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except (gym.error.Error, TypeError, ImportError, ValueError) as error:
        raise ConfigError(f"cannot make env '{env_id}': {error}") from None


def make_vec_env(
    env_id: str,
    num_envs: int,
    vectorization: Literal["sync", "async"] = "sync",
    copy: bool = True,
    **kwargs: Any,
) -> gym.vector.VectorEnv[Any, Any, Any]:
    """A gymnasium vector env of ``num_envs`` copies; ``async`` runs one process per env.

    ``copy=False`` returns the env's own observation buffer, overwritten by the next step: callers that keep an
    observation across steps copy it themselves (``ndarray.copy`` is several times cheaper than the deep copy
    gymnasium makes otherwise, a visible share of a fast training loop).

    Autoreset is "same step": the observation returned with ``terminated``/``truncated`` already belongs to the
    next episode, and the final observation sits in ``info["final_obs"]``, so every returned step is a real
    transition (no masked no-op steps in the rollout).
    """
    check_env_id(env_id)
    env_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    try:
        return env_cls(
            [lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            copy=copy,
        )
    except (gym.error.Error, TypeError, ImportError, ValueError) as error:
        raise ConfigError(f"cannot make env '{env_id}': {error}") from None
