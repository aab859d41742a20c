"""Labeler quality: the estimate against hand-computed values, and a random labeler among careful ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.labelers import LabelerQuality, estimate_labeler_quality, label_weights
from rlhf.store import LabeledPair
from tests.rlhf.crowd import CAREFUL_AND_RANDOM, crowd_labels, labeled

ANN, BOB = 1, 2
RANDOM = 4


def _crowd(seed: int = 0, pairs: int = 600) -> tuple[np.ndarray, list[LabeledPair]]:
    rng = np.random.default_rng(seed)
    a_is_better = rng.random(pairs) < 0.5
    return a_is_better, crowd_labels(a_is_better, CAREFUL_AND_RANDOM, per_pair=3, rng=rng)


def _near_truth(a_is_better: np.ndarray) -> dict[int, float]:
    """A reward model that is right on every pair, at 85% confidence."""
    return {query_id: 0.85 if a else 0.15 for query_id, a in enumerate(a_is_better)}


def test_model_evidence_the_prior_and_the_normalisation_by_hand() -> None:
    # ann: "a" where the model says P(a) = 0.75 (d = 0.5), "b" where it cannot tell (d = 0), a tie, a skip.
    # bob: "b" where the model says P(a) = 0.75. Defaults: prior Beta(5.4, 0.6), model evidence counted at 1/2.
    labels = [
        labeled(1, 1, "a", ANN),
        labeled(2, 2, "b", ANN),
        labeled(3, 3, "tie", ANN),
        labeled(4, 4, "skip", ANN),
        labeled(5, 5, "b", BOB),
    ]
    qualities = estimate_labeler_quality(labels, {1: 0.75, 2: 0.5, 5: 0.75})
    ann, bob = qualities[ANN], qualities[BOB]
    # ann: N = 0.5 * (0.5^2 + 0^2) = 0.125, sum y d = 0.5 * 0.5 = 0.25, right = (N + S) / 2 = 0.1875 clipped to
    # N = 0.125: p = (5.4 + 0.125) / (6 + 0.125) = 221/245. bob: N = 0.125, S = -0.25, right = 0: p = 216/245.
    assert (ann.labels, bob.labels) == (2, 1)
    assert ann.model_agreement == pytest.approx((0.75 + 0.5) / 2) and bob.model_agreement == pytest.approx(0.25)
    assert ann.peer_agreement is None and bob.peer_agreement is None
    assert ann.accuracy == pytest.approx(221 / 245) and bob.accuracy == pytest.approx(216 / 245)
    # Raw weights 2p - 1 = 197/245 and 187/245; ann's three trained labels (a, b, tie) and bob's one: mean 778/980.
    assert ann.weight == pytest.approx(788 / 778) and bob.weight == pytest.approx(748 / 778)
    assert not ann.overridden and ann.estimated_weight == ann.weight
    assert label_weights(labels, qualities) == pytest.approx([788 / 778] * 4 + [748 / 778])


def test_two_agreeing_peers_meet_at_the_fixed_point() -> None:
    # Two labelers agree on one pair, no model: each is the other's reference with d = 2p - 1, so
    # p = (5.4 + s^2) / (6 + s^2) with s = 2p - 1; solved by hand, p = 0.91008.
    qualities = estimate_labeler_quality([labeled(1, 7, "a", ANN), labeled(2, 7, "a", BOB)], None)
    for quality in qualities.values():
        skill = 2 * quality.accuracy - 1
        assert quality.accuracy == pytest.approx((5.4 + skill**2) / (6 + skill**2), abs=1e-9)
        assert quality.accuracy == pytest.approx(0.91008, abs=1e-5)
        assert (quality.peer_agreement, quality.model_agreement) == (1.0, None)
        assert quality.weight == pytest.approx(1.0)


@pytest.mark.parametrize("with_model", [True, False], ids=["model-and-peers", "peers-only"])
def test_a_random_labeler_among_three_careful_ones_gets_a_low_weight(with_model: bool) -> None:
    # 600 pairs, three answers each: about 450 labels per labeler. Over 200 seeds of this crowd the random
    # labeler's weight stayed below 0.18 of the lowest careful one's, and the careful ones within a factor 1.33.
    a_is_better, labels = _crowd()
    qualities = estimate_labeler_quality(labels, _near_truth(a_is_better) if with_model else None)
    careful = [qualities[i] for i in (1, 2, 3)]
    weights = [quality.weight for quality in careful]
    assert qualities[RANDOM].weight < 0.2 * min(weights)
    assert max(weights) < 1.5 * min(weights)
    assert all(0.85 < quality.accuracy < 0.95 for quality in careful)
    assert 0.45 < qualities[RANDOM].accuracy < 0.6
    # A careful labeler agrees with a careful peer 82% of the time, with the random one half: 2/3 * 0.82 + 1/3 * 0.5.
    assert [quality.peer_agreement == pytest.approx(0.71, abs=0.04) for quality in careful] == [True] * 3
    assert qualities[RANDOM].peer_agreement == pytest.approx(0.5, abs=0.04)
    if with_model:  # 0.9 * 0.85 + 0.1 * 0.15 for a careful labeler
        assert [quality.model_agreement == pytest.approx(0.78, abs=0.03) for quality in careful] == [True] * 3
        assert qualities[RANDOM].model_agreement == pytest.approx(0.5, abs=0.06)
    else:
        assert all(quality.model_agreement is None for quality in qualities.values())
    # Normalised: the mean label weighs 1.
    assert np.mean(label_weights(labels, qualities)) == pytest.approx(1.0)


def test_a_newcomer_with_three_labels_is_not_condemned() -> None:
    a_is_better, labels = _crowd()
    pairs = [0, 1, 2]
    right = ["a" if a_is_better[q] else "b" for q in pairs]
    wrong_last = [*right[:2], "b" if right[2] == "a" else "a"]  # one of three answers wrong
    newcomer = [labeled(10_000 + q, q, choice, 5) for q, choice in zip(pairs, wrong_last, strict=True)]
    qualities = estimate_labeler_quality([*labels, *newcomer], _near_truth(a_is_better))
    careful_mean = np.mean([qualities[i].weight for i in (1, 2, 3)])
    assert qualities[5].weight > 0.6 * careful_mean
    assert qualities[5].weight > 3 * qualities[RANDOM].weight


def test_ties_and_skips_are_no_evidence() -> None:
    labels = [labeled(1, 1, "tie", ANN), labeled(2, 2, "skip", ANN), labeled(3, 1, "a", BOB)]
    qualities = estimate_labeler_quality(labels, {1: 0.9, 2: 0.9})
    ann = qualities[ANN]
    assert (ann.labels, ann.model_agreement, ann.peer_agreement) == (0, None, None)
    assert ann.accuracy == pytest.approx(0.9)  # the prior alone
    assert qualities[BOB].peer_agreement is None  # ann's tie is not an answer to agree with


def test_one_labeler_trains_as_unweighted() -> None:
    rng = np.random.default_rng(3)
    a_is_better = rng.random(50) < 0.5
    labels = crowd_labels(a_is_better, (0.7,), per_pair=1, rng=rng)
    sure = {query_id: 0.99 if a else 0.01 for query_id, a in enumerate(a_is_better)}
    qualities = estimate_labeler_quality(labels, sure)
    assert qualities[1].accuracy < 0.8  # the evidence moved the estimate...
    assert label_weights(labels, qualities) == pytest.approx([1.0] * len(labels))  # ...not the weights
    # Even a lone labeler the model contradicts (estimated at chance or below) weighs 1: nobody to weigh against.
    contradicted = {query_id: 0.01 if a else 0.99 for query_id, a in enumerate(a_is_better)}
    alone = estimate_labeler_quality(labels, contradicted, model_discount=1.0)
    assert alone[1].accuracy < 0.5 and label_weights(labels, alone) == pytest.approx([1.0] * len(labels))


def test_overrides_win_and_leave_the_others_alone() -> None:
    a_is_better, labels = _crowd()
    automatic = estimate_labeler_quality(labels, _near_truth(a_is_better))
    qualities = estimate_labeler_quality(labels, _near_truth(a_is_better), overrides={RANDOM: 0.0, 1: 2.0})
    assert (qualities[RANDOM].weight, qualities[RANDOM].overridden) == (0.0, True)
    assert (qualities[1].weight, qualities[1].overridden) == (2.0, True)
    assert qualities[1].estimated_weight == pytest.approx(automatic[1].weight)
    assert qualities[2] == automatic[2] and qualities[3] == automatic[3]
    weights = label_weights(labels, qualities)
    assert all(w == 0.0 for w, label in zip(weights, labels, strict=True) if label.labeler_id == RANDOM)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5])
def test_an_override_that_is_not_a_finite_number_at_least_zero_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="weight of labeler 1 must be a finite number >= 0"):
        estimate_labeler_quality([labeled(1, 1, "a", 1)], None, overrides={1: bad})


def test_every_label_at_weight_zero_is_an_error_not_an_empty_training_set() -> None:
    # Two labelers whom a confident model contradicts on 100 pairs each are both at chance: weight 0. (A lone
    # labeler weighs 1 whatever its accuracy: there is nobody to weigh it against.)
    labels = [labeled(q, q, "a", ANN) for q in range(100)] + [labeled(100 + q, 100 + q, "a", BOB) for q in range(100)]
    qualities = estimate_labeler_quality(labels, dict.fromkeys(range(200), 0.02))
    assert all(q.accuracy < 0.5 and q.weight == 0.0 for q in qualities.values())
    with pytest.raises(ConfigError, match="every label would weigh 0"):
        label_weights(labels, qualities)
    # Every labeler set to 0 by the operator: the same.
    with pytest.raises(ConfigError, match="every label would weigh 0"):
        label_weights(labels, estimate_labeler_quality(labels, None, overrides={ANN: 0.0, BOB: 0.0}))
    # Skips alone train nothing anyway: no error, no weights to refuse.
    skips = [labeled(1, 1, "skip", ANN)]
    assert label_weights(skips, estimate_labeler_quality(skips, None, overrides={ANN: 0.0})) == [0.0]


def test_bad_inputs_are_one_line_errors() -> None:
    labels = [labeled(1, 1, "a", ANN)]
    for prob in (1.5, math.nan):
        with pytest.raises(ConfigError, match=r"P\(a\) of query 1 must be in \[0, 1\]"):
            estimate_labeler_quality(labels, {1: prob})
    with pytest.raises(ConfigError, match=r"prior_accuracy in \(0\.5, 1\)"):
        estimate_labeler_quality(labels, None, prior_accuracy=0.5)
    with pytest.raises(ConfigError, match="labeler 'labeler-2' has no quality estimate"):
        label_weights([labeled(2, 1, "a", BOB)], estimate_labeler_quality(labels, None))


def test_a_quality_record_checks_itself() -> None:
    with pytest.raises(ConfigError, match="accuracy must be a probability"):
        LabelerQuality(1, "ann", 3, None, None, accuracy=1.5, estimated_weight=1.0, weight=1.0)
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0"):
        LabelerQuality(1, "ann", 3, None, None, accuracy=0.9, estimated_weight=1.0, weight=math.nan)
