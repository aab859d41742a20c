"""Admin export of the labels: the same export as ``rlhf export`` (HF dataset or JSONL), on the server or as a
JSONL download."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from feedback_ui.dependencies import ADMIN_RESPONSES, AdminDep, ServiceDep, run_read
from feedback_ui.schemas import ExportCreate, ExportPublic
from rlhf.store import JSONL_FILE

router = APIRouter(prefix="/api/admin", tags=["export"], responses=ADMIN_RESPONSES)


@router.post("/export", summary="Export the labels into the workspace (admin)")
async def export(body: ExportCreate, _admin: AdminDep, service: ServiceDep) -> ExportPublic:
    """Writes WORKSPACE/exports/FORMAT-TIME/ (a `datasets` folder, or preferences.jsonl) and returns its path."""
    folder, rows = await run_read(service.export, body.format, body.include_true_returns)
    return ExportPublic(path=str(folder), rows=rows, format=body.format)


@router.get("/export.jsonl", summary="Download the labels as JSONL (admin)", response_class=FileResponse)
async def download_jsonl(_admin: AdminDep, service: ServiceDep, include_true_returns: bool = True) -> FileResponse:
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-export-"))
    try:
        folder, _rows = await run_read(service.export, "jsonl", include_true_returns, scratch / "export")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return FileResponse(
        folder / JSONL_FILE,
        media_type="application/x-ndjson",
        filename="preferences.jsonl",
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )
