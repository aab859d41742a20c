"""Malformed input from an authenticated client is a 4xx with a one-line ``detail``, never a 500: numbers out of
the database's range, NaN and Infinity, bodies that are not UTF-8, clip names no file system takes, and values of
the wrong JSON type (no silent coercion of ``true`` to 1 or ``"3"`` to 3)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, queue_pairs

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"query_id": 9223372036854775808, "side": "left", "seconds_taken": 1}', "query_id: Input should be less"),
        (b'{"query_id": 99999999999, "side": "left", "seconds_taken": 1}', "query_id: Input should be less"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": NaN}', "seconds_taken"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": Infinity}', "seconds_taken"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": -Infinity}', "seconds_taken"),
        (b'{"query_id": true, "side": "left", "seconds_taken": 1}', "query_id: Input should be a valid integer"),
        (b'{"query_id": 1.0, "side": "left", "seconds_taken": 1}', "query_id: Input should be a valid integer"),
        (b'{"query_id": "1", "side": "left", "seconds_taken": 1}', "query_id: Input should be a valid integer"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": "3"}', "seconds_taken: Input should be a valid number"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": true}', "seconds_taken: Input should be a valid number"),
        (b'{"query_id": 1, "side": "left", "seconds_taken": 1, "idempotency_key": 5}', "idempotency_key"),
    ],
)
def test_malformed_labels_are_422(client: TestClient, store: PreferenceStore, raw: bytes, fragment: str) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    response = client.post("/api/labels", content=raw, headers={**bearer(token), **JSON})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert fragment in detail and "\n" not in detail
    assert store.labels() == []


def test_an_integer_number_of_seconds_is_still_a_number(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    body = {"query_id": pair["query_id"], "side": "left", "seconds_taken": 3}
    response = client.post("/api/labels", json=body, headers=bearer(token))
    assert response.status_code == 200 and response.json()["label"]["seconds_taken"] == 3.0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/admin/export", b'{"format": "jsonl", "include_true_returns": "yes"}'),
        ("/api/admin/export", b'{"format": "jsonl", "include_true_returns": 1}'),
        ("/api/admin/labelers", b'{"name": 5}'),
    ],
)
def test_malformed_admin_bodies_are_422(client: TestClient, path: str, body: bytes) -> None:
    response = client.post(path, content=body, headers={**bearer(ADMIN_TOKEN), **JSON})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/labels", b'{"query_id": 1, "side": "\xff\xfe", "seconds_taken": 1}'),
        ("/api/labels", b"\xff\xfe\x00\x00garbage"),
        ("/api/labels/undo", b"\xff"),
        ("/api/admin/labelers", b'{"name": "\xc3"}'),
    ],
)
def test_bodies_that_are_not_utf8_are_4xx(client: TestClient, store: PreferenceStore, path: str, raw: bytes) -> None:
    _, token = store.add_labeler("alice")
    who = ADMIN_TOKEN if "admin" in path else token
    response = client.post(path, content=raw, headers={**bearer(who), **JSON})
    assert response.status_code in (400, 422), response.text
    assert "body" in response.json()["detail"]


def test_undo_bodies_are_strict_too(client: TestClient, store: PreferenceStore) -> None:
    _, token = store.add_labeler("alice")
    for raw in (b'{"idempotency_key": 7}', b'{"idempotency_key": NaN}'):
        response = client.post("/api/labels/undo", content=raw, headers={**bearer(token), **JSON})
        assert response.status_code == 422, (raw, response.text)


@pytest.mark.parametrize("name", ["a%00b.mp4", "%00", "x" * 300, "x" * 255 + ".mp4", "%C3%28.mp4", "a%0Ab.mp4"])
def test_unusable_clip_names_are_404(client: TestClient, store: PreferenceStore, name: str) -> None:
    _, token = store.add_labeler("alice")
    response = client.get(f"/media/{name}", headers=bearer(token))
    assert response.status_code == 404, response.text
