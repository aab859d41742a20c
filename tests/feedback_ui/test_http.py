"""HTTP-level hardening: security headers on every answer, /docs without a CDN, bounded request heads (431), the
Host check, HEAD on pages, and every refusal a route can give listed in the OpenAPI document."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from feedback_ui.app import create_app
from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, make_settings, queue_pairs


@pytest.fixture
def server(workspace: Path) -> Iterator[ServerHandle]:
    with start_server_in_background(workspace, port=0, mode="thread") as handle:
        yield handle


def test_every_answer_carries_the_security_headers(client: TestClient, store: PreferenceStore) -> None:
    queue_pairs(store, 1)
    _, token = store.add_labeler("alice")
    clip = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]["left"]["url"]
    answers = [
        client.get("/"),
        client.get("/admin"),
        client.get("/docs"),
        client.get("/static/label.js"),
        client.get("/api/health"),
        client.get("/api/progress"),  # 401
        client.get(clip, headers=bearer(token)),
        client.get("/media/none.mp4", headers=bearer(token)),  # 404
        client.post("/api/labels", content=b"x" * 20_000, headers=bearer(token)),  # 413
    ]
    for response in answers:
        headers = response.headers
        policy = headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, (response.url, policy)
        assert "default-src 'self'" in policy and "unsafe-eval" not in policy
        assert headers.get("x-content-type-options") == "nosniff"
        assert headers.get("referrer-policy") == "no-referrer"
        assert headers.get("x-frame-options") == "DENY"


def test_pages_have_no_inline_script(client: TestClient) -> None:
    """The policy allows only scripts from this server: every page's script is a file."""
    for page in ("/", "/admin", "/docs"):
        html = client.get(page).text
        assert html.count("<script") == html.count("<script src=") > 0, page


def test_the_api_reference_is_served_without_a_cdn(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text and "/static/docs.js" in docs.text
    assert "http" not in docs.text.replace('name="viewport"', "")  # no absolute URL: nothing from elsewhere
    bundle = client.get("/vendor/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000 and "SwaggerUIBundle" in bundle.text
    assert client.get("/vendor/swagger-ui/swagger-ui.css").status_code == 200
    assert client.get("/vendor/swagger-ui/index.html").status_code == 404
    assert client.get("/redoc").status_code in (401, 404)  # no ReDoc page (it would load fonts from a CDN)


def test_head_answers_like_get(client: TestClient) -> None:
    for path in ("/", "/admin", "/docs", "/vendor/plotly.min.js"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"]


def test_request_heads_are_bounded(client: TestClient, server: ServerHandle) -> None:
    """A 32 MB header is refused while it streams in, a 20 kB one once read; 16 kB of headers pass."""
    big = {"X-Padding": "x" * 20_000}
    assert client.get("/api/health", headers=big).status_code == 431  # any ASGI server: the app's own check
    response = httpx.get(f"{server.url}/api/health", headers=big)
    assert response.status_code == 431 and "request headers over 16384 bytes" in response.json()["detail"]
    assert httpx.get(f"{server.url}/api/health", headers={"X-Padding": "x" * 15_000}).status_code == 200
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Padding: ")
        sent = 0
        try:
            while sent < 32 * 1024 * 1024:
                sock.sendall(b"x" * 65_536)
                sent += 65_536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    # The server hung up before the 32 MB were through (what got further sat in the sockets' buffers, not in it).
    assert sent < 32 * 1024 * 1024
    assert httpx.get(f"{server.url}/api/health").status_code == 200


@pytest.mark.parametrize(
    ("settings", "host", "allowed"),
    [
        ({}, "127.0.0.1:8000", True),
        ({}, "localhost", True),
        ({}, "[::1]:8000", True),
        ({}, "evil.example:8000", False),
        ({}, "", False),
        ({"public_url": "https://label.example.org/"}, "label.example.org", True),
        ({"public_url": "https://label.example.org/"}, "evil.example", False),
        ({"host": "0.0.0.0"}, "192.168.1.20:8000", True),  # every interface, no name given: nothing to check
        ({"host": "0.0.0.0", "public_url": "http://lab-pc:8000"}, "lab-pc:8000", True),
        ({"host": "0.0.0.0", "public_url": "http://lab-pc:8000"}, "192.168.1.20:8000", False),
        ({"host": "lab-pc"}, "LAB-PC:8000", True),
        ({"allowed_hosts": ("*",)}, "anything.example", True),
        ({"allowed_hosts": ("proxy.internal",)}, "proxy.internal:80", True),
    ],
)
def test_the_host_header_must_name_this_server(
    workspace: Path, settings: dict[str, object], host: str, allowed: bool
) -> None:
    app = create_app(make_settings(workspace, **{"allowed_hosts": (), **settings}))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.get("/api/health", headers={"Host": host})
    assert response.status_code == (200 if allowed else 400), response.text
    if not allowed:
        assert "is not a name of this server" in response.json()["detail"]


def test_openapi_lists_every_refusal(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    public = {("/api/health", "get")}
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "422"} <= codes, (path, method, codes)
            if (path, method) in public:
                continue
            assert "401" in codes, (path, method, codes)
            if path.startswith("/api/admin/"):
                assert "403" in codes, (path, method, codes)
            checked += 1
    assert checked >= 12
    assert client.get("/api/admin/stats", headers=bearer(ADMIN_TOKEN)).status_code == 200
