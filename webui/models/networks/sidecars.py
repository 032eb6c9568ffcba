"""The files A1111 keeps beside a model file: a preview image (`name.png`, `name.preview.png`, also .jpg, .jpeg,
.webp, .gif), a description (`name.txt`, `name.description.txt`) and user metadata (`name.json`: activation text,
preferred weight, ...). Found from the folder listing the scan already has; text is re-read only when it changes."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")


def _stem(path: Path) -> str:
    return path.with_suffix("").name


def _parse_json_object(text: str) -> dict:
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


class Sidecars:
    """Sidecar lookups for model files. `siblings` is the set of file names in the model file's folder."""

    def __init__(self):
        self._read_cache: dict[Path, tuple[tuple[int, int], object]] = {}

    def preview(self, path: Path, siblings: set[str]) -> Path | None:
        stem = _stem(path)
        for ext in PREVIEW_EXTENSIONS:
            for candidate in (f"{stem}.{ext}", f"{stem}.preview.{ext}"):
                if candidate in siblings:
                    return path.with_name(candidate)
        return None

    def description(self, path: Path, siblings: set[str]) -> str:
        stem = _stem(path)
        for candidate in (f"{stem}.txt", f"{stem}.description.txt"):
            if candidate in siblings:
                return self._read(path.with_name(candidate), str.strip, "")
        return ""

    def user_metadata(self, path: Path, siblings: set[str]) -> dict:
        candidate = f"{_stem(path)}.json"
        return self._read(path.with_name(candidate), _parse_json_object, {}) if candidate in siblings else {}

    def _read(self, path: Path, parse: Callable[[str], object], default):
        try:
            st = os.stat(path)
            signature = (st.st_mtime_ns, st.st_size)
            cached = self._read_cache.get(path)
            if cached is not None and cached[0] == signature:
                return cached[1]
            value = parse(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable %s: %s", path, exc)
            return default
        self._read_cache[path] = (signature, value)
        return value
