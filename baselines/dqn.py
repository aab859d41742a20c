"""Deep Q-Networks (Mnih et al. 2015, https://www.nature.com/articles/nature14236), top to bottom.

Optional: Double DQN targets (van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461), a dueling head (Wang et
al. 2016, https://arxiv.org/abs/1511.06581), prioritized replay (Schaul et al. 2016,
https://arxiv.org/abs/1511.05952) and n-step returns (Sutton & Barto 2018, ch. 7). With all four off this is SB3's
DQN: Huber loss, Adam, gradient-norm clipping, linear epsilon, ``train_freq`` env steps between bursts of
``gradient_steps`` updates, a target network updated every ``target_update_interval`` env steps (copy, or Polyak
with ``tau < 1``), and random actions before ``learning_starts``. The config and per-env defaults are in
``baselines/dqn_config.py``.

The loss is ``dqn_loss``; on another device than the CPU (``--device cuda``) autograd differentiates it. On the
CPU a fast path, tested against that autograd, runs a burst's gradient steps as one TorchScript loop over flat_mlp's
torch backend (``loss_gradient``, hand-written backward, fused clipped Adam on one flat buffer) with the target
values of the whole burst from one batched forward. benchmarks/dqn_speed.py measures it against SB3.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from baselines.common import flat_mlp
from baselines.common.checkpoint import load_checkpoint, save_checkpoint
from baselines.common.envs import make_vec_env
from baselines.common.errors import ConfigError, check
from baselines.common.evaluation import evaluate_policy
from baselines.common.flat_mlp import MLP, FlatAdam, FlatParameters, MLPSpec
from baselines.common.progress import progress_bar
from baselines.common.replay import Batch, PrioritizedSampler, ReplayBuffer
from baselines.common.report import Report
from baselines.common.runs import MetricsLogger, RunFolder, next_due, to_jsonable
from baselines.dqn_config import DQNConfig as DQNConfig  # re-exported: the CLI, tuner, benchmarks and tests use it

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------------- the loss
def td_targets(next_q_target: Tensor, next_q_online: Tensor | None, returns: Tensor, discounts: Tensor) -> Tensor:
    """``returns + discounts * Q_target(s', a*)`` with ``a* = argmax_a Q_target(s', a)`` (DQN) or, given
    ``next_q_online``, ``a* = argmax_a Q_online(s', a)`` (Double DQN). Q inputs ``(..., n_actions)``."""
    if next_q_online is None:
        next_values = next_q_target.amax(dim=-1)
    else:
        next_values = next_q_target.gather(-1, next_q_online.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return returns + discounts * next_values


def dqn_loss(
    q_online: Callable[[Tensor], Tensor], obs: Tensor, actions: Tensor, weights: Tensor, returns: Tensor,
    discounts: Tensor, next_obs: Tensor, next_q_target: Tensor, double_dqn: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The loss of one gradient step: ``mean_i w_i * smooth_l1(Q(s_i, a_i) - y_i)`` (Huber, beta 1, as SB3) with
    the n-step TD target ``y_i = returns_i + discounts_i * Q_target(s'_i, a*)`` held constant.

    Args:
        q_online: the online network, ``(batch, obs_dim) -> (batch, n_actions)``.
        obs: ``s_i``, ``(batch, obs_dim)``.
        actions: ``a_i``, ``(batch,)`` int64.
        weights: importance weights ``w_i`` of prioritized replay (ones without), ``(batch,)``.
        returns: n-step reward sums, ``(batch,)``.
        discounts: ``gamma**n`` (0 past a termination), ``(batch,)``.
        next_obs: ``s'_i``, n steps later, ``(batch, obs_dim)``.
        next_q_target: the target network's ``Q(s'_i, .)``, ``(batch, n_actions)``.
        double_dqn: pick ``a*`` with the online network (Double DQN) instead of the target network.

    Returns:
        The loss, the TD errors ``Q(s_i, a_i) - y_i`` and ``Q(s_i, a_i)`` (the last two detached).
    """
    with torch.no_grad():
        targets = td_targets(next_q_target, q_online(next_obs) if double_dqn else None, returns, discounts)
    q_taken = q_online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = (weights * torch.nn.functional.smooth_l1_loss(q_taken, targets, reduction="none")).mean()
    return loss, (q_taken - targets).detach(), q_taken.detach()


def loss_gradient(td_errors: Tensor, scaled_onehot: Tensor) -> Tensor:
    """``dqn_loss``'s gradient with respect to ``Q(s_i, .)``, written out for the fast path: the Huber derivative
    ``clamp(td, -1, 1)`` in the taken action's column, times ``scaled_onehot = w_i * onehot(a_i) / batch``."""
    return scaled_onehot * td_errors.clamp(-1.0, 1.0).unsqueeze(1)


# ------------------------------------------------------------------------------------------------- the network
class QNetwork:
    """Q(s, .) from an MLP with ReLU hidden layers (as SB3's QNetwork) in flat_mlp's flat buffer, and its target
    copy: a second buffer of the same layout.

    With ``dueling`` the last layer outputs ``[V(s), A(s, .)]`` and ``Q = V + A - mean(A)`` (Wang et al. 2016,
    eq. 9) through the fixed matrix ``head``; the hidden layers are shared.
    """

    def __init__(self, obs_dim: int, n_actions: int, cfg: DQNConfig, generator: torch.Generator) -> None:
        spec = MLPSpec((obs_dim, *cfg.hidden_sizes, n_actions + bool(cfg.dueling)), "relu")
        self.params = FlatParameters([spec], generator, cfg.device)
        self.online = self.params.mlps[0]
        self.target_data = self.params.data.clone()
        self.target = self.params.bind_copy(self.target_data)[0]
        self.n_actions = n_actions
        self.device = torch.device(cfg.device)
        head = torch.cat([torch.ones(1, n_actions), torch.eye(n_actions) - 1.0 / n_actions])  # [V, A] -> Q
        self.head = head.to(cfg.device) if cfg.dueling else None
        self._numpy_head = self.head.numpy() if self.head is not None and self.online.on_cpu else None

    def q_values(self, obs: Tensor, mlp: MLP | None = None) -> Tensor:
        """``(batch, n_actions)`` from the online network, or from ``mlp``: the target, or a differentiable copy."""
        out = (mlp or self.online).forward(obs, cache=False)
        return out if self.head is None else out @ self.head

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """``argmax_a Q(obs, a)`` for observations ``(batch, ...)``. One row on the CPU (one env acting) goes through
        NumPy, ~15 us less than torch; batches through torch (NumPy's BLAS runs products of 4+ rows on extra threads,
        which stall for ~0.4 ms a call when another process holds the other core)."""
        if self.online.on_cpu and len(obs) == 1:
            out = self.online.forward(obs.reshape(1, -1).astype(np.float32, copy=False), cache=False)
            return (out if self._numpy_head is None else out @ self._numpy_head).argmax(axis=1)
        obs_t = torch.from_numpy(obs.reshape(len(obs), -1)).to(self.device, torch.float32)
        return self.q_values(obs_t).argmax(dim=1).cpu().numpy()

    def update_target(self, weight: float) -> None:
        """``target <- target + weight * (online - target)``; weight 1 copies."""
        if weight >= 1.0:
            self.target_data.copy_(self.params.data)
        elif weight > 0.0:
            self.target_data.lerp_(self.params.data, weight)


# ------------------------------------------------------------------------------------------------- the update
class Burst(NamedTuple):
    """The replayed batches of a burst's gradient steps, ``(steps, batch, ...)``: row ``j`` is step ``j``'s."""

    obs: Tensor
    actions: Tensor  # (steps, batch, 1): a column per step, as gather takes it
    weights: Tensor
    returns: Tensor
    discounts: Tensor
    next_obs: Tensor
    next_q_target: Tensor  # the target network's Q(s', .)


@torch.jit.script
def gradient_steps(
    burst: Burst, scaled_onehot: Tensor, targets: Tensor | None, weights: list[Tensor], biases: list[Tensor],
    weight_grads: list[Tensor], bias_grads: list[Tensor], head: Tensor | None, adam_state: list[list[Tensor]],
    adam_hyper: tuple[float, float, float, float, float], td_log: Tensor, q_log: Tensor,
) -> None:  # fmt: skip
    """The fast path: for each step ``j``, the gradient of ``dqn_loss`` on batch ``j`` (forward, ``loss_gradient``,
    backward) and a clipped Adam step: flat_mlp's torch backend compiled into one loop. TD targets are ``targets[j]``
    or, for Double DQN (``targets`` None), made with this step's online network; ``scaled_onehot[j]`` is
    ``w * onehot(a) / batch``; ``adam_hyper`` is (lr, beta1, beta2, eps, max_grad_norm). Step ``j``'s TD errors and
    Q(s, a) go to ``td_log[j]`` and ``q_log[j]``."""
    lr, beta1, beta2, eps, max_grad_norm = adam_hyper
    for j in range(burst.obs.shape[0]):
        if targets is None:
            next_out, _ = flat_mlp.forward_torch(burst.next_obs[j], weights, biases, True)
            next_q_online = next_out if head is None else next_out @ head
            step_targets = td_targets(burst.next_q_target[j], next_q_online, burst.returns[j], burst.discounts[j])
        else:
            step_targets = targets[j]
        out, activations = flat_mlp.forward_torch(burst.obs[j], weights, biases, True)
        q_taken = (out if head is None else out @ head).gather(1, burst.actions[j]).squeeze(1)
        td_errors = q_taken - step_targets
        td_log[j] = td_errors
        q_log[j] = q_taken
        grad_q = loss_gradient(td_errors, scaled_onehot[j])
        grad_out = grad_q if head is None else grad_q @ head.t()
        flat_mlp.backward_torch_(grad_out, activations, weights, weight_grads, bias_grads, True)
        flat_mlp.clipped_adam_(adam_state, lr, beta1, beta2, eps, max_grad_norm)


def autograd_steps(state: DQNState, burst: Burst, td_log: Tensor, q_log: Tensor) -> None:
    """What ``gradient_steps`` computes, by autograd of ``dqn_loss`` (then the same clipped Adam step)."""
    q, cfg = state.q, state.config
    for j in range(len(burst.obs)):
        flat = q.params.data.detach().requires_grad_()
        q_online = functools.partial(q.q_values, mlp=q.params.bind_copy(flat)[0])
        loss, td_log[j], q_log[j] = dqn_loss(
            q_online, burst.obs[j], burst.actions[j, :, 0], burst.weights[j], burst.returns[j], burst.discounts[j],
            burst.next_obs[j], burst.next_q_target[j], cfg.double_dqn,
        )  # fmt: skip
        q.params.grad.copy_(torch.autograd.grad(loss, flat)[0])
        state.optimizer.clipped_step(cfg.max_grad_norm)


def q_learning_burst(
    state: DQNState, n_updates: int, beta: float, td_log: Tensor, q_log: Tensor, autograd: bool = False
) -> None:
    """``n_updates`` gradient steps on replayed batches (the fast path on the CPU, ``autograd_steps`` when asked or
    on another device); each step's TD errors and Q(s, a) go to the logs.

    The target network only changes between bursts (its updates are counted in env steps, as SB3 does, and applied
    before a burst), so it is constant here. Without prioritized replay (whose draws depend on the previous step's
    priorities) all batches of the burst are drawn at once and their target values come from one batched forward
    over the distinct transitions drawn: the same targets as one forward per step, at a fraction of the overhead.
    """
    q, optimizer, buffer, sampler, cfg = state.q, state.optimizer, state.buffer, state.sampler, state.config
    block = 1 if sampler is not None else n_updates  # gradient steps whose batches are drawn together
    for start in range(0, n_updates, block):
        if sampler is None:
            batch = buffer.gather(buffer.sample_indices(block * cfg.batch_size, state.rng), cfg.n_step, cfg.gamma)
        else:
            indices, weights = sampler.sample(cfg.batch_size, len(buffer), beta, state.rng)
            batch = buffer.gather(indices, cfg.n_step, cfg.gamma, weights)
        burst = _burst(q, batch, block)
        step_td, step_q = td_log[start : start + block], q_log[start : start + block]
        if autograd or q.device.type != "cpu":
            autograd_steps(state, burst, step_td, step_q)
        else:
            scale = burst.weights.unsqueeze(2) * (1.0 / cfg.batch_size)
            scaled_onehot = torch.zeros(*burst.obs.shape[:2], q.n_actions).scatter_(2, burst.actions, scale)
            targets = None if cfg.double_dqn else td_targets(burst.next_q_target, None, burst.returns, burst.discounts)
            gradient_steps(
                burst, scaled_onehot, targets, q.online.weights, q.online.biases, q.online.weight_grads,
                q.online.bias_grads, q.head, optimizer.state,
                (optimizer.lr, optimizer.beta1, optimizer.beta2, optimizer.eps, cfg.max_grad_norm), step_td, step_q,
            )  # fmt: skip
        if sampler is not None:
            sampler.update(batch.indices, td_log[start].cpu().numpy())


def _burst(q: QNetwork, batch: Batch, steps: int) -> Burst:
    """``batch`` on ``q``'s device as ``steps`` batches, with the target network's values of its next observations
    from one forward (in chunks that stay in cache) over the distinct transitions drawn."""
    _, first, inverse = np.unique(batch.indices, return_index=True, return_inverse=True)
    distinct_next_obs = torch.from_numpy(batch.next_obs[first]).to(q.device)
    with torch.no_grad():
        chunks = [q.q_values(distinct_next_obs[i : i + 256], q.target) for i in range(0, len(first), 256)]
        next_q_target = torch.cat(chunks)[torch.from_numpy(inverse).to(q.device)]
    columns = (batch.obs, batch.actions[:, None], batch.weights, batch.returns, batch.discounts, batch.next_obs)
    tensors = [torch.from_numpy(column).to(q.device) for column in columns] + [next_q_target]
    return Burst(*(rearrange(t, "(step batch) ... -> step batch ...", step=steps) for t in tensors))


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


@dataclass
class DQNState:
    """What a checkpoint holds: the networks, optimizer, replay memory, sampler, random generator and counters."""

    config: DQNConfig
    q: QNetwork
    optimizer: FlatAdam  # SB3's DQN optimizer: Adam with torch's defaults, after clipping the gradient norm
    buffer: ReplayBuffer
    sampler: PrioritizedSampler | None
    rng: np.random.Generator
    counters: Counters = dataclasses.field(default_factory=Counters)

    @classmethod
    def create(cls, cfg: DQNConfig, obs_dim: int, n_actions: int) -> DQNState:
        q = QNetwork(obs_dim, n_actions, cfg, torch.Generator().manual_seed(cfg.seed))
        buffer = ReplayBuffer(cfg.buffer_size, (obs_dim,), cfg.num_envs)
        sampler = PrioritizedSampler(buffer.capacity, cfg.per_alpha, cfg.per_eps) if cfg.prioritized else None
        return cls(cfg, q, FlatAdam(q.params, cfg.learning_rate), buffer, sampler, np.random.default_rng(cfg.seed))

    def tensors(self) -> dict[str, Tensor]:
        adam = self.optimizer
        return {"params": self.q.params.data, "target": self.q.target_data, "exp_avg": adam.exp_avg,
                "exp_avg_sq": adam.exp_avg_sq, "adam_step": adam.steps}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "algo": "dqn", "config": to_jsonable(self.config), **{k: t.cpu() for k, t in self.tensors().items()},
            "buffer": self.buffer.state_dict(), "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "rng": self.rng.bit_generator.state, "counters": dataclasses.asdict(self.counters),
        }  # fmt: skip

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        check(checkpoint.get("algo") == "dqn", "the checkpoint was not written by rlhf dqn")
        try:
            for key, tensor in self.tensors().items():
                tensor.copy_(checkpoint[key])
            self.buffer.load_state_dict(checkpoint["buffer"])
            if self.sampler is not None:
                self.sampler.load_state_dict(checkpoint["sampler"])
            self.rng.bit_generator.state = checkpoint["rng"]
            self.counters = Counters(**checkpoint["counters"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"checkpoint does not fit this DQN config ({str(error)[:120]})") from None


def train_dqn(config: DQNConfig, on_eval: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train, evaluate, checkpoint and report into the run folder; return summary.json's content. ``on_eval(env_steps,
    eval_return_mean)`` is called after each periodic evaluation (a tuner raises there to prune). Every user error
    raises ConfigError before anything is written."""
    cfg = config.resolved()
    assert cfg.out is not None
    checkpoint = load_checkpoint(cfg.out / "checkpoint.pt") if cfg.resume is not None else None
    if checkpoint is None:
        RunFolder.check_new(cfg.out)
    torch.set_num_threads(cfg.torch_threads)
    envs = make_vec_env(cfg.env, cfg.num_envs, copy=False)  # observations are copied once, in env_step
    obs_dim = math.prod(envs.single_observation_space.shape or (1,))
    state = DQNState.create(cfg, obs_dim, int(envs.single_action_space.n))  # type: ignore[attr-defined]
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
        check(state.counters.global_step < cfg.total_steps, f"{cfg.out} already ran {state.counters.global_step} steps")
        state.buffer.cut_episodes()  # the envs restart: no n-step return may run on into a new episode
    counters, start_step = state.counters, state.counters.global_step
    folder = RunFolder.create(cfg.out, cfg, resume_step=start_step if checkpoint is not None else None)
    obs = envs.reset(seed=cfg.seed + start_step)[0].reshape(cfg.num_envs, obs_dim).copy()
    with MetricsLogger(folder, cfg, cfg.track) as logger, progress_bar(cfg.total_steps, f"dqn {cfg.env}") as bar:
        recorder = Recorder(state, folder, logger, bar)
        try:
            while counters.global_step < cfg.total_steps:
                progress = counters.global_step / cfg.total_steps
                epsilon = cfg.epsilon(progress)
                obs = env_step(envs, state, obs, epsilon, recorder)
                if counters.vector_steps % cfg.target_update_every == 0:
                    counters.pending_target_updates += 1
                if counters.vector_steps % cfg.train_freq == 0 and counters.global_step > cfg.learning_starts:
                    learn(state, progress, recorder)
                recorder.when_due(epsilon, progress, on_eval)
            if recorder.eval_step != counters.global_step:
                recorder.evaluate()
            bar.update(counters.global_step - bar.n)
        finally:
            envs.close()
    recorder.save_checkpoint()
    summary = {
        "algo": "dqn", "env_id": cfg.env, "seed": cfg.seed, "env_steps": counters.global_step,
        "wall_seconds": counters.wall_seconds, "cpu_seconds": counters.cpu_seconds,
        "steps_per_second": counters.global_step / max(counters.wall_seconds, 1e-9),
        "eval_return_mean": float(recorder.eval_returns.mean()), "eval_return_std": float(recorder.eval_returns.std()),
        "eval_episodes": len(recorder.eval_returns), "gradient_steps": counters.gradient_steps,
        "episodes": counters.episodes, "resumed_from_step": start_step if cfg.resume is not None else None,
    }  # fmt: skip
    folder.write_summary(summary)
    write_report(folder, cfg, summary)
    return summary


# -------------------------------------------------------------------------------------------- acting
def act(state: DQNState, obs: np.ndarray, epsilon: float) -> np.ndarray:
    """Uniformly random actions before ``learning_starts``, then epsilon-greedy ones."""
    cfg, rng, n_actions = state.config, state.rng, state.q.n_actions
    explore = rng.random(cfg.num_envs) < (1.0 if state.counters.global_step < cfg.learning_starts else epsilon)
    if explore.all():
        return rng.integers(n_actions, size=cfg.num_envs)
    actions = state.q.greedy_actions(obs)
    if explore.any():
        actions[explore] = rng.integers(n_actions, size=int(explore.sum()))
    return actions


def env_step(envs: Any, state: DQNState, obs: np.ndarray, epsilon: float, recorder: Recorder) -> np.ndarray:
    """Act, step the envs and store the transitions; the next observations."""
    actions = act(state, obs, epsilon)
    next_obs, rewards, terminated, truncated, infos = envs.step(actions)
    next_obs = next_obs.reshape(len(obs), -1).copy()  # the env reuses its buffer
    state.counters.global_step += len(obs)
    state.counters.vector_steps += 1
    final_obs = next_obs
    ended = recorder.count_episode_steps(rewards, terminated | truncated)
    if len(ended):  # autoreset already began new episodes: a transition's true s' is its final observation
        final_obs = next_obs.copy()
        for i in ended:
            final_obs[i] = np.reshape(infos["final_obs"][i], -1)
    written = state.buffer.add(obs, actions, rewards, final_obs, terminated, truncated)
    if state.sampler is not None:
        state.sampler.add(written)
    return next_obs


# -------------------------------------------------------------------------------------------- learning
def learn(state: DQNState, progress: float, recorder: Recorder) -> None:
    """The pending target updates, then a burst of gradient steps. Target updates are counted in env steps and
    applied lazily, here: m Polyak steps towards an unchanged online network are one of weight 1 - (1 - tau)^m."""
    cfg, counters = state.config, state.counters
    state.q.update_target(1.0 - (1.0 - cfg.tau) ** counters.pending_target_updates)
    counters.pending_target_updates = 0
    state.optimizer.lr = cfg.learning_rate_at(progress)
    q_learning_burst(state, cfg.updates_per_burst, cfg.per_beta(progress), recorder.td_log, recorder.q_log)
    counters.gradient_steps += cfg.updates_per_burst
    recorder.add_burst()


# -------------------------------------------------------------------------------------------- recording
class Recorder:
    """Episodes, training statistics, checkpoints and greedy evaluations on a separate env, each when due."""

    def __init__(self, state: DQNState, folder: RunFolder, logger: MetricsLogger, bar: tqdm[Any]):
        cfg, self.state, self.folder, self.logger, self.bar = state.config, state, folder, logger, bar
        self.episode_returns, self.episode_lengths = np.zeros(cfg.num_envs), np.zeros(cfg.num_envs, dtype=np.int64)
        self.recent_returns: list[float] = []
        # A burst's TD errors and Q(s, a), and their sums over bursts: on the device until a row reads them.
        self.td_log = torch.zeros(cfg.updates_per_burst, cfg.batch_size, device=cfg.device)
        self.q_log = torch.zeros_like(self.td_log)
        self.burst_sums, self.burst_count = torch.zeros(2, device=cfg.device), 0
        self.start_step = start = state.counters.global_step
        self.log_every, self.checkpoint_every = max(cfg.total_steps // 200, 1), cfg.checkpoint_every or cfg.eval_every
        self.next_log, self.next_checkpoint = next_due(start, self.log_every), next_due(start, self.checkpoint_every)
        self.next_eval, self.eval_returns, self.eval_step = next_due(start, cfg.eval_every), np.zeros(0), -1
        self.previous_seconds = (state.counters.wall_seconds, state.counters.cpu_seconds)  # of sessions before
        self.start_time, self.start_cpu = time.perf_counter(), time.process_time()
        bar.update(start)

    def count_episode_steps(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Add one step to each env's episode; log the episodes that ended and return their envs."""
        self.episode_returns += rewards
        self.episode_lengths += 1
        ended = np.flatnonzero(done)
        for i in ended:
            row = {"charts/episodic_return": self.episode_returns[i], "charts/episodic_length": self.episode_lengths[i]}
            self.logger.log(row, step=self.state.counters.global_step)
            self.recent_returns = [*self.recent_returns[-19:], float(self.episode_returns[i])]
            self.state.counters.episodes += 1
        self.episode_returns[ended], self.episode_lengths[ended] = 0.0, 0
        return ended

    def add_burst(self) -> None:
        self.burst_sums[0] += torch.nn.functional.smooth_l1_loss(
            self.td_log, torch.zeros_like(self.td_log), reduction="sum"
        )
        self.burst_sums[1] += self.q_log.sum()
        self.burst_count += self.td_log.numel()

    def when_due(self, epsilon: float, progress: float, on_eval: Callable[[int, float], None] | None) -> None:
        cfg, counters, step = self.state.config, self.state.counters, self.state.counters.global_step
        if step >= self.next_log:
            sps = (step - self.start_step) / max(time.perf_counter() - self.start_time, 1e-9)
            stats = {"charts/epsilon": epsilon, "charts/SPS": sps, "charts/gradient_steps": counters.gradient_steps}
            stats["charts/learning_rate"] = self.state.optimizer.lr
            if cfg.prioritized:
                stats["charts/per_beta"] = cfg.per_beta(progress)
            if self.burst_count:  # the mean unweighted Huber loss and Q(s, a) since the last row
                stats["losses/td_loss"], stats["losses/q_values"] = (
                    x / self.burst_count for x in self.burst_sums.tolist()
                )
                self.burst_sums.zero_()
                self.burst_count = 0
            self.logger.log(stats, step=step)
            self.next_log += self.log_every
            self.bar.update(step - self.bar.n)
            if self.recent_returns:
                self.bar.set_postfix(train_return=f"{np.mean(self.recent_returns):.1f}", refresh=False)
        evaluated = step >= self.next_eval
        if evaluated:  # logged before the checkpoint, so a run killed in between logs it again on resume
            self.evaluate()
            self.next_eval += cfg.eval_every
        if step >= self.next_checkpoint:
            self.save_checkpoint()
            self.next_checkpoint += self.checkpoint_every
        if evaluated and on_eval is not None:
            on_eval(step, float(self.eval_returns.mean()))

    def evaluate(self) -> None:
        cfg, self.eval_step = self.state.config, self.state.counters.global_step
        self.eval_returns = evaluate_policy(self.state.q.greedy_actions, cfg.env, cfg.eval_episodes, cfg.seed)
        stats = {"eval/return_mean": self.eval_returns.mean(), "eval/return_std": self.eval_returns.std()}
        self.logger.log(stats, step=self.eval_step)

    def save_checkpoint(self) -> None:
        self.state.counters.wall_seconds = self.previous_seconds[0] + time.perf_counter() - self.start_time
        self.state.counters.cpu_seconds = self.previous_seconds[1] + time.process_time() - self.start_cpu
        save_checkpoint(self.folder.path / "checkpoint.pt", self.state.state_dict())


# ------------------------------------------------------------------------------------------------- report
def write_report(folder: RunFolder, cfg: DQNConfig, summary: dict[str, Any]) -> None:
    """Learning curves, TD loss, Q values, epsilon and speed from metrics.jsonl, and the config."""
    report = Report(
        f"DQN on {cfg.env}",
        f"seed {cfg.seed}, {summary['env_steps']} env steps in {summary['wall_seconds']:.1f} s "
        f"({summary['steps_per_second']:.0f} steps/s), {summary['gradient_steps']} gradient steps; final greedy "
        f"eval return {summary['eval_return_mean']:.1f} +- {summary['eval_return_std']:.1f} over "
        f"{summary['eval_episodes']} episodes.",
    )
    rows, td_loss = folder.read_metrics(), "TD loss (Huber, mean over each logging window)"
    report.returns_figure(rows, "Episodic return (training episodes; greedy evaluations)")
    panels = [
        (td_loss, ["losses/td_loss"]),
        ("Q(s, a) of replayed transitions (mean)", ["losses/q_values"]),
        ("Epsilon", ["charts/epsilon"]),
        ("Learning rate", ["charts/learning_rate"]),
        ("Steps per second", ["charts/SPS"]),
        ("Importance-weight exponent beta", ["charts/per_beta"]),
    ]
    report.metric_panels(rows, panels, log_y=[td_loss])
    report.heading("Config")
    report.table(["field", "value"], [[k, str(v)] for k, v in dataclasses.asdict(cfg).items()])
    report.write(folder.report_path)
