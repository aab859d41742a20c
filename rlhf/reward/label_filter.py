"""Which labels the reward model trusts: RIME's selection and flipping (Cheng et al., ICML 2024,
https://arxiv.org/abs/2402.17257).

Before each epoch the trainer scores every training label by the cross-entropy ``l`` of the ensemble-mean
preference probability against it. A label is **trusted** when ``l`` is below an adaptive threshold

    tau = -ln(x) + alpha * x + min(beta_t * var, max_uncertainty),

where ``x`` is a running (exponential) maximum of the trusted labels' losses and ``var`` their running variance:
``-ln(x) + alpha x`` is RIME's lower bound on the loss of a corrupted label given that clean labels lose at most
``x``, and the variance term widens the band while the model is still unsure (``beta_t`` falls linearly from
``beta_start`` to ``beta_end`` over ``beta_decay_updates`` epochs, counted across rounds). A strict label that the
model contradicts with probability ``1 - flip_below`` or more (``l > -ln(flip_below)``) is **flipped** for that
epoch. The rest are **dropped** for that epoch (weight 0): they come back as soon as the model agrees more.

Threshold state (``x``, ``var``, the epoch count) carries over between rounds, as in RIME, and is saved with the
loop's checkpoint (:meth:`LabelFilter.state_dict`). Ties are never flipped (they have no opposite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from baselines.common.errors import ConfigError, check


@dataclass(frozen=True)
class LabelFilterConfig:
    """RIME's thresholds (the defaults are the published ones)."""

    alpha: float = 0.5
    """Weight of the running maximum ``x`` in the lower bound ``-ln(x) + alpha x``."""
    beta_start: float = 3.0
    """Weight of the loss variance in the threshold at the first epoch."""
    beta_end: float = 1.0
    """... and after ``beta_decay_updates`` epochs."""
    beta_decay_updates: int = 60
    """Epochs over which the variance weight falls from ``beta_start`` to ``beta_end``."""
    max_uncertainty: float = 3.0
    """Cap of the variance term."""
    flip_below: float = 1e-3
    """Flip a strict label when the model gives it less than this probability."""
    ema: float = 0.1
    """Rate of the running maximum and variance of the trusted losses."""

    def __post_init__(self) -> None:
        check(self.alpha >= 0 and math.isfinite(self.alpha), f"alpha must be finite and >= 0, got {self.alpha}")
        check(
            0 <= self.beta_end <= self.beta_start < math.inf,
            f"need 0 <= beta_end <= beta_start, got {self.beta_end}, {self.beta_start}",
        )
        check(self.beta_decay_updates >= 1, f"beta_decay_updates must be >= 1, got {self.beta_decay_updates}")
        check(0 < self.flip_below < 0.5, f"flip_below must be in (0, 0.5), got {self.flip_below}")
        check(0 < self.ema <= 1, f"ema must be in (0, 1], got {self.ema}")


@dataclass
class Selection:
    """One epoch's verdict on each training label (``(N,)`` bool arrays; trusted and flipped are disjoint)."""

    trusted: np.ndarray
    flipped: np.ndarray
    threshold: float

    @property
    def dropped(self) -> np.ndarray:
        return ~(self.trusted | self.flipped)

    @property
    def used(self) -> np.ndarray:
        return self.trusted | self.flipped


@dataclass
class LabelFilter:
    """RIME's label selection with its running threshold state (see the module docstring)."""

    config: LabelFilterConfig = field(default_factory=LabelFilterConfig)
    loss_max: float = 0.0
    """Running maximum of trusted losses (``x``); 0 before the first epoch, which trusts every label."""
    loss_var: float = 1.0
    """Running variance of trusted losses."""
    updates: int = 0
    """Epochs selected so far (across rounds)."""
    last: Selection | None = field(default=None, repr=False)
    """The latest epoch's verdict (not saved: it is recomputed at the next epoch)."""

    @property
    def beta(self) -> float:
        c = self.config
        fraction = min(1.0, self.updates / c.beta_decay_updates)
        return c.beta_start + (c.beta_end - c.beta_start) * fraction

    def threshold(self) -> float:
        """The loss below which a label is trusted this epoch."""
        x = self.loss_max
        bound = -math.log(x + 1e-8) + self.config.alpha * x
        return bound + min(self.beta * self.loss_var, self.config.max_uncertainty)

    def select(self, losses: np.ndarray, targets: np.ndarray) -> Selection:
        """Judge one epoch's labels from their losses under the current model, then update the running state.

        Args:
            losses: ``(N,)`` cross-entropy of the ensemble-mean preference probability against each label.
            targets: ``(N,)`` 1 (a), 0 (b) or 0.5 (tie).
        """
        if losses.shape != targets.shape or losses.ndim != 1:
            raise ConfigError(f"losses {losses.shape} and targets {targets.shape} must be the same (N,)")
        if not np.isfinite(losses).all():
            raise ConfigError("label losses must be finite")
        threshold = self.threshold()
        trusted = losses < threshold
        flipped = (losses > -math.log(self.config.flip_below)) & (targets != 0.5)
        trusted &= ~flipped
        if len(losses) and not (trusted | flipped).any():
            raise ConfigError(
                f"the label filter's threshold {threshold:.3g} would drop every one of {len(losses)} labels (their "
                f"losses run from {losses.min():.3g} to {losses.max():.3g}); loosen LabelFilterConfig or train "
                "without a filter"
            )
        if trusted.any():
            c = self.config
            self.loss_max += c.ema * (float(losses[trusted].max()) - self.loss_max)
            self.loss_var += c.ema * (float(losses[trusted].var()) - self.loss_var)
        self.updates += 1
        self.last = Selection(trusted=trusted, flipped=flipped, threshold=threshold)
        return self.last

    def state_dict(self) -> dict[str, float]:
        return {"loss_max": self.loss_max, "loss_var": self.loss_var, "updates": float(self.updates)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.loss_max, self.loss_var = float(state["loss_max"]), float(state["loss_var"])
        self.updates = int(state["updates"])
