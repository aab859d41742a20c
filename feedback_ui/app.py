"""``create_app(settings)``: the labeling service as a FastAPI app, one router per resource.

Every refusal is a 4xx with ``{"detail": "what was wrong"}``: a malformed body or a bad choice 422, a missing or
wrong token 401 (403 for a labeler's token on an admin route), an unknown pair 404, an answered or taken pair and
a reused idempotency key 409, a body over ``max_body_bytes`` 413, headers over ``max_header_bytes`` 431, a Host
header that names another server 400. Every answer carries the security headers of :mod:`feedback_ui.middleware`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from baselines.common.errors import ConfigError
from feedback_ui.middleware import BodySizeLimit, HeaderSizeLimit, HostCheck, SecurityHeaders
from feedback_ui.routers import export, health, labelers, labels, pages, queries, stats
from feedback_ui.schemas import ErrorPublic
from feedback_ui.service import LabelingService
from feedback_ui.settings import Settings, get_settings
from rlhf.store import (
    AlreadyLabeledError,
    DuplicateLabelerError,
    IdempotencyConflictError,
    InvalidLabelError,
    PairUnavailableError,
    PreferenceStore,
    StoreError,
    UnknownLabelerError,
    UnknownQueryError,
    UnknownSegmentError,
)

API_DESCRIPTION = """Labeling service of rlhf-pipeline: people compare two clips of the agent and say which is better.

Authenticate with `Authorization: Bearer TOKEN` (a labeler's token; the admin token on `/api/admin/*`). A labeler
asks for the next pair (`GET /api/queries/next`), answers it (`POST /api/labels`, sides as seen on screen), and may
undo their latest answer (`POST /api/labels/undo`). Retries with the same `idempotency_key` are stored once."""

COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "a Host header that does not name this server, or a store refusal"},
    413: {"model": ErrorPublic, "description": "request body too large"},
    422: {"model": ErrorPublic, "description": "invalid input; `detail` says which field and why"},
    431: {"model": ErrorPublic, "description": "request headers too large"},
}
"""Answers any route may give (routes add their own: 401, 403, 404, 409)."""

_STATUS_FOR_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (UnknownQueryError, status.HTTP_404_NOT_FOUND),
    (UnknownSegmentError, status.HTTP_404_NOT_FOUND),
    (UnknownLabelerError, status.HTTP_404_NOT_FOUND),
    (AlreadyLabeledError, status.HTTP_409_CONFLICT),
    (PairUnavailableError, status.HTTP_409_CONFLICT),
    (IdempotencyConflictError, status.HTTP_409_CONFLICT),
    (DuplicateLabelerError, status.HTTP_409_CONFLICT),
    (InvalidLabelError, status.HTTP_422_UNPROCESSABLE_CONTENT),
)


def _store_error(_request: Request, error: Exception) -> JSONResponse:
    code = next((code for kind, code in _STATUS_FOR_ERROR if isinstance(error, kind)), status.HTTP_400_BAD_REQUEST)
    return JSONResponse({"detail": str(error)}, status_code=code)


def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    """422 with what was wrong where. The input is not echoed: it may be NaN, bytes that are not UTF-8, or large."""
    assert isinstance(error, RequestValidationError)
    problems, errors = [], []
    for item in error.errors():
        loc = [part if isinstance(part, int) else str(part) for part in item.get("loc", ())]
        where = ".".join(str(part) for part in loc if part not in ("body", "query", "path"))
        message = " ".join(str(item.get("msg", "invalid")).split())
        problems.append(f"{where or 'body'}: {message}")
        errors.append({"loc": loc, "msg": message, "type": str(item.get("type", "invalid"))})
    return JSONResponse(
        {"detail": "; ".join(problems) or "invalid request", "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(settings: Settings | None = None, *, store: PreferenceStore | None = None) -> FastAPI:
    """The labeling service over the store of ``settings`` (or ``store``), opened now so bad settings fail here.

    Raises:
        ConfigError: the workspace or the media dir given does not exist, the media dir is a file, or the database
            cannot be opened.
    """
    settings = settings if settings is not None else get_settings()
    if settings.workspace is not None and not settings.workspace.is_dir():
        raise ConfigError(f"workspace {settings.workspace} does not exist (it is the run folder of `rlhf run`)")
    media = settings.resolved_media_dir
    if media.exists() and not media.is_dir():
        raise ConfigError(f"media dir {media} is a file, not a folder of clips; pass the folder with --media-dir")
    if settings.media_dir is not None and not media.exists():
        raise ConfigError(f"media dir {media} does not exist; pass the folder of the rendered clips with --media-dir")
    if store is None:
        store = PreferenceStore(settings.resolved_db_url, sqlite_synchronous=settings.sqlite_synchronous)
    service = LabelingService(store, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="rlhf-pipeline labeling service",
        version="1",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
        docs_url=None,  # pages.py serves /docs with Swagger UI from an installed package, not a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    for router in (health.router, queries.router, labels.router, stats.router, labelers.router, export.router):
        app.include_router(router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    handlers: dict[Any, Any] = {StoreError: _store_error, ConfigError: _store_error}
    handlers[RequestValidationError] = _validation_error
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Added last, run first: the Host check and the header bound before anything else; every answer, refusals
    # included, carries the security headers.
    app.add_middleware(HostCheck, allowed=settings.allowed_host_names)
    app.add_middleware(HeaderSizeLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(SecurityHeaders)
    return app
