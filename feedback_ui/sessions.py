"""Browser sessions for clips: ``<video>`` cannot send an ``Authorization`` header, so ``POST /api/session`` (with
the bearer token) sets a cookie that ``/media/`` accepts instead.

The cookie is not the token: it holds the role, the SHA-256 of the token (what the store keeps) and an expiry,
signed with HMAC-SHA256 under a key derived from the admin token. Every server process of one deployment shares the
admin token, so a session started on one is valid on all; a session of a labeler whose token was revoked or rotated
since names no labeler and is refused; changing the admin token ends every session. The cookie's name carries a tag
of the key, so servers of two workspaces on one host (cookies ignore ports) keep apart cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

SESSION_SECONDS = 12 * 3600
"""How long a session cookie lasts; the pages start a new session every ``SESSION_REFRESH`` (label.js, admin.js)."""

Role = Literal["labeler", "admin"]
_ROLE_CODES: dict[str, Role] = {"l": "labeler", "a": "admin"}


@dataclass(frozen=True)
class Session:
    role: Role
    token_hash: str
    expires_at: int


class SessionSigner:
    """Issues and checks session cookie values.

    Args:
        admin_token: the deployment's admin token; without one, a random key (sessions then hold in this process
            only).
    """

    def __init__(self, admin_token: SecretStr | None) -> None:
        secret = admin_token.get_secret_value().encode() if admin_token is not None else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"rlhf-pipeline session cookie v1", hashlib.sha256).digest()
        self.cookie_name = f"rlhf_session_{hashlib.sha256(self._key).hexdigest()[:8]}"

    def _signature(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, role: Role, token_hash: str, now: float | None = None) -> str:
        """A cookie value for ``role`` holding ``token_hash``, valid for ``SESSION_SECONDS`` from ``now``."""
        expires_at = int(time.time() if now is None else now) + SESSION_SECONDS
        payload = f"{role[0]}.{token_hash}.{expires_at}"
        return f"{payload}.{self._signature(payload)}"

    def verify(self, value: str, now: float | None = None) -> Session | None:
        """The session a cookie value holds, or None if it is malformed, forged or expired."""
        parts = value.split(".")
        if len(parts) != 4 or len(value) > 256:
            return None
        code, token_hash, expires, signature = parts
        if not hmac.compare_digest(signature, self._signature(f"{code}.{token_hash}.{expires}")):
            return None
        role = _ROLE_CODES.get(code)
        if role is None or not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
            return None
        return Session(role, token_hash, int(expires))
