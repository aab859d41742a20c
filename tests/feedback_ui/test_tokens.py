"""Revoking and rotating a labeler's token (the store, the admin API, `rlhf labelers revoke|rotate`): a revoked
token is refused at once by the server that revoked it, and within ``TOKEN_RECHECK_S`` by every other server
process and after a change made by another store (the command line)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from feedback_ui.server import start_server_in_background
from feedback_ui.service import TOKEN_RECHECK_S
from rlhf.cli import main
from rlhf.store import PreferenceStore, UnknownLabelerError
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, queue_pairs

WITHIN_S = 3.0
"""How soon every server must refuse a revoked token: TOKEN_RECHECK_S, with room for a slow machine."""


def _refused_within(get: httpx.Client | TestClient, url: str, token: str, seconds: float) -> float:
    """Seconds until ``url`` answers 401 to ``token`` (fails the test past ``seconds``)."""
    start = time.monotonic()
    while True:
        status = get.get(url, headers=bearer(token)).status_code
        waited = time.monotonic() - start
        if status == 401:
            return waited
        assert status == 200, status
        assert waited < seconds, f"the revoked token still works after {waited:.1f} s"
        time.sleep(0.05)


def test_tokens_are_checked_again_within_a_second() -> None:
    assert TOKEN_RECHECK_S <= 1.0


def test_the_store_revokes_and_rotates_tokens(store: PreferenceStore) -> None:
    labeler_id, token = store.add_labeler("alice")
    labeler, new_token = store.rotate_token("alice")
    assert labeler.id == labeler_id and labeler.has_token and new_token != token
    assert store.labeler_for_token(token) is None
    assert store.labeler_for_token(new_token) == labeler
    revoked = store.revoke_token("alice")
    assert not revoked.has_token and store.labeler_for_token(new_token) is None
    with pytest.raises(UnknownLabelerError, match="no labeler named 'bob'"):
        store.revoke_token("bob")
    with pytest.raises(UnknownLabelerError):
        store.rotate_token("bob")


def test_admin_revokes_and_rotates_through_the_api(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    admin = bearer(ADMIN_TOKEN)
    created = client.post("/api/admin/labelers", json={"name": "alice"}, headers=admin).json()
    old = created["token"]
    assert client.get("/api/queries/next", headers=bearer(old)).status_code == 200
    assert client.post("/api/admin/labelers/rotate", json={"name": "alice"}, headers=bearer(old)).status_code == 403
    rotated = client.post("/api/admin/labelers/rotate", json={"name": "alice"}, headers=admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new != old and rotated.json()["url"].endswith(new)
    assert client.get("/api/queries/next", headers=bearer(old)).status_code == 401  # at once, in this process
    assert client.get("/api/queries/next", headers=bearer(new)).status_code == 200
    revoked = client.post("/api/admin/labelers/revoke", json={"name": "alice"}, headers=admin)
    assert revoked.status_code == 200 and revoked.json()["has_token"] is False
    assert client.get("/api/queries/next", headers=bearer(new)).status_code == 401
    assert client.post("/api/session", headers=bearer(new)).status_code == 401
    listed = client.get("/api/admin/labelers", headers=admin).json()
    assert [(row["name"], row["has_token"]) for row in listed] == [("alice", False)]
    unknown = client.post("/api/admin/labelers/revoke", json={"name": "nobody"}, headers=admin)
    assert unknown.status_code == 404 and "no labeler named 'nobody'" in unknown.json()["detail"]


def test_a_token_revoked_by_another_store_is_refused(client: TestClient, workspace: Path) -> None:
    """The command line (another process, another store) revokes under a running server that has the token cached."""
    with PreferenceStore(workspace / "prefs.sqlite") as other:
        _, token = other.add_labeler("alice")
    assert client.get("/api/progress", headers=bearer(token)).status_code == 200
    assert main(["labelers", "revoke", "alice", "--workspace", str(workspace)]) == 0
    _refused_within(client, "/api/progress", token, seconds=WITHIN_S)


def test_every_server_process_refuses_a_revoked_token(
    workspace: Path, store: PreferenceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_pairs(store, 4)
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    with (
        start_server_in_background(workspace, port=0) as first,
        start_server_in_background(workspace, port=0) as second,
        httpx.Client() as http,
    ):
        for server in (first, second):
            for token in (alice, bob):
                assert http.get(f"{server.url}/api/progress", headers=bearer(token)).status_code == 200
        # alice, through the admin API of the first server: refused there at once, on the second soon after.
        response = http.post(
            f"{first.url}/api/admin/labelers/revoke", json={"name": "alice"}, headers=bearer(first.admin_token)
        )
        assert response.status_code == 200, response.text
        assert http.get(f"{first.url}/api/progress", headers=bearer(alice)).status_code == 401
        _refused_within(http, f"{second.url}/api/progress", alice, seconds=WITHIN_S)
        # bob, from the command line: a new URL; the old token is refused by both servers, the new one works.
        capsys.readouterr()
        assert main(["labelers", "rotate", "bob", "--workspace", str(workspace)]) == 0
        printed = capsys.readouterr().out.strip().splitlines()[0]
        assert printed.startswith("bob: http://")
        new = printed.rsplit("token=", 1)[1]
        for server in (first, second):
            _refused_within(http, f"{server.url}/api/progress", bob, seconds=WITHIN_S)
            assert http.get(f"{server.url}/api/progress", headers=bearer(new)).status_code == 200


def test_revoking_an_unknown_labeler_is_one_line(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labelers", "revoke", "nobody", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf labelers-revoke: error: no labeler named 'nobody'") and len(err.splitlines()) == 1
