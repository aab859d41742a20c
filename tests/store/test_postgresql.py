"""The multi-process scenarios and the label rules on PostgreSQL, when a server is given.

Set ``RLHF_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) to a database this
test may wipe: every test drops and recreates the ``rlhf_*`` tables. Skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from feedback_ui.writer import StoreWriter
from rlhf.store import AlreadyLabeledError, LabelerQuality, LoopStatus, PreferenceStore
from rlhf.store import engine as engine_module
from rlhf.store.schema import metadata
from tests.store import scenarios
from tests.store.helpers import FakeClock

URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="set RLHF_TEST_POSTGRES_URL to run the PostgreSQL tests")


@pytest.fixture
def url() -> Iterator[str]:
    engine = create_engine(URL)
    metadata.drop_all(engine)
    engine.dispose()
    yield URL


@pytest.mark.parametrize(
    "scenario",
    [
        scenarios.two_processes_label_every_query_exactly_as_wanted,
        scenarios.two_processes_never_lease_the_same_query,
        scenarios.two_processes_never_label_a_pair_more_than_wanted,
        scenarios.racing_retries_with_one_key_store_one_label,
        scenarios.acknowledged_labels_survive_a_killed_process,
        scenarios.concurrent_first_open_and_bind,
        scenarios.closed_queries_are_neither_served_nor_answered,
    ],
)
def test_scenario(url: str, scenario: Callable[[str], None]) -> None:
    scenario(url)


def test_labels_undo_and_stats(url: str) -> None:
    with scenarios.open_bound(url) as store:
        query_ids = scenarios.add_queries(store, np.random.default_rng(0), 3, labels_wanted=1)
        alice, token = store.add_labeler("alice")
        assert store.labeler_for_token(token) is not None
        query = store.lease_next(alice)
        assert query is not None
        label = store.add_label(query.id, alice, "a", 1.0, idempotency_key="x")
        with pytest.raises(AlreadyLabeledError):
            store.add_label(query.id, alice, "b", 1.0)
        assert store.undo_last(alice) == label
        assert store.queue_size(alice) == 3
        store.record_loop_status(LoopStatus(1, 0, 10, 100, 1000, reward_val_accuracy=0.5))
        store.record_loop_status(LoopStatus(2, 1, 10, 200, 1000))
        status = store.loop_status()
        assert status is not None and (status.round, status.reward_val_accuracy, len(status.history)) == (2, 0.5, 1)
        assert store.stats().labels_voided == 1
        pairs = [store.get_query(query_id) for query_id in query_ids]
        assert set(store.segment_ids()) == {s for q in pairs for s in (q.segment_a, q.segment_b)}
    with PreferenceStore(url) as reopened:
        assert reopened.label_counts() == {"alice": 0}


def test_the_service_writer_commits_call_by_call(url: str) -> None:
    # Batches of two server processes could deadlock on PostgreSQL's row locks, so the writer does not batch there.
    with scenarios.open_bound(url) as store:
        assert not store.serializes_writes
        query_ids = scenarios.add_queries(store, np.random.default_rng(0), 4, labels_wanted=1)
        alice = store.get_or_create_labeler("alice").id
        writer = StoreWriter(store, threading.RLock())

        async def answer_all() -> list[object]:
            return await asyncio.gather(
                *(writer.run(store.add_label, query_id, alice, "a", 1.0) for query_id in [*query_ids, query_ids[0]]),
                return_exceptions=True,
            )

        try:
            outcomes = asyncio.run(answer_all())
        finally:
            writer.close()
        assert isinstance(outcomes[-1], AlreadyLabeledError)
        assert writer.batches == writer.writes == 5
        assert store.queue_size() == 0 and len(store.labels()) == 4


def test_labeler_quality_and_operator_weights(url: str) -> None:
    with PreferenceStore(url) as store:
        alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
        store.set_labeler_weight("bob", 0.0)
        estimates = [
            LabelerQuality(alice, "alice", 40, 0.8, 0.7, 0.9, estimated_weight=1.2, weight=1.2),
            LabelerQuality(bob, "bob", 30, 0.5, 0.5, 0.52, estimated_weight=0.1, weight=0.1),
        ]
        store.record_labeler_quality(estimates)
        store.record_labeler_quality(estimates)  # an upsert, not a second row
    with PreferenceStore(url) as reopened:
        read = reopened.labeler_quality()
        assert (read[alice].weight, read[bob].weight, read[bob].estimated_weight) == (1.2, 0.0, 0.1)
        assert reopened.labeler_weight_overrides() == {bob: 0.0}
        reopened.set_labeler_weight(bob, None)
        assert reopened.labeler_weight_overrides() == {} and reopened.labeler_quality()[bob].weight == 0.1


def test_tokens_are_revoked_and_rotated_and_queries_read_by_id(url: str) -> None:
    with scenarios.open_bound(url) as store:
        query_ids = scenarios.add_queries(store, np.random.default_rng(0), 3, labels_wanted=1)
        labeler_id, token = store.add_labeler("alice")
        labeler, new_token = store.rotate_token("alice")
        assert labeler.id == labeler_id and store.labeler_for_token(token) is None
        assert store.labeler_for_token(new_token) == labeler
        assert not store.revoke_token("alice").has_token and store.labeler_for_token(new_token) is None
        found = store.get_queries([*query_ids, 10**6])
        assert sorted(found) == sorted(query_ids) and all(found[i].id == i for i in query_ids)


def test_a_bulk_load_of_queries_leaves_the_planner_fresh_statistics(url: str) -> None:
    # Planned from the statistics of a table it believed empty, serving the next pair scanned and sorted every open
    # query (half a second per pair at 5000) instead of taking the first from the index; autovacuum analyzes a table
    # only up to a minute after it changed.
    with scenarios.open_bound(url) as store:
        scenarios.add_queries(store, np.random.default_rng(0), 3000, labels_wanted=1)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'rlhf_queries'")).scalar()
    finally:
        engine.dispose()
    assert rows == 3000


def _drop_other_connections(url: str) -> None:
    """What a restart of the database server does to the store's pooled connections."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.commit()
    finally:
        engine.dispose()


def test_a_pooled_connection_the_server_dropped_is_replaced_after_an_idle_moment(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scenarios.open_bound(url) as store:
        store.add_labeler("alice")
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as after a pause
        _drop_other_connections(url)
        assert store.label_counts() == {"alice": 0}  # checked, found dead, replaced: the call never sees it


def test_a_connection_dropped_while_in_use_fails_one_call_and_the_pool_is_renewed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scenarios.open_bound(url) as store:
        store.add_labeler("alice")
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 3600.0)  # no check: as under load
        _drop_other_connections(url)
        with pytest.raises(OperationalError):
            store.label_counts()
        assert store.label_counts() == {"alice": 0}


def test_a_pair_whose_row_another_transaction_holds_is_still_served(url: str) -> None:
    """Serving skips rows others hold (SKIP LOCKED) first; when that finds nothing, it waits for them instead of
    answering "nothing to label". Here the only open pair is locked by a late answer in flight (its lease lapsed)."""
    clock = FakeClock()
    with scenarios.open_bound(url) as setup:
        [query_id] = scenarios.add_queries(setup, np.random.default_rng(0), 1, labels_wanted=2)
    with PreferenceStore(url, clock=clock) as store:
        late = store.get_or_create_labeler("late").id
        other = store.get_or_create_labeler("other").id
        assert store.lease_next(late, lease_seconds=10) is not None
        clock.advance(60)  # the lease lapsed
        engine = create_engine(url)
        locked, released = threading.Event(), threading.Event()

        def answer_in_flight() -> None:
            with engine.connect() as conn:
                conn.execute(text(f"SELECT id FROM rlhf_queries WHERE id = {query_id} FOR UPDATE"))
                locked.set()
                released.wait(30)
                time.sleep(0.3)
                conn.rollback()

        holder = threading.Thread(target=answer_in_flight)
        holder.start()
        try:
            assert locked.wait(30)
            released.set()
            served = store.lease_next(other, lease_seconds=10)
        finally:
            holder.join(30)
            engine.dispose()
    assert served is not None and served.id == query_id
