"""The diffusers scheduler behind each A1111 sampler name. The names themselves (aliases, schedule types, what
a client may ask for) are `webui/core/samplers.py`; this file adds how each one samples."""
from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSDEScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from ..core.samplers import (SAMPLER_NAMES, SAMPLER_NAMES_BY_NAME, SCHEDULE_NAMES, SIGMA_SCHEDULES,  # noqa: F401
                             SamplerError, SamplerName, resolve_name)  # (SamplerError: what `resolve` raises)
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
assert tuple(SCHEDULES) == SIGMA_SCHEDULES and SCHEDULE_NAMES == ("Automatic",) + SIGMA_SCHEDULES


@dataclass(frozen=True)
class Sampler:
    names: SamplerName  # the name, aliases and schedule types (webui/core/samplers.py)
    cls: type
    options: dict = field(default_factory=dict)
    spacing: str = "linspace"  # how "Uniform" places the steps: k-diffusion style, or DDIM's "leading"
    needs_seed: bool = False  # a Brownian-tree SDE sampler seeded from the image seed
    classes: dict = field(default_factory=dict)  # another implementation for some schedule types
    second_order: bool = False  # two model evaluations a step (prompt editing counts evaluations, as A1111)

    @property
    def name(self) -> str:
        return self.names.name

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.names.aliases

    @property
    def default_schedule(self) -> str:
        return self.names.default_schedule

    @property
    def schedules(self) -> tuple[str, ...]:
        return self.names.schedules

    def cls_for(self, schedule: str) -> type:
        return self.classes.get(schedule, self.cls)


def _sampler(name: str, cls: type, options: dict | None = None, **how) -> Sampler:
    return Sampler(SAMPLER_NAMES_BY_NAME[name], cls, options or {}, **how)


_BY_NAME = {s.name: s for s in (
    _sampler("DPM++ 2M", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    _sampler("DPM++ SDE", DPMSolverSDEScheduler, needs_seed=True, second_order=True),
    _sampler("DPM++ 2M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    _sampler("DPM++ 2S a", DPMPP2SAncestralScheduler, second_order=True),
    _sampler("DPM++ 3M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    _sampler("Euler a", EulerAncestralDiscreteScheduler,
             classes={s: EulerAncestralSigmaScheduler for s in ("Karras", "Exponential", "Beta")}),
    _sampler("Euler", EulerDiscreteScheduler),
    _sampler("LMS", LMSDiscreteScheduler),
    _sampler("Heun", HeunDiscreteScheduler, second_order=True),
    _sampler("DPM2", KDPM2DiscreteScheduler, second_order=True),
    _sampler("DPM2 a", KDPM2AncestralDiscreteScheduler, second_order=True),
    _sampler("DDIM", DDIMScheduler, spacing="leading"),
    _sampler("PLMS", PNDMScheduler, {"skip_prk_steps": True}, spacing="leading"),
    _sampler("UniPC", UniPCMultistepScheduler),
    _sampler("LCM", LCMScheduler, spacing="leading"),
)}
SAMPLERS: tuple[Sampler, ...] = tuple(_BY_NAME[names.name] for names in SAMPLER_NAMES)  # every name has one
SAMPLERS_BY_NAME = {s.name: s for s in SAMPLERS}


def resolve(sampler_name: str | None, schedule: str | None = None) -> tuple[Sampler, str]:
    """(sampler, concrete schedule type) for A1111 names (`webui.core.samplers.resolve_name`); SamplerError
    otherwise."""
    names, concrete = resolve_name(sampler_name, schedule)
    return SAMPLERS_BY_NAME[names.name], concrete


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
