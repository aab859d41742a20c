"""The learned reward as the policy sees it: a callable on (obs, action) batches, a PPO ``reward_fn``, a vector env.

The reward of a step is the model's step reward minus its reward of the absorbing state, so the absorbing state
(what segments are padded with after an episode ends) is worth exactly 0: ending an episode then means the same
for the policy as padding meant to the labeller (B-Pref; Kostrikov et al. 2019 on absorbing states). Rewards are
divided by a running root mean square of these rewards (scale only: a mean shift would change what ending an
episode is worth). Not by their standard deviation: a learned reward that is mostly a positive offset (CartPole's
"still alive") has a small spread, and dividing by it blew the rewards up to tens per step, which PPO's value
function then chased (RLHF on CartPole at 40k steps reached >= 300 on 2 of 6 seeds that way, 5 of 6 with the RMS).

For the Markovian MLP ensemble a step's reward depends only on that step. For the Preference Transformer it
depends on the steps before it in its episode (up to ``max_length``): callers pass ``episode_starts``, and the PPO
adapter and the vector env carry the last steps of the previous call as context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np
import torch

from baselines.common.distributed import SINGLE, World
from baselines.common.errors import ConfigError
from baselines.common.normalization import RunningMeanStd
from rlhf.reward.models import RewardModel
from rlhf.segments import step_features

if TYPE_CHECKING:
    from baselines.ppo import Rollout


class LearnedReward:
    """``(obs, actions) -> rewards``: the model's step reward, zero at the absorbing state, scaled by a running RMS.

    Args:
        model: a trained reward model (read in eval mode; its weights may keep training between calls).
        absorbing_features: ``(F,)`` features of the absorbing state (``rlhf.segments.absorbing_features``).
        action_space: the env's single-env action space, to build features as the segments did.
        epsilon: added to the running mean square before the square root.
    """

    def __init__(
        self,
        model: RewardModel,
        absorbing_features: np.ndarray,
        action_space: gym.Space[Any],
        epsilon: float = 1e-8,
    ) -> None:
        if absorbing_features.shape != (model.config.feature_dim,):
            raise ConfigError(
                f"absorbing features have shape {absorbing_features.shape}, the model expects "
                f"({model.config.feature_dim},); build them for the env the model was trained on"
            )
        self.model = model
        self.absorbing_features = absorbing_features.astype(np.float32)
        self.action_space = action_space
        self.epsilon = epsilon
        self.stats = RunningMeanStd(())

    def __call__(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        absorbed: np.ndarray | None = None,
        episode_starts: np.ndarray | None = None,
        context_steps: int = 0,
        update_stats: bool = True,
    ) -> np.ndarray:
        """Scaled learned rewards of a time-major batch of steps.

        Args:
            obs: ``(T, N, *obs_shape)`` observations before each step (raw, as the segments store them).
            actions: ``(T, N)`` ints (Discrete) or ``(T, N, action_dim)`` floats (Box), as the env received them.
            absorbed: ``(T, N)`` bool, steps to read as the absorbing state (default none).
            episode_starts: ``(T, N)`` bool, True where an episode begins (default: only row 0). Only a
                non-Markovian model (the transformer) reads it.
            context_steps: the first rows are earlier steps given only as context; no rewards for them.
            update_stats: fold these rewards into the running statistics before scaling (False to evaluate).

        Returns:
            ``(T - context_steps, N)`` float32 rewards.
        """
        rewards = self.centered_rewards(obs, actions, absorbed, episode_starts, context_steps)
        if update_stats:
            self.stats.update(rewards.reshape(-1).astype(np.float64))
        return (rewards / self.scale).astype(np.float32)

    @property
    def scale(self) -> float:
        """What rewards are divided by: the running root mean square of the centered rewards."""
        return float(np.sqrt(self.stats.var + self.stats.mean**2 + self.epsilon))

    def centered_rewards(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        absorbed: np.ndarray | None = None,
        episode_starts: np.ndarray | None = None,
        context_steps: int = 0,
    ) -> np.ndarray:
        """The model's (ensemble-mean) rewards minus its absorbing-state reward, unscaled: ``(T - context_steps, N)``.

        The absorbing reward is the model's reward of the absorbing features taken alone, recomputed on every call
        because the loop keeps training the same model.
        """
        if obs.ndim < 2:
            raise ConfigError(f"obs must be time-major (T, N, ...), got shape {obs.shape}")
        steps, num_envs = obs.shape[:2]
        if absorbed is None:
            absorbed = np.zeros((steps, num_envs), dtype=bool)
        features = step_features(obs, actions, absorbed, self.action_space)
        if features.shape[-1] != self.model.config.feature_dim:
            raise ConfigError(
                f"these observations and actions give {features.shape[-1]} features per step, the model "
                f"expects {self.model.config.feature_dim}; was it trained on another env?"
            )
        if episode_starts is None:
            episode_starts = np.zeros((steps, num_envs), dtype=bool)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            member_rewards = self.model.member_sequence_rewards(
                torch.from_numpy(features).to(device),
                torch.from_numpy(np.asarray(episode_starts, dtype=bool)).to(device),
                first_step=context_steps,
            )
            absorbing_reward = self.model.step_rewards(torch.from_numpy(self.absorbing_features).to(device))
        self.model.train(was_training)
        return (member_rewards.mean(dim=0) - absorbing_reward).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        """The running statistics, as plain JSON-able values (the model is saved with ``save_reward_model``)."""
        return {"stats": self.stats.state_dict(), "epsilon": self.epsilon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.epsilon = float(state["epsilon"])


class PPORewardFn:
    """``reward_fn`` for ``baselines.ppo.train_ppo``: the learned reward of each step of a rollout, ``(T, N)``.

    Rollouts of ``train_ppo`` follow one another, so the last ``context_length - 1`` steps of one rollout serve as
    context for the next (transformer only; the MLP needs none). Episode starts come from the rollout's
    ``terminated | truncated`` flags.

    Args:
        learned_reward: the learned reward to call.
        actions: ``env``: the actions the env received (``rollout.env_actions``, clipped or squashed for Box
            spaces, as the vector-env wrapper sees them); ``policy``: the policy's raw samples (``rollout.actions``).
            Use whichever the segments were cut from.
        world: under ``torchrun``, the ranks whose rollouts share the reward's running scale: after each rollout
            the statistics are merged over the ranks and this rank's rewards rescaled by them, so that every rank
            optimizes the same reward (one process: the scale of its own rollouts).
    """

    def __init__(
        self, learned_reward: LearnedReward, actions: Literal["env", "policy"] = "env", world: World = SINGLE
    ) -> None:
        self.learned_reward = learned_reward
        self.actions = actions
        self.world = world
        self._context: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._last_done: np.ndarray | None = None

    def __call__(self, rollout: Rollout) -> np.ndarray:
        actions = rollout.env_actions if self.actions == "env" else rollout.actions
        done = rollout.terminated | rollout.truncated
        starts = np.zeros_like(done)
        starts[1:] = done[:-1]
        fits = self._last_done is not None and self._last_done.shape == done.shape[1:]
        starts[0] = self._last_done if fits else True
        obs = rollout.obs
        context_steps = 0
        if fits and self._context is not None:
            obs = np.concatenate([self._context[0], obs])
            actions = np.concatenate([self._context[1], actions])
            starts = np.concatenate([self._context[2], starts])
            context_steps = len(self._context[0])
        synced = self.learned_reward.stats.state_dict() if self.world.size > 1 else None
        rewards = self.learned_reward(obs, actions, episode_starts=starts, context_steps=context_steps)
        if synced is not None:  # rescale by the statistics of every rank's steps
            local = self.learned_reward.scale
            self.world.merge_stats_(self.learned_reward.stats, synced)
            rewards = (rewards * (local / self.learned_reward.scale)).astype(np.float32)
        keep = self.learned_reward.model.context_length - 1
        self._context = (obs[-keep:], actions[-keep:], starts[-keep:]) if keep > 0 else None
        self._last_done = done[-1].copy()
        return rewards


def as_ppo_reward_fn(
    learned_reward: LearnedReward, actions: Literal["env", "policy"] = "env", world: World = SINGLE
) -> PPORewardFn:
    """A function of a ``baselines.ppo.Rollout`` returning ``(T, N)`` learned rewards (see :class:`PPORewardFn`)."""
    return PPORewardFn(learned_reward, actions, world)


class LearnedRewardVecEnv(gym.vector.VectorWrapper):
    """A vector env whose reward is the learned reward of (observation before the step, action).

    The env's own reward is kept in ``info["true_reward"]`` (``(N,)``); terminations, truncations and observations
    are unchanged. Works with next-step autoreset (gymnasium's default: the step after an episode's end only
    resets that sub-env, ignoring its action; it gets reward 0 and is read as the absorbing state) and same-step
    autoreset. The last ``context_length - 1`` steps are kept as context for a non-Markovian model.
    """

    def __init__(self, env: gym.vector.VectorEnv[Any, Any, Any], learned_reward: LearnedReward) -> None:
        super().__init__(env)
        self.learned_reward = learned_reward
        self.autoreset_mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        self._history = learned_reward.model.context_length
        num_envs = env.num_envs
        self._obs: np.ndarray | None = None
        self._starts = np.ones(num_envs, dtype=bool)  # the next step begins an episode
        self._resetting = np.zeros(num_envs, dtype=bool)  # the next step is a next-step autoreset
        # Time-major history of the last steps, allocated once the first observation and action shapes are known.
        self._past: dict[str, np.ndarray] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        reset_mask = (options or {}).get("reset_mask")
        if reset_mask is None or self._obs is None:
            self._starts[:] = True
            self._resetting[:] = False
            self._past = {}
        else:
            self._starts |= reset_mask
            self._resetting &= ~reset_mask
        self._obs = np.asarray(obs)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        self._remember(self._obs, np.asarray(actions))
        rewards = self.learned_reward(
            self._past["obs"],
            self._past["actions"],
            absorbed=self._past["absorbed"],
            episode_starts=self._past["starts"],
            context_steps=self._history - 1,
        )[0]
        rewards[self._resetting] = 0.0
        obs, true_rewards, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        if self.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP:
            self._starts, self._resetting = self._resetting, done
        elif self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
            self._starts = done
        else:  # disabled: the caller resets finished sub-envs through reset(options={"reset_mask": ...})
            self._starts = np.zeros_like(done)
        self._obs = np.asarray(obs)
        info = {**info, "true_reward": np.asarray(true_rewards)}
        return obs, rewards, terminated, truncated, info

    def _remember(self, obs: np.ndarray, actions: np.ndarray) -> None:
        """Append this step to the history (oldest row dropped); the row being reset reads as absorbing."""
        row = {"obs": obs, "actions": actions, "absorbed": self._resetting, "starts": self._starts}
        if not self._past:
            # Rows before the first step are placeholders; each starts an episode, so none is ever read as context.
            self._past = {name: np.zeros((self._history, *value.shape), value.dtype) for name, value in row.items()}
            self._past["starts"][:] = True
        for name, value in row.items():
            self._past[name] = np.concatenate([self._past[name][1:], value[None]])
