"""Job payloads as storable data: JSON text plus the PNG bytes of the images they hold.

A payload (a GenerationRequest with its ControlNet units, an extras request, an options dict, a checkpoint name)
is walked once: dataclasses become `{"$dataclass": "module.Class", "fields": {...}}`, PIL images become
`{"$image": n}` with their PNG bytes kept apart, anything JSON cannot hold is written as `{"$unsaved": "..."}` (and
read back as None). Decoding rebuilds only dataclasses of our own package (`webui.`), so a database edited by hand
cannot make the server import arbitrary code.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import json
from typing import Any

from PIL import Image

from ..core.errors import UserError
from ..core.images import normalise_mode

_OWN_PACKAGE = "webui."
# GenerationRequest.context: extensions' per-run objects, not data; .corrections: told once, when it was queued
_SKIPPED_FIELDS = {"context", "corrections"}
# Records that moved since a history row was written: stored name -> where the class lives now.
_MOVED = {f"webui.engine.request.{name}": f"webui.core.request.{name}"
          for name in ("GenerationRequest", "Outpaint", "FolderBatch")}


@dataclasses.dataclass
class EncodedPayload:
    json: str
    images: list[bytes]
    complete: bool  # False when some value could not be stored (re-running it would not be the same job)


def encode_payload(payload: Any, objects: list | None = None) -> EncodedPayload:
    """`objects`: a list that takes the values JSON cannot hold (an extension's numpy array), referred to by their
    place, instead of losing them: for a hand-over within one run (a pool worker), never for storing."""
    images: list[bytes] = []
    lost: list[str] = []

    def walk(value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, Image.Image):
            buffer = io.BytesIO()
            normalise_mode(value).save(buffer, format="PNG")  # CMYK, YCbCr, F, ... have no PNG form
            images.append(buffer.getvalue())
            return {"$image": len(images) - 1}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            cls = type(value)
            return {"$dataclass": f"{cls.__module__}.{cls.__qualname__}",
                    "fields": {f.name: walk(getattr(value, f.name), f"{where}.{f.name}")
                               for f in dataclasses.fields(value) if f.name not in _SKIPPED_FIELDS}}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {key: walk(item, f"{where}.{key}") for key, item in value.items()}
        if objects is not None:
            objects.append(value)
            return {"$object": len(objects) - 1}
        lost.append(where)
        return {"$unsaved": f"{type(value).__name__}"}

    data = walk(payload, "payload")
    return EncodedPayload(json.dumps(data), images, complete=not lost)


class PayloadError(UserError, ValueError):
    """A stored payload that cannot be rebuilt (an unknown class, a missing image): HTTP 422 for a re-run."""

    status = 422
    kind = "UnusableStoredJob"


def decode_payload(text: str, images: list[bytes], objects: list | None = None) -> Any:
    """`objects`: the values `encode_payload` put aside (a hand-over, not a stored job)."""
    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "$image" in value:
            index = value["$image"]
            if not isinstance(index, int) or not 0 <= index < len(images):
                raise PayloadError(f"the stored job refers to image {index!r}, which is not stored")
            image = Image.open(io.BytesIO(images[index]))
            image.load()
            return image
        if "$unsaved" in value:
            return None
        if "$object" in value and objects is not None:
            index = value["$object"]
            return objects[index] if isinstance(index, int) and 0 <= index < len(objects) else None
        if "$dataclass" in value:
            return _rebuild(value["$dataclass"], {key: walk(item) for key, item in value.get("fields", {}).items()})
        return {key: walk(item) for key, item in value.items()}

    return walk(json.loads(text))


def _rebuild(qualified: str, values: dict) -> Any:
    qualified = _MOVED.get(str(qualified), str(qualified))
    module_name, _, name = qualified.rpartition(".")
    if not module_name.startswith(_OWN_PACKAGE):
        raise PayloadError(f"the stored job holds a {qualified}, which is not one of ours")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise PayloadError(f"the stored job holds a {qualified}, which this version does not have ({exc})") from None
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise PayloadError(f"the stored job holds a {qualified}, which is not a record type")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{key: item for key, item in values.items() if key in known})
