"""The labeling page (``/``), the admin page (``/admin``), the API reference (``/docs``), the clips
(``/media/NAME``), and plotly.js and Swagger UI served from installed packages (no CDN: labelers may be offline).
Every page answers HEAD as it answers GET."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
import plotly
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from feedback_ui.dependencies import ServiceDep, ViewerDep

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
SWAGGER_UI_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
"""Swagger UI's files, as the ``fastapi-offline`` package ships them."""
_VENDOR_CACHE = {"Cache-Control": "public, max-age=86400"}
_GET_HEAD = ["GET", "HEAD"]

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


@router.api_route("/", methods=_GET_HEAD)
async def label_page() -> FileResponse:
    return _page("label.html")


@router.api_route("/admin", methods=_GET_HEAD)
async def admin_page() -> FileResponse:
    return _page("admin.html")


@router.api_route("/docs", methods=_GET_HEAD)
async def api_docs() -> FileResponse:
    return _page("docs.html")


@router.api_route("/vendor/plotly.min.js", methods=_GET_HEAD)
async def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=_VENDOR_CACHE)


@router.api_route("/vendor/swagger-ui/{name}", methods=_GET_HEAD)
async def swagger_ui(name: str) -> FileResponse:
    media_type = SWAGGER_UI_FILES.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no file {name!r} in Swagger UI")
    return FileResponse(SWAGGER_UI_DIR / name, media_type=media_type, headers=_VENDOR_CACHE)


@router.api_route("/media/{name}", methods=_GET_HEAD)
async def clip(name: str, _viewer: ViewerDep, service: ServiceDep) -> FileResponse:
    """A rendered clip; byte ranges are answered with 206, which video seeking needs."""
    path = service.clip_file(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"clip {name[:100]!r} is missing from the media folder")
    # Clips are named by segment id and never change once rendered.
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=31536000, immutable"})
