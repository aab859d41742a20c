"""Several processes and threads sharing one SQLite store: no query leased twice, no duplicate or lost label."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.store.engine import _enter_wal
from tests.store import scenarios
from tests.store.helpers import open_store


def test_two_processes_label_every_query_exactly_as_wanted(tmp_path: Path) -> None:
    scenarios.two_processes_label_every_query_exactly_as_wanted(str(tmp_path / "prefs.sqlite"))


def test_two_processes_never_lease_the_same_query(tmp_path: Path) -> None:
    scenarios.two_processes_never_lease_the_same_query(str(tmp_path / "prefs.sqlite"))


def test_two_processes_never_label_a_pair_more_than_wanted(tmp_path: Path) -> None:
    scenarios.two_processes_never_label_a_pair_more_than_wanted(str(tmp_path / "prefs.sqlite"))


def test_racing_retries_with_one_key_store_one_label(tmp_path: Path) -> None:
    scenarios.racing_retries_with_one_key_store_one_label(str(tmp_path / "prefs.sqlite"))


def test_acknowledged_labels_survive_a_killed_process(tmp_path: Path) -> None:
    scenarios.acknowledged_labels_survive_a_killed_process(str(tmp_path / "prefs.sqlite"))


def test_concurrent_first_open_and_bind(tmp_path: Path) -> None:
    scenarios.concurrent_first_open_and_bind(str(tmp_path / "fresh.sqlite"))


def test_closed_queries_are_neither_served_nor_answered(tmp_path: Path) -> None:
    scenarios.closed_queries_are_neither_served_nor_answered(str(tmp_path / "prefs.sqlite"))


def test_threads_sharing_one_store_object(tmp_path: Path) -> None:
    with open_store(tmp_path / "prefs.sqlite") as store:
        query_ids = scenarios.add_queries(store, np.random.default_rng(4), 40, labels_wanted=1)
        labelers = [store.get_or_create_labeler(f"thread-{i}").id for i in range(4)]
        answered: dict[int, list[int]] = {labeler: [] for labeler in labelers}
        errors: list[BaseException] = []

        def work(labeler: int) -> None:
            try:
                while (query := store.lease_next(labeler)) is not None:
                    store.add_label(query.id, labeler, "b", 0.1)
                    answered[labeler].append(query.id)
            except BaseException as error:  # surfaced in the main thread below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(labeler,)) for labeler in labelers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=scenarios.TIMEOUT_S)
        assert errors == []
        assert sorted(q for qs in answered.values() for q in qs) == sorted(query_ids)
        assert len(store.labels()) == 40


def _switch_to_wal(path: str, barrier: Any, failures: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    cursor = conn.cursor()
    cursor.execute("PRAGMA busy_timeout = 5000")
    barrier.wait()
    try:
        _enter_wal(cursor, busy_timeout_s=5.0)
        cursor.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    except sqlite3.OperationalError:
        failures.put(path)
    conn.close()


def test_connections_switching_a_new_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """SQLite refuses all but one of several connections switching a new file to WAL at once, without waiting on
    its busy timeout (about 1 connection in 40 here with six at once); the store retries instead."""
    context = multiprocessing.get_context("fork")  # plain sqlite3 in the children: cheap to fork
    failures = context.Queue()
    for attempt in range(30):
        path = str(tmp_path / f"new-{attempt}.sqlite")
        barrier = context.Barrier(6)
        workers = [context.Process(target=_switch_to_wal, args=(path, barrier, failures)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=scenarios.TIMEOUT_S)
        assert [worker.exitcode for worker in workers] == [0] * 6
    assert failures.empty()
