"""What the extra networks panel knows about a file beyond its name: the model family it is for (A1111's "sd
version": SD1 / SD2 / SDXL, or Unknown), whether it can be read at all, and the user's metadata in `name.json`
beside it (A1111's keys: "description", "activation text", "preferred weight", "notes", "sd version"), which the
card's 🔧 editor rewrites.

Families come from what the files say without loading them: a LoRA from the registry's guess (tensor names and
shapes, kohya's `ss_base_model_version`), overridden by the user's "sd version"; an embedding from its vector
width (768 SD1, 1024 SD2, clip_l + clip_g SDXL); a checkpoint from the loaded model, else from its safetensors
header through the same detection the loader uses (cached by file signature).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..models.architecture import CheckpointFormatError, detect_architecture
from ..models.networks.files import NetworkFileError, header_shapes, read_safetensors_header

log = logging.getLogger(__name__)

VERSIONS = ("Unknown", "SD1", "SD2", "SDXL")  # A1111's SdVersion names, as written in name.json's "sd version"
LABELS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}
FAMILIES = {label: family for family, label in LABELS.items()}
EMBEDDING_WIDTHS = {768: "sd1", 1024: "sd2"}
# the keys the 🔧 editor writes (others already in the file are kept)
EDITED_KEYS = ("description", "activation text", "preferred weight", "notes", "sd version")


class MetadataError(UserError, ValueError):
    """A metadata edit the panel refuses: a file that is not listed, or a name.json that cannot be written."""

    status = 400
    kind = "MetadataError"


def version_label(family: str | None) -> str:
    """"SD1" / "SD2" / "SDXL" for a family, "Unknown" for None."""
    return LABELS.get(family or "", "Unknown")


def user_version(metadata: dict) -> str | None:
    """The family the user set in name.json's "sd version" (None when unset or "Unknown")."""
    return FAMILIES.get(str(metadata.get("sd version") or ""))


def lora_family(info) -> str | None:
    """A LoRA's family: the user's "sd version" first (as A1111), else the registry's guess."""
    return user_version(info.user_metadata or {}) or info.base_family


def embedding_family(embedding) -> str | None:
    """SDXL for clip_l + clip_g vectors; SD1 / SD2 by the single vector width (768 / 1024); else None."""
    if embedding.is_sdxl:
        return "sdxl"
    return EMBEDDING_WIDTHS.get(embedding.shape)


class _Shape:
    """What `detect_architecture` reads of a tensor: its shape (from the header, no data)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


_checkpoint_cache: dict[str, tuple[tuple[int, int], str | None, str]] = {}
_checkpoint_lock = threading.Lock()


def checkpoint_facts(path: Path) -> tuple[str | None, str]:
    """(family, error) of a checkpoint file from its safetensors header: the family the loader would detect, or
    the reason it could not (a corrupt header, or tensors that are no checkpoint). Other formats (.ckpt, diffusers
    folders) are not opened: (None, "")."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".safetensors":
        return None, ""
    try:
        stat = path.stat()
    except OSError as exc:
        return None, f"cannot read {path.name} ({exc.strerror or exc})"
    signature = (stat.st_mtime_ns, stat.st_size)
    with _checkpoint_lock:
        cached = _checkpoint_cache.get(str(path))
    if cached is not None and cached[0] == signature:
        return cached[1], cached[2]
    family, error = None, ""
    try:
        header, _ = read_safetensors_header(path)
        shapes = {name: _Shape(shape) for name, shape in header_shapes(header).items()}
        family = detect_architecture(shapes, path.name).family
    except NetworkFileError as exc:
        error = str(exc)
    except (CheckpointFormatError, KeyError, IndexError, TypeError, ValueError) as exc:
        error = str(exc)
    with _checkpoint_lock:
        _checkpoint_cache[str(path)] = (signature, family, error)
    return family, error


# --- name.json -------------------------------------------------------------------------------------------------

def metadata_path(model: Path) -> Path:
    """`<stem>.json` beside a model file (a diffusers folder: `<folder>.json` beside it), as A1111 names it."""
    model = Path(model)
    base = model if model.is_dir() else model.with_suffix("")
    return base.with_name(base.name + ".json")


def read_user_metadata(model: Path) -> dict:
    """The JSON object in name.json ({} when there is none or it cannot be read)."""
    path = metadata_path(model)
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _weight(value: Any) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        return 0.0
    return weight if weight == weight else 0.0  # NaN counts as unset


def write_user_metadata(model: Path, values: dict) -> dict:
    """Merge `values` (the editor's keys) into name.json beside `model` and write it atomically; keys the editor
    does not know are kept. Returns what was written."""
    path = metadata_path(model)
    data = read_user_metadata(model)
    for key in EDITED_KEYS:
        if key not in values:
            continue
        value = values[key]
        if key == "preferred weight":
            data[key] = _weight(value)
        elif key == "sd version":
            data[key] = value if value in VERSIONS else "Unknown"
        else:
            data[key] = str(value or "")
    temp = None
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".meta-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=4, ensure_ascii=False)
        os.replace(temp, path)
    except OSError as exc:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)
        raise MetadataError(f"Could not write {path.name}: {exc.strerror or exc}") from None
    return data
