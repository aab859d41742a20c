"""Labelers (admin: create, list, revoke or rotate a token) and ``POST /api/session`` (the cookie that lets
``<video>`` fetch clips)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from feedback_ui.dependencies import ADMIN_RESPONSES, AdminDep, BearerDep, ServiceDep, labeler_for, run_read, run_write
from feedback_ui.schemas import ErrorPublic, LabelerCreate, LabelerCreated, LabelerPublic, LabelerRef, SessionPublic
from feedback_ui.service import MEDIA_PREFIX
from feedback_ui.sessions import SESSION_SECONDS, Role
from rlhf.store import hash_token

router = APIRouter(tags=["labelers"])


@router.post(
    "/api/admin/labelers",
    status_code=status.HTTP_201_CREATED,
    summary="Add a labeler (admin); the token is shown once",
    responses={**ADMIN_RESPONSES, 409: {"model": ErrorPublic, "description": "name taken"}},
)
async def add_labeler(body: LabelerCreate, _admin: AdminDep, service: ServiceDep) -> LabelerCreated:
    labeler, token = await run_write(service, service.add_labeler, body.name.strip())
    return LabelerCreated(
        id=labeler.id,
        name=labeler.name,
        created_at=labeler.created_at,
        has_token=True,
        token=token,
        url=service.labeler_url(token),
    )


@router.get("/api/admin/labelers", summary="All labelers (admin)", responses=ADMIN_RESPONSES)
async def list_labelers(_admin: AdminDep, service: ServiceDep) -> list[LabelerPublic]:
    labelers = await run_read(service.store.labelers)
    return [LabelerPublic(id=x.id, name=x.name, created_at=x.created_at, has_token=x.has_token) for x in labelers]


_UNKNOWN_LABELER: dict[int | str, dict[str, object]] = {
    **ADMIN_RESPONSES,
    404: {"model": ErrorPublic, "description": "no such labeler"},
}


@router.post(
    "/api/admin/labelers/revoke",
    summary="Revoke a labeler's token (admin); their labels stay",
    responses=_UNKNOWN_LABELER,
)
async def revoke_labeler(body: LabelerRef, _admin: AdminDep, service: ServiceDep) -> LabelerPublic:
    """The token stops working at once on this server, and within a second on every other server process."""
    labeler = await run_write(service, service.revoke_token, body.name)
    return LabelerPublic(id=labeler.id, name=labeler.name, created_at=labeler.created_at, has_token=False)


@router.post(
    "/api/admin/labelers/rotate",
    summary="Give a labeler a new token (admin); the old one stops working",
    responses=_UNKNOWN_LABELER,
)
async def rotate_labeler(body: LabelerRef, _admin: AdminDep, service: ServiceDep) -> LabelerCreated:
    labeler, token = await run_write(service, service.rotate_token, body.name)
    return LabelerCreated(
        id=labeler.id,
        name=labeler.name,
        created_at=labeler.created_at,
        has_token=True,
        token=token,
        url=service.labeler_url(token),
    )


@router.post(
    "/api/session",
    summary="Start a browser session (sets the cookie clips are fetched with)",
    responses={401: {"model": ErrorPublic, "description": "missing or unknown token"}},
)
async def start_session(
    request: Request, response: Response, service: ServiceDep, credentials: BearerDep
) -> SessionPublic:
    """Sets a signed, expiring session cookie for ``/media/`` (not the token itself): ``<video>`` cannot send an
    ``Authorization`` header. The page starts a new session before this one expires."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="missing token", headers={"WWW-Authenticate": "Bearer"}
        )
    token = credentials.credentials
    role: Role
    if service.is_admin(token):
        role, name = "admin", "admin"
    else:
        labeler = await labeler_for(service, token)
        if labeler is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="unknown token: ask the admin for your personal labeling URL",
                headers={"WWW-Authenticate": "Bearer"},
            )
        role, name = "labeler", labeler.name
    response.set_cookie(
        service.sessions.cookie_name,
        service.sessions.issue(role, hash_token(token)),
        max_age=SESSION_SECONDS,
        path=MEDIA_PREFIX,
        secure=request.url.scheme == "https" or service.settings.base_url.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return SessionPublic(role=role, name=name, expires_in=SESSION_SECONDS)
