"""Labeler quality: how far each labeler's answers can be trusted, and the weight it gives their labels in training.

A person who answers at random must not ruin the run of three careful ones. Each labeler ``i`` is modelled as
giving the right strict answer with probability ``p_i``, its accuracy, independently per pair: the one-coin model
of crowdsourcing (Dawid & Skene 1979, https://doi.org/10.2307/2346806), as Crowd-BT uses it for pairwise
comparisons (Chen et al. 2013, https://doi.org/10.1145/2433396.2433420).

**Evidence.** A strict answer ``y = +1`` (``a``) or ``-1`` (``b``) is compared with a *reference*: a signed
confidence ``d`` in [-1, 1] that ``a`` is the better segment. The reward model gives ``d = 2 P(a) - 1`` on every
pair; a peer ``j`` who answered the same pair strictly gives ``d = y_j (2 p_j - 1)``. If the reference is calibrated,
``E[y d] = (2 p - 1) d^2``, so ``N = sum d^2`` counts the evidence in units of certain references and
``k = (N + sum y d) / 2`` (clipped to [0, N]) of them went the labeler's way. An unsure reference (``d`` near 0)
counts for little instead of dragging everyone toward chance, as raw agreement with it would. The model's and the
peers' evidence are added by these counts; peers' accuracies come from the same estimate, solved by fixed-point
iteration (a random peer's answers then count for almost nothing).

**Prior.** ``p ~ Beta(prior_accuracy * prior_strength, (1 - prior_accuracy) * prior_strength)``, by default a mean
of 0.9 worth 6 labels: a new labeler counts as careful until the evidence says otherwise, and a few unlucky answers
do not condemn anyone (one answer in three wrong keeps 70-90% of a careful labeler's weight; three wrong answers,
each contradicted by several careful peers, are evidence enough to drop it to 0). A stronger prior protects
newcomers more but lets a random labeler keep more weight where the evidence is thin, as with one label per pair
and an unsure model. The accuracy used is the posterior mean ``(alpha + k) / (alpha + beta + N)``.

**Weight.** ``max(0, 2 p - 1)``: 0 at chance, 1 for a perfect labeler. It is the chance-corrected accuracy (as in
Cohen's kappa), and the share of a label's pull that points the right way: at a pair the model cannot tell apart,
the Bradley-Terry gradient of a labeler with accuracy ``p`` is ``2 p - 1`` times a perfect labeler's, the wrong
answers cancelling as many right ones. The log-odds ``log(p / (1 - p))``, the optimal weight of a vote (Nitzan &
Paroush 1982), grows without bound near ``p = 1``: a labeler estimated at 0.99 from a few dozen labels would outweigh
three at 0.9 together, more trust than such estimates deserve. The weights are then divided by their mean over the
labels that train (``a``, ``b`` and ``tie``): the mean label weighs 1, so weighting does not change the learning rate,
and a store with one labeler trains exactly as unweighted.

**Ties and skips.** A tie is no strict answer: it is neither right nor wrong, counts for no evidence, and trains
(as 0.5/0.5) with its labeler's weight. A skip counts for nothing at all.

**Calibration.** The references are taken as calibrated about the truth. A reward model trained on noisy labels
is less sure than that (it models the labels, noise included), which raises every labeler's model-based accuracy
by the same factor; the weights are normalised, so their ratios hold.

**Bias.** The reward model was trained on the labelers' own labels, so its agreement with them is optimistic: it
has partly fitted each label it is asked about, a random labeler's most of all on pairs no one else answered (a
model trained to convergence agrees with random answers far above chance). This estimate limits that by counting
the model's evidence at ``model_discount`` (default half) of a peer's, and peers are unbiased references. That
only dampens the bias; the cure is ``P(a)`` from a model that did not train on the label (cross-fitted over two
halves of the pairs, out of a bootstrap member's bag, or from the model before it trained on the round's new
labels), with ``model_discount=1``: docs/rlhf.md has the measurements. The reverse loop exists
too: a labeler weighted down moves the model less, so the model agrees with them less the next round; the prior
and the discount keep that from running away with few labels.

**Operators** may set a labeler's weight (``rlhf labelers-weight``): it replaces the estimated one as it is, in the
units of the estimated weights (1: an average label).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from baselines.common.errors import ConfigError
from rlhf.store.records import LabeledPair, LabelerQuality, check_weight

__all__ = ["LabelerQuality", "estimate_labeler_quality", "label_weights"]

STRICT = {"a": 1, "b": -1}
"""A strict answer's sign ``y``: +1 when segment ``a`` is better."""
TRAINED = ("a", "b", "tie")
"""Choices that train the reward model (a skip trains nothing)."""
_MAX_ITERATIONS = 200
_TOLERANCE = 1e-10


@dataclass
class _Evidence:
    """One labeler's answers and what they are judged against."""

    name: str
    answers: dict[int, int] = field(default_factory=dict)
    """query id -> strict answer (+1 ``a``, -1 ``b``)."""
    trained: int = 0
    """Labels that train (``a``, ``b``, ``tie``)."""
    model_agreements: list[float] = field(default_factory=list)
    """Per strict answer the model judged: the model's probability that it is right."""
    model_n: float = 0.0
    """The model's evidence, ``sum d^2`` (discounted)."""
    model_s: float = 0.0
    """``sum y d`` (discounted)."""


def estimate_labeler_quality(
    labels: Sequence[LabeledPair],
    model_prob_a: Mapping[int, float] | None,
    overrides: Mapping[int, float] | None = None,
    *,
    prior_accuracy: float = 0.9,
    prior_strength: float = 6.0,
    model_discount: float = 0.5,
) -> dict[int, LabelerQuality]:
    """Each labeler's accuracy and weight, from agreement with the reward model and with peers (see the module).

    Args:
        labels: effective labels (``store.effective_labels()``); skips may be included, they count for nothing.
        model_prob_a: query id -> the reward model's probability that segment ``a`` is better; None without a
            model yet. Queries missing from it give no model evidence.
        overrides: labeler id -> the operator's weight, used as it is (``store.labeler_weight_overrides()``).
        prior_accuracy: accuracy a labeler is trusted with before any evidence, in (0.5, 1).
        prior_strength: how many labels' worth of evidence the prior is, > 0.
        model_discount: what the model's evidence counts for, relative to a peer's, in [0, 1]; 1 when
            ``model_prob_a`` comes from a model that did not train on the labels (see the module on bias).

    Returns:
        labeler id -> :class:`LabelerQuality`, for every labeler in ``labels``.

    Raises:
        ConfigError: a probability outside [0, 1], an override that is not a finite number >= 0, or a setting out
            of range.
    """
    if not 0.5 < prior_accuracy < 1.0 or not prior_strength > 0.0 or not 0.0 <= model_discount <= 1.0:
        raise ConfigError(
            f"labeler quality needs prior_accuracy in (0.5, 1), prior_strength > 0 and model_discount in [0, 1], "
            f"got {prior_accuracy}, {prior_strength}, {model_discount}"
        )
    fixed = {int(i): check_weight(w, f"the weight of labeler {i}") for i, w in (overrides or {}).items()}
    evidence, peers = _gather(labels, model_prob_a, model_discount)
    ids = list(evidence)
    accuracy = _solve(evidence, peers, prior_accuracy * prior_strength, (1.0 - prior_accuracy) * prior_strength)

    raw = np.maximum(0.0, 2.0 * accuracy - 1.0)
    trained = np.array([evidence[i].trained for i in ids], dtype=np.float64)
    mean = float(raw @ trained / trained.sum()) if trained.sum() else float(raw.mean()) if len(raw) else 0.0
    qualities = {}
    for index, i in enumerate(ids):
        e = evidence[i]
        own = peers.owner == index
        # Weights are relative to the others': a labeler alone weighs 1 whatever its accuracy (nobody to weigh
        # against; its estimate is still reported), else 0 at chance.
        estimated = 1.0 if len(ids) == 1 else float(raw[index]) / mean if mean > 0.0 else 0.0
        qualities[i] = LabelerQuality(
            labeler_id=i,
            name=e.name,
            labels=len(e.answers),
            model_agreement=float(np.mean(e.model_agreements)) if e.model_agreements else None,
            peer_agreement=float(np.mean(peers.same[own] > 0)) if own.any() else None,
            accuracy=float(accuracy[index]),
            estimated_weight=estimated,
            weight=fixed.get(i, estimated),
            overridden=i in fixed,
        )
    return qualities


def label_weights(labels: Sequence[LabeledPair], qualities: Mapping[int, LabelerQuality]) -> list[float]:
    """The training weight of each label, in the order of ``labels``: its labeler's ``weight``.

    Raises:
        ConfigError: a label's labeler has no estimate, or every label that trains would weigh 0 (a silently
            empty training set).
    """
    weights = []
    for label in labels:
        quality = qualities.get(label.labeler_id)
        if quality is None:
            raise ConfigError(f"labeler {label.labeler!r} has no quality estimate; estimate it with these labels")
        weights.append(quality.weight)
    if any(label.choice in TRAINED for label in labels) and not any(
        weight > 0.0 for weight, label in zip(weights, labels, strict=True) if label.choice in TRAINED
    ):
        raise ConfigError(
            "every label would weigh 0: no labeler is estimated above chance; give someone a weight with "
            "`rlhf labelers-weight`"
        )
    return weights


@dataclass(frozen=True)
class _Peers:
    """Every pair of strict answers of two labelers to one query, both ways round (indices into the labelers)."""

    owner: np.ndarray
    peer: np.ndarray
    same: np.ndarray
    """+1 when the two answers agree, -1 when they differ."""


def _gather(
    labels: Sequence[LabeledPair], model_prob_a: Mapping[int, float] | None, model_discount: float
) -> tuple[dict[int, _Evidence], _Peers]:
    """Per labeler: strict answers and the model's evidence; and the peers' answers on the same queries."""
    evidence: dict[int, _Evidence] = {}
    by_query: dict[int, dict[int, int]] = defaultdict(dict)
    for label in labels:
        e = evidence.setdefault(label.labeler_id, _Evidence(label.labeler))
        e.trained += label.choice in TRAINED
        y = STRICT.get(label.choice)
        if y is None:
            continue
        e.answers[label.query_id] = by_query[label.query_id][label.labeler_id] = y
        if model_prob_a is None or label.query_id not in model_prob_a:
            continue
        prob_a = float(model_prob_a[label.query_id])
        if not 0.0 <= prob_a <= 1.0:  # NaN fails too
            raise ConfigError(f"the model's P(a) of query {label.query_id} must be in [0, 1], not {prob_a}")
        d = 2.0 * prob_a - 1.0
        e.model_agreements.append(prob_a if y > 0 else 1.0 - prob_a)
        e.model_n += model_discount * d * d
        e.model_s += model_discount * y * d
    index = {labeler_id: position for position, labeler_id in enumerate(evidence)}
    pairs = [
        (index[i], index[j], y_i * y_j)
        for answers in by_query.values()
        for i, y_i in answers.items()
        for j, y_j in answers.items()
        if i != j
    ]
    owner, peer, same = np.array(pairs, dtype=np.int64).reshape(-1, 3).T
    return evidence, _Peers(owner, peer, same)


def _solve(evidence: Mapping[int, _Evidence], peers: _Peers, alpha: float, beta: float) -> np.ndarray:
    """Posterior-mean accuracies (in the order of ``evidence``), each labeler judged against the peers' current
    accuracies, until they settle (a fixed point; it takes a few dozen rounds)."""
    model_n = np.array([e.model_n for e in evidence.values()])
    model_s = np.array([e.model_s for e in evidence.values()])
    accuracy = np.full(len(evidence), alpha / (alpha + beta))
    for _ in range(_MAX_ITERATIONS):
        skill = 2.0 * accuracy[peers.peer] - 1.0
        n = model_n + np.bincount(peers.owner, skill * skill, minlength=len(accuracy))
        s = model_s + np.bincount(peers.owner, peers.same * skill, minlength=len(accuracy))
        right = np.clip((n + s) / 2.0, 0.0, n)
        updated = (alpha + right) / (alpha + beta + n)
        settled = np.max(np.abs(updated - accuracy), initial=0.0) < _TOLERANCE
        accuracy = updated
        if settled:
            break
    return accuracy
