"""Cohen's and Fleiss' kappa against worked examples."""

from __future__ import annotations

import pytest

from feedback_ui.agreement import agreement, cohens_kappa, fleiss_kappa


def test_cohens_kappa_worked_example() -> None:
    # 50 items: both "a" 20, first a / second b 5, first b / second a 10, both b 15.
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
    first = ["a"] * 20 + ["a"] * 5 + ["b"] * 10 + ["b"] * 15
    second = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    assert cohens_kappa(first, second) == pytest.approx(0.4)


def test_cohens_kappa_edges() -> None:
    assert cohens_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    assert cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohens_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is already 1
    assert cohens_kappa([], []) is None
    with pytest.raises(ValueError, match="one answer per item"):
        cohens_kappa(["a"], [])


def test_fleiss_kappa_worked_example() -> None:
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    items = [{str(j): n for j, n in enumerate(row) if n} for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_equals_cohen_free_marginal_cases() -> None:
    assert fleiss_kappa([{"a": 2}, {"b": 2}]) == pytest.approx(1.0)
    assert fleiss_kappa([{"a": 2}, {"a": 2}]) is None
    assert fleiss_kappa([{"a": 1}]) is None  # one rating is no overlap


def test_agreement_from_judgments_drops_skips() -> None:
    judgments = [
        (1, "ann", "a"), (1, "bob", "a"), (1, "cat", "skip"),
        (2, "ann", "b"), (2, "bob", "a"),
        (3, "ann", "tie"), (3, "bob", "tie"), (3, "cat", "tie"),
        (4, "ann", "a"),
    ]  # fmt: skip
    result = agreement(judgments)
    assert result.overlapping_pairs == 3
    pairs = {(p.labeler_a, p.labeler_b): p for p in result.pairwise}
    assert set(pairs) == {("ann", "bob"), ("ann", "cat"), ("bob", "cat")}
    assert pairs[("ann", "bob")].shared_pairs == 3
    assert pairs[("ann", "bob")].percent_agreement == pytest.approx(2 / 3)
    assert pairs[("ann", "cat")].shared_pairs == 1
    # Rater pairs within items: item 1 one agreeing pair of 2 ordered, item 2 none, item 3 all 6 ordered pairs.
    assert result.percent_agreement == pytest.approx((2 + 0 + 6) / (2 + 2 + 6))
