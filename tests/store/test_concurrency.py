"""Several processes and threads sharing one SQLite store: no query leased twice, no duplicate or lost label."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

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
