"""Sampler and schedule type names as A1111 spells them: which samplers exist, their aliases, which schedule types
each offers and picks by default, and resolving what a client or an infotext says. Pure data: the diffusers
scheduler behind each name is the engine's (`webui/engine/samplers.py`)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import RequestError

SIGMA_SCHEDULES = ("Uniform", "Karras", "Exponential", "SGM Uniform", "Beta")
TIMESTEP_SCHEDULES = ("Uniform", "SGM Uniform")
SCHEDULE_NAMES = ("Automatic",) + SIGMA_SCHEDULES


class SamplerError(RequestError):
    """An unknown sampler or schedule type, or a pair that does not go together; the message lists the choices."""

    status = 400
    kind = "UnknownSampler"

    def __init__(self, message: str, field_name: str = "sampler_name"):
        super().__init__(field_name, message)


@dataclass(frozen=True)
class SamplerName:
    name: str
    default_schedule: str = "Uniform"
    schedules: tuple[str, ...] = SIGMA_SCHEDULES
    aliases: tuple[str, ...] = ()


SAMPLER_NAMES: tuple[SamplerName, ...] = (
    SamplerName("DPM++ 2M", "Karras", aliases=("k_dpmpp_2m",)),
    SamplerName("DPM++ SDE", "Karras", aliases=("k_dpmpp_sde",)),
    SamplerName("DPM++ 2M SDE", "Exponential", aliases=("k_dpmpp_2m_sde",)),
    SamplerName("DPM++ 2S a", "Karras", ("Uniform", "Karras", "Exponential", "SGM Uniform"), aliases=("k_dpmpp_2s_a",)),
    SamplerName("DPM++ 3M SDE", "Exponential", aliases=("k_dpmpp_3m_sde",)),
    SamplerName("Euler a", aliases=("k_euler_a",)),
    SamplerName("Euler", aliases=("k_euler",)),
    SamplerName("LMS", aliases=("k_lms",)),
    SamplerName("Heun", aliases=("k_heun",)),
    SamplerName("DPM2", "Karras", aliases=("k_dpm_2",)),
    SamplerName("DPM2 a", "Karras", aliases=("k_dpm_2_a",)),
    SamplerName("DDIM", schedules=TIMESTEP_SCHEDULES),
    SamplerName("PLMS", schedules=TIMESTEP_SCHEDULES),
    SamplerName("UniPC"),
    SamplerName("LCM", schedules=TIMESTEP_SCHEDULES),
)
SAMPLER_NAMES_BY_NAME = {s.name: s for s in SAMPLER_NAMES}


def _lookup(name: str) -> SamplerName | None:
    wanted = name.strip().lower()
    for sampler in SAMPLER_NAMES:
        if wanted == sampler.name.lower() or wanted in (a.lower() for a in sampler.aliases):
            return sampler
    return None


def resolve_name(sampler_name: str | None, schedule: str | None = None) -> tuple[SamplerName, str]:
    """(sampler, concrete schedule type) for A1111 names. Old names such as "DPM++ 2M Karras" are split. Raises
    SamplerError (HTTP 400) naming the choices."""
    name = (sampler_name or "").strip() if isinstance(sampler_name, str) or sampler_name is None else str(sampler_name)
    sampler = _lookup(name)
    split_schedule = None
    if sampler is None:
        for suffix in ("Karras", "Exponential", "SGM Uniform", "Uniform"):
            if name.lower().endswith(" " + suffix.lower()):
                sampler = _lookup(name[: -len(suffix) - 1])
                split_schedule = suffix
                break
    if sampler is None:
        raise SamplerError(f"Unknown sampler {sampler_name!r}. Available: "
                           f"{', '.join(s.name for s in SAMPLER_NAMES)}")
    wanted = (schedule or "Automatic").strip() if isinstance(schedule, str) or schedule is None else str(schedule)
    if wanted.lower() == "automatic" and split_schedule:
        wanted = split_schedule
    match = next((s for s in SCHEDULE_NAMES if s.lower() == wanted.lower().replace("_", " ")), None)
    if match is None:
        raise SamplerError(f"Unknown schedule type {schedule!r}. Available: {', '.join(SCHEDULE_NAMES)}",
                           "scheduler")
    concrete = sampler.default_schedule if match == "Automatic" else match
    if concrete not in sampler.schedules:
        raise SamplerError(f"Sampler {sampler.name} does not support the {concrete} schedule "
                           f"(it supports: {', '.join(sampler.schedules)})", "scheduler")
    return sampler, concrete


def sampler_listing() -> list[dict]:
    """`/sdapi/v1/samplers` entries."""
    return [{"name": s.name, "aliases": list(s.aliases),
             "options": {"scheduler": s.default_schedule.lower()} if s.default_schedule != "Uniform" else {}}
            for s in SAMPLER_NAMES]


def schedule_listing() -> list[dict]:
    """`/sdapi/v1/schedulers` entries."""
    rho = {"Karras": 7.0}
    return [{"name": n.lower().replace(" ", "_"), "label": n, "aliases": None, "default_rho": rho.get(n, -1),
             "need_inner_model": False} for n in SCHEDULE_NAMES]
