"""``GET /api/health``: the server is up and its database answers (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter

from feedback_ui.dependencies import ServiceDep, run_read
from feedback_ui.schemas import HealthPublic

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", summary="Liveness and database check")
async def health(service: ServiceDep) -> HealthPublic:
    def check() -> HealthPublic:
        binding = service.store.env()
        return HealthPublic(
            status="ok",
            database="ok",
            env_id=None if binding is None else binding.env_id,
            queries_pending=service.store.queue_size(),
        )

    return await run_read(check)
