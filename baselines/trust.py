"""Trust terms: what keeps a policy update near the policy that collected the data, as a loss on the ratio.

Each term is a loss on ``r = pi(a|s) / pi_old(a|s)`` and the advantages ``A`` of a minibatch, written twice: in
torch (the statement autograd differentiates, ``baselines.ppo.ppo_loss``) and in NumPy with its derivative w.r.t.
``r`` (the CPU fast path, ``baselines.ppo_gradient``; a test holds the two equal). GPTO's fourth term, the hard trust
region, is the clip here plus a KL bound its update enforces by backtracking (``baselines/gpto.py``): the plain
surrogate ``-mean(r A)`` under the bound alone, TRPO's objective without its natural gradient, stayed near a random
policy's return on Pendulum (docs/gpto.md).

- ``Clip`` (PPO, Schulman et al. 2017 eq. 7): ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))``.
- ``KLPenalty`` (PPO eq. 8): ``-mean(r A) + beta mean(r - 1 - log r)``; the second mean is the k3 estimate of
  ``KL(pi_old || pi)`` from the old policy's actions. ``beta`` adapts between updates (``adapt_kl_coef``).
- ``SPO`` (Simple Policy Optimization, Xie et al., ICML 2025, https://arxiv.org/abs/2401.16025 eq. 13):
  ``-mean(r A - |A| / (2 eps) (r - 1)^2)``, whose optimum in ``r`` lies on the trust boundary ``1 +- eps`` and whose
  gradient pulls ``r`` back past it instead of vanishing as the clip's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

TrustName = Literal["clip", "kl", "spo", "trust-region"]
TRUST_TERMS: tuple[TrustName, ...] = ("clip", "kl", "spo", "trust-region")


class TrustTerm(Protocol):
    @property
    def epsilon(self) -> float:
        """The ratio deviation the term is built around; the ``clipfrac`` statistic counts ``|r - 1| > epsilon``."""
        ...

    def numpy(self, ratio: np.ndarray, advantages: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss and its derivative w.r.t. each ``ratio`` (already divided by the batch size)."""
        ...

    def torch(self, ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        """The loss, differentiable."""
        ...


@dataclass(frozen=True)
class Clip:
    epsilon: float

    def numpy(self, ratio: np.ndarray, advantages: np.ndarray) -> tuple[float, np.ndarray]:
        unclipped = ratio * advantages
        clipped = np.minimum(np.maximum(ratio, 1.0 - self.epsilon), 1.0 + self.epsilon) * advantages
        loss = -float(np.minimum(unclipped, clipped).sum()) / ratio.shape[0]
        return loss, -(advantages * (unclipped <= clipped)) / ratio.shape[0]  # flows where unclipped is the min

    def torch(self, ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        clipped = ratio.clamp(1.0 - self.epsilon, 1.0 + self.epsilon)
        return -torch.minimum(ratio * advantages, clipped * advantages).mean()


@dataclass(frozen=True)
class KLPenalty:
    beta: float
    epsilon: float

    def numpy(self, ratio: np.ndarray, advantages: np.ndarray) -> tuple[float, np.ndarray]:
        size = ratio.shape[0]
        loss = float((-(ratio * advantages) + self.beta * (ratio - 1.0 - np.log(ratio))).sum()) / size
        return loss, (-advantages + self.beta * (1.0 - 1.0 / ratio)) / size

    def torch(self, ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        return (-(ratio * advantages) + self.beta * (ratio - 1.0 - ratio.log())).mean()


@dataclass(frozen=True)
class SPO:
    epsilon: float

    def numpy(self, ratio: np.ndarray, advantages: np.ndarray) -> tuple[float, np.ndarray]:
        size, scale = ratio.shape[0], np.abs(advantages) / (2.0 * self.epsilon)
        loss = -float((ratio * advantages - scale * (ratio - 1.0) ** 2).sum()) / size
        return loss, -(advantages - 2.0 * scale * (ratio - 1.0)) / size

    def torch(self, ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        return -(ratio * advantages - advantages.abs() / (2.0 * self.epsilon) * (ratio - 1.0) ** 2).mean()


def trust_term(name: TrustName, epsilon: float, kl_coef: float) -> TrustTerm:
    """The term called ``name`` (``epsilon``: the clip range or SPO's; ``kl_coef``: the KL penalty's beta)."""
    if name == "kl":
        return KLPenalty(kl_coef, epsilon)
    if name == "spo":  # a linear clip schedule ends at 0, where SPO's 1/eps is not a number: keep the policy instead
        return SPO(max(epsilon, 1e-6))
    return Clip(epsilon)  # clip, and trust-region: the clip under the bound its update enforces


def adapt_kl_coef(beta: float, kl: float, kl_target: float) -> float:
    """PPO's adaptive penalty (Schulman et al. 2017, section 4): halve ``beta`` when the update's KL fell below
    ``target / 1.5``, double it above ``target * 1.5``; held within [1e-4, 100] so it can always come back."""
    if kl < kl_target / 1.5:
        beta /= 2.0
    elif kl > kl_target * 1.5:
        beta *= 2.0
    return float(min(max(beta, 1e-4), 100.0))
