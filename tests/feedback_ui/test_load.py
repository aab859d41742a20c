"""Load over HTTP against a real uvicorn server in a subprocess: 20 labelers x 50 labels, with and without overlap."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from feedback_ui.server import start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import queue_pairs
from tests.feedback_ui.load import label_concurrently

pytestmark = pytest.mark.slow


def _labelers(store: PreferenceStore, count: int) -> dict[str, str]:
    return {f"labeler-{i:02d}": store.add_labeler(f"labeler-{i:02d}")[1] for i in range(count)}


def test_twenty_labelers_fifty_labels_each(workspace: Path, store: PreferenceStore) -> None:
    query_ids = queue_pairs(store, 1000)
    labelers = _labelers(store, 20)
    with start_server_in_background(workspace, port=0) as handle:
        result = label_concurrently(handle.url, labelers, labels_each=50)
    assert result.errors == [] and result.unanswered == []
    assert len(result.acknowledged) == 1000
    records = store.labels()
    assert len(records) == 1000 and len({r.id for r in records}) == 1000
    effective = store.effective_labels()
    assert len(effective) == 1000
    per_query = Counter(label.query_id for label in effective)
    assert set(per_query) == set(query_ids) and set(per_query.values()) == {1}  # no pair labeled twice
    assert set(Counter(label.labeler for label in effective).values()) == {50}
    # Every acknowledged answer is stored with the side the labeler chose.
    by_id = {label.label_id: label for label in effective}
    for ack in result.acknowledged:
        stored = by_id[ack.label_id]
        assert (stored.query_id, stored.labeler) == (ack.query_id, ack.labeler)
        assert stored.choice == store.get_query(ack.query_id).choice_for_side(ack.side)  # type: ignore[arg-type]


def test_overlap_gives_k_labels_from_different_labelers(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 100, labels_wanted=2)
    labelers = _labelers(store, 10)
    with start_server_in_background(workspace, port=0, labels_per_pair=2) as handle:
        result = label_concurrently(handle.url, labelers, labels_each=None)  # until the queue is empty
    assert result.errors == [] and result.unanswered == [] and len(result.acknowledged) == 200
    effective = store.effective_labels()
    assert len(effective) == 200
    labelers_per_query: dict[int, set[str]] = {}
    for label in effective:
        labelers_per_query.setdefault(label.query_id, set()).add(label.labeler)
    assert len(labelers_per_query) == 100
    assert {len(who) for who in labelers_per_query.values()} == {2}
