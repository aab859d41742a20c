"""The JSON API against the app over a real SQLite file: the labeling flow, validation, auth, leases, admin."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sqlalchemy_event

from feedback_ui.app import create_app
from feedback_ui.service import LABELS_PER_PAIR_META_KEY, side_for_choice
from rlhf.labelers import estimate_labeler_quality
from rlhf.store import LoopStatus, PreferenceStore, StoreError
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, make_settings, queue_pairs


def _label(client: TestClient, token: str, query_id: int, side: str, key: str | None = None, **params: str) -> Any:
    body: dict[str, object] = {"query_id": query_id, "side": side, "seconds_taken": 1.5}
    if key is not None:
        body["idempotency_key"] = key
    return client.post("/api/labels", json=body, headers=bearer(token), params=params)


def test_health_and_openapi(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    health = client.get("/api/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "env_id": "CartPole-v1", "queries_pending": 3}
    schema = client.get("/openapi.json").json()
    for path in ("/api/queries/next", "/api/labels", "/api/labels/undo", "/api/progress", "/api/admin/stats",
                 "/api/admin/export", "/api/health"):  # fmt: skip
        assert path in schema["paths"], path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_next_pair_submit_and_sides(client: TestClient, store: PreferenceStore) -> None:
    """Screen sides become choices about segments a/b through the query's recorded left_is_a, both ways."""
    queue_pairs(store, 12)
    _, token = store.add_labeler("alice")
    seen_left_is_a = set()
    for side in ["left", "right", "tie", "skip", "left", "right", "left", "right"]:
        pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
        query = store.get_query(pair["query_id"])
        assert pair["left"]["url"] == f"/media/{query.left_segment}.mp4"
        assert pair["right"]["url"] == f"/media/{query.right_segment}.mp4"
        assert pair["left"]["length"] == 25 and 1 <= pair["left"]["real_steps"] <= 25
        seen_left_is_a.add(query.left_is_a)
        response = _label(client, token, query.id, side)
        assert response.status_code == 200, response.text
        label = response.json()["label"]
        assert label["side"] == side and label["query_id"] == query.id
        stored = [x for x in store.labels() if x.query_id == query.id]
        assert [x.choice for x in stored] == [query.choice_for_side(side)]  # type: ignore[arg-type]
        assert side_for_choice(query, stored[0].choice) == side
    assert seen_left_is_a == {True, False}


def test_reload_returns_the_held_pair_and_next_comes_with_submit(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 5)
    _, token = store.add_labeler("alice")
    first = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    again = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    assert again["query_id"] == first["query_id"]
    result = _label(client, token, first["query_id"], "left", next="true", prefetch="true").json()
    following = result["next"]["pair"]
    assert following["query_id"] != first["query_id"]
    assert store.get_query(following["query_id"]).lease_labeler is not None
    assert all(url.startswith("/media/") for url in result["next"]["prefetch"])


def test_empty_queue(client: TestClient, store: PreferenceStore) -> None:
    _, token = store.add_labeler("alice")
    assert client.get("/api/queries/next", headers=bearer(token)).json() == {"pair": None, "prefetch": []}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"query_id": 1, "side": "up", "seconds_taken": 1}, "side: Input should be 'left', 'right', 'tie' or 'skip'"),
        ({"query_id": 1, "side": "left"}, "seconds_taken: Field required"),
        ({"query_id": 1, "side": "left", "seconds_taken": -1}, "seconds_taken: Input should be greater than"),
        ({"query_id": "x", "side": "left", "seconds_taken": 1}, "query_id: Input should be a valid integer"),
        ({"query_id": 1, "side": "left", "seconds_taken": 1, "idempotency_key": "a b"}, "idempotency_key"),
        ({"query_id": 1, "side": "left", "seconds_taken": 1, "choice": "a"}, "choice: Extra inputs are not permitted"),
    ],
)
def test_invalid_bodies_are_422_with_a_clear_message(
    client: TestClient, store: PreferenceStore, body: dict[str, object], fragment: str
) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    response = client.post("/api/labels", json=body, headers=bearer(token))
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    assert store.labels() == []


def test_malformed_json_is_422(client: TestClient, store: PreferenceStore) -> None:
    _, token = store.add_labeler("alice")
    response = client.post(
        "/api/labels", content=b"{not json", headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]


def test_unknown_and_answered_and_foreign_pairs(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    unknown = _label(client, alice, 999, "left")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "unknown pair 999"
    pair = client.get("/api/queries/next", headers=bearer(alice)).json()["pair"]
    foreign = _label(client, bob, pair["query_id"], "left")
    assert foreign.status_code == 409
    assert "leased to another labeler" in foreign.json()["detail"]
    assert _label(client, alice, pair["query_id"], "left").status_code == 200
    again = _label(client, alice, pair["query_id"], "right")
    assert again.status_code == 409
    assert "already answered" in again.json()["detail"]
    full = _label(client, bob, pair["query_id"], "right")
    assert full.status_code == 409
    assert "already has the labels it wants" in full.json()["detail"]
    assert len(store.effective_labels()) == 1


def test_idempotent_retry_is_stored_once(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    _, token = store.add_labeler("alice")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    first = _label(client, token, pair["query_id"], "left", key="key-1")
    retry = _label(client, token, pair["query_id"], "left", key="key-1")
    assert first.status_code == retry.status_code == 200
    assert first.json()["label"] == retry.json()["label"]
    assert len(store.labels()) == 1
    conflict = _label(client, token, pair["query_id"], "right", key="key-1")
    assert conflict.status_code == 409
    assert "already used" in conflict.json()["detail"]


def test_tokens(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    missing = client.get("/api/queries/next")
    assert missing.status_code == 401 and "missing token" in missing.json()["detail"]
    wrong = client.get("/api/queries/next", headers=bearer("not-a-token"))
    assert wrong.status_code == 401 and "unknown token" in wrong.json()["detail"]
    assert client.get("/api/admin/stats", headers=bearer(token)).status_code == 403
    assert client.get("/api/admin/stats").status_code == 401
    assert client.get("/api/admin/stats", headers=bearer(ADMIN_TOKEN)).status_code == 200
    # The admin token is not a labeler's token.
    assert client.get("/api/queries/next", headers=bearer(ADMIN_TOKEN)).status_code == 401


def test_oversized_body_is_413(client: TestClient, store: PreferenceStore) -> None:
    _, token = store.add_labeler("alice")
    big = {"query_id": 1, "side": "left", "seconds_taken": 1, "idempotency_key": "k", "pad": "x" * 20_000}
    response = client.post("/api/labels", json=big, headers=bearer(token))
    assert response.status_code == 413
    assert "over 16384 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1000

    streamed = client.post(
        "/api/labels", content=chunks(), headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert store.labels() == []


def test_undo_only_own_labels_and_relabel(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 4)
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    nothing = client.post("/api/labels/undo", headers=bearer(alice))
    assert nothing.status_code == 200 and nothing.json() == {"undone": None, "pair": None}
    alice_pair = client.get("/api/queries/next", headers=bearer(alice)).json()["pair"]
    _label(client, alice, alice_pair["query_id"], "left")
    bob_pair = client.get("/api/queries/next", headers=bearer(bob)).json()["pair"]
    _label(client, bob, bob_pair["query_id"], "right")
    undone = client.post("/api/labels/undo", json={"idempotency_key": "u1"}, headers=bearer(alice)).json()
    assert undone["undone"]["query_id"] == alice_pair["query_id"] and undone["undone"]["side"] == "left"
    assert undone["pair"]["query_id"] == alice_pair["query_id"]
    retried = client.post("/api/labels/undo", json={"idempotency_key": "u1"}, headers=bearer(alice)).json()
    assert retried["undone"]["label_id"] == undone["undone"]["label_id"]
    assert [label.labeler for label in store.effective_labels()] == ["bob"]
    assert client.get("/api/labels", headers=bearer(alice)).json() == []
    assert [x["query_id"] for x in client.get("/api/labels", headers=bearer(bob)).json()] == [bob_pair["query_id"]]
    # The undone pair can be answered again.
    relabel = _label(client, alice, alice_pair["query_id"], "tie")
    assert relabel.status_code == 200
    assert sorted(label.labeler for label in store.effective_labels()) == ["alice", "bob"]


def test_expired_lease_returns_the_pair_to_the_queue(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    # A lease long enough that a slow machine does not let it expire between alice's and bob's first requests.
    with TestClient(create_app(make_settings(workspace, lease_seconds=2.0))) as client:
        pair = client.get("/api/queries/next", headers=bearer(alice)).json()["pair"]
        assert client.get("/api/queries/next", headers=bearer(bob)).json()["pair"] is None
        time.sleep(2.1)
        taken = client.get("/api/queries/next", headers=bearer(bob)).json()["pair"]
        assert taken["query_id"] == pair["query_id"]
        late = _label(client, alice, pair["query_id"], "left")
        assert late.status_code == 409
        assert _label(client, bob, pair["query_id"], "right").status_code == 200


def test_k_labels_per_pair_go_to_different_labelers(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 2, labels_wanted=2)
    tokens = [store.add_labeler(name)[1] for name in ("alice", "bob", "carol")]
    with TestClient(create_app(make_settings(workspace, labels_per_pair=2))) as client:
        assert store.get_meta(LABELS_PER_PAIR_META_KEY) == 2
        answered: dict[int, list[int]] = {}
        for index, token in enumerate(tokens * 2):
            pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
            if pair is None:
                continue
            assert _label(client, token, pair["query_id"], "left").status_code == 200
            answered.setdefault(pair["query_id"], []).append(index % 3)
        assert sorted(len(set(who)) for who in answered.values()) == [2, 2]
        stats = client.get("/api/admin/stats", headers=bearer(ADMIN_TOKEN)).json()
        assert stats["agreement"]["overlapping_pairs"] == 2
        assert stats["labels_per_pair"] == 2


def test_progress_and_loop_status(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    _, token = store.add_labeler("alice")
    before = client.get("/api/progress", headers=bearer(token)).json()["loop"]
    assert before["round"] is None and before["reward_val_accuracy"] is None  # the loop has not reported yet
    store.record_loop_status(LoopStatus(2, 40, 100, 4096, 50_000, reward_val_accuracy=0.75))
    store.record_loop_status(LoopStatus(2, 40, 100, 6144, 50_000, policy_true_return=-310.5))
    store.set_meta("ui.task_description", "prefer the clip where the pole stays upright")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    _label(client, token, pair["query_id"], "left")
    progress = client.get("/api/progress", headers=bearer(token)).json()
    assert progress["labeler"] == "alice" and progress["labels_done"] == 1 and progress["queue_size"] == 2
    assert progress["task"] == "prefer the clip where the pole stays upright"
    loop = progress["loop"]
    assert (loop["round"], loop["reward_val_accuracy"], loop["policy_true_return"]) == (2, 0.75, -310.5)
    assert (loop["labels_used"], loop["label_budget"], loop["env_steps"], loop["total_steps"]) == (
        40,
        100,
        6144,
        50_000,
    )
    assert "history" not in loop


def test_admin_stats_labelers_and_export(client: TestClient, store: PreferenceStore, workspace: Path) -> None:
    queue_pairs(store, 4)
    admin = bearer(ADMIN_TOKEN)
    created = client.post("/api/admin/labelers", json={"name": "alice"}, headers=admin)
    assert created.status_code == 201
    token = created.json()["token"]
    assert created.json()["url"] == f"http://127.0.0.1:8000/#token={token}"
    duplicate = client.post("/api/admin/labelers", json={"name": "alice"}, headers=admin)
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    assert client.post("/api/admin/labelers", json={"name": " "}, headers=admin).status_code == 422
    for side in ("left", "right", "skip"):
        pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
        _label(client, token, pair["query_id"], side)
    empty = client.get("/api/admin/stats", headers=admin).json()
    assert (empty["reward_accuracy"], empty["policy_true_return"], empty["loop"]["round"]) == ([], [], None)
    store.record_loop_status(LoopStatus(1, 10, 30, 100, 1000, reward_val_accuracy=0.6))
    store.record_loop_status(LoopStatus(2, 20, 30, 150, 1000))  # counters only: no point on the curves
    store.record_loop_status(LoopStatus(2, 20, 30, 200, 1000, reward_val_accuracy=0.8, policy_true_return=50.0))
    stats = client.get("/api/admin/stats", headers=admin).json()
    alice = next(row for row in stats["labelers"] if row["name"] == "alice")
    assert (alice["labels"], alice["skips"], alice["undos"]) == (3, 1, 0)
    assert [(p["step"], p["labels"], p["value"]) for p in stats["reward_accuracy"]] == [(100, 10, 0.6), (200, 20, 0.8)]
    assert [(p["step"], p["value"]) for p in stats["policy_true_return"]] == [(200, 50.0)]
    assert (stats["loop"]["round"], stats["loop"]["reward_val_accuracy"]) == (2, 0.8)
    assert [row["name"] for row in client.get("/api/admin/labelers", headers=admin).json()] == ["alice"]

    download = client.get("/api/admin/export.jsonl", headers=admin)
    assert download.status_code == 200
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert len(rows) == 2 and {row["choice"] for row in rows} <= {"a", "b"}  # skips are not exported
    written = client.post("/api/admin/export", json={"format": "jsonl"}, headers=admin).json()
    assert written["rows"] == 2 and Path(written["path"]).is_relative_to(workspace / "exports")
    assert (Path(written["path"]) / "preferences.jsonl").is_file()
    assert client.post("/api/admin/export", json={"format": "csv"}, headers=admin).status_code == 422


def test_admin_stats_show_each_labelers_quality_and_weight(client: TestClient, store: PreferenceStore) -> None:
    query_ids = queue_pairs(store, 4, labels_wanted=2)
    alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
    store.get_or_create_labeler("carol")
    store.add_labels(alice, [(query_id, "a", 1.0, None) for query_id in query_ids])
    store.add_labels(bob, [(query_id, choice, 1.0, None) for query_id, choice in zip(query_ids, "abbb", strict=True)])
    admin = bearer(ADMIN_TOKEN)
    before = {row["name"]: row for row in client.get("/api/admin/stats", headers=admin).json()["labelers"]}
    assert (before["alice"]["weight"], before["alice"]["model_agreement"], before["alice"]["judged"]) == (None,) * 3
    # What the loop records after training the reward model (here: a model sure that "a" is better everywhere).
    qualities = estimate_labeler_quality(store.effective_labels(), dict.fromkeys(query_ids, 0.9))
    store.record_labeler_quality(qualities)
    store.set_labeler_weight("carol", 0.0)  # an operator's weight, before carol's first label
    rows = {row["name"]: row for row in client.get("/api/admin/stats", headers=admin).json()["labelers"]}
    assert (rows["alice"]["judged"], rows["alice"]["model_agreement"]) == (4, pytest.approx(0.9))
    assert (rows["bob"]["model_agreement"], rows["bob"]["peer_agreement"]) == (pytest.approx(0.3), 0.25)
    assert rows["alice"]["accuracy"] > rows["bob"]["accuracy"]
    assert rows["alice"]["weight"] == pytest.approx(qualities[alice].weight)
    assert rows["alice"]["weight"] > rows["bob"]["weight"]
    assert not rows["alice"]["weight_set_by_operator"]
    carol = rows["carol"]
    assert (carol["weight"], carol["weight_set_by_operator"], carol["judged"]) == (0.0, True, None)
    store.set_labeler_weight("alice", 2.0)
    rows = {row["name"]: row for row in client.get("/api/admin/stats", headers=admin).json()["labelers"]}
    assert (rows["alice"]["weight"], rows["alice"]["weight_set_by_operator"]) == (2.0, True)


def test_clips_need_a_session_and_answer_ranges(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    url = pair["left"]["url"]
    assert client.get(url).status_code == 401
    session = client.post("/api/session", headers=bearer(token))
    assert session.status_code == 200 and session.json()["role"] == "labeler" and session.json()["name"] == "alice"
    whole = client.get(url)  # the cookie set by /api/session
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.content[4:8] == b"ftyp"
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert client.get("/media/..%2Fprefs.sqlite").status_code == 404
    assert client.get("/media/nope.mp4").status_code == 404


def test_missing_clip_is_reported_in_the_pair(client: TestClient, store: PreferenceStore, workspace: Path) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    query = store.get_query(1)
    (workspace / "clips" / f"{query.left_segment}.mp4").unlink()
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    assert pair["left"]["url"] is None and pair["right"]["url"] is not None
    assert _label(client, token, query.id, "skip").status_code == 200


def test_pages_and_plotly_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'aria-keyshortcuts="ArrowLeft"' in page.text
    admin = client.get("/admin")
    assert admin.status_code == 200 and "/vendor/plotly.min.js" in admin.text and "cdn" not in admin.text.lower()
    plotly_js = client.get("/vendor/plotly.min.js")
    assert plotly_js.status_code == 200 and len(plotly_js.content) > 1_000_000
    assert client.get("/static/label.js").status_code == 200


def test_the_app_never_imports_torch(workspace: Path, store: PreferenceStore) -> None:
    """feedback_ui talks to the store only: serving, labeling and an HF export load no torch."""
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    script = f"""
import sys
from fastapi.testclient import TestClient
from sqlalchemy import event as sqlalchemy_event
from feedback_ui.app import create_app
from feedback_ui.settings import Settings
import feedback_ui.server, rlhf.render
client = TestClient(create_app(Settings(workspace={str(workspace)!r}, admin_token="t", allowed_hosts=["testserver"])))
labeler = {{"Authorization": "Bearer {token}"}}
pair = client.get("/api/queries/next", headers=labeler).json()["pair"]
client.post("/api/labels", json={{"query_id": pair["query_id"], "side": "left", "seconds_taken": 1}}, headers=labeler)
exported = client.post("/api/admin/export", json={{"format": "hf"}}, headers={{"Authorization": "Bearer t"}})
assert exported.status_code == 200 and exported.json()["rows"] == 1, exported.text
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_pairs_come_in_priority_order(client: TestClient, store: PreferenceStore) -> None:
    segments = store.segment_ids()
    pairs = [(segments[0], segments[i]) for i in range(1, 5)]
    ids = store.add_queries(pairs, priorities=[0.1, 0.9, 0.5, 0.7], left_is_a=[True, False, True, False], round=0)
    _, token = store.add_labeler("alice")
    served = []
    for _ in range(4):
        pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
        served.append(pair["query_id"])
        assert _label(client, token, pair["query_id"], "skip").status_code == 200
    assert served == [ids[1], ids[3], ids[2], ids[0]]


def test_my_labels_read_the_store_a_fixed_number_of_times(client: TestClient, store: PreferenceStore) -> None:
    """GET /api/labels reads the pairs of all the labels at once, not one query per label."""
    queue_pairs(store, 12)
    labeler_id, token = store.add_labeler("alice")
    service = client.app.state.service  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = service.store._engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", count)
    try:
        costs = []
        for answered in (2, 12):
            done = {label.query_id for label in store.labels(labeler_id)}
            todo = [query.id for query in store.pending_queries(labeler_id=labeler_id) if query.id not in done]
            store.add_labels(labeler_id, [(query_id, "a", 1.0, None) for query_id in todo[: answered - len(done)]])
            statements.clear()
            labels = client.get("/api/labels", headers=bearer(token)).json()
            assert len(labels) == answered
            costs.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", count)
    assert max(costs) <= 3, costs  # a token check, the labels, their pairs (was one read per label)


@pytest.mark.parametrize("name", ["bob\u202e", "a\nb", "x\u200by", "tab\there", "rtl\u2067", "nul\x00"])
def test_labeler_names_refuse_control_and_bidi_characters(
    client: TestClient, store: PreferenceStore, name: str
) -> None:
    response = client.post("/api/admin/labelers", json={"name": name}, headers=bearer(ADMIN_TOKEN))
    assert response.status_code in (400, 422) and "character" in response.json()["detail"], response.text
    with pytest.raises(StoreError, match="control, format or bidi"):
        store.add_labeler(name)
    assert store.labelers() == []


def test_labeler_names_may_be_any_language(client: TestClient) -> None:
    for name in ("Zoë Ångström", "山田 太郎", "عائشة", "dev 🚀"):
        response = client.post("/api/admin/labelers", json={"name": name}, headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 201, response.text
