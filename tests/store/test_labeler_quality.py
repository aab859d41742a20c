"""Labeler quality in the store: the loop's estimates replaced whole, the operator's weights kept until cleared."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rlhf.store import LabelerQuality, PreferenceStore, StoreError, UnknownLabelerError
from tests.store.helpers import FakeClock


def _quality(labeler_id: int, name: str, accuracy: float, weight: float, **fields: object) -> LabelerQuality:
    values: dict[str, object] = {"labels": 40, "model_agreement": 0.8, "peer_agreement": None, **fields}
    return LabelerQuality(
        labeler_id=labeler_id,
        name=name,
        accuracy=accuracy,
        estimated_weight=weight,
        weight=weight,
        **values,  # type: ignore[arg-type]
    )


def test_estimates_round_trip_and_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as store:
        alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
        assert store.labeler_quality() == {} and store.labeler_weight_overrides() == {}
        first = {
            alice: _quality(alice, "alice", 0.91, 1.3, peer_agreement=0.7),
            bob: _quality(bob, "bob", 0.52, 0.05, labels=3, model_agreement=None),
        }
        store.record_labeler_quality(first)
    with PreferenceStore(path) as reopened:
        assert reopened.labeler_quality() == first
        # A new snapshot replaces the old one: bob, left out, has no estimate any more.
        reopened.record_labeler_quality([_quality(alice, "alice", 0.93, 1.0)])
        assert list(reopened.labeler_quality()) == [alice]
        assert reopened.labeler_quality()[alice].accuracy == pytest.approx(0.93)


def test_the_operators_weight_wins_until_cleared(tmp_path: Path) -> None:
    clock = FakeClock()
    with PreferenceStore(tmp_path / "prefs.sqlite", clock=clock) as store:
        alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
        # Before any estimate: the weight is recorded all the same.
        assert store.set_labeler_weight("bob", 0.0).id == bob
        assert store.labeler_weight_overrides() == {bob: 0.0} and store.labeler_quality() == {}
        store.record_labeler_quality([_quality(alice, "alice", 0.9, 1.2), _quality(bob, "bob", 0.9, 0.8)])
        read = store.labeler_quality()
        assert (read[bob].weight, read[bob].estimated_weight, read[bob].overridden) == (0.0, 0.8, True)
        assert (read[alice].weight, read[alice].overridden) == (1.2, False)
        # By id too; a new estimate keeps the operator's weights.
        store.set_labeler_weight(alice, 2.5)
        store.record_labeler_quality([_quality(alice, "alice", 0.9, 1.1), _quality(bob, "bob", 0.9, 0.9)])
        assert store.labeler_weight_overrides() == {alice: 2.5, bob: 0.0}
        assert store.labeler_quality()[alice].weight == 2.5
        store.set_labeler_weight("bob", None)  # back to the estimate
        assert store.labeler_weight_overrides() == {alice: 2.5}
        assert (store.labeler_quality()[bob].weight, store.labeler_quality()[bob].overridden) == (0.9, False)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, True, "1"])
def test_a_weight_that_is_not_a_finite_number_at_least_zero_is_refused(tmp_path: Path, bad: object) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.get_or_create_labeler("alice")
        with pytest.raises(StoreError, match="a labeler's weight must be a"):
            store.set_labeler_weight("alice", bad)  # type: ignore[arg-type]
        assert store.labeler_weight_overrides() == {}


def test_unknown_labelers_are_refused(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        with pytest.raises(UnknownLabelerError, match=r"no labeler named 'zed' .* \(labelers: none yet\)"):
            store.set_labeler_weight("zed", 1.0)
        alice = store.get_or_create_labeler("alice").id
        with pytest.raises(UnknownLabelerError, match=r"no labeler id 99 .* \(labelers: alice\)"):
            store.set_labeler_weight(99, 1.0)
        with pytest.raises(UnknownLabelerError, match=r"quality of unknown labeler ids \[99\]"):
            store.record_labeler_quality([_quality(alice, "alice", 0.9, 1.0), _quality(99, "ghost", 0.9, 1.0)])
        assert store.labeler_quality() == {}  # nothing of the refused snapshot was written
