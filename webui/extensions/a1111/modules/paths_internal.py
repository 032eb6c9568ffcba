"""A1111's `modules.paths_internal`: where the program, its data and its models live.

Read from the running server's folders once it is bound; before that (an extension's `install.py`, tests) the
project folder's defaults.
"""
from __future__ import annotations

import os

from webui.extensions.a1111.runtime import RUNTIME, lazy_attributes
from webui.settings.paths import PROJECT_DIR

script_path = str(PROJECT_DIR)
extensions_builtin_dir = str(PROJECT_DIR / "extensions-builtin")


def _paths():
    services = RUNTIME.services
    return getattr(services, "paths", None)


def _data_path() -> str:
    paths = _paths()
    return str(paths.data_dir if paths is not None else PROJECT_DIR)


def _models_path() -> str:
    return os.path.join(_data_path(), "models")


def _extensions_dir() -> str:
    paths = _paths()
    return str(paths.extensions if paths is not None else PROJECT_DIR / "extensions")


_DYNAMIC = {"data_path": _data_path, "models_path": _models_path, "extensions_dir": _extensions_dir}


__getattr__, __dir__ = lazy_attributes(globals(), _DYNAMIC)  # names read when asked (they follow the server)
