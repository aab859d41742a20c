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


def state_entropy_rewards(
    observations: np.ndarray,
    k: int = 5,
    mask: np.ndarray | None = None,
    max_reference: int = 4096,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(N, L)`` standardized ``log(1 + d_k)`` of each real step's observation; 0 on padded steps.

    Args:
        observations: ``(N, L, D)`` observations of ``N`` segments of ``L`` steps.
        k: the neighbour whose distance is read (PEBBLE uses 5).
        mask: ``(N, L)`` True for real steps (default all); padded (absorbing) steps are neither scored nor
            neighbours.
        max_reference: neighbours are searched among at most this many real steps (a random subset), and
            distances computed in chunks, so memory stays bounded however many segments the pool holds.
        rng: picks the reference subset (default: seed 0).
    """
    check(observations.ndim == 3, f"observations must be (N, L, D), got {observations.shape}")
    real = np.ones(observations.shape[:2], dtype=bool) if mask is None else mask.astype(bool)
    flat = torch.from_numpy(observations[real].reshape(-1, observations.shape[-1]).astype(np.float32))
    check(len(flat) > k, f"need more than k={k} steps for a k-nearest-neighbour estimate, got {len(flat)}")
    reference = flat
    if len(flat) > max_reference:
        pick = (rng or np.random.default_rng(0)).choice(len(flat), size=max_reference, replace=False)
        reference = flat[torch.from_numpy(pick)]
    kth = torch.cat(
        [
            torch.cdist(chunk, reference).kthvalue(k + 1, dim=1).values  # +1: a point may be its own neighbour
            for chunk in torch.split(flat, 1024)
        ]
    )
    reward = torch.log1p(kth).numpy().astype(np.float64)
    reward = (reward - reward.mean()) / (reward.std() + 1e-8)
    out = np.zeros(observations.shape[:2], dtype=np.float32)
    out[real] = reward
    return out


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
