"""The labeling page (``/``), the admin page (``/admin``), the clips (``/media/NAME``) and plotly.js, served from
the installed plotly package (no CDN: labelers may be offline)."""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from feedback_ui.dependencies import ServiceDep, ViewerDep

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def label_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "label.html", headers={"Cache-Control": "no-cache"})


@router.get("/admin")
async def admin_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "admin.html", headers={"Cache-Control": "no-cache"})


@router.get("/vendor/plotly.min.js")
async def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/media/{name}")
async def clip(name: str, _viewer: ViewerDep, service: ServiceDep) -> FileResponse:
    """A rendered clip; byte ranges are answered with 206, which video seeking needs."""
    path = service.clip_file(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"clip {name!r} is missing from the media folder")
    # Clips are named by segment id and never change once rendered.
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=31536000, immutable"})
