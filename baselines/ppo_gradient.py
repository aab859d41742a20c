"""PPO's fast path on the CPU: the gradient of ``baselines.ppo.ppo_loss`` written by hand in NumPy.

At classic-control sizes (64x64 MLPs, minibatches of 64-256) a PPO step costs far more in framework overhead
than in arithmetic; NumPy on views of the flat parameter buffer (``baselines.common.flat_mlp``) with a
hand-derived backward is several times faster than autograd. It is an optimisation of ``ppo_loss``, not a second
statement of it: ``tests/ppo/test_ppo_gradients.py`` checks it against autograd's gradient of that loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from baselines.ppo_config import PPOConfig
from baselines.trust import TrustTerm

if TYPE_CHECKING:
    from baselines.ppo import ActorCritic


def minibatch_gradients(
    agent: ActorCritic, cfg: PPOConfig, trust: TrustTerm, minibatch: Sequence[np.ndarray], normalized: bool = False
) -> np.ndarray:
    """Write d(ppo_loss)/d(params) of one minibatch into ``agent.params.grad`` (parameters on the CPU).

    Arguments and returned stats as ``ppo_loss``'s, in NumPy; the trust term's loss through its NumPy derivative.
    """
    assert agent.on_cpu, "the NumPy gradient needs the parameters on the CPU"
    obs, actions, logp_old, advantages, returns, values_old = minibatch
    size = obs.shape[0]
    if cfg.normalize_advantage and size > 1 and not normalized:
        advantages = normalize_advantages(advantages)
    out = agent.policy_out(agent.actor.forward(obs))
    logp, entropy, dlogp_dout, dentropy_dout = log_prob(out, actions, agent.cpu_log_std, with_grads=True)
    log_ratio = logp - logp_old
    ratio = np.exp(log_ratio)
    policy_loss, grad_ratio = trust.numpy(ratio, advantages)
    # d(loss)/d(out): the surrogate through the log-prob, minus the entropy bonus.
    grad_logp = grad_ratio * ratio
    grad_out = grad_logp[:, None] * dlogp_dout
    if cfg.ent_coef != 0.0:
        grad_out -= (cfg.ent_coef / size) * dentropy_dout
    if agent.cpu_log_std is not None:  # d logp / d log_std = z^2 - 1 per dim; d H / d log_std = 1
        z2 = ((actions - out) / np.exp(agent.cpu_log_std)) ** 2
        agent.params.extra_grad["log_std"].numpy()[:] = (grad_logp[:, None] * (z2 - 1.0)).sum(0) - cfg.ent_coef
    if agent.aux_outputs:  # the policy loss does not reach the auxiliary value head
        grad_out = np.concatenate([grad_out, np.zeros((size, agent.aux_outputs), grad_out.dtype)], axis=1)
    agent.actor.backward(grad_out)

    new_values = agent.critic.forward(obs)[:, 0]
    if cfg.clip_range_vf is not None:  # SB3's value clipping: predictions held within old +- clip
        delta = new_values - values_old
        predicted = values_old + _clip(delta, -cfg.clip_range_vf, cfg.clip_range_vf)
        value_error = (predicted - returns) * (np.abs(delta) <= cfg.clip_range_vf)
    else:
        predicted, value_error = new_values, new_values - returns
    residual = predicted - returns
    agent.critic.backward((cfg.vf_coef * 2.0 / size) * value_error[:, None])
    approx_kl = _mean((ratio - 1.0) - log_ratio)
    clip_fraction = _mean((np.abs(ratio - 1.0) > trust.epsilon).astype(np.float32))
    return np.array([policy_loss, _mean(residual * residual), _mean(entropy), approx_kl, clip_fraction])


def log_prob(
    out: np.ndarray, actions: np.ndarray, log_std: np.ndarray | None, with_grads: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log-probs and entropies ``(batch,)`` of categorical logits (``log_std`` None) or Gaussian means ``out``
    and, when ``with_grads``, their derivatives w.r.t. ``out``."""
    if log_std is None:
        log_probs = _log_softmax(out)
        logp = log_probs[np.arange(out.shape[0]), actions.astype(np.intp, copy=False)]
        probs = np.exp(log_probs)
        entropy = -_row_sum(probs * log_probs)
        if not with_grads:
            return logp, entropy, out, out
        # d logp / d logits = onehot - p ; d H / d logits_j = -p_j (log p_j + H)
        one_hot = (actions[:, None] == np.arange(out.shape[1])).astype(out.dtype)
        return logp, entropy, one_hot - probs, -probs * (log_probs + entropy[:, None])
    dims = out.shape[1]
    z = (actions - out) / np.exp(log_std)
    logp = -0.5 * _row_sum(z * z) - log_std.sum() - 0.5 * dims * math.log(2 * math.pi)
    entropy = np.full_like(logp, log_std.sum() + 0.5 * dims * (1.0 + math.log(2 * math.pi)))
    if not with_grads:
        return logp, entropy, out, out
    return logp, entropy, z / np.exp(log_std), np.zeros_like(out)


def normalize_advantages(advantages: np.ndarray) -> np.ndarray:
    """Zero mean, unit sample standard deviation (n - 1, as torch's std), as SB3 per minibatch."""
    centered = advantages - _mean(advantages)
    return centered / (np.sqrt((centered @ centered) / (advantages.shape[0] - 1)) + 1e-8)


# At these array sizes the per-call overhead dominates: each kernel below is the cheapest form measured.
def _row_sum(x: np.ndarray) -> np.ndarray:
    return x @ np.ones(x.shape[1], dtype=x.dtype)  # a matrix-vector product: several times faster than sum(1)


def _mean(x: np.ndarray) -> Any:
    return x.sum() * (1.0 / x.shape[0])  # mean() costs several times sum()


def _clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.minimum(np.maximum(x, low), high)  # np.clip costs more per call


def _log_softmax(x: np.ndarray) -> np.ndarray:
    row_max = x[:, 0].copy()  # column by column: faster than max(1) for a few actions
    for column in range(1, x.shape[1]):
        np.maximum(row_max, x[:, column], out=row_max)
    z = x - row_max[:, None]
    return z - np.log(_row_sum(np.exp(z)))[:, None]
