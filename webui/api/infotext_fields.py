"""A1111's `infotext` request field: the parameters of an image's infotext fill the fields the request did not set
(fields sent explicitly win)."""
from __future__ import annotations

from ..engine.request import RequestError
from ..outputs.infotext import parse_infotext

# request field: (infotext key, type)
_FIELDS = {
    "prompt": ("Prompt", str), "negative_prompt": ("Negative prompt", str), "steps": ("Steps", int),
    "sampler_name": ("Sampler", str), "scheduler": ("Schedule type", str), "cfg_scale": ("CFG scale", float),
    "seed": ("Seed", int), "width": ("Size-1", int), "height": ("Size-2", int), "subseed": ("Variation seed", int),
    "subseed_strength": ("Variation seed strength", float), "denoising_strength": ("Denoising strength", float),
}


def apply_infotext(body):
    """A copy of `body` with its unset fields taken from `body.infotext` (the body itself when there is none)."""
    text = (body.infotext or "").strip()
    if not text:
        return body
    params = parse_infotext(text)
    given = body.model_fields_set
    updates = {}
    for name, (key, kind) in _FIELDS.items():
        if name in given or key not in params or name not in type(body).model_fields:
            continue
        try:
            updates[name] = kind(float(params[key])) if kind is int else kind(params[key])
        except (TypeError, ValueError):
            raise RequestError("infotext", f"infotext: {key} {params[key]!r} is not a valid {kind.__name__}") from None
    if "sampler_name" in updates and "sampler_index" not in given:
        updates["sampler_index"] = None
    if "Clip skip" in params:
        overrides = dict(body.override_settings or {})
        if "CLIP_stop_at_last_layers" not in overrides:
            try:
                overrides["CLIP_stop_at_last_layers"] = int(params["Clip skip"])
            except ValueError:
                raise RequestError("infotext", f"infotext: Clip skip {params['Clip skip']!r} is not a number") from None
            updates["override_settings"] = overrides
    return body.model_copy(update=updates)
