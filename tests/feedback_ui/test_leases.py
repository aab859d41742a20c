"""Who may answer which pair, over HTTP: only pairs a labeler was served, an undone pair leased back to its labeler,
and refused or late answers that cost the same on a store of 20k labels as on an empty one."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from feedback_ui.app import create_app
from feedback_ui.server import start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import POSTGRES_URL, bearer, make_settings, postgres_copy, queue_pairs
from tests.feedback_ui.load import LoadResult, label_concurrently


def _label(client: TestClient, token: str, query_id: int, side: str = "left", key: str | None = None) -> Any:
    body: dict[str, object] = {"query_id": query_id, "side": side, "seconds_taken": 1.5}
    if key is not None:
        body["idempotency_key"] = key
    return client.post("/api/labels", json=body, headers=bearer(token))


def _next(client: TestClient, token: str) -> Any:
    return client.get("/api/queries/next", headers=bearer(token)).json()["pair"]


def test_a_pair_not_served_cannot_be_answered(client: TestClient, store: PreferenceStore) -> None:
    query_ids = queue_pairs(store, 4)
    _, alice = store.add_labeler("alice")
    served = _next(client, alice)["query_id"]
    other = next(query_id for query_id in query_ids if query_id != served)
    skipped = _label(client, alice, other)
    assert skipped.status_code == 409
    assert skipped.json()["detail"] == f"pair {other} was not served to you; answer the pair you were shown"
    assert store.labels() == []
    assert _label(client, alice, served).status_code == 200
    # Served pairs come in priority order, and only the one served can be answered.
    following = _next(client, alice)["query_id"]
    assert following != served
    assert _label(client, alice, following, key="k").status_code == 200
    assert _label(client, alice, following, key="k").status_code == 200, "a retry of an answer is still replayed"
    assert [label.query_id for label in store.labels()] == [served, following]


def test_undo_leases_the_pair_back_to_its_labeler(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 6)
    _, alice = store.add_labeler("alice")
    others = [store.add_labeler(name)[1] for name in ("bob", "carol", "dave")]
    pair = _next(client, alice)
    assert _label(client, alice, pair["query_id"], "left").status_code == 200
    undone = client.post("/api/labels/undo", headers=bearer(alice)).json()
    assert undone["pair"]["query_id"] == pair["query_id"]
    assert undone["pair"]["lease_expires_at"] is not None
    assert store.get_query(pair["query_id"]).lease_labeler == store.labels()[0].labeler_id
    # The undone pair is the highest priority of the queue: others asking for pairs now must not be served it.
    for token in others:
        assert _next(client, token)["query_id"] != pair["query_id"]
    assert _next(client, alice)["query_id"] == pair["query_id"], "a reload shows the undone pair again"
    again = _label(client, alice, pair["query_id"], "right")
    assert again.status_code == 200, again.text
    effective = store.effective_labels()
    assert [(label.query_id, label.labeler) for label in effective] == [(pair["query_id"], "alice")]
    query = store.get_query(pair["query_id"])
    assert effective[0].choice == query.choice_for_side("right")
    assert query.lease_labeler is None


@pytest.mark.slow
def test_corrections_are_accepted_while_others_label(workspace: Path, store: PreferenceStore) -> None:
    """The audit's case on a real server: eight labelers take pairs as fast as they can while alice answers, undoes
    and answers again; every correction is stored."""
    queue_pairs(store, 600)
    _, alice = store.add_labeler("alice")
    others = {f"labeler-{i}": store.add_labeler(f"labeler-{i}")[1] for i in range(8)}
    stop = threading.Event()
    results: list[LoadResult] = []
    statuses: list[int] = []
    with start_server_in_background(workspace, port=0) as handle:
        load = threading.Thread(target=lambda: results.append(label_concurrently(handle.url, others, None, stop)))
        load.start()
        try:
            with httpx.Client(base_url=handle.url, headers=bearer(alice), timeout=30) as client:
                for _ in range(30):
                    pair = client.get("/api/queries/next").json()["pair"]
                    body = {"query_id": pair["query_id"], "side": "left", "seconds_taken": 1.0}
                    assert client.post("/api/labels", json=body).status_code == 200
                    assert client.post("/api/labels/undo").json()["undone"]["query_id"] == pair["query_id"]
                    statuses.append(client.post("/api/labels", json={**body, "side": "right"}).status_code)
        finally:
            stop.set()
            load.join(60)
    assert results and results[0].errors == [] and len(results[0].acknowledged) > 30, "the others kept labeling"
    assert statuses == [200] * 30
    mine = [label for label in store.effective_labels() if label.labeler == "alice"]
    assert len(mine) == 30 and {label.query_id for label in mine}.isdisjoint(
        a.query_id for a in results[0].acknowledged
    )


# --------------------------------------------------------------------------------------------- bounded work


@dataclass
class Work:
    """What one request made the database do: SQL statements run and SQLite virtual-machine steps (which grow with
    the rows a statement reads)."""

    statements: int = 0
    vm_steps: int = 0


@contextmanager
def counting(client: TestClient) -> Iterator[Work]:
    """Count the work of the app's store while the block runs (SQLite only; no request may be in flight after it)."""
    engine = client.app.state.service.store._engine  # type: ignore[attr-defined]
    work = Work()
    connections: list[sqlite3.Connection] = []

    def step() -> int:
        work.vm_steps += 1
        return 0  # go on

    def before_execute(conn: Any, *_: Any) -> None:
        work.statements += 1
        driver_connection = conn.connection.driver_connection
        if driver_connection not in connections:
            driver_connection.set_progress_handler(step, 1)
            connections.append(driver_connection)

    event.listen(engine, "before_cursor_execute", before_execute)
    try:
        yield work
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)
        for driver_connection in connections:
            driver_connection.set_progress_handler(None, 1)


def _fill(store: PreferenceStore, labeled: int, alice_id: int) -> None:
    """Queue ``labeled + 20`` pairs and answer the first ``labeled`` directly in SQL (half by alice, half by a
    teacher, some of alice's undone): a store as a long campaign leaves it, built in a second."""
    queue_pairs(store, labeled + 20, seed=1)
    teacher = store.get_or_create_labeler("teacher:oracle").id
    with closing(sqlite3.connect(store.url.removeprefix("sqlite:///"))) as conn, conn:
        conn.execute(
            "INSERT INTO rlhf_labels (query_id, labeler_id, choice, seconds_taken, created_at) "
            "SELECT id, CASE WHEN id % 2 = 0 THEN ? ELSE ? END, 'a', 1.0, 0.0 FROM rlhf_queries WHERE id <= ?",
            (alice_id, teacher, labeled),
        )
        conn.execute(
            "INSERT INTO rlhf_labels (query_id, labeler_id, choice, seconds_taken, created_at, supersedes) "
            "SELECT query_id, labeler_id, 'undo', 0.0, 0.0, id FROM rlhf_labels WHERE id % 10 = 4",
        )
        conn.execute(
            "UPDATE rlhf_queries SET labels_done = 1 WHERE id <= ? AND id % 10 <> 4 "
            "AND id IN (SELECT query_id FROM rlhf_labels)",
            (labeled,),
        )


def _set_lease(store: PreferenceStore, query_id: int, labeler_id: int) -> None:
    with closing(sqlite3.connect(store.url.removeprefix("sqlite:///"))) as conn, conn:
        conn.execute(
            "UPDATE rlhf_queries SET lease_labeler = ?, lease_expires_at = ? WHERE id = ?",
            (labeler_id, time.time() + 600, query_id),
        )


def _answers(workspace: Path, labeled: int) -> dict[str, tuple[int, Work]]:
    """Status and work of each kind of answer the service once checked by reading every label."""
    with PreferenceStore(workspace / "prefs.sqlite") as store:
        alice_id, alice = store.add_labeler("alice")
        _, bob = store.add_labeler("bob")
        _fill(store, labeled, alice_id)
        assert len(store.labels()) >= labeled
        answers: dict[str, tuple[int, Work]] = {}
        with TestClient(create_app(make_settings(workspace))) as client:

            def measure(kind: str, token: str, query_id: int, side: str = "left", key: str | None = None) -> None:
                with counting(client) as work:
                    status = _label(client, token, query_id, side, key).status_code
                answers[kind] = (status, work)

            held_by_alice = _next(client, alice)["query_id"]
            held_by_bob = _next(client, bob)["query_id"]
            measure("leased to another", bob, held_by_alice)
            measure("full", bob, 1)  # answered by the teacher
            measure("already answered", alice, 2, key="k-answered")  # her own answer
            assert _label(client, alice, held_by_alice).status_code == 200
            assert client.post("/api/labels/undo", headers=bearer(alice)).status_code == 200
            measure("re-answer after undo", alice, held_by_alice, "right")
            unserved = next(q.id for q in store.pending_queries(alice_id) if q.id not in (held_by_alice, held_by_bob))
            measure("not served", alice, unserved)
            _set_lease(store, held_by_bob, alice_id)  # bob's lease lapsed, and alice was served his pair since
            measure("late", bob, held_by_bob)
    return answers


def test_refused_and_late_answers_cost_the_same_on_a_large_store(workspace_template: Path, tmp_path: Path) -> None:
    small, large = (shutil.copytree(workspace_template, tmp_path / name) for name in ("small", "large"))
    few, many = _answers(small, labeled=20), _answers(large, labeled=20_000)
    for kind, (status, work) in many.items():
        # The same statements, each reading a few index entries: at most a deeper B-tree's worth more steps
        # (measured: 1.0-1.35 times; reading every label instead took over 500 times as many).
        assert work.statements == few[kind][1].statements, kind
        assert work.vm_steps < 2 * few[kind][1].vm_steps, (kind, work, few[kind][1])
        assert status == few[kind][0], kind
    assert {kind: status for kind, (status, _) in many.items()} == {
        "leased to another": 409,
        "full": 409,
        "already answered": 409,
        "re-answer after undo": 200,
        "not served": 409,
        "late": 409,
    }


# --------------------------------------------------------------------------------------------- two servers


def _at_once(query_id: int, clients: dict[str, httpx.Client]) -> list[tuple[str, int, str]]:
    """Each client answers ``query_id`` on its own thread, released together: (name, status, detail), sorted."""
    barrier = threading.Barrier(len(clients))
    outcomes: list[tuple[str, int, str]] = []

    def answer(name: str, client: httpx.Client) -> None:
        barrier.wait(timeout=30)
        response = client.post("/api/labels", json={"query_id": query_id, "side": "right", "seconds_taken": 1})
        outcomes.append((name, response.status_code, response.json().get("detail", "")))

    threads = [threading.Thread(target=answer, args=item) for item in clients.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)


@pytest.mark.parametrize(
    "database",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not POSTGRES_URL, reason="set RLHF_TEST_POSTGRES_URL to run it on PostgreSQL"),
        ),
    ],
)
def test_two_server_processes_never_store_more_labels_than_a_pair_wants(workspace: Path, database: str) -> None:
    """Alice is served pairs by one server and answers and undoes them on another, so the first server's lease
    cache holds stale leases; bob, served by the second server, answers at the same moment as alice. Whatever the
    caches say, each pair gets one label and the other answer a 409."""
    db_url = postgres_copy(workspace) if database == "postgresql" else str(workspace / "prefs.sqlite")
    with PreferenceStore(db_url) as store:
        queue_pairs(store, 8)
        _, alice = store.add_labeler("alice")
        _, bob = store.add_labeler("bob")
    options: dict[str, Any] = {"db_url": db_url} if database == "postgresql" else {}
    raced: list[tuple[int, list[tuple[str, int, str]]]] = []
    with (
        start_server_in_background(workspace, port=0, **options) as first,
        start_server_in_background(workspace, port=0, **options) as second,
        httpx.Client(base_url=first.url, headers=bearer(alice)) as alice_first,
        httpx.Client(base_url=second.url, headers=bearer(alice)) as alice_second,
        httpx.Client(base_url=second.url, headers=bearer(bob)) as bob_second,
    ):
        for _ in range(4):
            query_id = alice_first.get("/api/queries/next").json()["pair"]["query_id"]
            body = {"query_id": query_id, "side": "left", "seconds_taken": 1.0}
            assert alice_second.post("/api/labels", json=body).status_code == 200
            assert alice_second.post("/api/labels/undo").json()["undone"]["query_id"] == query_id
            bob_second.get("/api/queries/next")
            outcomes = _at_once(query_id, {"alice": alice_first, "bob": bob_second})
            raced.append((query_id, sorted(outcomes)))
    with PreferenceStore(db_url) as store:
        for query_id, outcomes in raced:
            assert [status for _, status, _ in outcomes] == [200, 409], outcomes
            refusal = outcomes[1][2]  # depending on which answer reached the store first
            assert refusal in (
                f"pair {query_id} is leased to another labeler; ask for the next pair",
                f"pair {query_id} already has the labels it wants; ask for the next pair",
            ), refusal
            answers = [label for label in store.effective_labels() if label.query_id == query_id]
            assert [label.labeler for label in answers] == ["alice"], (query_id, answers)
        assert max(Counter(label.query_id for label in store.effective_labels()).values()) == 1
