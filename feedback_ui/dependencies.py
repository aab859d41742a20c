"""Dependencies shared by the routers, as ``Annotated`` aliases: ``ServiceDep``, ``CurrentLabeler``, ``AdminDep``.

Requests authenticate with ``Authorization: Bearer TOKEN`` (a labeler's token, or the admin token on admin routes).
``<video>`` elements cannot send headers, so clip requests (GET only) also accept the session cookie that
``POST /api/session`` sets (:mod:`feedback_ui.sessions`: signed, expiring, not the token); state-changing routes
never read the cookie, so they cannot be forged cross-site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from feedback_ui.schemas import ErrorPublic
from feedback_ui.service import LabelingService
from feedback_ui.settings import Settings
from rlhf.store import Labeler, hash_token

_T = TypeVar("_T")

LABELER_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "missing token, or a token that is unknown, revoked or rotated"},
}
"""What routes for labelers list in the OpenAPI document besides their answer."""
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "missing token"},
    403: {"model": ErrorPublic, "description": "a token that is not the admin token"},
}


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app(settings)``; ``get_settings()`` when none given).

    Dependencies here are ``async def``: FastAPI runs a plain ``def`` dependency on its thread pool, a thread hop
    per request for a dictionary lookup.

    Read from the app rather than installed with ``app.dependency_overrides``: FastAPI rebuilds every dependency of
    every request while any override is set (0.8 ms a request, measured here). Tests pass settings to create_app.
    """
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(
    auto_error=False,
    description="A labeler's token (from `rlhf labelers-add`), or the admin token on /api/admin routes.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_service(request: Request) -> LabelingService:
    service: LabelingService = request.app.state.service
    return service


ServiceDep = Annotated[LabelingService, Depends(get_service)]


async def run_write(service: LabelingService, function: Callable[..., _T], *args: Any) -> _T:
    """Run a store write on the service's writer thread (in arrival order, batched into transactions)."""
    return await service.writer.run(function, *args)


async def run_read(function: Callable[..., _T], *args: Any) -> _T:
    """Run a store read on the shared thread pool (SQLite readers never wait for the writer under WAL)."""
    return await run_in_threadpool(function, *args)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


async def labeler_for(service: LabelingService, token: str) -> Labeler | None:
    """The labeler of a token: from the service's short-lived cache, else from the store (on the thread pool)."""
    token_hash = hash_token(token)
    cached = service.cached_labeler(token_hash)
    return cached if cached is not None else await run_read(service.authenticate, token_hash)


async def current_labeler(service: ServiceDep, credentials: BearerDep) -> Labeler:
    """The labeler whose token the request carries; 401 otherwise."""
    if credentials is None:
        raise _unauthorized("missing token: open your personal labeling URL, or send 'Authorization: Bearer TOKEN'")
    labeler = await labeler_for(service, credentials.credentials)
    if labeler is None:
        raise _unauthorized("unknown token: ask the admin for your personal labeling URL")
    return labeler


CurrentLabeler = Annotated[Labeler, Depends(current_labeler)]


async def require_admin(service: ServiceDep, credentials: BearerDep) -> None:
    """401 without a token, 403 with a token that is not the admin token."""
    if credentials is None:
        raise _unauthorized("admin routes need 'Authorization: Bearer ADMIN_TOKEN'")
    if not service.is_admin(credentials.credentials):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this route needs the admin token")


AdminDep = Annotated[None, Depends(require_admin)]


async def require_viewer(request: Request, service: ServiceDep, credentials: BearerDep) -> None:
    """Clips: any labeler or the admin, by bearer token or by the session cookie."""
    if credentials is not None:
        token = credentials.credentials
        if not service.is_admin(token) and await labeler_for(service, token) is None:
            raise _unauthorized("unknown token: open your personal labeling URL again")
        return
    cookie = request.cookies.get(service.sessions.cookie_name)
    if cookie is None:
        raise _unauthorized("clips need a session: open your personal labeling URL first")
    session = service.sessions.verify(cookie)
    if session is None:
        raise _unauthorized("the session expired: reload the page")
    if session.role == "admin":
        if not service.is_admin_hash(session.token_hash):
            raise _unauthorized("the session expired: reload the page")
        return
    token_hash = session.token_hash
    labeler = service.cached_labeler(token_hash) or await run_read(service.authenticate, token_hash)
    if labeler is None:
        raise _unauthorized("this link no longer works: ask the admin for your personal labeling URL")


ViewerDep = Annotated[None, Depends(require_viewer)]
