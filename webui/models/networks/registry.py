"""The LoRA files under the LoRA folders (subfolders too): names and aliases, metadata, A1111's LoRA hash,
preview images and descriptions beside each file, and a guess of the base model it was trained for."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..folders import walk_folder
from ..hashing import HashCache, file_signature
from .family import guess_family
from .files import (NETWORK_EXTENSIONS, NetworkFileError, header_metadata, header_shapes, network_file_sha256,
                    read_safetensors_header)
from .sidecars import Sidecars

log = logging.getLogger(__name__)

HASH_KIND = "lora-addnet"


@dataclass
class LoraInfo:
    """One LoRA file. `name` is the file stem (what `<lora:name:...>` uses), `relative_name` the path below its
    folder without extension (also accepted in tags), `alias` the `ss_output_name` metadata (or the name).
    `filename` is the full path as a string, as A1111 reports it."""

    name: str
    alias: str
    path: Path
    relative_name: str
    metadata: dict
    base_family: str | None
    preview: Path | None = None
    description: str = ""
    user_metadata: dict = field(default_factory=dict)  # `name.json` beside the file (activation text, ...)
    mtime: float = 0.0
    size: int = 0
    error: str | None = None  # why the header could not be read, if it could not
    hash_cache: HashCache | None = field(default=None, repr=False, compare=False)
    _sha256: str | None = field(default=None, repr=False, compare=False)

    @property
    def filename(self) -> str:
        return str(self.path)

    @property
    def sha256(self) -> str:
        """A1111's LoRA hash in full: the `sshs_model_hash` metadata when present, else the sha256 of the tensor
        data after the header (the whole file for .pt/.ckpt), cached in the HashCache. "" if the file can't be
        read."""
        if self._sha256 is None:
            claimed = self.metadata.get("sshs_model_hash")
            if isinstance(claimed, str) and claimed:
                self._sha256 = claimed
            else:
                self._sha256 = self._hash_file()
        return self._sha256

    @property
    def shorthash(self) -> str:
        """The 12 hex digits A1111 writes in `Lora hashes` infotext."""
        return self.sha256[:12]

    def _hash_file(self) -> str:
        cached = self.hash_cache.get(self.path, HASH_KIND) if self.hash_cache else None
        if cached:
            return cached
        try:
            signature = file_signature(self.path)
            sha = network_file_sha256(self.path)
        except (OSError, NetworkFileError) as exc:
            log.warning("Cannot hash LoRA %s: %s", self.path, exc)
            return ""
        if self.hash_cache is not None:
            self.hash_cache.put(self.path, sha, HASH_KIND, signature)
        return sha


def _read_file_facts(path: Path) -> tuple[dict, str | None, str | None]:
    """(metadata, base family guess, error) from the file's header; .pt/.ckpt are not opened (no metadata)."""
    if path.suffix.lower() != ".safetensors":
        return {}, None, None
    try:
        header, _ = read_safetensors_header(path)
    except NetworkFileError as exc:
        log.warning("LoRA %s", exc)
        return {}, None, str(exc)
    metadata = header_metadata(header)
    return metadata, guess_family(header_shapes(header), metadata), None


class LoraRegistry:
    """The LoRA files under `roots` (e.g. models/Lora and models/LyCORIS), refreshed on demand."""

    def __init__(self, roots: Iterable[Path], hash_cache: HashCache):
        self.roots = [Path(r) for r in roots]
        self.hash_cache = hash_cache
        self._lock = threading.RLock()
        self._entries: list[LoraInfo] = []
        self._sidecars = Sidecars()

    def _scan(self) -> list[tuple[Path, str, set[str]]]:
        """(path, relative name without extension, names of the files beside it) for every LoRA file."""
        found = []
        for root in self.roots:
            for folder, _, filenames in walk_folder(root):
                siblings = set(filenames)
                for filename in filenames:
                    if filename.lower().endswith(NETWORK_EXTENSIONS):
                        path = folder / filename
                        found.append((path, path.relative_to(root).with_suffix("").as_posix(), siblings))
        return found

    def _info(self, path: Path, relative: str, siblings: set[str], previous: LoraInfo | None) -> LoraInfo | None:
        try:
            mtime, size = file_signature(path)
        except OSError as exc:
            log.warning("Skipping LoRA %s: %s", path, exc)
            return None
        unchanged = previous is not None and (previous.mtime, previous.size) == (mtime, size)
        if unchanged:
            metadata, family, error = previous.metadata, previous.base_family, previous.error
        else:
            metadata, family, error = _read_file_facts(path)
        name = path.with_suffix("").name
        alias = metadata.get("ss_output_name")
        info = LoraInfo(name=name, alias=alias if isinstance(alias, str) and alias else name, path=path,
                        relative_name=relative, metadata=metadata, base_family=family,
                        preview=self._sidecars.preview(path, siblings),
                        description=self._sidecars.description(path, siblings),
                        user_metadata=self._sidecars.user_metadata(path, siblings), mtime=mtime, size=size,
                        error=error, hash_cache=self.hash_cache)
        if unchanged:
            if info == previous:
                return previous  # same object: what was computed on it (the hash) stays
            info._sha256 = previous._sha256
        return info

    def refresh(self) -> None:
        """Rescan the folders; unchanged files keep what was read from them (metadata, hash). Cheap enough to call
        before every generation: one stat per LoRA file, sidecars found in the folder listings."""
        with self._lock:
            previous = {info.path: info for info in self._entries}
        entries = []
        for path, relative, siblings in self._scan():
            info = self._info(path, relative, siblings, previous.get(path))
            if info is not None:
                entries.append(info)
        entries.sort(key=lambda i: (i.name.lower(), i.relative_name.lower()))
        with self._lock:
            self._entries = entries

    def list(self) -> list[LoraInfo]:
        with self._lock:
            return list(self._entries)

    def find(self, name: str) -> LoraInfo | None:
        """By name (file stem), then alias, then relative path without extension; exact case first."""
        query = name.strip().replace("\\", "/")
        with self._lock:
            entries = list(self._entries)
        for fold in (False, True):
            wanted = query.lower() if fold else query
            for attribute in ("name", "alias", "relative_name"):
                for info in entries:
                    value = getattr(info, attribute)
                    if (value.lower() if fold else value) == wanted:
                        return info
        return None
