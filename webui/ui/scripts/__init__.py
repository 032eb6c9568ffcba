"""The controls of A1111's built-in scripts (webui/engine/scripts), shown under the Script dropdown when chosen.

Each module defines `build(mode, services) -> list` (the components whose values are the script's args, in the
engine script's `arg_names` order, inside the current layout) and may define `wire(controls, mode, services)` for
its helpers (buttons that fill values, controls that show or hide others). `_BUILDERS` maps A1111's titles to
module names.
"""
from __future__ import annotations

import importlib

_BUILDERS: dict[str, str] = {"Loopback": "loopback", "Prompt matrix": "prompt_matrix",
                             "Prompts from file or textbox": "prompts_from_file", "SD upscale": "sd_upscale",
                             "X/Y/Z plot": "xyz_plot"}


def builder(title: str):
    """The UI module of the built-in script called `title`."""
    return importlib.import_module(f"{__name__}.{_BUILDERS[title]}")
