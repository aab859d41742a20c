"""Inter-annotator agreement on pairs that several labelers answered: Cohen's and Fleiss' kappa.

Categories are the judgments ``a``, ``b`` and ``tie``; "can't tell" (skip) is no judgment and is left out.
Kappa is 1 for perfect agreement, 0 for agreement at chance level, negative below chance; it is undefined (None)
when chance agreement is already perfect (every answer in one category).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

CATEGORIES: tuple[str, ...] = ("a", "b", "tie")


def cohens_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items: ``(p_o - p_e) / (1 - p_e)``.

    Cohen (1960), https://doi.org/10.1177/001316446002000104. ``p_o`` is the observed agreement and ``p_e`` the
    agreement expected from each rater's own category frequencies.

    Args:
        first: the first rater's category per item.
        second: the second rater's category per item, same length.
    """
    if len(first) != len(second):
        raise ValueError(f"both raters need one answer per item, got {len(first)} and {len(second)}")
    if not first:
        return None
    n = len(first)
    observed = sum(x == y for x, y in zip(first, second, strict=True)) / n
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(counts_first[c] * counts_second[c] for c in counts_first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: Sequence[Mapping[str, int]]) -> float | None:
    """Fleiss' kappa over items rated by any number (>= 2) of raters each.

    Fleiss (1971), https://doi.org/10.1037/h0031619, with per-item rater counts ``n_i`` (it reduces to Fleiss' formula
    when every item has the same number of raters): ``P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))``,
    ``P_bar = mean_i P_i``, ``p_j = sum_i n_ij / sum_i n_i``, ``P_e = sum_j p_j^2``,
    ``kappa = (P_bar - P_e) / (1 - P_e)``.

    Args:
        items: per item, the number of raters per category (``{"a": 2, "tie": 1}``); items with fewer than two
            ratings are ignored.
    """
    rated = [item for item in items if sum(item.values()) >= 2]
    if not rated:
        return None
    agreement = []
    totals: Counter[str] = Counter()
    for item in rated:
        n_i = sum(item.values())
        agreement.append((sum(v * v for v in item.values()) - n_i) / (n_i * (n_i - 1)))
        totals.update(item)
    p_bar = sum(agreement) / len(agreement)
    all_ratings = sum(totals.values())
    p_e = sum((count / all_ratings) ** 2 for count in totals.values())
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class PairwiseAgreement:
    """Cohen's kappa of two labelers on the pairs both answered."""

    labeler_a: str
    labeler_b: str
    shared_pairs: int
    percent_agreement: float
    kappa: float | None


@dataclass(frozen=True)
class Agreement:
    """Agreement on the pairs with two or more judgments.

    Attributes:
        overlapping_pairs: pairs with at least two judgments (skips left out).
        fleiss_kappa: over those pairs, or None.
        percent_agreement: share of rater pairs on the same pair that agree, or None.
        pairwise: Cohen's kappa per pair of labelers with shared pairs.
    """

    overlapping_pairs: int
    fleiss_kappa: float | None
    percent_agreement: float | None
    pairwise: list[PairwiseAgreement]


def agreement(judgments: Iterable[tuple[int, str, str]]) -> Agreement:
    """Agreement statistics from ``(query_id, labeler, choice)`` judgments (skips are dropped here)."""
    by_query: dict[int, dict[str, str]] = defaultdict(dict)
    for query_id, labeler, choice in judgments:
        if choice in CATEGORIES:
            by_query[query_id][labeler] = choice
    overlapping = {query_id: answers for query_id, answers in by_query.items() if len(answers) >= 2}
    items = [Counter(answers.values()) for answers in overlapping.values()]
    agreeing = total = 0
    for item in items:
        n_i = sum(item.values())
        agreeing += sum(v * (v - 1) for v in item.values())
        total += n_i * (n_i - 1)
    shared: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for answers in overlapping.values():
        for first, second in combinations(sorted(answers), 2):
            shared[(first, second)].append((answers[first], answers[second]))
    pairwise = [
        PairwiseAgreement(
            labeler_a=first,
            labeler_b=second,
            shared_pairs=len(pairs),
            percent_agreement=sum(x == y for x, y in pairs) / len(pairs),
            kappa=cohens_kappa([x for x, _ in pairs], [y for _, y in pairs]),
        )
        for (first, second), pairs in sorted(shared.items())
    ]
    return Agreement(
        overlapping_pairs=len(overlapping),
        fleiss_kappa=fleiss_kappa(items),
        percent_agreement=agreeing / total if total else None,
        pairwise=pairwise,
    )
