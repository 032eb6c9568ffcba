"""Per-image prompts and seeds, and infotext entries, that a built-in script gives one engine run: what A1111's
scripts do by setting `p.prompt` / `p.seed` to lists (Prompt matrix) or filling `p.extra_generation_params`
(Loopback, SD upscale).

The script puts them in the request's `context` (`with_image_lists`); the engine copies them onto the run
(`apply_image_lists`) before the extensions' `process` hook, so extensions see them as A1111's see `all_prompts`.
"""
from __future__ import annotations

import dataclasses

from ...core.request import GenerationRequest

KEY = "builtin_script_lists"
_LISTS = ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds")


def with_image_lists(request: GenerationRequest, *, prompts: list[str] | None = None,
                     negative_prompts: list[str] | None = None, seeds: list[int] | None = None,
                     subseeds: list[int] | None = None, extra_params: dict | None = None) -> GenerationRequest:
    """A copy of `request` whose run uses these per-image lists (each as long as batch size x batch count) and
    adds `extra_params` to every image's infotext."""
    lists = {name: list(values) for name, values in zip(_LISTS, (prompts, negative_prompts, seeds, subseeds))
             if values is not None}
    entry = {**dict(request.context.get(KEY) or {}), **lists}
    if extra_params:
        entry["extra_params"] = {**entry.get("extra_params", {}), **extra_params}
    return dataclasses.replace(request, context={**request.context, KEY: entry})


def apply_image_lists(run) -> None:
    """Called by the engine once the run's default lists are made: a script's lists and infotext entries win."""
    entry = run.request.context.get(KEY) or {}
    for name in _LISTS:
        if name in entry:
            setattr(run, name, list(entry[name]))
    run.extra_params.update(entry.get("extra_params") or {})
