"""``GET /api/queries/next``: lease the labeler's next pair."""

from __future__ import annotations

from fastapi import APIRouter, Query

from feedback_ui.dependencies import LABELER_RESPONSES, CurrentLabeler, ServiceDep, run_read, run_write
from feedback_ui.schemas import NextPublic

router = APIRouter(prefix="/api/queries", tags=["queries"], responses=LABELER_RESPONSES)


@router.get("/next", summary="Lease the next pair to label")
async def next_pair(
    labeler: CurrentLabeler,
    service: ServiceDep,
    prefetch: bool = Query(False, description="also return clip URLs of pairs likely to come next"),
) -> NextPublic:
    """The highest-priority pair this labeler may answer, reserved for them for the lease time (a pair they already
    hold comes back first, so a reload shows the same pair). ``pair`` is null when nothing waits for them."""
    leased = await run_write(service, service.next_pair, labeler)
    if leased is None:
        return NextPublic(pair=None)
    query, pair = leased
    urls = await run_read(service.prefetch_urls, labeler, query) if prefetch else []
    return NextPublic(pair=pair, prefetch=urls)
