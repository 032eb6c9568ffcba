"""A1111's selectable scripts as API clients name them (`script_name` + positional `script_args`).

A1111's built-in scripts (X/Y/Z plot, Prompt matrix, ...: webui/engine/scripts) run as scripts; the outpainting
scripts map onto the request's own `outpaint` (one pass over the extended
canvas rather than A1111's tiles or per-side passes). Titles match case-insensitively; any other title, or a script
of the other mode, is refused with A1111's "Script '...' not found".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..core.errors import RequestError
from ..core.request import INPAINT_FILLS, GenerationRequest, Outpaint
from ..engine import scripts as builtin_scripts

DIRECTIONS = ("left", "right", "up", "down")
MAX_MASK_BLUR = 64  # the request's limit; A1111's scripts multiply their blur, so the result is capped here


@dataclass(frozen=True)
class SelectableScript:
    title: str
    arg_names: tuple[str, ...]
    defaults: tuple  # A1111's UI defaults, used for args a client leaves off the end
    apply: Callable[..., None]


def _poor_mans_outpainting(request: GenerationRequest, title: str, pixels, mask_blur, inpainting_fill,
                           direction) -> None:
    """A1111 blurs by 2 x mask_blur, lets the mask reach 2 x mask_blur into the original, uses the chosen
    masked content and the whole picture."""
    blur = _whole(title, "mask_blur", mask_blur, 0, MAX_MASK_BLUR)
    request.outpaint = Outpaint(**_sides(title, pixels, direction), fill="edge", overlap=2 * blur)
    request.mask_blur_x = request.mask_blur_y = min(MAX_MASK_BLUR, 2 * blur)
    request.inpainting_fill = _fill_index(title, inpainting_fill)
    request.inpaint_full_res = False


def _outpainting_mk2(request: GenerationRequest, title: str, _info, pixels, mask_blur, direction, _noise_q,
                     _color_variation) -> None:
    """A1111 starts the new area from noise, blurs by 4 x mask_blur, lets the mask reach mask_blur into the
    original, keeps the original content under the mask and uses the whole picture. Its noise shaping
    (fall-off exponent, colour variation) has no counterpart here: those two args are accepted and unused."""
    blur = _whole(title, "mask_blur", mask_blur, 0, MAX_MASK_BLUR)
    request.outpaint = Outpaint(**_sides(title, pixels, direction), fill="noise", overlap=blur)
    request.mask_blur_x = request.mask_blur_y = min(MAX_MASK_BLUR, 4 * blur)
    request.inpainting_fill = INPAINT_FILLS.index("original")
    request.inpaint_full_res = False


IMG2IMG_SCRIPTS = {script.title.lower(): script for script in (
    SelectableScript("Poor man's outpainting", ("pixels", "mask_blur", "inpainting_fill", "direction"),
                     (128, 4, 0, list(DIRECTIONS)), _poor_mans_outpainting),
    SelectableScript("Outpainting mk2",
                     ("info", "pixels", "mask_blur", "direction", "noise_q", "color_variation"),
                     (None, 128, 8, list(DIRECTIONS), 1.0, 0.05), _outpainting_mk2),
)}
SCRIPTS = {"txt2img": {}, "img2img": IMG2IMG_SCRIPTS}


def apply_script(script_name: str | None, script_args: list | None, request: GenerationRequest, mode: str,
                 host=None) -> None:
    """Apply the selectable script `script_name` (none when empty) with `script_args` to `request`: one of ours
    (outpainting), else an extension's (run by the job in place of a plain generation)."""
    name = (script_name or "").strip()
    if not name:
        return
    builtin = builtin_scripts.find(mode, name)
    if builtin is not None:  # its args are padded and checked when the job is queued (Services.generate)
        if script_args is not None and not isinstance(script_args, list):
            raise RequestError("script_args", f"script_args must be a list, got {type(script_args).__name__}")
        request.script_name, request.script_run_args = builtin.title, list(script_args or [])
        return
    script = SCRIPTS.get(mode, {}).get(name.lower())
    if script is None and host is not None:
        titles = {title.lower(): title for title in host.selectable_titles(mode)}
        if name.lower() in titles:
            if script_args is not None and not isinstance(script_args, list):
                raise RequestError("script_args", f"script_args must be a list, got {type(script_args).__name__}")
            runner = host.runners[mode]
            takes = len(runner.defaults.get(id(runner.find_selectable(name)), []))
            if len(script_args or []) > takes:
                raise RequestError("script_args", f"{titles[name.lower()]} takes at most {takes} script_args, got "
                                   f"{len(script_args)}")
            request.script_name, request.script_run_args = titles[name.lower()], list(script_args or [])
            return
    if script is None:
        raise RequestError("script_name", _not_found(name, mode, host))
    args = list(script_args or [])
    if len(args) > len(script.defaults):
        raise RequestError("script_args", f"{script.title} takes at most {len(script.defaults)} script_args "
                           f"({', '.join(script.arg_names)}), got {len(args)}")
    if request.outpaint is not None:
        raise RequestError("outpaint", f"give either outpaint or script_name {script.title!r}, not both")
    args += [_copy(value) for value in script.defaults[len(args):]]
    script.apply(request, script.title, *args)


def apply_alwayson(alwayson_scripts: dict | None, request: GenerationRequest, mode: str, host=None) -> None:
    """Extensions' always-on scripts in `alwayson_scripts` (`{"<title>": {"args": [...]}}`, titles matched
    case-insensitively) into `request.script_args`. "controlnet" is ours (see api/controlnet.py); any other
    title that no loaded extension has is refused, as A1111 does."""
    if not alwayson_scripts:
        return
    if not isinstance(alwayson_scripts, dict):
        raise RequestError("alwayson_scripts", "alwayson_scripts must be an object: {\"<script title>\": "
                           "{\"args\": [...]}}")
    titles = host.alwayson_titles(mode) if host is not None else {}
    for title, value in alwayson_scripts.items():
        key = str(title).strip().lower()
        if key == "controlnet":
            continue
        if key not in titles:
            known = ", ".join(["ControlNet", *titles.values()])
            raise RequestError("alwayson_scripts", f"always-on script {title!r} not found ({mode} has: {known})")
        args = value.get("args", []) if isinstance(value, dict) else value
        if not isinstance(args, list):
            raise RequestError("alwayson_scripts", f"alwayson_scripts.{title}.args must be a list, "
                               f"got {type(args).__name__}")
        request.script_args[key] = list(args)


def _not_found(name: str, mode: str, host=None) -> str:
    here = builtin_scripts.titles(mode) + [script.title for script in SCRIPTS.get(mode, {}).values()]
    if host is not None:
        here += host.selectable_titles(mode)
    other = "img2img" if mode == "txt2img" else "txt2img"
    if name.lower() in SCRIPTS.get(other, {}) or builtin_scripts.find(other, name) is not None or (host is not None and name.lower() in
                                                   {t.lower() for t in host.selectable_titles(other)}):
        return f"Script '{name}' not found: it is a script for {other}, not {mode}"
    if here:
        return f"Script '{name}' not found ({mode} scripts: {', '.join(here)})"
    return f"Script '{name}' not found (there are no {mode} scripts)"


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _whole(title: str, name: str, value, low: int, high: int) -> int:
    """A script arg that must be a whole number (a float such as 128.0 from a slider is fine)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
        if number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise RequestError("script_args", f"{title}: {name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise RequestError("script_args", f"{title}: {name} must be between {low} and {high}, got {value!r}")
    return int(number)


def _sides(title: str, pixels, direction) -> dict[str, int]:
    """{left, right, up, down}: `pixels` (rounded up to a multiple of 8) on each side named in `direction`."""
    amount = math.ceil(_whole(title, "pixels", pixels, 0, 2048) / 8) * 8
    if isinstance(direction, str):
        direction = [direction]
    if not isinstance(direction, (list, tuple)):
        raise RequestError("script_args", f"{title}: direction must be a list of {', '.join(DIRECTIONS)}, "
                           f"got {direction!r}")
    chosen = set()
    for item in direction:
        side = str(item).strip().lower()
        if side not in DIRECTIONS:
            raise RequestError("script_args", f"{title}: unknown direction {item!r} (use {', '.join(DIRECTIONS)})")
        chosen.add(side)
    return {side: amount if side in chosen else 0 for side in DIRECTIONS}


def _fill_index(title: str, value) -> int:
    """Masked content as A1111's index (0..3) or its name ("fill", "original", ...)."""
    if isinstance(value, str) and value.strip().lower() in INPAINT_FILLS:
        return INPAINT_FILLS.index(value.strip().lower())
    try:
        return _whole(title, "inpainting_fill", value, 0, len(INPAINT_FILLS) - 1)
    except RequestError:
        raise RequestError("script_args", f"{title}: inpainting_fill must be 0..3 or one of "
                           f"{', '.join(INPAINT_FILLS)}, got {value!r}") from None
