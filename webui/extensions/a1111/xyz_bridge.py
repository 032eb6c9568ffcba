"""Where X/Y/Z plot meets A1111 extensions: the `xyz_grid.py` module they add axes to, and those axes as the
server's plot uses them.

`load_xyz_grid(host)` loads webui/extensions/a1111/builtin/xyz_grid.py afresh (module name "xyz_grid.py", as A1111
names script modules), lists it first in `modules.scripts.scripts_data` (extensions look it up there while their
own scripts import, or later) and keeps it as `host.xyz_grid`. Its `webui_axes(mode)` is the tab's axis list in
A1111's order: the server's own axes where the module lists them, and every axis an extension added, wrapped as an
`ExtensionAxis`: its values parsed as A1111 does (`type`, `prepare`, ranges for int / float), checked by its
`confirm(p, xs)`, and applied to a cell as A1111 applies it to the cell's copy of `p`: the cell's `p` (made for its
request by the first extension axis, then kept in the request's context) is brought up to date with the request,
given to `apply(p, x, xs)` and copied back. Once every axis and the Vary seeds shift are in the request
(`cell_ready`) the `p` takes them too: the cell's run keeps that very `p`, so the extension's own script hooks see
what `apply` set on it, and the values the server's own axes set after it.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import itertools
import math
from pathlib import Path

from .script_hooks import P_KEY

XYZ_GRID_FILE = Path(__file__).resolve().parent / "builtin" / "xyz_grid.py"
MODULE_NAME = "xyz_grid.py"


def load_xyz_grid(host):
    """Load a fresh `xyz_grid.py` for this host and list it in `scripts_data` (before extensions' scripts load)."""
    import modules.scripts as scripts
    spec = importlib.util.spec_from_file_location(MODULE_NAME, XYZ_GRID_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.webui_axes = functools.partial(mode_axes, module)
    entry = scripts.ScriptClassData(module.Script, str(XYZ_GRID_FILE), str(XYZ_GRID_FILE.parent), module)
    host.builtin_scripts_data = [entry]
    host.xyz_grid = module
    scripts.scripts_data = [entry]
    return module


def _shown(option, is_img2img: bool) -> bool:
    """A1111's rule: a plain AxisOption is in both tabs, a Txt2Img / Img2Img one in its tab only."""
    flag = getattr(option, "is_img2img", None)
    return flag is None or bool(flag) == is_img2img


def mode_axes(module, mode: str) -> list:
    """The axes of `mode`'s tab in `module.axis_options` order: the server's own, or extensions' wrapped."""
    is_img2img = mode == "img2img"
    return [getattr(option, "_webui_axis", None) or ExtensionAxis(option, module, mode)
            for option in list(module.axis_options) if _shown(option, is_img2img)]


class ExtensionAxis:
    """An axis an A1111 extension registered, with the interface of the server's own (`xyz_axes.Axis`)."""

    probe = False  # its values are checked by its own confirm
    aliases: tuple = ()
    modes = ("txt2img", "img2img")

    def __init__(self, option, module, mode: str):
        self.option, self.module, self.mode = option, module, mode
        self.label = str(option.label)
        self.cost = float(getattr(option, "cost", 0.0) or 0.0)
        self.choices = getattr(option, "choices", None)
        self._p = None

    def unavailable(self, ctx) -> str:
        return ""

    def offers(self, ctx):
        if self.choices is None:
            return None
        return [str(choice) for choice in self._call("choices", self.choices)]

    def parse(self, text: str, chosen, csv_mode: bool, limit: int) -> list:
        from webui.engine.scripts.xyz_values import ValueSyntaxError, expand_floats, expand_ints, split_values
        kind, prepare = self.option.type, getattr(self.option, "prepare", None)
        if self.choices is not None and not csv_mode and chosen:
            items = [str(value) for value in chosen]
        elif prepare is not None:
            items = list(self._call("prepare", prepare, text))
        else:
            items = split_values(text)
        if kind is int:
            values = expand_ints(items, limit)
        elif kind is float:
            values = expand_floats(items, limit)
        elif kind is self.module.str_permutations:
            if math.factorial(len(items)) > limit:
                raise ValueSyntaxError(f"{len(items)} values have {math.factorial(len(items)):,} orders")
            values = [list(order) for order in itertools.permutations(items)]
        else:
            values = items
        try:
            return [kind(value) for value in values]
        except (TypeError, ValueError) as exc:
            raise ValueSyntaxError(f"cannot read the values as {getattr(kind, '__name__', kind)} ({exc})") from None

    def checked(self, ctx, request, values: list) -> list:
        self._p = self._p_for(request)
        confirm = getattr(self.option, "confirm", None)
        if confirm is not None:
            self._call("confirm", confirm, self._p, values)
        return values

    def applied(self, ctx, request, value, values: list) -> None:
        p = self._p_for(request)
        self._call("apply", self.option.apply, p, value, values)
        p.write_to(request)
        request.context = {**request.context, P_KEY: p}

    def cell_ready(self, ctx, request) -> None:
        """The cell's p takes what the axes after this one and the Vary seeds shift changed in the request (its run
        writes p back onto the request before it starts)."""
        p = request.context.get(P_KEY)
        if p is not None and getattr(p, "request", None) is request:
            p.read_from(request)

    def label_for(self, value) -> str:
        if self._p is None:
            from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img
            kind = StableDiffusionProcessingImg2Img if self.mode == "img2img" else StableDiffusionProcessingTxt2Img
            self._p = kind()
        return str(self._call("format_value", self.option.format_value, self._p, self.option, value))

    # --- plumbing --------------------------------------------------------------------------------------------------
    @staticmethod
    def _p_for(request):
        """The cell's p, up to date with `request`: the one an earlier extension axis of this cell made (what it set
        on p kept), else a new one (a copy of a p the request came with, as A1111 copies p for each cell)."""
        from modules.processing import StableDiffusionProcessing
        from .runtime import RUNTIME
        earlier = request.context.get(P_KEY)
        if earlier is not None and getattr(earlier, "request", None) is request:
            earlier.read_from(request)
            return earlier
        if earlier is not None:
            p = copy.copy(earlier)
            p.styles, p.extra_generation_params = list(p.styles or []), dict(p.extra_generation_params or {})
            p.read_from(request)
            return p
        runner = RUNTIME.host.runners.get(request.mode) if RUNTIME.host is not None else None
        return StableDiffusionProcessing.from_request(request, runner)

    def _call(self, what: str, function, *args):
        from webui.engine.scripts.xyz_axes import AxisError
        try:
            return function(*args)
        except Exception as exc:  # noqa: BLE001 - an extension's error is the user's message, not a crash
            raise AxisError(f"{what} failed: {exc}") from exc
