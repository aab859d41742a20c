"""``POST /api/labels`` (submit), ``POST /api/labels/undo``, ``GET /api/labels`` (the labeler's own labels)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from feedback_ui.dependencies import LABELER_RESPONSES, CurrentLabeler, ServiceDep, run_read, run_write
from feedback_ui.schemas import ErrorPublic, LabelCreate, LabelPublic, NextPublic, SubmitPublic, UndoCreate, UndoPublic

router = APIRouter(prefix="/api/labels", tags=["labels"], responses=LABELER_RESPONSES)

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorPublic, "description": "unknown pair"},
    409: {"model": ErrorPublic, "description": "already answered, leased to someone else, or a reused key"},
    413: {"model": ErrorPublic, "description": "body too large"},
}


@router.post("", summary="Answer a pair", responses=_ERRORS)
async def submit(
    body: LabelCreate,
    labeler: CurrentLabeler,
    service: ServiceDep,
    next: bool = Query(False, description="also lease and return the next pair (one round trip per label)"),
    prefetch: bool = Query(False, description="with next: clip URLs of pairs likely to come after it"),
) -> SubmitPublic:
    """Store the answer (``left``/``right`` are translated to the pair's segments). A retry with the same
    ``idempotency_key`` returns the stored label and stores nothing new."""
    label, query = await run_write(
        service, service.submit, labeler, body.query_id, body.side, body.seconds_taken, body.idempotency_key
    )
    public = service.label_public(label, query)
    if not next:
        return SubmitPublic(label=public)
    leased = await run_write(service, service.next_pair, labeler)
    if leased is None:
        return SubmitPublic(label=public, next=NextPublic(pair=None))
    following, pair = leased
    urls = await run_read(service.prefetch_urls, labeler, following) if prefetch else []
    return SubmitPublic(label=public, next=NextPublic(pair=pair, prefetch=urls))


@router.post("/undo", summary="Undo your latest label", responses=_ERRORS)
async def undo(labeler: CurrentLabeler, service: ServiceDep, body: UndoCreate | None = None) -> UndoPublic:
    """Void this labeler's most recent label (never anyone else's) and return its pair, leased back to them, to
    answer again. Calling it again undoes the label before. ``undone`` is null when there is nothing left to undo."""
    key = body.idempotency_key if body is not None else None
    voided, query = await run_write(service, service.undo, labeler, key)
    if voided is None or query is None:
        return UndoPublic(undone=None, pair=None)
    return UndoPublic(undone=service.label_public(voided, query), pair=await run_read(service.pair, query))


@router.get("", summary="Your labels, newest first")
async def my_labels(
    labeler: CurrentLabeler, service: ServiceDep, limit: int = Query(50, ge=1, le=1000)
) -> list[LabelPublic]:
    return await run_read(service.my_labels, labeler, limit)
