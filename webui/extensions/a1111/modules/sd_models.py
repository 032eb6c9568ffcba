"""A1111's `modules.sd_models`: the checkpoint listing extensions read, as a view of our checkpoint registry.

`checkpoints_list` (title -> `CheckpointInfo`), `checkpoint_aliases` (every name a checkpoint answers to),
`select_checkpoint()`, `get_closet_checkpoint_match()`, `list_models()` (rescan the folder), `model_hash()`
(A1111's old 8-digit hash), `checkpoint_tiles()`, `model_data.get_sd_model()`. Loading and building models is
our engine's; A1111's model-building functions are reported as internals this web UI doesn't have.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webui.extensions.a1111.runtime import RUNTIME, lazy_attributes
from webui.extensions.problems import ModelInternalsError

# A1111 functions that build or patch its LDM model objects (see webui/extensions/problems.py).
A1111_INTERNALS = {name: "model loading internals" for name in (
    "load_model", "load_model_weights", "reload_model_weights", "unload_model_weights", "send_model_to_cpu",
    "send_model_to_device", "send_model_to_trash", "apply_alpha_schedule_override", "get_checkpoint_state_dict",
    "read_state_dict", "repair_config", "instantiate_from_config", "get_empty_cond", "find_checkpoint_config")}


def _registry():
    return RUNTIME.require().models.registry


class CheckpointInfo:
    """A1111's `CheckpointInfo` (`filename`, `name`, `name_for_extra`, `model_name`, `hash`, `sha256`,
    `shorthash`, `title`, `short_title`, `ids`, `metadata`, `is_safetensors`) over one of our registry's entries.
    `CheckpointInfo(filename)` finds the registry's entry for that file (or describes a file outside it)."""

    def __init__(self, filename, _info=None):
        if _info is None:
            _info = _find_or_describe(Path(filename))
        self._info = _info
        self._metadata = None

    filename = property(lambda self: str(self._info.path))
    name = property(lambda self: self._info.name)
    name_for_extra = property(lambda self: self._info.name_for_extra)
    model_name = property(lambda self: self._info.model_name)
    sha256 = property(lambda self: self._info.sha256)
    shorthash = property(lambda self: self._info.shorthash)
    title = property(lambda self: self._info.title)
    is_safetensors = property(lambda self: self._info.kind == "safetensors")

    @property
    def hash(self) -> str | None:
        """A1111's old hash (8 hex digits of a sha256 of 64 KiB at 1 MiB)."""
        if self._info.legacy_hash is None and self._info.kind != "diffusers":
            try:
                return model_hash(self.filename)
            except OSError:
                return None
        return self._info.legacy_hash

    @property
    def short_title(self) -> str:
        return f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra

    @property
    def ids(self) -> list[str]:
        """Every name A1111 finds this checkpoint by (`checkpoint_aliases`)."""
        names = [self.model_name, self.name, self.name_for_extra, f"{self.name} [{self.hash}]"]
        if self.sha256:
            names += [self.sha256, self.shorthash, f"{self.name} [{self.shorthash}]",
                      f"{self.name_for_extra} [{self.shorthash}]"]
        return list(dict.fromkeys(n for n in names if n))

    @property
    def metadata(self) -> dict:
        """The safetensors header's `__metadata__` (empty for other formats)."""
        if self._metadata is None:
            self._metadata = _read_metadata(self._info.path) if self.is_safetensors else {}
        return self._metadata

    def calculate_shorthash(self) -> str | None:
        """Hash the file now if its sha256 is not known yet (as A1111 does when a checkpoint is chosen)."""
        if not self._info.sha256 and self._info.kind and RUNTIME.services is not None:
            self._info.sha256 = _registry().ensure_hash(self._info)
        return self.shorthash

    def register(self) -> None:
        """A1111 adds the info to its lists; ours follow the registry (`list_models()` rescans the folder)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_info":
            raise AttributeError(name)
        return getattr(self._info, name)

    def __eq__(self, other) -> bool:
        return isinstance(other, CheckpointInfo) and self.filename == other.filename

    def __hash__(self) -> int:
        return hash(self.filename)

    def __repr__(self) -> str:
        return f"<CheckpointInfo {self.title}>"


def _find_or_describe(path: Path):
    from webui.models.registry import CheckpointInfo as OurInfo
    if RUNTIME.services is not None:
        wanted = path.absolute()
        for info in _registry().list():
            if Path(info.path).absolute() == wanted:
                return info
    kind = "diffusers" if path.is_dir() else path.suffix.lower().lstrip(".")
    return OurInfo(path=path, name=path.name, kind=kind)


def _read_metadata(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length < 100_000_000:
                return {}
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def _infos() -> list[CheckpointInfo]:
    return [CheckpointInfo(None, info) for info in _registry().list()]


def _checkpoints_list() -> dict[str, CheckpointInfo]:
    return {info.title: info for info in _infos()}


def _checkpoint_aliases() -> dict[str, CheckpointInfo]:
    aliases: dict[str, CheckpointInfo] = {}
    for info in _infos():
        for name in info.ids:
            aliases.setdefault(name, info)
    return aliases


def list_models() -> None:
    """Rescan the checkpoint folder (A1111 fills its lists again)."""
    _registry().refresh()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    return [info.short_title if use_short else info.title for info in _infos()]


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """The checkpoint named exactly `search_string` (any of its ids), else the one with the shortest title that
    contains it (A1111's spelling of the name kept)."""
    if not search_string:
        return None
    aliases = _checkpoint_aliases()
    if search_string in aliases:
        return aliases[search_string]
    found = sorted((info for info in _infos() if search_string in info.title), key=lambda info: len(info.title))
    if found:
        return found[0]
    without_hash = search_string.rsplit(" [", 1)[0]
    found = sorted((info for info in _infos() if without_hash in info.title), key=lambda info: len(info.title))
    return found[0] if found else None


def select_checkpoint() -> CheckpointInfo | None:
    """The checkpoint in use: the loaded one, else the one the settings name, else the first; None when there
    are none."""
    services = RUNTIME.require()
    current = services.models.current
    if current is not None:
        return CheckpointInfo(None, current[0])
    wanted = services.options.get("sd_model_checkpoint")
    if wanted:
        match = get_closet_checkpoint_match(wanted)
        if match is not None:
            return match
    infos = _infos()
    return infos[0] if infos else None


def model_hash(filename) -> str:
    """A1111's old checkpoint hash: 8 hex digits ("NOFILE" when the file is missing)."""
    from webui.models.hashing import legacy_model_hash
    try:
        return legacy_model_hash(filename)[:8]
    except FileNotFoundError:
        return "NOFILE"


class SdModelData:
    """A1111's `model_data`: the loaded model (`sd_model`, `get_sd_model()`) and the loaded checkpoints' list."""

    @property
    def sd_model(self):
        from . import shared
        return shared.sd_model

    def get_sd_model(self):
        return self.sd_model

    @property
    def loaded_sd_models(self) -> list:
        model = self.sd_model
        return [model] if model is not None else []

    def set_sd_model(self, *args, **kwargs):
        raise ModelInternalsError("modules.sd_models.model_data.set_sd_model", "model loading internals")


model_data = SdModelData()


def _internal(name: str):
    raise ModelInternalsError(f"modules.sd_models.{name}", A1111_INTERNALS[name])


def _dynamic():
    table = {"checkpoints_list": _checkpoints_list, "checkpoint_aliases": _checkpoint_aliases,
             "checkpoints_loaded": lambda: {}}
    table.update({name: (lambda name=name: _internal(name)) for name in A1111_INTERNALS})
    return table


def _model_dir() -> str:
    return str(RUNTIME.require().paths.checkpoints)


__getattr__, __dir__ = lazy_attributes(globals(), {**_dynamic(), "model_path": _model_dir,
                                                   "model_dir": lambda: "Stable-diffusion"})
