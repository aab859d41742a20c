"""The service's store writer: writes batched into one transaction each, answers only after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from feedback_ui.writer import StoreWriter
from rlhf.store import AlreadyLabeledError, PreferenceStore
from tests.feedback_ui.conftest import queue_pairs


def test_waiting_writes_share_one_commit_and_a_refused_one_fails_alone(workspace: Path) -> None:
    store = PreferenceStore(workspace / "prefs.sqlite")
    query_ids = queue_pairs(store, 20)
    labeler = store.get_or_create_labeler("alice").id
    lock = threading.RLock()
    writer = StoreWriter(store, lock)

    async def main() -> list[object]:
        with lock:  # the writer's first batch waits here while the other writes queue up behind it
            tasks = [
                asyncio.ensure_future(writer.run(store.add_label, query_id, labeler, "a", 1.0))
                for query_id in [*query_ids, query_ids[0]]
            ]
            await asyncio.sleep(0.1)
            assert not any(task.done() for task in tasks), "nothing is answered before its commit"
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        outcomes = asyncio.run(main())
    finally:
        writer.close()
    assert [getattr(label, "query_id", None) for label in outcomes[:-1]] == query_ids
    assert isinstance(outcomes[-1], AlreadyLabeledError), "the second answer to a pair is refused, alone"
    assert writer.writes == 21 and writer.batches <= 2, "the writes that waited share a commit"
    assert len(store.labels()) == 20
    store.close()


def test_a_failed_transaction_fails_every_write_of_its_batch(workspace: Path) -> None:
    store = PreferenceStore(workspace / "prefs.sqlite", busy_timeout_s=0.2)
    query_ids = queue_pairs(store, 3)
    labeler = store.get_or_create_labeler("alice").id
    failures: list[bool] = []
    writer = StoreWriter(store, threading.RLock(), on_failed_commit=lambda: failures.append(True))
    blocker = sqlite3.connect(workspace / "prefs.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock past the busy timeout

    async def write_all() -> list[object]:
        return await asyncio.gather(
            *(writer.run(store.add_label, query_id, labeler, "a", 1.0) for query_id in query_ids),
            return_exceptions=True,
        )

    try:
        outcomes = asyncio.run(write_all())
        assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
        assert failures, "the service is told to drop what it cached about the failed writes"
        blocker.execute("ROLLBACK")
        assert store.labels() == []
        retried = asyncio.run(write_all())
        assert [getattr(label, "query_id", None) for label in retried] == query_ids
    finally:
        blocker.close()
        writer.close()
        store.close()


def test_close_finishes_queued_writes(workspace: Path) -> None:
    store = PreferenceStore(workspace / "prefs.sqlite")
    query_ids = queue_pairs(store, 5)
    labeler = store.get_or_create_labeler("alice").id
    writer = StoreWriter(store, threading.RLock())

    async def main() -> None:
        await asyncio.gather(*(writer.run(store.add_label, query_id, labeler, "b", 1.0) for query_id in query_ids))

    asyncio.run(main())
    writer.close()
    writer.close()  # idempotent
    assert len(store.labels()) == 5
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(writer.run(store.add_label, query_ids[0], labeler, "a", 1.0))
    store.close()
