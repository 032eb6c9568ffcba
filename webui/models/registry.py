"""Registry of model files on disk (checkpoints by default).

Scans one or more root folders for model files and diffusers folders, keeps
their hashes (from the :class:`HashCache`, or computed in the background) and
resolves the many names A1111 clients use for a model: title, relative name,
``model_name``, stem, short/full sha256 and the legacy 8-hex hash.

The same class serves other model kinds (LoRA, VAE, ...) through the
``extensions`` / ``exclude`` / ``cache_kind`` constructor parameters.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from ..core.errors import UserError
from .hashing import BackgroundHasher, HashCache, file_signature, legacy_model_hash

log = logging.getLogger(__name__)

DIFFUSERS_MARKER = "model_index.json"
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".gguf")  # .gguf: quantised FLUX.1 / SD3 (gguf_files.py)
CHECKPOINT_EXCLUDE = ("*.vae.*",)

_TITLE_RE = re.compile(r"^(.*\S)\s*\[([0-9a-fA-F]+)\]$")
_HASH_QUERY_RE = re.compile(r"^(?:[0-9a-fA-F]{10}|[0-9a-fA-F]{64})$")


@dataclass
class CheckpointInfo:
    """One model file (or diffusers folder) found under a registry root."""

    path: Path
    name: str
    kind: str  # "safetensors" | "ckpt" | "diffusers" (or another extension without dot)
    sha256: Optional[str] = None
    legacy_hash: Optional[str] = None
    config: Optional[Path] = None
    size: int = 0
    mtime: float = 0.0

    @property
    def name_without_ext(self) -> str:
        """Relative name without the file extension (folders keep their name)."""
        if self.kind == "diffusers":
            return self.name
        return os.path.splitext(self.name)[0]

    @property
    def model_name(self) -> str:
        """A1111's ``model_name``: extension-less name with path separators as ``_``."""
        return self.name_without_ext.replace("/", "_").replace("\\", "_")

    @property
    def name_for_extra(self) -> str:
        """File stem (folder name for diffusers), as used in extra networks."""
        if self.kind == "diffusers":
            return Path(self.name).name
        return self.path.stem

    @property
    def shorthash(self) -> Optional[str]:
        """First 10 hex chars of the sha256, or None while unknown."""
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        """``"name [shorthash]"`` when the hash is known, else just ``name``."""
        return f"{self.name} [{self.shorthash}]" if self.sha256 else self.name


class UnknownCheckpointError(UserError, KeyError):
    """Raised by :meth:`CheckpointRegistry.resolve` when nothing matches (HTTP 400)."""

    status = 400
    kind = "UnknownCheckpoint"

    def __init__(self, query: str, available: Sequence[str], label: str = "checkpoint"):
        super().__init__(query)
        self.query = query
        self.available = list(available)
        self.label = label

    def __str__(self) -> str:
        shown = ", ".join(self.available[:20])
        more = f" (+{len(self.available) - 20} more)" if len(self.available) > 20 else ""
        return f"Unknown {self.label} '{self.query}'. Available: {shown}{more}"


# Lookup keys in resolve() priority order.
_KEYS: tuple[Callable[[CheckpointInfo], Optional[str]], ...] = (
    lambda i: i.title,
    lambda i: i.name,
    lambda i: i.model_name,
    lambda i: i.name_without_ext,
    lambda i: i.name_for_extra,
    lambda i: i.shorthash,
    lambda i: i.sha256,
    lambda i: i.legacy_hash,
)


class CheckpointRegistry:
    """Thread-safe index of the model files under ``roots``.

    ``extensions``: file suffixes to collect (case-insensitive).
    ``exclude``: fnmatch patterns on the lower-cased file name to skip
    (default skips VAEs such as ``x.vae.safetensors``).
    ``detect_diffusers``: also collect folders holding ``model_index.json``.
    ``cache_kind``: the kind under which hashes are cached.
    ``label``: word used in error messages.
    """

    def __init__(
        self,
        roots: Iterable[Union[str, Path]],
        hash_cache: HashCache,
        hasher: Optional[BackgroundHasher] = None,
        *,
        extensions: Sequence[str] = CHECKPOINT_EXTENSIONS,
        exclude: Sequence[str] = CHECKPOINT_EXCLUDE,
        detect_diffusers: bool = True,
        cache_kind: str = "checkpoint",
        label: str = "checkpoint",
    ):
        self.roots = [Path(r).absolute() for r in roots]
        self.cache = hash_cache
        self.hasher = hasher
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.exclude = tuple(p.lower() for p in exclude)
        self.detect_diffusers = detect_diffusers
        self.cache_kind = cache_kind
        self.label = label
        self._lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self._entries: list[CheckpointInfo] = []
        self._by_path: dict[Path, CheckpointInfo] = {}

    # ----------------------------------------------------------------- scanning

    def _wanted_file(self, filename: str) -> Optional[str]:
        """Kind of a model file (extension without dot), or None to skip it."""
        low = filename.lower()
        if filename.startswith(".") or not low.endswith(self.extensions):
            return None
        if any(fnmatch.fnmatchcase(low, pat) for pat in self.exclude):
            return None
        return os.path.splitext(low)[1][1:]

    def _scan_root(self, root: Path) -> list[tuple[Path, str, str]]:
        """``(path, name, kind)`` for every model under ``root``."""
        found: list[tuple[Path, str, str]] = []
        if not root.is_dir():
            log.debug("Model root %s does not exist", root)
            return found
        if self.detect_diffusers and (root / DIFFUSERS_MARKER).is_file():
            return [(root, root.name, "diffusers")]
        seen: set[str] = set()  # real paths, guards against symlink loops
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            here = Path(dirpath)
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                sub = here / d
                if self.detect_diffusers and (sub / DIFFUSERS_MARKER).is_file():
                    found.append((sub, sub.relative_to(root).as_posix(), "diffusers"))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for fn in sorted(filenames):
                kind = self._wanted_file(fn)
                if kind is not None:
                    p = here / fn
                    found.append((p, p.relative_to(root).as_posix(), kind))
        return found

    def _make_info(self, path: Path, name: str, kind: str,
                   previous: Optional[CheckpointInfo]) -> Optional[CheckpointInfo]:
        """Build an entry, reusing hashes from ``previous`` when the file is unchanged."""
        try:
            mtime, size = file_signature(path)
        except OSError as e:
            log.warning("Skipping %s: %s", path, e)
            return None
        config = None
        if kind != "diffusers":
            sidecar = path.with_suffix(".yaml")
            config = sidecar if sidecar.is_file() else None
        if previous is not None and previous.mtime == mtime and previous.size == size:
            sha = previous.sha256 or self.cache.get(path, self.cache_kind)
            return dataclasses.replace(previous, name=name, kind=kind, config=config, sha256=sha)
        legacy = None
        if kind != "diffusers":
            try:
                legacy = legacy_model_hash(path)
            except OSError as e:
                log.warning("Could not read %s: %s", path, e)
        return CheckpointInfo(
            path=path, name=name, kind=kind,
            sha256=self.cache.get(path, self.cache_kind),
            legacy_hash=legacy, config=config, size=size, mtime=mtime,
        )

    def refresh(self) -> None:
        """Rescan all roots; hashes missing from the cache are queued on the hasher."""
        with self._refresh_lock:
            with self._lock:
                previous = dict(self._by_path)
            entries: list[CheckpointInfo] = []
            names: set[str] = set()
            for root in self.roots:
                for path, name, kind in self._scan_root(root):
                    if name in names:
                        log.warning("Duplicate %s name %s (%s) ignored", self.label, name, path)
                        continue
                    info = self._make_info(path, name, kind, previous.get(path))
                    if info is not None:
                        names.add(name)
                        entries.append(info)
            entries.sort(key=lambda i: (i.name.lower(), i.name))
            with self._lock:
                self._entries = entries
                self._by_path = {i.path: i for i in entries}
                missing = [i.path for i in entries if i.sha256 is None]
        if self.hasher is not None:
            for path in missing:
                self.hasher.submit(path, self.cache_kind, on_done=self._on_hashed)

    def _on_hashed(self, path: Path, sha256: str) -> None:
        """Background-hasher callback: record the hash on the current entry."""
        with self._lock:
            info = self._by_path.get(Path(path))
            if info is not None:
                info.sha256 = sha256

    # ------------------------------------------------------------------ queries

    def list(self) -> list[CheckpointInfo]:
        """Snapshot copies of all entries, sorted by name (case-insensitive)."""
        with self._lock:
            return [dataclasses.replace(i) for i in self._entries]

    def titles(self) -> list[str]:
        """Titles of all entries, in list order."""
        with self._lock:
            return [i.title for i in self._entries]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @staticmethod
    def _match(query: str, entries: Sequence[CheckpointInfo]) -> Optional[CheckpointInfo]:
        """First entry matching ``query`` by key priority, exact case before any case."""
        for key in _KEYS:
            for info in entries:
                if key(info) == query:
                    return info
        low = query.lower()
        for key in _KEYS:
            for info in entries:
                value = key(info)
                if value is not None and value.lower() == low:
                    return info
        return None

    def _lookup(self, query: str) -> Optional[CheckpointInfo]:
        with self._lock:
            entries = list(self._entries)
        candidates = [query]
        m = _TITLE_RE.match(query)
        if m:
            candidates.append(m.group(1))  # title with a stale/different hash
        if "\\" in query:
            candidates.append(query.replace("\\", "/"))
        for q in candidates:
            info = self._match(q, entries)
            if info is not None:
                return info
        return None

    def resolve(self, query: str) -> CheckpointInfo:
        """Find a model by title, name, model_name, stem or hash (see module doc).

        Raises :class:`UnknownCheckpointError` when nothing matches.
        """
        query = query.strip()
        info = self._lookup(query)
        if info is None and _HASH_QUERY_RE.match(query):
            with self._lock:
                unhashed = [i for i in self._entries if i.sha256 is None]
            for candidate in unhashed:
                try:
                    self.ensure_hash(candidate)
                except OSError as e:
                    log.warning("Could not hash %s: %s", candidate.path, e)
            if unhashed:
                info = self._lookup(query)
        if info is None:
            raise UnknownCheckpointError(query, self.titles(), self.label)
        with self._lock:
            return dataclasses.replace(info)

    def ensure_hash(self, info: CheckpointInfo) -> str:
        """Return ``info``'s sha256, computing and storing it now if unknown."""
        with self._lock:
            current = self._by_path.get(info.path)
            sha = info.sha256 or (current.sha256 if current else None)
        if sha is None:
            if self.hasher is not None:  # the background hasher may be halfway through this very file
                self.hasher.wait_if_hashing(info.path, self.cache_kind)
            sha = self.cache.get_or_compute(info.path, self.cache_kind)
        with self._lock:
            current = self._by_path.get(info.path)
            if current is not None and current.sha256 is None:
                current.sha256 = sha
        info.sha256 = sha
        return sha
