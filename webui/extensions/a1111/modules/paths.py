"""A1111's `modules.paths`: the same folders as `modules.paths_internal` (`script_path`, `data_path`,
`models_path`, `extensions_dir`, `extensions_builtin_dir`)."""
from __future__ import annotations

from . import paths_internal
from .paths_internal import extensions_builtin_dir, script_path  # noqa: F401 - A1111's names


def __getattr__(name: str):
    return getattr(paths_internal, name)


def __dir__():
    return sorted([*globals(), "data_path", "models_path", "extensions_dir"])
