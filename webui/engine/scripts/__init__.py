"""A1111's built-in selectable scripts (the Script dropdown of txt2img / img2img; `script_name` + `script_args` in
the API): X/Y/Z plot, Prompt matrix, Prompts from file or textbox, Loopback, SD upscale.

A script turns one request into several plain generations and assembles their images (often into a labelled grid).
It runs as one job: `ScriptContext.process` runs each inner generation on the queue's worker thread, with the
request's override settings in force, under a `SubRunControl` that places its progress within the whole job's.
The engine room holds the scripts' behaviour; their controls live in `webui/ui/scripts/`, with the args in the
order each script's `arg_names` gives (A1111's order, so API clients' positional `script_args` work unchanged).

Each script module defines `SCRIPT = BuiltinScript(...)` and is listed in `_MODULES`.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...core.errors import RequestError
from ...core.request import GenerationRequest
from ...extensions.hooks import ProcessingHooks
from ..batch_grid import grids_dir

# module names under webui/engine/scripts, in A1111's dropdown order
_MODULES: tuple[str, ...] = ("loopback", "prompt_matrix", "prompts_from_file", "sd_upscale", "xyz_plot")


@dataclass
class ScriptContext:
    """What a built-in script is given to do its work."""
    process: Callable[[GenerationRequest, Any], Any]  # (request, control) -> GenerationResult: one plain generation
    control: Any  # the job's RunControl (wrap it in engine.sub_run.SubRunControl for each inner generation)
    options: Any  # the settings (a job's override_settings included)
    outputs_dir: Path  # the outputs root (outputs/)
    apply_styles: Callable[[GenerationRequest, list], None] = lambda request, styles: None  # styles into prompts
    models: Any = None  # webui.models.manager.ModelManager: checkpoint and VAE listings
    upscalers: Any = None  # webui.models.upscalers.UpscalerRegistry (SD upscale, hires upscaler axis)
    # more of the server's objects: "styles" (StyleDatabase), "extension_host", "controlnets", "preprocessors"
    extra: dict = field(default_factory=dict)
    # The server's queue-time checks of a plain request beyond its own validate() (face restoration's model files):
    # raises the same UserError a plain request would get. A script checking its inner requests at queue time
    # calls it on each (X/Y/Z plot's probe of every axis value).
    check_request: Callable[[GenerationRequest], None] = lambda request: None
    # The extensions' hooks (the engine's): pictures a script makes and saves itself (SD upscale's) go through
    # their before_save / saved as the engine's images do.
    hooks: ProcessingHooks = field(default_factory=ProcessingHooks)

    def grids_dir(self, mode: str) -> Path:
        """Where grids are saved (batch_grid.grids_dir: the `outdir_<mode>_grids` / `outdir_grids` setting, else
        outputs/<mode>-grids)."""
        return grids_dir(self.options, self.outputs_dir, mode)


@dataclass(frozen=True)
class BuiltinScript:
    title: str  # A1111's title, as the dropdown and API clients name it
    modes: tuple[str, ...]  # "txt2img" and/or "img2img"
    arg_names: tuple[str, ...]  # A1111's positional script_args, in order
    defaults: tuple  # A1111's UI defaults, used for args a client leaves off the end
    run: Callable[[ScriptContext, GenerationRequest, list], Any]  # -> GenerationResult
    # Check and normalise the args when the job is queued (RequestError naming what is wrong); returns the args.
    check: Callable[[GenerationRequest, list], list] | None = None


def _scripts() -> list[BuiltinScript]:
    return [importlib.import_module(f"{__name__}.{name}").SCRIPT for name in _MODULES]


def titles(mode: str) -> list[str]:
    """The built-in scripts of a tab, in A1111's order."""
    return [script.title for script in _scripts() if mode in script.modes]


def find(mode: str, title: str | None) -> BuiltinScript | None:
    """The built-in script of `mode` called `title` (case-insensitive), or None."""
    key = (title or "").strip().lower()
    if not key:
        return None
    return next((s for s in _scripts() if mode in s.modes and s.title.lower() == key), None)


def find_any_mode(title: str | None) -> BuiltinScript | None:
    key = (title or "").strip().lower()
    return next((s for s in _scripts() if s.title.lower() == key), None) if key else None


def prepare_args(script: BuiltinScript, request: GenerationRequest, args,
                 context: ScriptContext | None = None) -> list:
    """The full argument list: `args` (a list) padded with the script's defaults, then checked (a `check` taking a
    third parameter is given `context`, the server's listings: checkpoints, VAEs, styles, ...)."""
    if args is None:
        args = []
    if not isinstance(args, (list, tuple)):
        raise RequestError("script_args", f"script_args must be a list, got {type(args).__name__}")
    args = list(args)
    if len(args) > len(script.defaults):
        raise RequestError("script_args", f"{script.title} takes at most {len(script.defaults)} script_args "
                           f"({', '.join(script.arg_names)}), got {len(args)}")
    args += [list(v) if isinstance(v, list) else v for v in script.defaults[len(args):]]
    if script.check is None:
        return args
    if context is not None and len(inspect.signature(script.check).parameters) >= 3:
        return script.check(request, args, context)
    return script.check(request, args)
