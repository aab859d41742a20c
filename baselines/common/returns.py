"""Generalized advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438), vectorized over envs."""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns for a rollout of ``T`` steps from ``N`` envs (all arrays ``(T, N)``).

    Args:
        rewards: ``r_t``, the reward of the transition taken at step t.
        values: ``V(s_t)``.
        next_values: ``V(s_{t+1})`` of the transition's own next state: for a truncated step, the value of the
            final observation (we bootstrap through a time limit); for a terminated step it is ignored.
        terminated: the episode ended in a terminal state at step t (no bootstrap).
        truncated: the episode was cut at step t (bootstrap from ``next_values``, but do not carry the advantage
            of the next episode back across the boundary).

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values`` (the value targets).
        ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
        ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``, ``done = terminated | truncated``.
    """
    assert rewards.shape == values.shape == next_values.shape == terminated.shape == truncated.shape
    not_terminal = 1.0 - terminated.astype(values.dtype)
    carry = gamma * gae_lambda * (1.0 - (terminated | truncated).astype(values.dtype))
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = discounted_sums(deltas, carry)
    return advantages, advantages + values


def vtrace(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    gae_lambda: float,
    log_rhos: np.ndarray,
    rho_bar: float,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace (Espeholt et al. 2018, https://arxiv.org/abs/1802.01561 eq. 1) with lambda, for data an earlier
    policy ``mu`` collected: advantages and value targets like ``gae``'s (all arrays ``(T, N)``).

    ``log_rhos``: ``log pi(a_t|s_t) - log mu(a_t|s_t)``; ``rho_t = min(rho_bar, pi/mu)``, ``c_t = lambda rho_t``.
    With ``delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)`` the targets are ``v_t = V(s_t) + D_t``,
    ``D_t = rho_t delta_t + gamma c_t (1 - done_t) D_{t+1}``. The advantage of the action taken is
    ``A_t = delta_t + gamma lambda (1 - done_t) D_{t+1}``: corrected for ``mu`` after t, not weighted at t (the
    caller weights each sample by ``rho_t`` once, in the policy loss). On-policy (``log_rhos`` 0, ``rho_bar >= 1``)
    both are ``gae``'s exactly. Returns ``(advantages, returns)``.
    """
    assert rewards.shape == values.shape == next_values.shape == terminated.shape == log_rhos.shape
    rhos = np.minimum(np.exp(log_rhos), rho_bar).astype(values.dtype)
    not_terminal = 1.0 - terminated.astype(values.dtype)
    continues = gamma * gae_lambda * (1.0 - (terminated | truncated).astype(values.dtype))
    deltas = rewards + gamma * not_terminal * next_values - values
    corrections = discounted_sums(rhos * deltas, continues * rhos)  # D_t = v_t - V(s_t)
    following = np.zeros_like(corrections)
    following[:-1] = corrections[1:]  # D_{t+1}; 0 after the rollout's last step, as in the recursion
    return deltas + continues * following, values + corrections


def discounted_sums(deltas: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """``A_t = delta_t + carry_t A_{t+1}`` backwards over time (axis 0), ``A_T = 0``."""
    sums = np.zeros_like(deltas)
    last = np.zeros(deltas.shape[1:], dtype=deltas.dtype)
    for t in range(len(deltas) - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        sums[t] = last
    return sums
