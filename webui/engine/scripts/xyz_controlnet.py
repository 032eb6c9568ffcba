"""X/Y/Z plot's ControlNet axes, as sd-webui-controlnet registers them ("[ControlNet] Weight", ...), applied to the
request's ControlNet units.

Their values follow that extension's rules: a plain value applies to every unit ("[ControlNet] Enabled" to the first
unit only); a bracketed list gives one value per unit, in unit order, `None` or nothing keeping a unit's own:
`0.5, 1` plots two cells (every unit at 0.5, then at 1); `[0.5, 1], [1, 0.5]` plots two cells with the first two
units' weights swapped. Number ranges (`0-1 [5]`) work on plain values.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...control.units import CONTROL_MODES, CONTROL_RESIZE_MODES
from .xyz_axes import Axis, AxisError
from .xyz_values import ValueSyntaxError, expand_floats, expand_ints, split_values


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise AxisError(f"{text!r} is neither True nor False")


def _choice(options: tuple[str, ...]):
    def convert(text: str) -> str:
        match = next((option for option in options if option.lower() == text.lower()), None)
        if match is None:
            raise AxisError(f"{text!r} is not one of {', '.join(options)}")
        return match
    return convert


def _number(kind):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise AxisError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    return convert


def _blank(text) -> bool:
    return text is None or str(text).strip() in ("", "None")


def _groups(items: list[str]) -> list:
    """The csv items with bracketed lists put back together: `["[0.5", "1]", "2"]` -> `[["0.5", "1"], "2"]` (a
    model title's "[hash]" inside a value is not a list)."""
    out, group, depth = [], None, 0
    for item in items:
        if group is None and item.startswith("["):
            group, depth, item = [], 1, item[1:]
        if group is None:
            out.append(item)
            continue
        depth += item.count("[") - item.count("]")
        if depth <= 0 and item.endswith("]"):
            group.append(item[:-1].strip())
            out.append(group)
            group = None
        else:
            group.append(item.strip())
    if group is not None:
        raise ValueSyntaxError("a list opened with [ is not closed with ]")
    return out


@dataclass(frozen=True)
class ControlNetAxis(Axis):
    attribute: str = ""  # the unit's field
    convert: object = None  # text -> the field's value (AxisError when it cannot)
    numeric: object = None  # int / float: plain values may be ranges
    first_unit_only: bool = False

    def unavailable(self, ctx) -> str:
        return ""

    def parse(self, text: str, chosen: list | None, csv_mode: bool, limit: int) -> list:
        items = [str(v).strip() for v in chosen] if self.choices is not None and not csv_mode and chosen \
            else split_values(text)
        values = []
        for item in _groups(items):
            if isinstance(item, list):
                values.append([None if _blank(v) else self.convert(v) for v in item])
            elif self.numeric is int and not _blank(item):
                values += expand_ints([item], limit)
            elif self.numeric is float and not _blank(item):
                values += expand_floats([item], limit)
            else:
                values.append(None if _blank(item) else self.convert(item))
            if len(values) > limit:
                raise ValueSyntaxError(f"more than {limit:,} values")
        return values

    def label_for(self, value) -> str:
        shown = [round(v, 8) if isinstance(v, float) else v for v in value] if isinstance(value, list) else \
            round(value, 8) if isinstance(value, float) else value
        return f"{self.label}: {shown}"


def _apply(axis: ControlNetAxis):
    def apply(ctx, request, value, values) -> None:
        for index, unit in enumerate(request.controlnet_units):
            if isinstance(value, list):
                chosen = value[index] if index < len(value) else None
            else:
                chosen = value if not axis.first_unit_only or index == 0 else None
            if chosen is not None:
                setattr(unit, axis.attribute, chosen)
    return apply


def _confirm_units(check=None):
    def confirm(ctx, request, values: list) -> list:
        if not request.controlnet_units:
            raise AxisError("the request has no ControlNet units to change")
        if check is not None:
            for value in values:
                for item in (value if isinstance(value, list) else [value]):
                    if item is not None:
                        check(ctx, item)
        return values
    return confirm


def _known_model(ctx, name: str) -> None:
    registry = ctx.extra.get("controlnets")
    if registry is None:
        raise AxisError("this server has no ControlNet models")
    try:
        registry.resolve(name)
    except KeyError:  # UnknownControlNetError
        raise AxisError(f"Unknown ControlNet model: {name}") from None


def _known_module(ctx, name: str) -> None:
    registry = ctx.extra.get("preprocessors")
    if registry is None:
        return
    try:
        registry.get(name)
    except KeyError:  # UnknownPreprocessorError
        raise AxisError(f"Unknown ControlNet preprocessor: {name}") from None


def controlnet_axes() -> list[Axis]:
    """sd-webui-controlnet's axes, in its order."""
    def model_titles(ctx) -> list[str]:
        registry = ctx.extra.get("controlnets")
        return registry.titles() if registry is not None else []

    def module_names(ctx) -> list[str]:
        registry = ctx.extra.get("preprocessors")
        return registry.names() if registry is not None else []

    table = [
        ("Enabled", "enabled", _bool, None, dict(first_unit_only=True, choices=lambda ctx: ["False", "True"])),
        ("Model", "model", str, None, dict(cost=0.9, choices=model_titles, confirm=_confirm_units(_known_model))),
        ("Weight", "weight", _number(float), float, {}),
        ("Guidance Start", "guidance_start", _number(float), float, dict(aliases=("[ControlNet] Guidance Start (T)",))),
        ("Guidance End", "guidance_end", _number(float), float, dict(aliases=("[ControlNet] Guidance End (T)",))),
        ("Control Mode", "control_mode", _choice(CONTROL_MODES), None, dict(choices=lambda ctx: list(CONTROL_MODES))),
        ("Resize Mode", "resize_mode", _choice(CONTROL_RESIZE_MODES), None,
         dict(choices=lambda ctx: list(CONTROL_RESIZE_MODES))),
        ("Preprocessor", "module", str, None, dict(choices=module_names, confirm=_confirm_units(_known_module))),
        ("Pre Resolution", "processor_res", _number(int), int, {}),
        ("Pre Threshold A", "threshold_a", _number(float), float, {}),
        ("Pre Threshold B", "threshold_b", _number(float), float, {}),
    ]
    axes = []
    for name, attribute, convert, numeric, extra in table:
        extra.setdefault("confirm", _confirm_units())
        axis = ControlNetAxis(f"[ControlNet] {name}", str, None, attribute=attribute, convert=convert,
                              numeric=numeric, **extra)
        object.__setattr__(axis, "apply", _apply(axis))
        axes.append(axis)
    return axes
