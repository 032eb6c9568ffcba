"""A1111's `infotext` request field: the parameters of an image's infotext fill the fields the request did not set
(fields sent explicitly win), its setting keys (Clip skip, RNG, Model hash, ...) become override settings the
request did not give, and its Hires keys turn hires fix on, as pasting it into txt2img would."""
from __future__ import annotations

from typing import Callable

from ..core.errors import RequestError
from ..outputs.infotext import SETTING_KEYS, parse_infotext

# request field: (infotext key, type)
_FIELDS = {
    "prompt": ("Prompt", str), "negative_prompt": ("Negative prompt", str), "steps": ("Steps", int),
    "sampler_name": ("Sampler", str), "scheduler": ("Schedule type", str), "cfg_scale": ("CFG scale", float),
    "distilled_cfg_scale": ("Distilled CFG Scale", float),
    "seed": ("Seed", int), "width": ("Size-1", int), "height": ("Size-2", int), "subseed": ("Variation seed", int),
    "subseed_strength": ("Variation seed strength", float), "denoising_strength": ("Denoising strength", float),
    "seed_resize_from_w": ("Seed resize from-1", int), "seed_resize_from_h": ("Seed resize from-2", int),
    "tiling": ("Tiling", bool),
    "hr_scale": ("Hires upscale", float), "hr_upscaler": ("Hires upscaler", str),
    "hr_second_pass_steps": ("Hires steps", int), "hr_resize_x": ("Hires resize-1", int),
    "hr_resize_y": ("Hires resize-2", int), "hr_sampler_name": ("Hires sampler", str),
    "hr_scheduler": ("Hires schedule type", str), "hr_checkpoint_name": ("Hires checkpoint", str),
    "hr_prompt": ("Hires prompt", str), "hr_negative_prompt": ("Hires negative prompt", str),
    "refiner_checkpoint": ("Refiner", str), "refiner_switch_at": ("Refiner switch at", float),
}
_SAME = {"Use same sampler", "Use same scheduler", "Use same checkpoint"}  # A1111's "not set" choices
_HIRES_MARKS = ("Hires upscale", "Hires upscaler", "Hires resize-1")


def apply_infotext(body, setting: Callable[[str, str], object | None] | None = None):
    """A copy of `body` with its unset fields taken from `body.infotext` (the body itself when there is none).
    `setting(option, value)` turns an infotext value into that option's value, or None to leave it out (an
    option this server does not have, a checkpoint it does not know)."""
    text = (body.infotext or "").strip()
    if not text:
        return body
    params = parse_infotext(text)
    given = body.model_fields_set
    fields = type(body).model_fields
    updates = {}
    for name, (key, kind) in _FIELDS.items():
        if name in given or key not in params or name not in fields or params[key] in _SAME:
            continue
        updates[name] = _convert(key, params[key], kind)
    if "sampler_name" in updates and "sampler_index" not in given:
        updates["sampler_index"] = None
    if "enable_hr" in fields and "enable_hr" not in given and "Denoising strength" in params \
            and any(key in params for key in _HIRES_MARKS):
        updates["enable_hr"] = True
    overrides = dict(body.override_settings or {})
    for key, option in SETTING_KEYS:
        if key in params and option not in overrides and setting is not None:
            value = setting(option, params[key])
            if value is not None:
                overrides[option] = value
    if overrides != dict(body.override_settings or {}):
        updates["override_settings"] = overrides
    return body.model_copy(update=updates)


def _convert(key: str, value: str, kind: type):
    if kind is bool:  # infotext writes A1111's booleans as True / False
        return str(value).strip().lower() == "true"
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise RequestError("infotext", f"infotext: {key} {value!r} is not a valid {kind.__name__}") from None
