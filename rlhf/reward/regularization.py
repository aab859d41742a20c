"""Christiano et al.'s regularisation of the reward model (2017, https://arxiv.org/abs/1706.03741, 2.2.3):
an L2 penalty whose coefficient is adjusted "to keep the validation loss between 1.1 and 1.5 times the training
loss".

After every epoch the trainer reports the training and held-out losses; when ``val / train`` is above ``high``
the model fits its labels better than it generalizes (with a noisy teacher: it is learning the flipped answers),
so the coefficient grows by ``step``; below ``low`` it is held too tight and shrinks by ``step``. The penalty is
``coefficient * sum(w ** 2)`` over the weight matrices of each ensemble member (not biases), added to the
member's preference loss. The coefficient carries over between rounds and is saved with the loop's checkpoint
(:meth:`AdaptiveL2.state_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from baselines.common.errors import check


@dataclass
class AdaptiveL2:
    """An L2 coefficient kept where ``low <= val_loss / train_loss <= high`` (see the module docstring)."""

    coefficient: float = 1e-3
    """The current coefficient (its starting value, then wherever the band moved it)."""
    low: float = 1.1
    """Below this ratio of held-out to training loss the coefficient shrinks."""
    high: float = 1.5
    """Above this ratio it grows."""
    step: float = 1.5
    """Factor of one adjustment (one per epoch)."""
    min_coefficient: float = 1e-7
    max_coefficient: float = 10.0

    def __post_init__(self) -> None:
        check(1.0 <= self.low < self.high < math.inf, f"need 1 <= low < high, got low {self.low}, high {self.high}")
        check(self.step > 1.0 and math.isfinite(self.step), f"step must be a finite factor > 1, got {self.step}")
        check(
            0 < self.min_coefficient <= self.coefficient <= self.max_coefficient < math.inf,
            f"coefficient {self.coefficient} must lie in [{self.min_coefficient}, {self.max_coefficient}]",
        )

    def penalty(self, model: nn.Module) -> Tensor:
        """``coefficient * sum(w ** 2)`` over the trainable weight matrices (biases and gains are not penalized)."""
        weights = [p for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "bias" not in name]
        total = torch.stack([w.square().sum() for w in weights]).sum()
        return self.coefficient * total

    def update(self, train_loss: float, val_loss: float) -> float:
        """Move the coefficient one step toward the band after an epoch; returns the new coefficient.

        Losses that are not finite and positive (no held-out labels, a perfectly fit training set) leave it as is.
        """
        if not (math.isfinite(train_loss) and math.isfinite(val_loss) and train_loss > 0):
            return self.coefficient
        ratio = val_loss / train_loss
        if ratio > self.high:
            self.coefficient = min(self.coefficient * self.step, self.max_coefficient)
        elif ratio < self.low:
            self.coefficient = max(self.coefficient / self.step, self.min_coefficient)
        return self.coefficient

    def state_dict(self) -> dict[str, float]:
        return {"coefficient": self.coefficient}

    def load_state_dict(self, state: dict[str, float]) -> None:
        coefficient = float(state["coefficient"])
        check(
            self.min_coefficient <= coefficient <= self.max_coefficient,
            f"saved L2 coefficient {coefficient} is outside [{self.min_coefficient}, {self.max_coefficient}]",
        )
        self.coefficient = coefficient
