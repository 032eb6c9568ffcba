"""The extension index (A1111's `index.json`: `{"tags": {...}, "extensions": [{name, url, description, tags,
added, created_at, stars}, ...]}`): loading it from a URL or a local file, searching, hiding tags, sorting."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from .manager import normalize_remote

A1111_INDEX_URL = "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
DEFAULT_INDEX_URL = os.environ.get("WEBUI_EXTENSIONS_INDEX") or A1111_INDEX_URL
SORT_ORDERS = ("newest first", "oldest first", "a-z", "z-a", "internal order", "update time", "create time", "stars")
DEFAULT_HIDDEN_TAGS = ("ads", "localization", "installed")
INSTALLED_TAG = "installed"  # a pseudo-tag: hiding it hides the extensions already installed
_MAX_BYTES = 32 * 1024 * 1024


class ExtensionIndexError(Exception):
    """The index could not be loaded; the message says from where and why."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    url: str
    description: str = ""
    tags: tuple[str, ...] = ()
    added: str = ""  # "YYYY-MM-DD", when it joined the index
    created_at: str = ""  # the repository's creation time (ISO)
    stars: int = 0
    pushed_at: str = ""  # the repository's last push (ISO), when the index has it
    installed: bool = False  # set by filter_entries


@dataclass(frozen=True)
class ExtensionIndex:
    entries: list[IndexEntry] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> its description
    source: str = ""


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _entry(raw) -> IndexEntry | None:
    if not isinstance(raw, dict):
        return None
    name, url = _text(raw.get("name")), _text(raw.get("url"))
    if not name or not url:
        return None
    tags = raw.get("tags")
    tags = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    stars = raw.get("stars")
    return IndexEntry(name, url, _text(raw.get("description")), tags, _text(raw.get("added")),
                      _text(raw.get("created_at")), stars if isinstance(stars, int) and stars >= 0 else 0,
                      _text(raw.get("pushed_at")))


def _read(url_or_path: str, timeout: float) -> bytes:
    parsed = urllib.parse.urlparse(url_or_path)
    if parsed.scheme in ("http", "https"):
        request = urllib.request.Request(url_or_path, headers={"User-Agent": "stable-diffusion-webui"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(_MAX_BYTES + 1)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise ValueError(f"unsupported address scheme {parsed.scheme!r} (use http(s), file:// or a path)")
    else:
        path = Path(url_or_path).expanduser()
    with open(path, "rb") as handle:
        return handle.read(_MAX_BYTES + 1)


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc})"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return str(exc) or type(exc).__name__


def load_index(url_or_path: str, timeout: float = 15) -> ExtensionIndex:
    """The index at an http(s) URL, a `file://` URL or a local path. Entries without a name or URL are skipped."""
    source = (url_or_path or "").strip()
    try:
        if not source:
            raise ValueError("no address given")
        data = _read(source, timeout)
        if len(data) > _MAX_BYTES:
            raise ValueError(f"larger than {_MAX_BYTES // (1024 * 1024)} MiB")
        document = json.loads(data.decode("utf-8-sig"))
        if not isinstance(document, dict) or not isinstance(document.get("extensions"), list):
            raise ValueError('not an extension index (no "extensions" list)')
    except (urllib.error.HTTPError, urllib.error.URLError, OSError, ValueError) as exc:
        raise ExtensionIndexError(
            f"Could not load the extension index from {source or '(empty)'}: {_reason(exc)}. Without internet, install "
            "from a URL or a local path (Install from URL tab).") from None
    tags = document.get("tags")
    tags = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
    entries = [e for e in map(_entry, document["extensions"]) if e is not None]
    return ExtensionIndex(entries, tags, source)


def _sort_key(sort: str):
    if sort in ("newest first", "oldest first"):
        return lambda e: e.added
    if sort in ("a-z", "z-a"):
        return lambda e: e.name.lower()
    if sort == "update time":
        return lambda e: e.pushed_at
    if sort == "create time":
        return lambda e: e.created_at
    if sort == "stars":
        return lambda e: e.stars
    return None


def filter_entries(index: ExtensionIndex, query: str = "", hide_tags=(), installed_remotes=(),
                   sort: str = "newest first") -> list[IndexEntry]:
    """Entries matching `query` (in name, description or tags), without those carrying a hidden tag ("installed"
    hides installed ones), marked `installed` when their URL is one of `installed_remotes`, in `sort` order."""
    installed = {normalize_remote(u) for u in installed_remotes or ()}
    hidden = set(hide_tags or ())
    words = (query or "").lower().split()
    found = []
    for entry in index.entries:
        entry = replace(entry, installed=normalize_remote(entry.url) in installed)
        if hidden & set(entry.tags) or (entry.installed and INSTALLED_TAG in hidden):
            continue
        haystack = " ".join((entry.name, entry.description, *entry.tags)).lower()
        if all(word in haystack for word in words):
            found.append(entry)
    key = _sort_key(sort)
    if key is not None:
        found.sort(key=key, reverse=sort in ("newest first", "z-a", "update time", "create time", "stars"))
    return found
