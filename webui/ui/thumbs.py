"""`GET /sd_extra_networks/thumb?filename=...`: the preview images of the extra networks cards.

Only a file that is the preview of a listed checkpoint, LoRA or embedding is served; any other path is refused
(403), a listed item whose preview went away is 404. Never an arbitrary file.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse

from .extra_networks import THUMB_ROUTE
from .network_cards import listed_preview

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}


def thumb_response(services, filename: str):
    preview, listed = listed_preview(services, filename)
    if preview is None:
        if listed:
            return JSONResponse({"detail": "This preview image no longer exists"}, status_code=404)
        return JSONResponse({"detail": "Not the preview image of a listed checkpoint, LoRA or embedding"},
                            status_code=403)
    return FileResponse(preview, media_type=MEDIA_TYPES.get(preview.suffix.lower()),
                        headers={"Cache-Control": "max-age=3600"})  # the URL carries the file's mtime


def install_thumb_route(app: FastAPI, services) -> None:
    """Add the route (before the UI is mounted at /, which would otherwise take the path)."""

    @app.get(THUMB_ROUTE, include_in_schema=False)
    def thumb(filename: str = ""):
        return thumb_response(services, filename)
