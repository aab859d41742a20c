"""Leases, labels, undo, idempotency, labelers and dashboard counts on one store (single process)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rlhf.store import (
    AlreadyLabeledError,
    DuplicateLabelerError,
    IdempotencyConflictError,
    InvalidLabelError,
    PairUnavailableError,
    PreferenceStore,
    StoreError,
    UnknownLabelerError,
    UnknownQueryError,
)
from tests.store.helpers import FakeClock, open_store, populate


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[PreferenceStore]:
    with open_store(tmp_path / "prefs.sqlite", clock) as opened:
        yield opened


def test_lease_serves_highest_priority_first_and_never_twice(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=3)
    alice = store.get_or_create_labeler("alice").id
    bob = store.get_or_create_labeler("bob").id
    carol = store.get_or_create_labeler("carol").id
    dave = store.get_or_create_labeler("dave").id
    leased = [store.lease_next(labeler, lease_seconds=60) for labeler in (alice, bob, carol)]
    assert [query.id if query else None for query in leased] == list(reversed(query_ids))
    assert leased[0] is not None and leased[0].lease_labeler == alice
    assert store.lease_next(dave, lease_seconds=60) is None
    assert store.stats().queries_leased == 3


def test_lease_returns_the_held_query_again_and_renews_it(store: PreferenceStore, clock: FakeClock) -> None:
    populate(store, np.random.default_rng(0), n_queries=3)
    alice = store.get_or_create_labeler("alice").id
    first = store.lease_next(alice, lease_seconds=60)
    clock.advance(30)
    again = store.lease_next(alice, lease_seconds=60)
    assert first is not None and again is not None
    assert again.id == first.id and again.lease_expires_at == clock.now + 60


def test_expired_lease_returns_to_the_queue(store: PreferenceStore, clock: FakeClock) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=1)
    alice = store.get_or_create_labeler("alice").id
    bob = store.get_or_create_labeler("bob").id
    assert store.lease_next(alice, lease_seconds=60) is not None
    clock.advance(59.9)
    assert store.lease_next(bob, lease_seconds=60) is None
    clock.advance(0.1)
    taken = store.lease_next(bob, lease_seconds=60)
    assert taken is not None and taken.id == query_ids[0] and taken.lease_labeler == bob
    # Alice's late answer comes after Bob was served the query: his lease stands, her answer is refused.
    with pytest.raises(PairUnavailableError, match="is leased to another labeler") as refused:
        store.add_label(query_ids[0], alice, "a", 70.0)
    assert refused.value.reason == "leased"
    assert store.queue_size() == 1 and store.labels() == []
    store.add_label(query_ids[0], bob, "b", 5.0)
    assert store.queue_size() == 0 and store.get_query(query_ids[0]).lease_labeler is None
    with pytest.raises(StoreError, match="lease_seconds must be positive"):
        store.lease_next(alice, lease_seconds=0)
    with pytest.raises(UnknownLabelerError):
        store.lease_next(999)


def test_label_releases_the_lease_and_release_lease_gives_it_back(store: PreferenceStore) -> None:
    populate(store, np.random.default_rng(0), n_queries=2)
    alice = store.get_or_create_labeler("alice").id
    bob = store.get_or_create_labeler("bob").id
    query = store.lease_next(alice)
    assert query is not None
    assert not store.release_lease(query.id, bob)
    assert store.release_lease(query.id, alice)
    assert store.get_query(query.id).lease_labeler is None
    query = store.lease_next(alice)
    assert query is not None
    store.add_label(query.id, alice, "tie", 4.0)
    assert store.get_query(query.id).lease_labeler is None


def test_k_labels_per_pair_come_from_k_different_labelers(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2, labels_wanted=2)
    alice, bob, carol = (store.get_or_create_labeler(name).id for name in ("alice", "bob", "carol"))

    def answer_all(labeler: int) -> list[int]:
        answered = []
        while (query := store.lease_next(labeler)) is not None:
            store.add_label(query.id, labeler, "b", 1.0)
            answered.append(query.id)
        return answered

    assert answer_all(alice) == list(reversed(query_ids))
    assert store.queue_size() == 2 and store.queue_size(alice) == 0 and store.queue_size(bob) == 2
    assert answer_all(bob) == list(reversed(query_ids))
    assert answer_all(carol) == []
    assert store.queue_size() == 0
    pairs = store.effective_labels()
    assert sorted((pair.query_id, pair.labeler) for pair in pairs) == sorted(
        (query_id, name) for query_id in query_ids for name in ("alice", "bob")
    )
    assert store.label_counts() == {"alice": 2, "bob": 2, "carol": 0}


def test_one_answer_per_labeler_and_query(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=1, labels_wanted=3)
    alice = store.get_or_create_labeler("alice").id
    store.add_label(query_ids[0], alice, "a", 1.0)
    with pytest.raises(AlreadyLabeledError, match="already answered"):
        store.add_label(query_ids[0], alice, "b", 1.0)
    assert store.lease_next(alice) is None


def test_a_query_never_gets_more_labels_than_it_wants(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=1, labels_wanted=2)
    alice, bob, carol = (store.get_or_create_labeler(name).id for name in ("alice", "bob", "carol"))
    store.add_label(query_ids[0], alice, "a", 1.0)
    store.add_label(query_ids[0], bob, "b", 1.0, idempotency_key="bob-1")
    with pytest.raises(PairUnavailableError, match=f"query {query_ids[0]} already has the labels it wants") as full:
        store.add_labels(carol, [(query_ids[0], "a", 1.0, None)])
    assert full.value.reason == "full"
    assert store.add_label(query_ids[0], bob, "b", 1.0, idempotency_key="bob-1").labeler_id == bob, "retry replayed"
    assert len(store.labels()) == 2 and store.queue_size() == 0
    store.undo_last(alice)
    assert store.add_label(query_ids[0], carol, "tie", 1.0).labeler_id == carol
    assert sorted(label.labeler for label in store.effective_labels()) == ["bob", "carol"]


def test_require_lease_takes_answers_only_from_the_leaseholder(store: PreferenceStore, clock: FakeClock) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2)
    alice = store.get_or_create_labeler("alice").id
    bob = store.get_or_create_labeler("bob").id
    with pytest.raises(PairUnavailableError, match=f"query {query_ids[1]} is not leased to labeler {alice}") as no:
        store.add_label(query_ids[1], alice, "a", 1.0, require_lease=True)
    assert no.value.reason == "not_served"
    served = store.lease_next(alice, lease_seconds=60)
    assert served is not None and served.id == query_ids[1]
    clock.advance(120)  # the lease lapsed, and nobody took the query since: it is still hers to answer
    label = store.add_label(served.id, alice, "a", 1.0, idempotency_key="k", require_lease=True)
    assert store.add_label(served.id, alice, "a", 1.0, idempotency_key="k", require_lease=True) == label
    following = store.lease_next(alice, lease_seconds=60)
    assert following is not None and following.id == query_ids[0]
    clock.advance(61)
    taken = store.lease_next(bob, lease_seconds=60)
    assert taken is not None and taken.id == following.id
    with pytest.raises(PairUnavailableError, match="is leased to another labeler"):
        store.add_label(following.id, alice, "b", 1.0, require_lease=True)
    assert store.add_label(following.id, bob, "b", 1.0, require_lease=True).labeler_id == bob
    assert [label.labeler for label in store.effective_labels()] == ["alice", "bob"]


def test_undo_leases_the_query_back_to_its_labeler(store: PreferenceStore, clock: FakeClock) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2, labels_wanted=2)
    alice, bob, carol = (store.get_or_create_labeler(name).id for name in ("alice", "bob", "carol"))
    first = store.lease_next(alice, lease_seconds=60)
    assert first is not None and first.id == query_ids[1]
    store.add_label(first.id, alice, "a", 1.0, require_lease=True)
    with pytest.raises(StoreError, match="lease_seconds must be positive"):
        store.undo_last(alice, lease_seconds=0)
    clock.advance(5)
    assert store.undo_last(alice, lease_seconds=30) is not None
    query = store.get_query(first.id)
    assert (query.lease_labeler, query.lease_expires_at) == (alice, clock.now + 30)
    other = store.lease_next(bob, lease_seconds=60)
    assert other is not None and other.id == query_ids[0], "bob is not served the pair alice is correcting"
    store.add_label(first.id, alice, "b", 1.0, require_lease=True)

    # With k > 1 another labeler may hold the pair when its first answer is undone: their lease stands.
    held = store.lease_next(carol, lease_seconds=60)
    assert held is not None and held.id == first.id
    assert store.undo_last(alice, lease_seconds=30) is not None
    assert store.get_query(first.id).lease_labeler == carol
    with pytest.raises(PairUnavailableError, match="is leased to another labeler"):
        store.add_label(first.id, alice, "a", 1.0, require_lease=True)
    store.add_label(first.id, carol, "tie", 1.0, require_lease=True)
    again = store.lease_next(alice, lease_seconds=60)
    assert again is not None and again.id == first.id, "the pair comes back to alice once carol answered"
    store.add_label(first.id, alice, "a", 1.0, require_lease=True)
    assert store.undo_last(alice) is not None and store.get_query(first.id).lease_labeler is None, "no lease asked"


@pytest.mark.parametrize(
    ("choice", "seconds", "error", "message"),
    [
        ("left", 1.0, InvalidLabelError, "choice must be one of a, b, tie, skip"),
        ("undo", 1.0, InvalidLabelError, "choice must be one of"),
        ("a", -1.0, InvalidLabelError, "seconds_taken"),
        ("a", float("inf"), InvalidLabelError, "seconds_taken"),
    ],
)
def test_bad_labels_are_refused(
    store: PreferenceStore, choice: str, seconds: float, error: type[StoreError], message: str
) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=1)
    alice = store.get_or_create_labeler("alice").id
    with pytest.raises(error, match=message):
        store.add_label(query_ids[0], alice, choice, seconds)
    assert store.labels() == []


def test_unknown_ids_are_refused(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=1)
    alice = store.get_or_create_labeler("alice").id
    with pytest.raises(UnknownQueryError, match="unknown query id 777"):
        store.add_label(777, alice, "a", 1.0)
    with pytest.raises(UnknownLabelerError, match="unknown labeler id 888"):
        store.add_label(query_ids[0], 888, "a", 1.0)
    with pytest.raises(UnknownLabelerError):
        store.undo_last(888)
    assert store.labels() == []


def test_idempotent_retries_return_the_stored_label(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2, labels_wanted=2)
    alice = store.get_or_create_labeler("alice").id
    bob = store.get_or_create_labeler("bob").id
    first = store.add_label(query_ids[0], alice, "a", 2.0, idempotency_key="req-1")
    assert store.add_label(query_ids[0], alice, "a", 2.0, idempotency_key="req-1") == first
    # Keys are per labeler: Bob may use the same key.
    store.add_label(query_ids[0], bob, "b", 2.0, idempotency_key="req-1")
    with pytest.raises(IdempotencyConflictError, match="another request"):
        store.add_label(query_ids[1], alice, "a", 2.0, idempotency_key="req-1")
    with pytest.raises(IdempotencyConflictError):
        store.add_label(query_ids[0], alice, "b", 2.0, idempotency_key="req-1")
    assert len(store.labels(alice)) == 1


def test_undo_appends_a_voiding_record_and_requeues(store: PreferenceStore, clock: FakeClock) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2)
    alice = store.get_or_create_labeler("alice").id
    assert store.undo_last(alice) is None
    older = store.add_label(query_ids[1], alice, "a", 3.0)
    clock.advance(1)
    newer = store.add_label(query_ids[0], alice, "b", 5.0)
    assert store.queue_size(alice) == 0

    assert store.undo_last(alice, idempotency_key="undo-1") == newer
    assert store.undo_last(alice, idempotency_key="undo-1") == newer, "a retried undo voids nothing more"
    records = store.labels(alice)
    assert [record.choice for record in records] == ["a", "b", "undo"]
    assert records[-1].supersedes == newer.id and records[-1].is_undo
    assert [pair.label_id for pair in store.effective_labels()] == [older.id]
    assert store.queue_size(alice) == 1
    requeued = store.lease_next(alice)
    assert requeued is not None and requeued.id == query_ids[0]

    relabel = store.add_label(query_ids[0], alice, "a", 1.0)
    assert {pair.label_id for pair in store.effective_labels()} == {older.id, relabel.id}
    assert store.undo_last(alice) == relabel
    assert store.undo_last(alice) == older
    assert store.undo_last(alice) is None
    assert store.effective_labels() == []
    assert len(store.labels(alice)) == 6, "labels are never deleted"
    store.add_label(query_ids[1], alice, "a", 1.0, idempotency_key="answer-1")
    with pytest.raises(IdempotencyConflictError, match="not an undo"):
        store.undo_last(alice, idempotency_key="answer-1")


def test_effective_labels_join_segments_and_labelers(store: PreferenceStore, clock: FakeClock) -> None:
    segments, query_ids = populate(store, np.random.default_rng(0), n_queries=2)
    teacher = store.get_or_create_labeler("teacher:oracle")
    assert store.get_or_create_labeler("teacher:oracle") == teacher and not teacher.has_token
    store.add_labels(teacher.id, [(query_ids[0], "a", 0.0, None), (query_ids[1], "skip", 0.0, None)])
    pairs = store.effective_labels()
    assert [(p.query_id, p.segment_a, p.segment_b, p.choice, p.labeler) for p in pairs] == [
        (query_ids[0], segments[0].id, segments[1].id, "a", "teacher:oracle"),
        (query_ids[1], segments[1].id, segments[2].id, "skip", "teacher:oracle"),
    ]
    assert pairs[0].created_at == clock.now and pairs[0].round == 0
    assert [p.choice for p in store.effective_labels(include_skips=False)] == ["a"]


def test_teachers_answer_pending_queries_in_bulk(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=4, labels_wanted=2)
    teacher = store.get_or_create_labeler("teacher:oracle").id
    alice = store.get_or_create_labeler("alice").id
    store.add_label(query_ids[3], alice, "a", 1.0)
    pending = store.pending_queries(teacher, limit=3)
    assert [query.id for query in pending] == [query_ids[3], query_ids[2], query_ids[1]]
    store.add_labels(teacher, [(query.id, "b", 0.0, None) for query in pending])
    assert [query.id for query in store.pending_queries(teacher)] == [query_ids[0]]
    assert [query.id for query in store.pending_queries()] == [query_ids[2], query_ids[1], query_ids[0]]


def test_bulk_labels_are_all_or_nothing(store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=2)
    teacher = store.get_or_create_labeler("teacher:oracle").id
    with pytest.raises(UnknownQueryError):
        store.add_labels(teacher, [(query_ids[0], "a", 0.0, None), (999, "a", 0.0, None)])
    assert store.labels() == []


def test_labelers_and_tokens(store: PreferenceStore) -> None:
    alice_id, token = store.add_labeler("alice")
    bob_id, bob_token = store.add_labeler("bob")
    assert token != bob_token and len(token) >= 40
    alice = store.labeler_for_token(token)
    assert alice is not None and (alice.id, alice.name, alice.has_token) == (alice_id, "alice", True)
    assert store.labeler_for_token("wrong") is None
    assert store.get_labeler(bob_id).name == "bob"
    assert store.get_labeler_by_name("carol") is None
    assert [labeler.name for labeler in store.labelers()] == ["alice", "bob"]
    with pytest.raises(DuplicateLabelerError, match="already exists"):
        store.add_labeler("alice")
    with pytest.raises(StoreError, match="labeler names"):
        store.add_labeler("  ")
    with pytest.raises(UnknownLabelerError):
        store.get_labeler(999)


def test_token_is_stored_only_as_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as store:
        _, token = store.add_labeler("alice")
    assert token.encode() not in path.read_bytes()


def test_stats_for_dashboards(store: PreferenceStore, clock: FakeClock) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=4)
    alice = store.get_or_create_labeler("alice").id
    empty = store.stats()
    assert (empty.segments, empty.queries, empty.queries_pending, empty.labels) == (5, 4, 4, 0)
    assert empty.mean_seconds_taken is None
    store.add_label(query_ids[0], alice, "a", 2.0)
    store.add_label(query_ids[1], alice, "tie", 4.0)
    store.add_label(query_ids[2], alice, "skip", 9.0)
    store.undo_last(alice)
    assert store.lease_next(alice, lease_seconds=10) is not None
    stats = store.stats()
    assert stats.choices == {"a": 1, "b": 0, "tie": 1, "skip": 0}
    assert (stats.labels, stats.labels_voided, stats.queries_pending, stats.queries_leased) == (2, 1, 2, 1)
    assert stats.mean_seconds_taken == 3.0 and stats.labelers == 1
    clock.advance(11)
    assert store.stats().queries_leased == 0


def counted_vs_stored(store: PreferenceStore) -> tuple[dict[int, int], dict[int, int]]:
    """Per query: effective labels counted from the label records, and the ``labels_done`` the store keeps."""
    counted = {query_id: 0 for query_id in (query.id for query in store.pending_queries())}
    for pair in store.effective_labels():
        counted[pair.query_id] = counted.get(pair.query_id, 0) + 1
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as conn:
        stored = dict(conn.execute("SELECT id, labels_done FROM rlhf_queries").fetchall())
    return {query_id: counted.get(query_id, 0) for query_id in stored}, stored


def test_labels_done_follows_answers_undos_and_retries(store: PreferenceStore) -> None:
    # The queue reads "still wants labels" from a kept count; it must equal the labels counted from the records
    # after any mix of answers, refused answers, idempotent retries, undos and re-answers.
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=6, labels_wanted=2)
    rng = np.random.default_rng(1)
    labelers = [store.get_or_create_labeler(name).id for name in ("alice", "bob", "carol")]
    for step in range(200):
        labeler = labelers[int(rng.integers(len(labelers)))]
        action = rng.random()
        if action < 0.55:
            query = store.lease_next(labeler)
            if query is not None:
                store.add_label(query.id, labeler, str(rng.choice(["a", "b", "tie", "skip"])), 1.0, f"k{step}")
        elif action < 0.75:
            # An answer without a lease: stored, a replayed retry, or refused (answered, reused key, unknown pair,
            # all labels in, leased to another labeler).
            refusals = (AlreadyLabeledError, IdempotencyConflictError, UnknownQueryError, PairUnavailableError)
            with contextlib.suppress(*refusals):
                key = f"k{rng.integers(step + 1)}"  # often an earlier request's key
                store.add_label(int(rng.choice([*query_ids, 999])), labeler, "a", 1.0, key)
        else:
            store.undo_last(labeler, idempotency_key=f"u{step % 7}")
        counted, stored = counted_vs_stored(store)
        assert stored == counted, f"after step {step}"
    assert store.queue_size() == sum(n < 2 for n in counted.values())


def test_batch_commits_once_and_each_call_fails_alone(tmp_path: Path, store: PreferenceStore) -> None:
    _, query_ids = populate(store, np.random.default_rng(0), n_queries=3)
    alice = store.get_or_create_labeler("alice").id
    other = PreferenceStore(tmp_path / "prefs.sqlite")  # another connection sees only committed data
    with store.batch():
        store.add_label(query_ids[0], alice, "a", 1.0)
        with pytest.raises(AlreadyLabeledError):
            store.add_label(query_ids[0], alice, "b", 1.0)
        with pytest.raises(UnknownQueryError):
            store.add_labels(alice, [(query_ids[1], "a", 1.0, None), (999, "a", 1.0, None)])
        leased = store.lease_next(alice)
        assert leased is not None and leased.id == query_ids[2]
        assert other.labels() == [] and other.stats().queries_leased == 0, "nothing visible before the commit"
        with pytest.raises(StoreError, match="do not nest"):
            with store.batch():
                pass
    assert [(label.query_id, label.choice) for label in other.labels()] == [(query_ids[0], "a")]
    assert other.get_query(query_ids[2]).lease_labeler == alice
    assert other.queue_size() == 2, "the refused bulk answer left nothing behind"

    with pytest.raises(RuntimeError), store.batch():
        store.add_label(query_ids[1], alice, "b", 1.0)
        raise RuntimeError("the batch fails before its commit")
    assert len(other.labels()) == 1, "a failed batch stores nothing"
    other.close()
