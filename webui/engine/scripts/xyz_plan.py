"""X/Y/Z plot's args read and checked: which axis each of X, Y and Z is, their values (parsed, checked by the axis,
and each tried on a copy of the request so a value the request cannot take is refused before any cell runs), the
grid's size within limits. Shared by the queue-time check and the run.

Args (A1111 1.10's `script_args`, in order): x_type, x_values, x_values_dropdown, y_type, y_values,
y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode. An axis type is the index into the
tab's axis list (`axes_for`), or its label.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.errors import RequestError, UserError
from ...core.request import GenerationRequest
from .arg_checks import FIELD, as_bool, as_int
from .xyz_axes import AxisError, builtin_axes, server_axes
from .xyz_controlnet import controlnet_axes
from .xyz_values import ValueSyntaxError, join_values, split_values

TITLE = "X/Y/Z plot"
ARG_NAMES = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type",
             "z_values", "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids",
             "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")
DEFAULTS = (1, "", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False)
MAX_CELLS = 1000  # cells of one plot (each a generation)
MAX_GRID_MEGAPIXELS = 200  # A1111's default `img_max_size_mp`: the grid image's size
MAX_MARGIN = 500


def axes_for(mode: str, ctx) -> list:
    """The tab's axis list (indexes are A1111's): A1111's xyz_grid.py `axis_options` as the extension host has it
    (A1111's and the ControlNet axes, then what extensions added), else the server's own; then this server's."""
    host = ctx.extra.get("extension_host") if ctx is not None else None
    module = getattr(host, "xyz_grid", None)
    if module is not None and hasattr(module, "webui_axes"):
        listed = list(module.webui_axes(mode))
    else:
        listed = [axis for axis in builtin_axes() + controlnet_axes() if mode in axis.modes]
    return listed + server_axes()


def fail(message: str, status: int | None = None) -> RequestError:
    return RequestError(FIELD, f"{TITLE}: {message}", status=status)


def resolve_type(value, axes: list, name: str) -> int:
    """An axis type arg (an index, or a label) as the index into `axes`."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, str):
        wanted = value.strip().lower()
        for index, axis in enumerate(axes):
            if wanted in (axis.label.lower(), *(alias.lower() for alias in axis.aliases)):
                return index
        raise fail(f"{name}: unknown axis type {value!r}")
    try:
        if isinstance(value, bool) or value is None or float(value) != int(value):
            raise ValueError
        index = int(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(f"{name} must be an axis type's number (0 to {len(axes) - 1}) or name, got {value!r}") from None
    if not 0 <= index < len(axes):
        raise fail(f"{name} must be an axis type's number from 0 to {len(axes) - 1}, got {index}")
    return index


@dataclass
class AxisPlan:
    letter: str  # "X", "Y" or "Z"
    index: int
    axis: object  # xyz_axes.Axis or an extension's (xyz_bridge.ExtensionAxis)
    values: list
    text: str  # the values as the user gave them (the grid's infotext "X Values")
    given: tuple = ("", [])  # the args as given: the text box's text, the dropdown's choice


@dataclass
class Plan:
    x: AxisPlan
    y: AxisPlan
    z: AxisPlan
    draw_legend: bool
    include_lone_images: bool
    include_sub_grids: bool
    no_fixed_seeds: bool
    vary_seeds: tuple[bool, bool, bool]
    margin_size: int
    csv_mode: bool

    @property
    def axes(self) -> tuple[AxisPlan, AxisPlan, AxisPlan]:
        return self.x, self.y, self.z

    @property
    def cells(self) -> int:
        return len(self.x.values) * len(self.y.values) * len(self.z.values)

    def args(self) -> list:
        """The args normalised (axis types as indexes)."""
        out = []
        for plan in self.axes:
            out += [plan.index, *plan.given]
        return out + [self.draw_legend, self.include_lone_images, self.include_sub_grids, self.no_fixed_seeds,
                      *self.vary_seeds, self.margin_size, self.csv_mode]


def _text(value) -> str:
    return "" if value is None else str(value)


def _chosen(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_values(value)
    if not isinstance(value, (list, tuple)):
        raise fail(f"a values dropdown must be a list of values, got {value!r}")
    return [str(item) for item in value]


def clone(request: GenerationRequest) -> GenerationRequest:
    """A copy of `request` a cell may change freely (its own units, override settings, styles, context)."""
    extra = dict(request.extra)
    if "override_settings" in extra:
        extra["override_settings"] = dict(extra["override_settings"] or {})
    return dataclasses.replace(request, controlnet_units=[dataclasses.replace(u) for u in request.controlnet_units],
                               extra=extra, styles=list(request.styles), context=dict(request.context),
                               script_args=dict(request.script_args), init_images=list(request.init_images))


def make_plan(ctx, request: GenerationRequest, args: list, probe: bool = True) -> Plan:
    """Read and check the args (RequestError naming what is wrong; nothing has run yet)."""
    if len(args) != len(ARG_NAMES):
        raise fail(f"takes {len(ARG_NAMES)} script_args ({', '.join(ARG_NAMES)}), got {len(args)}")
    flags = dict(zip(ARG_NAMES[9:], args[9:]))
    csv_mode = as_bool(TITLE, "csv_mode", flags["csv_mode"])
    axes = axes_for(request.mode, ctx)
    plans = []
    for number, letter in enumerate("XYZ"):
        type_arg, text, chosen = args[number * 3: number * 3 + 3]
        name = letter.lower()
        index = resolve_type(type_arg, axes, f"{name}_type")
        axis = axes[index]
        reason = axis.unavailable(ctx)
        if reason:
            raise fail(f"{name}_type {index} is {axis.label!r}, which this server cannot plot: {reason}", 400)
        text, chosen = _text(text), _chosen(chosen)
        shown = join_values(chosen) if axis.choices is not None and not csv_mode and chosen else text
        plans.append(AxisPlan(letter, index, axis, _values(ctx, request, axis, letter, text, chosen, csv_mode),
                              shown, (text, chosen)))
    plan = Plan(*plans, draw_legend=as_bool(TITLE, "draw_legend", flags["draw_legend"]),
                include_lone_images=as_bool(TITLE, "include_lone_images", flags["include_lone_images"]),
                include_sub_grids=as_bool(TITLE, "include_sub_grids", flags["include_sub_grids"]),
                no_fixed_seeds=as_bool(TITLE, "no_fixed_seeds", flags["no_fixed_seeds"]),
                vary_seeds=tuple(as_bool(TITLE, f"vary_seeds_{c}", flags[f"vary_seeds_{c}"]) for c in "xyz"),
                margin_size=as_int(TITLE, "margin_size", flags["margin_size"], 0, MAX_MARGIN), csv_mode=csv_mode)
    _check_size(plan, request)
    if probe:
        check_request = getattr(ctx, "check_request", None)
        if check_request is not None:  # the request as given first: what fails without any axis is no value's fault
            check_request(request)
        for axis_plan in plan.axes:
            _probe(ctx, request, axis_plan)
    return plan


def _values(ctx, request, axis, letter: str, text: str, chosen: list[str], csv_mode: bool) -> list:
    where = f"{letter} values ({axis.label})"
    try:
        values = axis.parse(text, chosen, csv_mode, MAX_CELLS)
    except ValueSyntaxError as exc:
        raise fail(f"{where}: {exc}") from None
    if not values:
        raise fail(f"{where}: no values given")
    if ctx is None:  # no listings to check names against (the run checks them again)
        return values
    try:
        return axis.checked(ctx, request, values)
    except (AxisError, UserError) as exc:
        raise fail(f"{where}: {exc}", getattr(exc, "status", None) if isinstance(exc, UserError) else 400) from None


def _check_size(plan: Plan, request: GenerationRequest) -> None:
    if plan.cells > MAX_CELLS:
        raise fail(f"{len(plan.x.values)} x {len(plan.y.values)} x {len(plan.z.values)} = {plan.cells:,} cells; at "
                   f"most {MAX_CELLS:,} are allowed")
    megapixels = round(plan.cells * request.width * request.height / 1_000_000)
    if megapixels >= MAX_GRID_MEGAPIXELS:
        raise fail(f"Resulting grid would be too large ({megapixels} MPixels) (max configured size is "
                   f"{MAX_GRID_MEGAPIXELS} MPixels)")


def _probe(ctx, request: GenerationRequest, plan: AxisPlan) -> None:
    """Each value applied alone to a copy of the request, which must then pass the request's own checks and the
    server's queue-time ones (`ScriptContext.check_request`: a Face restore value naming a model whose file is
    missing gets a plain request's 422)."""
    axis = plan.axis
    if not getattr(axis, "probe", False):
        return
    options = getattr(ctx, "options", None)
    check_request = getattr(ctx, "check_request", None)
    for value in plan.values:
        cell = clone(request)
        try:
            axis.applied(ctx, cell, value, plan.values)
            cell.validate()
            overrides = cell.extra.get("override_settings")
            if overrides and options is not None and hasattr(options, "validate"):
                options.validate(overrides)
            if check_request is not None:
                check_request(cell)
        except (AxisError, UserError) as exc:
            status = getattr(exc, "status", None) if isinstance(exc, UserError) else 400
            raise fail(f"{plan.letter} value {axis.label_for(value)!r}: {exc}", status) from None
