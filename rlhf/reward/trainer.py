"""Bradley-Terry training of a reward model on labelled segment pairs (Christiano et al. 2017, B-Pref).

The probability that a labeller prefers segment ``a`` to ``b`` is ``P(a > b) = sigmoid(R_a - R_b)``, with ``R`` a
model's segment return; the loss is the cross-entropy against the label: target 1 (``a``), 0 (``b``) or 0.5 (a
tie). Label smoothing mixes targets toward 0.5 (for noisy labellers). Each ensemble member trains on its own
bootstrap resample of the labels, realised as per-member multiplicity weights on one shared batch (the same
gradient in expectation as separate resampled datasets, at the cost of one forward pass for all members).

The loop calls :func:`train_reward_model` every round with all labels so far: training continues from the model's
current weights (a fresh optimizer each call), and the validation split is a fixed function of a label's index, so
a label held out in one round stays held out in the next and validation numbers stay honest under warm starts.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from baselines.common.distributed import SINGLE, World
from baselines.common.errors import ConfigError, check
from rlhf.reward.label_filter import LabelFilter
from rlhf.reward.models import RewardModel
from rlhf.reward.regularization import AdaptiveL2
from rlhf.segments import Segment, segment_features

CHOICE_TARGETS: dict[str, float] = {"a": 1.0, "b": 0.0, "tie": 0.5}
"""Training target of each label choice; ``skip`` labels train nothing and never reach the trainer."""


@dataclass(frozen=True, eq=False)
class PreferenceData:
    """Labelled segment pairs, as the trainer reads them.

    Attributes:
        features_a: ``(N, L, F)`` float32 per-step features of the first segment of each pair.
        features_b: ``(N, L, F)`` float32 features of the second segment.
        targets: ``(N,)`` float32, 1 where ``a`` was preferred, 0 where ``b`` was, 0.5 for a tie.
        weights: ``(N,)`` float32 weight of each label in the loss (its labeler's weight, see
            ``rlhf.labelers``); None: every label weighs 1. Finite, non-negative, and not all zero.
    """

    features_a: np.ndarray
    features_b: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("features_a", "features_b", "targets"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        if self.features_a.ndim != 3 or self.features_a.shape != self.features_b.shape:
            raise ConfigError(
                f"features_a and features_b must both be (N, L, F), got {self.features_a.shape} "
                f"and {self.features_b.shape}"
            )
        if self.targets.shape != (self.features_a.shape[0],):
            raise ConfigError(f"targets must be ({self.features_a.shape[0]},), got {self.targets.shape}")
        if not np.isin(self.targets, (0.0, 0.5, 1.0)).all():
            raise ConfigError("targets must be 1 (a preferred), 0 (b preferred) or 0.5 (tie)")
        if not (np.isfinite(self.features_a).all() and np.isfinite(self.features_b).all()):
            raise ConfigError("segment features contain NaN or infinite values")
        if self.weights is not None:
            weights = np.asarray(self.weights, dtype=np.float32)
            object.__setattr__(self, "weights", weights)
            if weights.shape != self.targets.shape:
                raise ConfigError(f"weights must be ({len(self.targets)},), got {weights.shape}")
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ConfigError("label weights must be finite and non-negative (a labeler weight is NaN?)")
            if len(weights) and not (weights > 0).any():
                raise ConfigError("every label has weight 0: nothing would train the reward model")

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def segment_length(self) -> int:
        return int(self.features_a.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features_a.shape[2])


def preference_data(
    pairs: Sequence[tuple[Segment, Segment, str]],
    action_space: gym.Space[Any],
    weights: Sequence[float] | None = None,
) -> PreferenceData:
    """Training data from labeled segment pairs ``(segment a, segment b, choice)``; skips must be left out.
    ``weights``: one per pair (its labeler's weight), or None for all 1."""
    return PreferenceData(
        features_a=segment_features([a for a, _, _ in pairs], action_space),
        features_b=segment_features([b for _, b, _ in pairs], action_space),
        targets=np.array([CHOICE_TARGETS[choice] for _, _, choice in pairs], dtype=np.float32),
        weights=None if weights is None else np.asarray(weights, dtype=np.float32),
    )


@dataclass(frozen=True)
class RewardTrainerConfig:
    """How one round of reward-model training runs."""

    epochs: int = 30
    """Most passes over the training labels per call (early stopping may end sooner)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-2
    """AdamW decoupled weight decay."""
    batch_size: int = 64
    """Label pairs per gradient step."""
    label_smoothing: float = 0.0
    """Mix targets toward 0.5: ``y (1 - eps) + eps / 2``; 0 keeps them. Helps with noisy labellers."""
    random_answer_rate: float = 0.0
    """Assumed share of answers given at random (Christiano et al. 2017, 2.2.3): the model's preference
    probability is mixed as ``(1 - e) sigmoid(R_a - R_b) + e / 2``, so a label the model confidently contradicts
    stops pulling at full strength (unlike label smoothing). 0 is plain Bradley-Terry."""
    val_fraction: float = 0.1
    """Share of labels held out for validation and early stopping (0: none, train for all epochs)."""
    patience: int = 5
    """Stop after this many epochs without a lower validation loss; the best weights are restored."""
    bootstrap: bool = True
    """Each member of an ensemble (E > 1) trains on its own bootstrap resample of the training labels."""
    split_seed: int = 0
    """Seed of the train/validation split (fixed per label index, so it is stable across rounds)."""
    torch_threads: int | None = 1
    """torch threads while training (restored after); 1 is fastest for these small models. None: leave as is."""

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        check(0 < self.lr < math.inf, f"lr must be a finite positive number, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        check(0.0 <= self.label_smoothing <= 1.0, f"label_smoothing must be in [0, 1], got {self.label_smoothing}")
        rate = self.random_answer_rate
        check(0.0 <= rate < 0.5, f"random_answer_rate must be in [0, 0.5) (0.5: every answer random), got {rate}")
        check(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        check(self.patience >= 1, f"patience must be at least 1, got {self.patience}")
        check(self.torch_threads is None or self.torch_threads >= 1, "torch_threads must be None or at least 1")


def bradley_terry_loss(
    returns_a: Tensor,
    returns_b: Tensor,
    targets: Tensor,
    reduction: Literal["mean", "none"] = "mean",
    random_answer_rate: float = 0.0,
) -> Tensor:
    """Cross-entropy of the Bradley-Terry preference probability ``P(a > b) = sigmoid(R_a - R_b)``.

    ``loss = -[y log P(a > b) + (1 - y) log P(b > a)]``; a tie (``y = 0.5``) is minimised at ``R_a = R_b``. With a
    ``random_answer_rate`` e, ``P(a > b) = (1 - e) sigmoid(R_a - R_b) + e / 2`` (Christiano et al. 2017, 2.2.3):
    a label against a confident model costs at most ``-log(e / 2)`` and its gradient fades instead of growing.

    Args:
        returns_a: ``(...)`` predicted returns of the first segments.
        returns_b: ``(...)`` predicted returns of the second segments (same shape).
        targets: ``(...)`` (or broadcastable) probability that ``a`` is preferred, in ``[0, 1]``.
        reduction: ``mean`` over all elements, or ``none`` for the per-pair losses.
        random_answer_rate: e in ``[0, 0.5)``; 0 is the plain likelihood.
    """
    if returns_a.shape != returns_b.shape:
        raise ValueError(f"returns_a {tuple(returns_a.shape)} and returns_b {tuple(returns_b.shape)} differ")
    logits = returns_a - returns_b
    targets = targets.expand_as(logits).to(logits.dtype)
    if random_answer_rate == 0.0:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    # log((1 - e) sigmoid(x) + e / 2), in log space so that neither term underflows.
    keep, random = math.log1p(-random_answer_rate), math.log(random_answer_rate / 2)
    log_p_a = torch.logaddexp(keep + torch.nn.functional.logsigmoid(logits), torch.full_like(logits, random))
    log_p_b = torch.logaddexp(keep + torch.nn.functional.logsigmoid(-logits), torch.full_like(logits, random))
    losses = -(targets * log_p_a + (1.0 - targets) * log_p_b)
    return losses if reduction == "none" else losses.mean()


def smooth_targets(targets: Tensor, label_smoothing: float) -> Tensor:
    """``targets (1 - eps) + eps / 2``: 1 -> 1 - eps/2, 0 -> eps/2, a tie stays 0.5."""
    return targets * (1.0 - label_smoothing) + 0.5 * label_smoothing


def validation_mask(num_labels: int, val_fraction: float, split_seed: int) -> np.ndarray:
    """``(num_labels,)`` bool, True for held-out labels; label ``i``'s side never changes as labels are added."""
    # A generator's first n draws are the same whatever the total count, so the split is prefix-stable.
    return np.random.default_rng(split_seed).random(num_labels) < val_fraction


def train_reward_model(
    model: RewardModel,
    data: PreferenceData,
    config: RewardTrainerConfig,
    rng: np.random.Generator,
    label_filter: LabelFilter | None = None,
    l2: AdaptiveL2 | None = None,
    world: World = SINGLE,
) -> dict[str, float]:
    """Train ``model`` in place on ``data``, continuing from its current weights.

    Data-parallel under ``torchrun`` (``world``, ``baselines/common/distributed.py``): every rank holds all the
    labels, the same model and the same ``rng`` seed, so all draw the same minibatches; each rank's backward pass
    covers every ``world.size``-th pair of a minibatch, the ranks sum their gradients in one all-reduce and take the
    same optimizer step, so the models stay identical. Early stopping and RIME's selection follow rank 0's numbers.

    Args:
        model: the reward model (``E`` members).
        data: all labelled pairs so far (ties included; skips left out).
        config: epochs, optimizer, smoothing, validation and bootstrap settings.
        rng: the source of shuffling, bootstrap resamples and dropout.
        label_filter: RIME's selection (``rlhf.reward.label_filter``): before each epoch, training labels the model
            contradicts beyond its adaptive threshold are left out, confidently contradicted ones flipped; its
            running state carries over between calls. None trains on every label.
        l2: Christiano et al.'s L2 penalty (``rlhf.reward.regularization``), its coefficient moved after each epoch
            to keep the held-out loss within a band of the training loss; it carries over between calls. None: no
            penalty (the optimizer's weight decay still applies).
        world: the ranks training together (one process: rank 0 of 1).

    Returns:
        ``train_loss``, ``val_loss`` (Bradley-Terry loss of the returned weights on raw targets, member mean),
        ``train_accuracy``, ``val_accuracy`` (ensemble-mean returns, ties excluded; NaN without such labels),
        ``epochs_run``, ``best_epoch`` (0: the starting weights were best), ``num_train``, ``num_val``, ``seconds``;
        ``labels_trusted``, ``labels_flipped``, ``labels_dropped`` (the filter's verdict in the last epoch run; all
        trusted without a filter) and ``labels_downweighted`` (training labels weighing less than half an average
        label); with ``l2``, ``l2_coefficient`` (after this call's adjustments).
    """
    with _torch_threads(config.torch_threads):
        return _train(model, data, config, rng, label_filter, l2, world)


def warn_if_unmeasured(val_accuracy: float | None, command: str) -> None:
    """Warn on stderr when training gave no validation accuracy (NaN): no held-out label says which segment is
    better (every held-out label a tie, or too few labels to hold any out), so nothing measured the model."""
    if val_accuracy is not None and math.isnan(val_accuracy):
        print(
            f"{command}: warning: reward_model_accuracy is NaN: no held-out label prefers one segment (all ties, "
            "or too few labels to hold some out), so the reward model's accuracy was not measured",
            file=sys.stderr,
            flush=True,
        )


def _train(
    model: RewardModel,
    data: PreferenceData,
    config: RewardTrainerConfig,
    rng: np.random.Generator,
    label_filter: LabelFilter | None,
    l2: AdaptiveL2 | None,
    world: World = SINGLE,
) -> dict[str, float]:
    started = time.perf_counter()
    if data.feature_dim != model.config.feature_dim:
        raise ConfigError(
            f"preference data has {data.feature_dim} features per step but the model expects "
            f"{model.config.feature_dim}; were the segments cut from another env?"
        )
    check(len(data) > 0, "no labels to train on")
    is_val = validation_mask(len(data), config.val_fraction, config.split_seed)
    if is_val.all():  # a handful of labels that all fell on the validation side: train on them instead
        is_val[:] = False
    train_index, val_index = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    features_a = torch.from_numpy(data.features_a).to(device, dtype)
    features_b = torch.from_numpy(data.features_b).to(device, dtype)
    targets = torch.from_numpy(data.targets).to(device, dtype)
    train_targets = smooth_targets(targets, config.label_smoothing)
    # Bootstrap multiplicities: member e sees label i counts[e, i] times (multinomial, as resampling n of n).
    num_train, members = len(train_index), model.ensemble_size
    counts: np.ndarray
    if config.bootstrap and members > 1:
        counts = rng.multinomial(num_train, np.full(num_train, 1.0 / num_train), size=members)
    else:
        counts = np.ones((members, num_train))
    if data.weights is not None:  # a label's weight (its labeler's) scales its bootstrap multiplicity
        counts = counts * data.weights[train_index]
    weights = torch.as_tensor(counts, dtype=dtype, device=device)
    epoch_targets = train_targets
    trusted = flipped = np.zeros(num_train, dtype=bool)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )

    # Early stopping reads the loss training minimises: with a random-answer rate, a flipped held-out label
    # must not dominate it either.
    def stopping_loss() -> float:  # weighted as training weighs: a random labeler's held-out labels count little
        loss = _evaluate(model, features_a, features_b, targets, val_index, random_answer_rate=rate,
                         label_weights=data.weights)[0]  # fmt: skip
        return float(world.broadcast_object(loss))  # rank 0's: every rank stops at the same epoch

    rate = config.random_answer_rate
    # Early stopping needs held-out labels that weigh something; without, every epoch runs.
    stops_early = len(val_index) > 0 and (data.weights is None or float(data.weights[val_index].sum()) > 0)
    best_loss = stopping_loss() if stops_early else np.inf
    best_state = _copy_state(model)
    best_epoch = epochs_run = stale_epochs = 0
    # Dropout draws from torch's generator of the model's device: seed it from rng, and leave the caller's state
    # untouched (on a GPU that is the CUDA generator, which fork_rng(devices=[]) would not restore).
    rng_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(int(rng.integers(2**62)))
        for epoch in range(1, config.epochs + 1):
            if label_filter is not None:  # RIME: judge every training label by the current model
                selection = label_filter.select(
                    _pair_losses(model, features_a, features_b, targets, train_index), data.targets[train_index]
                )
                trusted, flipped = world.broadcast_object((selection.trusted, selection.flipped))
                flip = torch.zeros(len(data), dtype=torch.bool, device=device)
                flip[torch.as_tensor(train_index[flipped], device=device)] = True
                epoch_targets = torch.where(flip, 1.0 - train_targets, train_targets)
            model.train()
            order = rng.permutation(num_train)
            if label_filter is not None:
                order = order[(trusted | flipped)[order]]  # dropped labels sit this epoch out
            for start in range(0, len(order), config.batch_size):
                mb_order = order[start : start + config.batch_size]
                share = mb_order[world.rank :: world.size]  # this rank's pairs of the minibatch (all, in one process)
                loss: Tensor | None = None
                if len(share):  # over ranks, a minibatch smaller than the world leaves some ranks none
                    mb_index = torch.as_tensor(train_index[share], device=device)
                    mb_returns_a, mb_returns_b = pair_returns(model, features_a[mb_index], features_b[mb_index])
                    losses = bradley_terry_loss(
                        mb_returns_a, mb_returns_b, epoch_targets[mb_index], "none", config.random_answer_rate
                    )
                    # Sum over members (each learns as if alone), mean over the batch weighted by bootstrap counts.
                    loss = (losses * weights[:, share]).sum() / len(mb_order)
                if l2 is not None and world.is_main:  # the penalty once, not once per rank
                    loss = l2.penalty(model) if loss is None else loss + l2.penalty(model)
                optimizer.zero_grad(set_to_none=True)
                if loss is not None:
                    torch.autograd.backward(loss)
                if world.size > 1:
                    _sum_gradients(model, world)
                optimizer.step()
            epochs_run = epoch
            if not stops_early:
                continue
            val_loss = stopping_loss()
            if l2 is not None:  # Christiano's band: held-out loss within [low, high] times the training loss
                l2.update(_evaluate(model, features_a, features_b, targets, train_index, random_answer_rate=rate,
                                    label_weights=data.weights)[0], val_loss)  # fmt: skip
            if val_loss < best_loss - 1e-6:
                best_loss, best_state, best_epoch, stale_epochs = val_loss, _copy_state(model), epoch, 0
            else:
                stale_epochs += 1
                if stale_epochs >= config.patience:
                    break
    if not stops_early:
        best_epoch = epochs_run
    else:
        model.load_state_dict(best_state)
    model.eval()
    train_loss, train_accuracy = _evaluate(model, features_a, features_b, targets, train_index)
    val_loss, val_accuracy = _evaluate(model, features_a, features_b, targets, val_index)
    return {
        "train_loss": train_loss,
        "val_loss": val_loss,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "epochs_run": float(epochs_run),
        "best_epoch": float(best_epoch),
        "num_train": float(num_train),
        "num_val": float(len(val_index)),
        "seconds": time.perf_counter() - started,
        "labels_trusted": float(trusted.sum()) if label_filter is not None else float(num_train),
        "labels_flipped": float(flipped.sum()),
        "labels_dropped": float(num_train - trusted.sum() - flipped.sum()) if label_filter is not None else 0.0,
        "labels_downweighted": float((data.weights[train_index] < 0.5).sum()) if data.weights is not None else 0.0,
    } | ({"l2_coefficient": l2.coefficient} if l2 is not None else {})


def evaluate_reward_model(model: RewardModel, data: PreferenceData) -> dict[str, float]:
    """``loss`` (Bradley-Terry, member mean) and ``accuracy`` (ensemble mean, ties excluded) of ``model`` on ``data``.

    For instance on a round's new labels before training on them, as Christiano et al. report.
    """
    device = next(model.parameters()).device
    loss, accuracy = _evaluate(
        model,
        torch.from_numpy(data.features_a).to(device),
        torch.from_numpy(data.features_b).to(device),
        torch.from_numpy(data.targets).to(device),
        np.arange(len(data)),
    )
    return {"loss": loss, "accuracy": accuracy}


def pair_returns(model: RewardModel, features_a: Tensor, features_b: Tensor) -> tuple[Tensor, Tensor]:
    """Each member's returns of both segments of each pair, ``(E, B)`` twice, from one forward pass."""
    returns = model.segment_returns(torch.cat([features_a, features_b]))
    returns_a, returns_b = rearrange(returns, "member (side pair) -> side member pair", side=2)
    return returns_a, returns_b


@torch.no_grad()
def _pair_losses(
    model: RewardModel, features_a: Tensor, features_b: Tensor, targets: Tensor, index: np.ndarray
) -> np.ndarray:
    """``(len(index),)`` cross-entropy of the ensemble-mean ``P(a > b)`` against each label, in eval mode (the
    score RIME's selection reads)."""
    was_training = model.training
    model.eval()
    mb_index = torch.as_tensor(index, device=features_a.device)
    returns_a, returns_b = pair_returns(model, features_a[mb_index], features_b[mb_index])
    p_a = torch.sigmoid(returns_a - returns_b).mean(0).clamp(1e-7, 1 - 1e-7)
    y = targets[mb_index]
    model.train(was_training)
    return (-(y * p_a.log() + (1 - y) * (1 - p_a).log())).double().cpu().numpy()


@torch.no_grad()
def _evaluate(
    model: RewardModel,
    features_a: Tensor,
    features_b: Tensor,
    targets: Tensor,
    index: np.ndarray,
    batch_size: int = 512,
    random_answer_rate: float = 0.0,
    label_weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """Loss (under ``random_answer_rate``; a mean weighted by ``label_weights`` when given) and accuracy of the
    pairs ``index`` in eval mode; the model's train/eval mode is put back after."""
    if len(index) == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    weights = torch.as_tensor(
        np.ones(len(targets)) if label_weights is None else label_weights, dtype=targets.dtype, device=targets.device
    )
    total_weight = float(weights[torch.as_tensor(index, device=targets.device)].sum())
    total_loss, correct, decided = 0.0, 0, 0
    for start in range(0, len(index), batch_size):
        mb_index = torch.as_tensor(index[start : start + batch_size], device=features_a.device)
        mb_returns_a, mb_returns_b = pair_returns(model, features_a[mb_index], features_b[mb_index])
        mb_targets = targets[mb_index]
        losses = bradley_terry_loss(mb_returns_a, mb_returns_b, mb_targets, "none", random_answer_rate)
        total_loss += (losses.mean(0) * weights[mb_index]).sum().item()
        margin = (mb_returns_a - mb_returns_b).mean(dim=0)
        strict = mb_targets != 0.5
        correct += int(((margin > 0) == (mb_targets == 1.0))[strict].sum().item())
        decided += int(strict.sum().item())
    model.train(was_training)
    loss = total_loss / total_weight if total_weight > 0 else float("nan")
    return loss, (correct / decided if decided else float("nan"))


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sum_gradients(model: RewardModel, world: World) -> None:
    """Sum each parameter's gradient over the ranks in one all-reduce (a rank whose share of a minibatch left a
    parameter without gradient adds zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    world.all_reduce_sum_(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _copy_state(model: RewardModel) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
