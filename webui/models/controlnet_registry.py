"""The ControlNet models under `models/ControlNet` (subfolders too): single files (.safetensors, .pth, .ckpt, .pt,
.bin) and diffusers folders (config.json + weights), listed as A1111's extension lists them: `name [8-hex hash]`,
the hash being A1111's legacy model hash of the weights file."""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .folders import walk_folder
from .hashing import file_signature, legacy_model_hash
from .registry import UnknownCheckpointError

log = logging.getLogger(__name__)

CONTROLNET_EXTENSIONS = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin")
NO_MODEL = "None"
_TITLE = re.compile(r"^(.*\S)\s*\[([0-9a-fA-F]{8})\]$")


class UnknownControlNetError(UnknownCheckpointError):
    """No ControlNet model has that name (HTTP 422: a ControlNet unit's bad value; callers name the unit)."""

    status = 422
    kind = "UnknownControlNet"

    def __init__(self, query: str, available: Iterable[str]):
        super().__init__(query, list(available), "ControlNet model")


@dataclass(frozen=True)
class ControlNetInfo:
    name: str  # file stem (folder name for diffusers folders)
    path: Path  # the file, or the diffusers folder
    weights: Path  # the file hashed and read
    shorthash: str  # A1111's legacy 8-hex hash
    mtime: float = 0.0
    size: int = 0

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]"

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def config(self) -> Path | None:
        """A yaml beside a single file (A1111's `control_v11p_sd15_canny.yaml`), or the folder's config.json."""
        if self.is_folder:
            return self.path / "config.json"
        sidecar = self.path.with_suffix(".yaml")
        return sidecar if sidecar.is_file() else None


def _diffusers_weights(folder: Path) -> Path | None:
    if not (folder / "config.json").is_file():
        return None
    for name in DIFFUSERS_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    return None


class ControlNetRegistry:
    def __init__(self, roots: Iterable[Path]):
        self.roots = [Path(root) for root in roots]
        self._entries: list[ControlNetInfo] = []
        self._lock = threading.RLock()

    def refresh(self) -> None:
        with self._lock:
            previous = {entry.path: entry for entry in self._entries}
        found: dict[str, ControlNetInfo] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for folder, dirnames, filenames in walk_folder(root):
                candidates: list[tuple[str, Path, Path]] = []
                for dirname in list(dirnames):
                    weights = _diffusers_weights(folder / dirname)
                    if weights is not None:
                        candidates.append((dirname, folder / dirname, weights))
                        dirnames.remove(dirname)  # its files are the model's, not models of their own
                for filename in filenames:
                    if filename.lower().endswith(CONTROLNET_EXTENSIONS) and not filename.startswith("."):
                        candidates.append((os.path.splitext(filename)[0], folder / filename, folder / filename))
                for name, path, weights in candidates:
                    entry = self._make(name, path, weights, previous.get(path))
                    if entry is not None and name not in found:
                        found[name] = entry
                    elif entry is not None:
                        log.warning("two ControlNet models are called %s; ignoring %s", name, path)
        with self._lock:
            self._entries = sorted(found.values(), key=lambda e: e.name.lower())

    @staticmethod
    def _make(name: str, path: Path, weights: Path, previous: ControlNetInfo | None) -> ControlNetInfo | None:
        try:
            mtime, size = file_signature(weights)
            if previous is not None and (previous.mtime, previous.size) == (mtime, size):
                return previous
            return ControlNetInfo(name, path, weights, legacy_model_hash(weights), mtime, size)
        except OSError as exc:
            log.warning("skipping ControlNet model %s: %s", path, exc)
            return None

    def list(self) -> list[ControlNetInfo]:
        with self._lock:
            return list(self._entries)

    def titles(self) -> list[str]:
        """A1111's model_list: "None" first, then every model's title."""
        return [NO_MODEL, *[entry.title for entry in self.list()]]

    def resolve(self, query: str) -> ControlNetInfo:
        """By exact title; else by name (case-insensitive, a title with another hash counts by its name); else the
        shortest name containing the query. "None" and unknown names raise UnknownControlNetError."""
        text = str(query or "").strip()
        entries = self.list()
        for entry in entries:
            if entry.title == text:
                return entry
        match = _TITLE.match(text)
        name = (match.group(1) if match else text).lower()
        for entry in entries:
            if entry.name.lower() == name:
                return entry
        containing = [entry for entry in entries if name and name in entry.name.lower()]
        if containing and text != NO_MODEL:
            return min(containing, key=lambda e: (len(e.name), e.name))
        raise UnknownControlNetError(text, self.titles()[1:])
