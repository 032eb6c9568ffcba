"""A1111's `modules.api.api` helpers that extensions' routes call: base64 images in and out. (The API itself is
ours, webui/api; it is not reachable from here.)"""
from __future__ import annotations

import base64
import io

from fastapi import HTTPException


def decode_base64_to_image(encoding):
    """A base64 image (optionally a `data:image/...;base64,` URL) as a PIL image; a 422 when it is not one
    (URLs are not fetched: this server downloads nothing for a client)."""
    from webui.outputs.save import decode_image_base64
    if isinstance(encoding, str) and encoding.startswith(("http://", "https://")):
        raise HTTPException(status_code=422, detail="Image URLs are not accepted; send the image as base64")
    try:
        return decode_image_base64(encoding)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"Invalid encoded image: {exc}") from None


def encode_pil_to_base64(image):
    """`image` as base64 bytes in the `samples_format` setting's format (PNG keeps its `parameters` text)."""
    from webui.outputs.save import encode_png_base64
    from webui.extensions.a1111.runtime import RUNTIME
    services = RUNTIME.services
    fmt = str(services.options.get("samples_format") if services is not None else "png").lower()
    infotext = image.info.get("parameters") if isinstance(getattr(image, "info", None), dict) else None
    if fmt == "png":
        return encode_png_base64(image, infotext).encode("ascii")
    buffer = io.BytesIO()
    picture = image.convert("RGB") if fmt in ("jpg", "jpeg") and image.mode != "RGB" else image
    picture.save(buffer, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper())
    return base64.b64encode(buffer.getvalue())
