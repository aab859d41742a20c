"""Tokens stay out of what the server records: personal links carry the token in the URL's fragment (never sent),
the access log redacts ``token=`` parameters of older links; the clip cookie is a signed, expiring session, not the
bearer token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from feedback_ui.server import LabelersAddConfig, run_labelers_add, wait_healthy, workspace_admin_token
from feedback_ui.service import LabelingService
from feedback_ui.sessions import SESSION_SECONDS, SessionSigner
from rlhf.store import PreferenceStore, hash_token
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, queue_pairs


def test_links_carry_the_token_in_the_fragment(client: TestClient, workspace: Path) -> None:
    created = client.post("/api/admin/labelers", json={"name": "alice"}, headers=bearer(ADMIN_TOKEN)).json()
    assert created["url"] == f"http://127.0.0.1:8000/#token={created['token']}"
    printed = run_labelers_add(LabelersAddConfig(name="bob", workspace=workspace))["url"]
    assert printed.startswith("http://127.0.0.1:8000/#token=")


def _serve_logging_to(workspace: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m feedback_ui --log-level info`` with stdout and stderr (access and error logs) in ``log_path``."""
    command = [sys.executable, "-m", "feedback_ui", "--workspace", str(workspace), "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--log-level", "info", "--announce", "json"], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and '"listening"' in line:
                url = str(json.loads(line)["url"])
                wait_healthy(url, 30, process)
                return process, url
        assert process.poll() is None, log_path.read_text()
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not start")


def test_the_access_log_holds_no_token(workspace: Path, store: PreferenceStore, tmp_path: Path) -> None:
    """At --log-level info every request is logged: tokens sent by older links appear redacted, others never."""
    queue_pairs(store, 2)
    _, token = store.add_labeler("alice")
    admin_token = workspace_admin_token(workspace)
    log_path = tmp_path / "serve.log"
    process, url = _serve_logging_to(workspace, log_path)
    try:
        with httpx.Client() as http:
            assert http.get(f"{url}/?token={token}").status_code == 200  # a link of an older version
            assert http.get(f"{url}/admin?token={admin_token}&x=1").status_code == 200
            assert http.get(f"{url}/api/progress", headers=bearer(token)).status_code == 200
            session = http.post(f"{url}/api/session", headers=bearer(token))
            pair = http.get(f"{url}/api/queries/next", headers=bearer(token)).json()["pair"]
            assert http.get(f"{url}{pair['left']['url']}", cookies=session.cookies).status_code == 200
    finally:
        process.terminate()
        process.wait(30)
    log = log_path.read_text()
    assert '"GET /api/progress HTTP/1.1" 200' in log  # the access log is on
    assert "/?token=[redacted]" in log and "/admin?token=[redacted]&x=1" in log
    assert token not in log and admin_token not in log
    assert hash_token(token) not in log


def _session_cookie(response: Any) -> tuple[str, str, SimpleCookie]:
    """The one cookie a response sets: name, value, parsed (``response``: an httpx or TestClient response)."""
    header = response.headers["set-cookie"]
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    [(name, morsel)] = cookie.items()
    return name, morsel.value, cookie


def test_the_clip_cookie_is_a_session_not_the_token(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    started = client.post("/api/session", headers=bearer(token))
    assert started.status_code == 200 and started.json() == {
        "role": "labeler",
        "name": "alice",
        "expires_in": SESSION_SECONDS,
    }
    name, value, cookie = _session_cookie(started)
    morsel = cookie[name]
    assert token not in value and value != token and hash_token(token) in value
    assert morsel["max-age"] == str(SESSION_SECONDS) and morsel["path"] == "/media/"
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict"
    client.cookies.clear()
    clip = pair["left"]["url"]
    assert client.get(clip, cookies={name: value}).status_code == 200
    # The raw token as a cookie (what older versions set) is no session; neither is a forged one.
    assert client.get(clip, cookies={"rlhf_token": token}).status_code == 401
    assert client.get(clip, cookies={name: token}).status_code == 401
    forged = value.rsplit(".", 1)[0] + "." + "0" * 64
    assert client.get(clip, cookies={name: forged}).status_code == 401
    longer = value.replace(value.split(".")[2], str(int(value.split(".")[2]) + 10**6))
    assert client.get(clip, cookies={name: longer}).status_code == 401


def test_sessions_expire_and_end_with_the_token(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    service: LabelingService = client.app.state.service  # type: ignore[attr-defined]
    name = service.sessions.cookie_name
    expired = service.sessions.issue("labeler", hash_token(token), now=time.time() - SESSION_SECONDS - 1)
    response = client.get(pair["left"]["url"], cookies={name: expired})
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    _, value, _ = _session_cookie(client.post("/api/session", headers=bearer(token)))
    client.cookies.clear()
    assert client.get(pair["left"]["url"], cookies={name: value}).status_code == 200
    client.post("/api/admin/labelers/revoke", json={"name": "alice"}, headers=bearer(ADMIN_TOKEN))
    assert client.get(pair["left"]["url"], cookies={name: value}).status_code == 401


def test_admin_sessions_see_clips_and_need_the_admin_key(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    clip = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]["left"]["url"]
    started = client.post("/api/session", headers=bearer(ADMIN_TOKEN))
    assert started.json()["role"] == "admin"
    name, value, _ = _session_cookie(started)
    assert ADMIN_TOKEN not in value
    client.cookies.clear()
    assert client.get(clip, cookies={name: value}).status_code == 200
    other = SessionSigner(SecretStr("another deployment's admin token"))
    assert other.cookie_name != name  # two workspaces served on one host keep apart cookies
    assert client.get(clip, cookies={name: other.issue("admin", hash_token(ADMIN_TOKEN))}).status_code == 401


@pytest.mark.parametrize("value", ["", "a.b.c", "x" * 1000, "l.h.99999999999.sig", "q.h.1.s"])
def test_malformed_sessions_are_refused(value: str) -> None:
    assert SessionSigner(SecretStr("k")).verify(value) is None
