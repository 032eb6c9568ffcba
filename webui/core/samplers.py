"""Sampler and schedule type names as A1111 spells them: which samplers exist, their aliases, which schedule types
each offers and picks by default, A1111's options per sampler, the schedule types' table, and resolving what a client
or an infotext says. Pure data: how each name samples is the engine's (`webui/engine/samplers.py`, and
`webui/engine/sampling/schedules.py` for the schedule types' sigmas)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import RequestError


@dataclass(frozen=True)
class ScheduleType:
    """One row of A1111 1.10's schedule table (`modules/sd_schedulers.py`). `label` is the UI's and the infotext's
    spelling, `name` the API's; default_rho -1: the type takes no rho; need_inner_model: computed from the model's
    own trained sigmas / timesteps; aliases: other spellings the engine's `schedules.find_schedule` accepts
    (`schedule_listing` lists them, null where there are none, as A1111)."""

    label: str
    name: str
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()


# A1111 1.10's schedule types, in its order; every sampler accepts every one, the timestep samplers (DDIM, DDIM CFG++,
# PLMS, UniPC) and LCM run their own timesteps whatever is chosen, as in A1111. The one table: the engine's
# `webui/engine/sampling/schedules.py` computes the sigmas of these rows.
SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("Automatic", "automatic"),
    ScheduleType("Uniform", "uniform", need_inner_model=True),
    ScheduleType("Karras", "karras", default_rho=7.0),
    ScheduleType("Exponential", "exponential"),
    ScheduleType("Polyexponential", "polyexponential", default_rho=1.0),
    ScheduleType("SGM Uniform", "sgm_uniform", need_inner_model=True, aliases=("SGMUniform",)),
    ScheduleType("KL Optimal", "kl_optimal"),
    ScheduleType("Align Your Steps", "align_your_steps"),
    ScheduleType("Simple", "simple", need_inner_model=True),
    ScheduleType("Normal", "normal", need_inner_model=True),
    ScheduleType("DDIM", "ddim", need_inner_model=True),
    ScheduleType("Beta", "beta", need_inner_model=True),
)
SCHEDULE_NAMES = tuple(schedule.label for schedule in SCHEDULE_TYPES)
SIGMA_SCHEDULES = SCHEDULE_NAMES[1:]


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
    # A1111's sampler options (listed by /sdapi/v1/samplers): second_order (two model evaluations a step),
    # brownian_noise (SDE: a Brownian tree of the batch's seeds), uses_ensd, discard_next_to_last_sigma
    flags: frozenset[str] = frozenset()


def _flags(names: str) -> frozenset[str]:
    return frozenset(names.split())


SAMPLER_NAMES: tuple[SamplerName, ...] = (  # A1111 1.10's list, in its order
    SamplerName("DPM++ 2M", "Karras", aliases=("k_dpmpp_2m",)),
    SamplerName("DPM++ SDE", "Karras", aliases=("k_dpmpp_sde",), flags=_flags("second_order brownian_noise")),
    SamplerName("DPM++ 2M SDE", "Exponential", aliases=("k_dpmpp_2m_sde",), flags=_flags("brownian_noise")),
    SamplerName("DPM++ 2M SDE Heun", "Exponential", aliases=("k_dpmpp_2m_sde_heun",), flags=_flags("brownian_noise")),
    SamplerName("DPM++ 2S a", "Karras", aliases=("k_dpmpp_2s_a",), flags=_flags("uses_ensd second_order")),
    SamplerName("DPM++ 3M SDE", "Exponential", aliases=("k_dpmpp_3m_sde",), flags=_flags("discard_next_to_last_sigma brownian_noise")),
    SamplerName("Euler a", aliases=("k_euler_a", "k_euler_ancestral"), flags=_flags("uses_ensd")),
    SamplerName("Euler", aliases=("k_euler",)),
    SamplerName("LMS", aliases=("k_lms",)),
    SamplerName("Heun", aliases=("k_heun",), flags=_flags("second_order")),
    SamplerName("DPM2", "Karras", aliases=("k_dpm_2",), flags=_flags("discard_next_to_last_sigma second_order")),
    SamplerName("DPM2 a", "Karras", aliases=("k_dpm_2_a",), flags=_flags("discard_next_to_last_sigma uses_ensd second_order")),
    SamplerName("DPM fast", aliases=("k_dpm_fast",), flags=_flags("uses_ensd")),
    SamplerName("DPM adaptive", aliases=("k_dpm_ad",), flags=_flags("uses_ensd")),
    SamplerName("Restart", "Karras", aliases=("restart",), flags=_flags("second_order")),
    SamplerName("DDIM", aliases=("ddim",)),
    SamplerName("DDIM CFG++", aliases=("ddim_cfgpp",)),
    SamplerName("PLMS", aliases=("plms",)),
    SamplerName("UniPC", aliases=("unipc",)),
    SamplerName("LCM", aliases=("k_lcm",)),
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
        for suffix in ("Karras", "Exponential", "SGM Uniform", "Uniform", "Polyexponential", "KL Optimal",
                       "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"):
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
    match = next((s.label for s in SCHEDULE_TYPES
                  if wanted.lower() in (s.label.lower(), s.name, s.name.replace("_", " "))), None)
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
    listing = []
    for sampler in SAMPLER_NAMES:
        options = {"scheduler": sampler.default_schedule.lower()} if sampler.default_schedule != "Uniform" else {}
        options.update({flag: True for flag in sorted(sampler.flags)})
        if sampler.name == "DPM++ 2M SDE Heun":
            options["solver_type"] = "heun"
        listing.append({"name": sampler.name, "aliases": list(sampler.aliases), "options": options})
    return listing


def schedule_listing() -> list[dict]:
    """`/sdapi/v1/schedulers` entries."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model} for s in SCHEDULE_TYPES]  # A1111: null but for SGM Uniform
