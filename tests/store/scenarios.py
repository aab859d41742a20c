"""Multi-process scenarios run against any store location (an SQLite path or a PostgreSQL URL).

Every worker opens its own :class:`PreferenceStore` on the same database, as separate server processes would.
Workers are spawned, so they inherit no open database handles, and start together behind a barrier.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections import Counter
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import numpy as np
import pytest

from rlhf.store import PairUnavailableError, PreferenceStore, StoreError
from tests.store.helpers import DISCRETE_ACTIONS, OBS_SHAPE, SEGMENT_LENGTH, make_segment

WORKERS = 2
TIMEOUT_S = 60


def _label_until_empty(location: str, labeler_id: int, barrier: Barrier, results: Queue[Any]) -> None:
    """Lease and answer until the queue is empty; every answer is sent twice, as a client retrying on a timeout."""
    with PreferenceStore(location) as store:
        barrier.wait(timeout=TIMEOUT_S)
        answered = []
        while (query := store.lease_next(labeler_id, lease_seconds=600)) is not None:
            time.sleep(0.005)  # "looking at the clips": keeps both workers busy at the same time
            key = f"answer-{query.id}"
            first = store.add_label(query.id, labeler_id, "a", 0.5, idempotency_key=key)
            retry = store.add_label(query.id, labeler_id, "a", 0.5, idempotency_key=key)
            assert retry == first
            answered.append(query.id)
        results.put((labeler_id, answered))


def _lease_once_per_labeler(location: str, labeler_ids: list[int], barrier: Barrier, results: Queue[Any]) -> None:
    """Each labeler leases one query and keeps it (nobody answers): the leases must never overlap."""
    with PreferenceStore(location) as store:
        barrier.wait(timeout=TIMEOUT_S)
        leased = []
        for labeler_id in labeler_ids:
            query = store.lease_next(labeler_id, lease_seconds=600)
            leased.append(None if query is None else query.id)
        results.put(leased)


def _submit_all(location: str, labeler_id: int, query_ids: list[int], barrier: Barrier, results: Queue[Any]) -> None:
    """The same labeler submits the same keyed answers from two processes at once (a retried request racing)."""
    with PreferenceStore(location) as store:
        barrier.wait(timeout=TIMEOUT_S)
        labels = [store.add_label(q, labeler_id, "b", 1.0, idempotency_key=f"k{q}").id for q in query_ids]
        results.put(labels)


def _answer_unleased(
    location: str, labeler_id: int, query_ids: list[int], barrier: Barrier, results: Queue[Any]
) -> None:
    """Answer every query, leased or not, in the same order as the other worker (a stale lease cache's answers)."""
    with PreferenceStore(location) as store:
        barrier.wait(timeout=TIMEOUT_S)
        outcomes: list[int | str] = []
        for query_id in query_ids:
            try:
                outcomes.append(store.add_label(query_id, labeler_id, "a", 1.0).id)
            except StoreError as error:
                outcomes.append(f"{type(error).__name__}: {error}")
        results.put(outcomes)


def _label_then_crash(location: str, labeler_id: int, query_ids: list[int]) -> None:
    store = PreferenceStore(location)
    for query_id in query_ids:
        store.add_label(query_id, labeler_id, "tie", 1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: only what add_label acknowledged


def _open_and_bind(location: str) -> None:
    with PreferenceStore(location) as store:
        store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, SEGMENT_LENGTH)


def spawn() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def run_workers(target: Any, args_per_worker: list[tuple[Any, ...]], results: Queue[Any] | None) -> list[Any]:
    """Start one process per argument tuple, collect one result from each (if ``results``); fail fast on a crash."""
    processes = [spawn().Process(target=target, args=args) for args in args_per_worker]
    for process in processes:
        process.start()
    try:
        outputs: list[Any] = []
        deadline = time.monotonic() + TIMEOUT_S
        while results is not None and len(outputs) < len(processes):
            try:
                outputs.append(results.get(timeout=0.2))
            except queue.Empty:
                crashed = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
                assert not crashed, f"a worker crashed with exit code {crashed[0]}"
                assert time.monotonic() < deadline, "workers did not finish in time"
        for process in processes:
            process.join(timeout=TIMEOUT_S)
        return outputs
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        assert all(process.exitcode == 0 for process in processes), [process.exitcode for process in processes]


def open_bound(location: str) -> PreferenceStore:
    store = PreferenceStore(location)
    store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, SEGMENT_LENGTH)
    return store


def add_queries(store: PreferenceStore, rng: np.random.Generator, n: int, labels_wanted: int) -> list[int]:
    segments = [make_segment(rng) for _ in range(n + 1)]
    store.add_segments(segments)
    pairs = [(segments[i].id, segments[i + 1].id) for i in range(n)]
    priorities = list(rng.uniform(size=n))
    return store.add_queries(pairs, priorities, [True] * n, round=0, labels_wanted=labels_wanted)


def two_processes_label_every_query_exactly_as_wanted(location: str) -> None:
    rng = np.random.default_rng(0)
    with open_bound(location) as store:
        single = set(add_queries(store, rng, 40, labels_wanted=1))
        double = set(add_queries(store, rng, 10, labels_wanted=2))
        labelers = [store.get_or_create_labeler(f"worker-{i}").id for i in range(WORKERS)]
    barrier, results = spawn().Barrier(WORKERS), spawn().Queue()
    outputs = dict(run_workers(_label_until_empty, [(location, lab, barrier, results) for lab in labelers], results))

    answered_single = [q for answered in outputs.values() for q in answered if q in single]
    assert sorted(answered_single) == sorted(single), "every k=1 query answered exactly once"
    assert all(single & set(answered) for answered in outputs.values()), f"workers did not interleave: {outputs}"
    for answered in outputs.values():
        assert double <= set(answered), "every k=2 query answered by both labelers"
    with PreferenceStore(location) as store:
        records = store.labels()
        assert len(records) == len(single) + 2 * len(double), "retries added no duplicates"
        assert Counter((r.query_id, r.labeler_id) for r in records).most_common(1)[0][1] == 1
        assert store.queue_size() == 0


def two_processes_never_lease_the_same_query(location: str) -> None:
    with open_bound(location) as store:
        query_ids = add_queries(store, np.random.default_rng(1), 40, labels_wanted=1)
        labelers = [store.get_or_create_labeler(f"labeler-{i}").id for i in range(50)]
    barrier, results = spawn().Barrier(WORKERS), spawn().Queue()
    halves = [labelers[0::2], labelers[1::2]]
    outputs = run_workers(_lease_once_per_labeler, [(location, half, barrier, results) for half in halves], results)

    leased = [query_id for output in outputs for query_id in output if query_id is not None]
    assert sorted(leased) == sorted(query_ids), "40 queries, 50 labelers: each query leased exactly once"
    with PreferenceStore(location) as store:
        assert store.stats().queries_leased == 40


def racing_retries_with_one_key_store_one_label(location: str) -> None:
    with open_bound(location) as store:
        query_ids = add_queries(store, np.random.default_rng(2), 30, labels_wanted=1)
        alice = store.get_or_create_labeler("alice").id
    barrier, results = spawn().Barrier(WORKERS), spawn().Queue()
    outputs = run_workers(_submit_all, [(location, alice, query_ids, barrier, results)] * WORKERS, results)

    assert outputs[0] == outputs[1], "both processes got the same stored labels back"
    with PreferenceStore(location) as store:
        assert len(store.labels()) == 30


def two_processes_never_label_a_pair_more_than_wanted(location: str) -> None:
    """Two labelers in two processes answer the same pairs at the same moment: each pair gets the one label it wants,
    the other answer is refused where the query's row is locked."""
    with open_bound(location) as store:
        query_ids = add_queries(store, np.random.default_rng(5), 30, labels_wanted=1)
        labelers = [store.get_or_create_labeler(f"racer-{i}").id for i in range(WORKERS)]
    barrier, results = spawn().Barrier(WORKERS), spawn().Queue()
    outputs = run_workers(_answer_unleased, [(location, lab, query_ids, barrier, results) for lab in labelers], results)

    for query_id, outcomes in zip(query_ids, zip(*outputs, strict=True), strict=True):
        stored = [outcome for outcome in outcomes if isinstance(outcome, int)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, str)]
        assert len(stored) == 1, f"query {query_id}: {outcomes}"
        assert refused == [f"PairUnavailableError: query {query_id} already has the labels it wants"], refused
    with PreferenceStore(location) as store:
        assert len(store.labels()) == len(query_ids)
        assert store.queue_size() == 0
        assert {query.labels_wanted for query in map(store.get_query, query_ids)} == {1}


def acknowledged_labels_survive_a_killed_process(location: str) -> None:
    with open_bound(location) as store:
        query_ids = add_queries(store, np.random.default_rng(3), 5, labels_wanted=1)
        alice = store.get_or_create_labeler("alice").id
    process = spawn().Process(target=_label_then_crash, args=(location, alice, query_ids))
    process.start()
    process.join(timeout=TIMEOUT_S)
    assert process.exitcode == -signal.SIGKILL
    with PreferenceStore(location) as store:
        assert [pair.query_id for pair in store.effective_labels()] == query_ids


def concurrent_first_open_and_bind(location: str) -> None:
    """Processes opening a brand-new database at once all succeed (table creation and binding are serialized)."""
    run_workers(_open_and_bind, [(location,)] * WORKERS, None)
    with PreferenceStore(location) as store:
        binding = store.env()
        assert binding is not None and binding.env_id == "CartPole-v1"


def closed_queries_are_neither_served_nor_answered(location: str) -> None:
    """A run that ends closes the queries still wanting labels: none is leased or answered after that, in this
    store or another one on the same database (another server process) whose labeler still holds a lease, and the
    labels given before stay."""
    with open_bound(location) as store:
        query_ids = add_queries(store, np.random.default_rng(6), 4, labels_wanted=2)
        alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
        store.add_label(query_ids[0], alice, "a", 1.0)
        store.add_label(query_ids[0], bob, "b", 1.0)  # full: not open, so not closed
        store.add_label(query_ids[1], alice, "tie", 1.0)  # half-way: closed with its one label
        assert store.open_label_count() == 1 + 2 + 2
        assert store.last_label_time() is not None
        held = store.lease_next(bob)
        assert held is not None and held.id != query_ids[0]
        assert store.close_open_queries() == 3
        assert store.close_open_queries() == 0
        assert store.lease_next(alice) is None and store.lease_next(bob) is None
        assert store.queue_size() == 0 and store.pending_queries() == [] and store.open_label_count() == 0
        assert [pair.choice for pair in store.effective_labels()] == ["a", "b", "tie"]
    with open_bound(location) as other:  # a second store on the database: the lease held does not let bob answer
        with pytest.raises(PairUnavailableError, match="closed") as refused:
            other.add_label(held.id, bob, "a", 1.0, require_lease=True)
        assert refused.value.reason == "closed"
        assert other.stats().queries_pending == 0 and other.stats().queries == 4
