"""A1111's `modules.sd_schedulers`: the schedule types (`schedulers`, `schedulers_map`), named as our engine
names them (webui/core/samplers.py). Computing the sigmas is our engine's (webui/engine/sampling/schedules.py):
a `Scheduler.function` is reported as an internal this web UI doesn't offer to extensions."""
from __future__ import annotations

from dataclasses import dataclass

from webui.core.samplers import SCHEDULE_TYPES
from webui.extensions.problems import ModelInternalsError


def _no_function(name: str):
    def function(*args, **kwargs):
        raise ModelInternalsError(f"modules.sd_schedulers.{name}.function", "sampler internals (schedule functions)")
    return function


@dataclass
class Scheduler:
    name: str
    label: str
    function: object = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list | None = None


schedulers = [Scheduler(s.name, s.label, None if s.name == "automatic" else _no_function(s.name), s.default_rho,
                        s.need_inner_model, list(s.aliases) or None) for s in SCHEDULE_TYPES]
schedulers_map = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
