"""Samplers by A1111 name, with the schedule type as a separate choice, mapped onto diffusers schedulers."""
from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSDEScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from .dpmpp_2s_ancestral import DPMPP2SAncestralScheduler
from .euler_ancestral import EulerAncestralSigmaScheduler

# Schedule types: name -> the scheduler settings that produce it.
SCHEDULES: dict[str, dict] = {
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Beta": {"use_beta_sigmas": True},
}
SIGMA_SCHEDULES = ("Uniform", "Karras", "Exponential", "SGM Uniform", "Beta")
TIMESTEP_SCHEDULES = ("Uniform", "SGM Uniform")


class SamplerError(ValueError):
    pass


@dataclass(frozen=True)
class Sampler:
    name: str
    cls: type
    options: dict = field(default_factory=dict)
    default_schedule: str = "Uniform"
    schedules: tuple[str, ...] = SIGMA_SCHEDULES
    aliases: tuple[str, ...] = ()
    spacing: str = "linspace"  # how "Uniform" places the steps: k-diffusion style, or DDIM's "leading"
    needs_seed: bool = False  # a Brownian-tree SDE sampler seeded from the image seed
    classes: dict = field(default_factory=dict)  # another implementation for some schedule types
    second_order: bool = False  # two model evaluations a step (prompt editing counts evaluations, as A1111)

    def cls_for(self, schedule: str) -> type:
        return self.classes.get(schedule, self.cls)


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2},
            "Karras", aliases=("k_dpmpp_2m",)),
    Sampler("DPM++ SDE", DPMSolverSDEScheduler, {}, "Karras", aliases=("k_dpmpp_sde",),
            schedules=("Uniform", "Karras", "Exponential", "SGM Uniform", "Beta"), needs_seed=True,
            second_order=True),
    Sampler("DPM++ 2M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
            "Exponential", aliases=("k_dpmpp_2m_sde",)),
    Sampler("DPM++ 2S a", DPMPP2SAncestralScheduler, {}, "Karras", aliases=("k_dpmpp_2s_a",),
            schedules=("Uniform", "Karras", "Exponential", "SGM Uniform"), second_order=True),
    Sampler("DPM++ 3M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
            "Exponential", aliases=("k_dpmpp_3m_sde",)),
    Sampler("Euler a", EulerAncestralDiscreteScheduler, {}, aliases=("k_euler_a",),
            classes={s: EulerAncestralSigmaScheduler for s in ("Karras", "Exponential", "Beta")}),
    Sampler("Euler", EulerDiscreteScheduler, {}, aliases=("k_euler",)),
    Sampler("LMS", LMSDiscreteScheduler, {}, aliases=("k_lms",)),
    Sampler("Heun", HeunDiscreteScheduler, {}, aliases=("k_heun",), second_order=True),
    Sampler("DPM2", KDPM2DiscreteScheduler, {}, "Karras", aliases=("k_dpm_2",), second_order=True),
    Sampler("DPM2 a", KDPM2AncestralDiscreteScheduler, {}, "Karras", aliases=("k_dpm_2_a",), second_order=True),
    Sampler("DDIM", DDIMScheduler, {}, schedules=TIMESTEP_SCHEDULES, spacing="leading"),
    Sampler("PLMS", PNDMScheduler, {"skip_prk_steps": True}, schedules=TIMESTEP_SCHEDULES, spacing="leading"),
    Sampler("UniPC", UniPCMultistepScheduler, {}, spacing="linspace"),
    Sampler("LCM", LCMScheduler, {}, schedules=TIMESTEP_SCHEDULES, spacing="leading"),
)
SAMPLERS_BY_NAME = {s.name: s for s in SAMPLERS}
SCHEDULE_NAMES = ("Automatic",) + tuple(SCHEDULES)


def _lookup(name: str) -> Sampler | None:
    wanted = name.strip().lower()
    for sampler in SAMPLERS:
        if wanted == sampler.name.lower() or wanted in (a.lower() for a in sampler.aliases):
            return sampler
    return None


def resolve(sampler_name: str | None, schedule: str | None = None) -> tuple[Sampler, str]:
    """(sampler, concrete schedule type) for A1111 names. Old names such as "DPM++ 2M Karras" are split."""
    name = (sampler_name or "").strip()
    sampler = _lookup(name)
    split_schedule = None
    if sampler is None:
        for suffix in ("Karras", "Exponential", "SGM Uniform", "Uniform"):
            if name.lower().endswith(" " + suffix.lower()):
                sampler = _lookup(name[: -len(suffix) - 1])
                split_schedule = suffix
                break
    if sampler is None:
        raise SamplerError(f"Unknown sampler {sampler_name!r}. Available: {', '.join(s.name for s in SAMPLERS)}")
    wanted = (schedule or "Automatic").strip()
    if wanted.lower() == "automatic" and split_schedule:
        wanted = split_schedule
    match = next((s for s in SCHEDULE_NAMES if s.lower() == wanted.lower().replace("_", " ")), None)
    if match is None:
        raise SamplerError(f"Unknown schedule type {schedule!r}. Available: {', '.join(SCHEDULE_NAMES)}")
    concrete = sampler.default_schedule if match == "Automatic" else match
    if concrete not in sampler.schedules:
        raise SamplerError(f"Sampler {sampler.name} does not support the {concrete} schedule "
                           f"(it supports: {', '.join(sampler.schedules)})")
    return sampler, concrete


def make_scheduler(sampler: Sampler, schedule: str, base_config: dict, seeds: list[int] | None = None):
    """A fresh diffusers scheduler for one batch (schedulers keep per-run state). SDE samplers get one Brownian
    tree per image, seeded with that image's seed, so an image does not depend on its batch."""
    config = dict(base_config)
    config["timestep_spacing"] = sampler.spacing
    config.update(sampler.options)
    config.update(SCHEDULES[schedule])
    if sampler.needs_seed and seeds is not None:
        config["noise_sampler_seed"] = list(seeds)
    return sampler.cls_for(schedule).from_config(config)


def sampler_listing() -> list[dict]:
    """`/sdapi/v1/samplers` entries."""
    return [{"name": s.name, "aliases": list(s.aliases),
             "options": {"scheduler": s.default_schedule.lower()} if s.default_schedule != "Uniform" else {}}
            for s in SAMPLERS]


def schedule_listing() -> list[dict]:
    """`/sdapi/v1/schedulers` entries."""
    rho = {"Karras": 7.0}
    return [{"name": n.lower().replace(" ", "_"), "label": n, "aliases": None, "default_rho": rho.get(n, -1),
             "need_inner_model": False} for n in SCHEDULE_NAMES]
