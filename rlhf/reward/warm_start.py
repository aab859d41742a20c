"""Warm start of the reward ensemble before its first labels (RIME, Cheng et al. 2024, section 4.2).

RIME regresses every ensemble member onto an intrinsic reward, the state-entropy estimate of PEBBLE (Lee et al.
2021, https://arxiv.org/abs/2106.05091): a step's reward is ``log(1 + d_k)`` with ``d_k`` the distance from its
observation to the k-th nearest observation among the steps seen so far, standardized. Without it, the first
round of preference training starts from random weights, so RIME's first selections (and the first queries chosen
by ensemble disagreement) read an arbitrary model; with it the model starts from "novel states are worth more", a
reward that is at least smooth in the observation and that the first labels then reshape.
"""

from __future__ import annotations

import numpy as np
import torch

from baselines.common.errors import check
from rlhf.reward.models import RewardModel


def state_entropy_rewards(observations: np.ndarray, k: int = 5) -> np.ndarray:
    """``(N, L)`` standardized ``log(1 + d_k)`` of each step's observation among all ``N * L`` of them.

    Args:
        observations: ``(N, L, D)`` observations of ``N`` segments of ``L`` steps.
        k: the neighbour whose distance is read (PEBBLE uses 5).
    """
    check(observations.ndim == 3, f"observations must be (N, L, D), got {observations.shape}")
    flat = torch.from_numpy(observations.reshape(-1, observations.shape[-1]).astype(np.float32))
    check(len(flat) > k, f"need more than k={k} steps for a k-nearest-neighbour estimate, got {len(flat)}")
    distances = torch.cdist(flat, flat)
    kth = distances.kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest neighbour
    reward = torch.log1p(kth).numpy().astype(np.float64)
    reward = (reward - reward.mean()) / (reward.std() + 1e-8)
    return reward.reshape(observations.shape[:2]).astype(np.float32)


def warm_start(
    model: RewardModel,
    features: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
) -> float:
    """Regress each member's step rewards onto ``targets`` by MSE; returns the last epoch's mean loss.

    Args:
        model: the reward model (trained in place).
        features: ``(N, L, F)`` step features of the segments.
        targets: ``(N, L)`` target step rewards (e.g. :func:`state_entropy_rewards`).
        rng: shuffling.
    """
    check(features.shape[:2] == targets.shape, f"features {features.shape} and targets {targets.shape} differ")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    x = torch.from_numpy(features).to(device, dtype)
    y = torch.from_numpy(targets).to(device, dtype)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss_sum, batches = 0.0, 0
    for _ in range(epochs):
        loss_sum, batches = 0.0, 0
        order = torch.as_tensor(rng.permutation(len(x)), device=device)
        for start in range(0, len(x), batch_size):
            mb = order[start : start + batch_size]
            predicted = model.member_step_rewards(x[mb])  # (E, B, L)
            loss = ((predicted - y[mb]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            loss_sum, batches = loss_sum + float(loss.detach()), batches + 1
    model.eval()
    return loss_sum / max(batches, 1)
