"""ASGI middleware of the labeling service: bounds on request size, the Host check and the security headers.

Each is a plain ASGI wrapper (no per-request objects beyond what it checks), so the hot routes pay microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedback_ui.settings import host_name

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",  # no inline script: every page loads its script from /static or /vendor
        "style-src 'self' 'unsafe-inline'",  # plotly and Swagger UI set inline styles
        "img-src 'self' data:",
        "media-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",  # no page of this service may be framed (clickjacking)
    )
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
"""Sent with every response."""


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeaderSizeLimit:
    """Refuses requests whose target and headers together exceed ``max_bytes`` with 431.

    The server itself stops reading a request head past the bound (:func:`feedback_ui.server.bounded_http`); this
    check holds under any ASGI server.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
            if size > self.max_bytes:
                response = JSONResponse(
                    {"detail": f"request headers over {self.max_bytes} bytes"},
                    status_code=status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HostCheck:
    """Refuses requests whose ``Host`` header names another host than this server's names, with 400.

    A page on another site that makes its name resolve to this machine (DNS rebinding) then reaches nothing.
    ``allowed`` holds lower-case host names without ports; ``None`` lets every host through.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed is None else frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is not None and scope["type"] == "http":
            host = next((value for name, value in scope.get("headers", ()) if name == b"host"), b"")
            name = host_name(host.decode("latin-1"))
            if name not in self.allowed:
                shown = host.decode("latin-1")[:100]
                response = JSONResponse(
                    {
                        "detail": f"Host {shown!r} is not a name of this server; start it with --public-url "
                        "naming the address people use (or --allowed-hosts)"
                    },
                    status_code=status.HTTP_400_BAD_REQUEST,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length up front or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body over {self.max_bytes} bytes"
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = JSONResponse({"detail": message}, status_code=status.HTTP_413_CONTENT_TOO_LARGE)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading as they are.
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=message)
            return incoming

        await self.app(scope, limited, send)
