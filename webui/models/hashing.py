"""Model file hashing: full sha256, A1111's legacy short hash, a persistent
hash cache and a background hashing thread.

Cache file layout (JSON)::

    {
      "version": 1,
      "hashes": {
        "<kind>/<absolute path>": {"sha256": "<hex>", "mtime": 1700000000.0, "size": 123}
      }
    }

An entry is valid only while the file's size and mtime are unchanged. For a
diffusers folder (a directory holding ``model_index.json``) "mtime" is the
newest mtime and "size" the total size of the files inside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Union

from ..console_progress import byte_bar

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CHUNK = 1 << 20
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000
CACHE_VERSION = 1
HASH_BAR_MIN_BYTES = 64 << 20  # smaller files hash in well under a second: no console bar for them


def digest_stream(digest, f, length: int, label: str, chunk: int = CHUNK) -> None:
    """Feed what is left of the open file ``f`` (``length`` bytes expected) to ``digest``. From
    ``HASH_BAR_MIN_BYTES`` on, a console bar "Calculating sha256 for <label>" counts the bytes."""
    bar = byte_bar(length, f"Calculating sha256 for {label}") if length >= HASH_BAR_MIN_BYTES else None
    try:
        while block := f.read(chunk):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


def sha256_file(path: PathLike, chunk: int = CHUNK) -> str:
    """Return the hex sha256 of a file's contents, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        digest_stream(h, f, os.fstat(f.fileno()).st_size, Path(path).name, chunk)
    return h.hexdigest()


def legacy_model_hash(path: PathLike) -> str:
    """A1111's old 8-hex model hash: sha256 of 64 KiB read at offset 1 MiB.

    Shorter files hash whatever is read there (possibly nothing).
    """
    with open(path, "rb") as f:
        f.seek(LEGACY_OFFSET)
        data = f.read(LEGACY_LENGTH)
    return hashlib.sha256(data).hexdigest()[:8]


def is_diffusers_dir(path: PathLike) -> bool:
    """True when ``path`` is a directory holding ``model_index.json``."""
    p = Path(path)
    return p.is_dir() and (p / "model_index.json").is_file()


def _dir_files(folder: Path) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` for every file under ``folder``, sorted."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for fn in filenames:
            full = Path(dirpath) / fn
            found.append((full.relative_to(folder).as_posix(), full))
    found.sort(key=lambda item: item[0])
    return found


def sha256_dir(folder: PathLike, chunk: int = CHUNK) -> str:
    """Hash of a model folder: sha256 over ``"{relpath}\\t{sha256}\\n"`` lines,
    one per file, sorted by relative posix path."""
    h = hashlib.sha256()
    for rel, full in _dir_files(Path(folder)):
        h.update(f"{rel}\t{sha256_file(full, chunk)}\n".encode("utf-8"))
    return h.hexdigest()


def file_signature(path: PathLike) -> tuple[float, int]:
    """``(mtime, size)`` used to validate cache entries.

    For a directory: newest mtime and total size of the files inside it.
    Raises ``OSError`` when the path is missing.
    """
    p = Path(path)
    if p.is_dir():
        mtime, size = 0.0, 0
        for _rel, full in _dir_files(p):
            st = full.stat()
            mtime = max(mtime, st.st_mtime)
            size += st.st_size
        return mtime, size
    st = p.stat()
    return st.st_mtime, st.st_size


def hash_path(path: PathLike, chunk: int = CHUNK) -> str:
    """sha256 of a file, or the folder hash for a directory."""
    return sha256_dir(path, chunk) if Path(path).is_dir() else sha256_file(path, chunk)


class HashCache:
    """Thread-safe persistent store of full sha256 hashes keyed by kind and path.

    ``path=None`` gives an in-memory cache (nothing is written). A missing or
    corrupt cache file is treated as empty.
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._entries: dict[str, dict] = self._load()

    @staticmethod
    def key(path: PathLike, kind: str = "checkpoint") -> str:
        """Cache key for ``path``: ``"<kind>/<absolute path>"``."""
        return f"{kind}/{Path(path).absolute().as_posix()}"

    def _load(self) -> dict[str, dict]:
        if self.path is None:
            return {}
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                data = json.load(f)
            hashes = data.get("hashes") if isinstance(data, dict) else None
            if not isinstance(hashes, dict):
                raise ValueError("no 'hashes' mapping")
            return {k: v for k, v in hashes.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
            log.warning("Ignoring unreadable hash cache %s: %s", self.path, e)
            return {}

    def _save(self) -> None:
        """Write the cache atomically (temp file + os.replace); errors are logged."""
        if self.path is None:
            return
        payload = {"version": CACHE_VERSION, "hashes": self._entries}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=str(self.path.parent))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            tmp = None
        except OSError as e:
            log.warning("Could not write hash cache %s: %s", self.path, e)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def get(self, path: PathLike, kind: str = "checkpoint") -> Optional[str]:
        """Cached sha256 if the file's size and mtime still match, else None."""
        with self._lock:
            entry = self._entries.get(self.key(path, kind))
        if not entry:
            return None
        try:
            mtime, size = file_signature(path)
        except OSError:
            return None
        if entry.get("mtime") == mtime and entry.get("size") == size:
            sha = entry.get("sha256")
            return sha if isinstance(sha, str) else None
        return None

    def put(self, path: PathLike, sha256: str, kind: str = "checkpoint",
            signature: Optional[tuple[float, int]] = None) -> None:
        """Store a hash for ``path`` (with its current, or the given, signature)."""
        mtime, size = signature if signature is not None else file_signature(path)
        with self._lock:
            self._entries[self.key(path, kind)] = {"sha256": sha256, "mtime": mtime, "size": size}
            self._save()

    def compute(self, path: PathLike, kind: str = "checkpoint") -> str:
        """Hash ``path`` now (reading it), store the result and return it."""
        signature = file_signature(path)  # taken before reading: a change mid-hash invalidates
        sha = hash_path(path)
        self.put(path, sha, kind, signature)
        return sha

    def get_or_compute(self, path: PathLike, kind: str = "checkpoint") -> str:
        """Cached hash when valid, otherwise :meth:`compute`."""
        return self.get(path, kind) or self.compute(path, kind)


OnDone = Callable[[Path, str], None]


class BackgroundHasher:
    """Hashes files on a daemon thread so callers never wait on large reads.

    ``submit`` queues a path; when hashed (or found valid in the cache) each
    ``on_done(path, sha256)`` callback runs on the worker thread. Failures
    (e.g. the file vanished) are logged, never raised.
    """

    def __init__(self, cache: HashCache, name: str = "model-hasher"):
        self.cache = cache
        self._name = name
        self._queue: "queue.Queue[tuple[Path, str]]" = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: dict[tuple[str, str], list[OnDone]] = {}
        self._running = 0  # jobs whose callbacks are still executing
        self._active: Optional[tuple[str, str]] = None  # the path being hashed right now
        self._thread: Optional[threading.Thread] = None

    def submit(self, path: PathLike, kind: str = "checkpoint",
               on_done: Optional[OnDone] = None) -> None:
        """Queue ``path`` for hashing; duplicate pending submissions are merged."""
        p = Path(path)
        key = (HashCache.key(p, kind), kind)
        with self._lock:
            callbacks = self._pending.get(key)
            if callbacks is not None:
                if on_done is not None:
                    callbacks.append(on_done)
                return
            self._pending[key] = [on_done] if on_done is not None else []
            self._ensure_thread()
        self._queue.put((p, kind))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            path, kind = self._queue.get()
            key = (HashCache.key(path, kind), kind)
            sha = None
            with self._lock:
                self._active = key
            try:
                sha = self.cache.get_or_compute(path, kind)
            except Exception as e:  # noqa: BLE001 - worker must survive anything
                log.warning("Hashing %s failed: %s", path, e)
            with self._lock:
                self._active = None
                self._idle.notify_all()
                callbacks = self._pending.pop(key, [])
                self._running += 1
            try:
                for cb in callbacks if sha is not None else ():
                    try:
                        cb(path, sha)
                    except Exception:  # noqa: BLE001
                        log.exception("Hash callback for %s failed", path)
            finally:
                with self._lock:
                    self._running -= 1
                    self._idle.notify_all()

    def wait_if_hashing(self, path: PathLike, kind: str = "checkpoint", timeout: Optional[float] = None) -> None:
        """If ``path`` is being hashed right now, wait for that instead of reading the file a second time."""
        key = (HashCache.key(Path(path), kind), kind)
        with self._lock:
            self._idle.wait_for(lambda: self._active != key, timeout)

    def pending(self) -> int:
        """Number of paths queued or being hashed."""
        with self._lock:
            return len(self._pending) + self._running

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is pending; False if ``timeout`` expired first."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending and not self._running, timeout)
