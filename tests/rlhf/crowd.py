"""A simulated crowd for the labeler-quality tests: labelers of known accuracy answering overlapping pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlhf.store import LabeledPair

CAREFUL_AND_RANDOM = (0.9, 0.9, 0.9, 0.5)
"""Three careful labelers (one answer in ten wrong) and one who answers at random; ids 1-4."""


def labeled(label_id: int, query_id: int, choice: str, labeler_id: int) -> LabeledPair:
    """A label as ``store.effective_labels()`` gives it (segments and times do not matter here)."""
    return LabeledPair(label_id, query_id, "sa", "sb", choice, labeler_id, f"labeler-{labeler_id}", 1.0, 0.0, 0, True)


def crowd_labels(
    a_is_better: np.ndarray, accuracies: Sequence[float], per_pair: int, rng: np.random.Generator
) -> list[LabeledPair]:
    """Each pair (query id = its index) answered by ``per_pair`` different labelers drawn at random; labeler
    ``i + 1`` gives the right answer with probability ``accuracies[i]``."""
    labels: list[LabeledPair] = []
    for query_id, truth in enumerate(a_is_better):
        for index in rng.choice(len(accuracies), size=per_pair, replace=False):
            says_a = bool(truth) == (rng.random() < accuracies[index])
            labels.append(labeled(len(labels) + 1, query_id, "a" if says_a else "b", int(index) + 1))
    return labels
