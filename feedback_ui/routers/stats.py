"""``GET /api/progress`` (the labeler's counts and the loop's status) and ``GET /api/admin/stats``."""

from __future__ import annotations

from fastapi import APIRouter

from feedback_ui.dependencies import ADMIN_RESPONSES, LABELER_RESPONSES, AdminDep, CurrentLabeler, ServiceDep, run_read
from feedback_ui.schemas import AdminStatsPublic, ProgressPublic

router = APIRouter(tags=["stats"])


@router.get("/api/progress", summary="Your progress and the loop's status", responses=LABELER_RESPONSES)
async def progress(labeler: CurrentLabeler, service: ServiceDep) -> ProgressPublic:
    return await run_read(service.progress, labeler)


@router.get(
    "/api/admin/stats",
    summary="Labels per labeler, agreement, reward-model accuracy (admin)",
    responses=ADMIN_RESPONSES,
)
async def admin_stats(_admin: AdminDep, service: ServiceDep) -> AdminStatsPublic:
    return await run_read(service.admin_stats)
