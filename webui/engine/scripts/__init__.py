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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...core.errors import RequestError
from ...core.request import GenerationRequest

_MODULES: tuple[str, ...] = ()  # module names under webui/engine/scripts, in A1111's dropdown order


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
    extra: dict = field(default_factory=dict)

    def grids_dir(self, mode: str) -> Path:
        """Where grids are saved: the `outdir_<mode>_grids` / `outdir_grids` setting, else outputs/<mode>-grids."""
        folder = self.options.get(f"outdir_{mode}_grids") or self.options.get("outdir_grids")
        return Path(folder) if folder else Path(self.outputs_dir) / f"{mode}-grids"


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


def prepare_args(script: BuiltinScript, request: GenerationRequest, args) -> list:
    """The full argument list: `args` (a list) padded with the script's defaults, then checked."""
    if args is None:
        args = []
    if not isinstance(args, (list, tuple)):
        raise RequestError("script_args", f"script_args must be a list, got {type(args).__name__}")
    args = list(args)
    if len(args) > len(script.defaults):
        raise RequestError("script_args", f"{script.title} takes at most {len(script.defaults)} script_args "
                           f"({', '.join(script.arg_names)}), got {len(args)}")
    args += [list(v) if isinstance(v, list) else v for v in script.defaults[len(args):]]
    return script.check(request, args) if script.check is not None else args
