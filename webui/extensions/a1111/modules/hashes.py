"""A1111's `modules.hashes`: file hashes through our hash cache (webui/models/hashing.py, `cache/hashes.json` of
the data folder), so a file our server already hashed is not read again and what an extension hashes is kept.

`title` is A1111's "<kind>/<name>" ("checkpoint/x.safetensors", "lora/x", "textual_inversion/x"); its kind picks
the cache entry ours uses for the same files (a LoRA's addnet hash is the one in our `Lora hashes` infotext).
"""
from __future__ import annotations

import hashlib
import os

from webui.extensions.a1111.runtime import RUNTIME
from webui.models.hashing import CHUNK, sha256_file

# A1111's title prefix -> our cache kind (full-file hashes; "+addnet" for the addnet hash).
_KINDS = {"checkpoint": "checkpoint", "textual_inversion": "textual_inversion", "lora": "lora", "lyco": "lora",
          "vae": "vae", "hypernet": "hypernetwork"}
_ADDNET_KINDS = {"lora": "lora-addnet", "lyco": "lora-addnet"}


def _cache():
    services = RUNTIME.services
    return services.hashes if services is not None else None


def _kind(title: str, use_addnet_hash: bool) -> str:
    prefix = str(title).split("/", 1)[0]
    if use_addnet_hash:
        return _ADDNET_KINDS.get(prefix, f"{prefix}-addnet")
    return _KINDS.get(prefix, prefix or "file")


def calculate_sha256(filename) -> str:
    """The sha256 of the whole file (hex)."""
    return sha256_file(filename)


def addnet_hash_safetensors(b) -> str:
    """kohya's "addnet" hash of an open safetensors file: sha256 of what follows the header."""
    digest = hashlib.sha256()
    b.seek(0)
    offset = int.from_bytes(b.read(8), "little") + 8
    b.seek(offset)
    for chunk in iter(lambda: b.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_from_cache(filename, title, use_addnet_hash=False) -> str | None:
    """The cached hash of `filename` when the file has not changed since; None otherwise (nothing is read)."""
    cache = _cache()
    if cache is None or not os.path.isfile(filename):
        return None
    return cache.get(filename, _kind(title, use_addnet_hash))


def sha256(filename, title, use_addnet_hash=False) -> str | None:
    """The file's hash: from the cache, else computed now and cached (None under --no-hashing, as A1111)."""
    cached = sha256_from_cache(filename, title, use_addnet_hash)
    if cached is not None:
        return cached
    from .shared_cmd_options import cmd_opts
    if getattr(cmd_opts, "no_hashing", False):
        return None
    if use_addnet_hash:
        with open(filename, "rb") as fh:
            value = addnet_hash_safetensors(fh)
    else:
        value = calculate_sha256(filename)
    cache = _cache()
    if cache is not None:
        cache.put(filename, value, _kind(title, use_addnet_hash))
    return value


def cache(subsection: str) -> dict:
    """A1111's raw cache section ("hashes" / "hashes-addnet"): {title: {"sha256", "mtime"}} is not kept in this
    form here; a fresh dict (what A1111 gives for an empty cache) that is not saved."""
    return {}


def dump_cache() -> None:
    """Our hash cache saves itself on every new entry."""
