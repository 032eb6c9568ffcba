"""How each A1111 sampler samples: the algorithm behind the name (`webui/engine/sampling`), A1111 1.10's per-sampler
options, and the set-up of one sampling pass (sigmas or timesteps, starting latents, noise, the sampler's keyword
arguments and the infotext keys they add). The names, aliases and schedule types are `webui/core/samplers.py`."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

from ..core.errors import RequestError
from ..core.samplers import (SAMPLER_NAMES, SAMPLER_NAMES_BY_NAME, SCHEDULE_NAMES, SIGMA_SCHEDULES,  # noqa: F401
                             SamplerError, SamplerName, resolve_name)  # (SamplerError: what `resolve` raises)
from .sampling import k_samplers, timestep_samplers, unipc
from .sampling.brownian import BrownianNoise
from .sampling.noise import seeded_randn
from .sampling.schedules import make_sigmas
from .sampling.sigmas import NoiseLevels

K, TIMESTEP, LCM = "k-diffusion", "timestep", "lcm"


@dataclass(frozen=True)
class Sampler:
    names: SamplerName  # the name, aliases, schedule types and A1111's options (webui/core/samplers.py)
    kind: str  # K: k-diffusion over sigmas; TIMESTEP: A1111's DDIM / PLMS / UniPC; LCM

    @property
    def uses_ensd(self) -> bool:  # A1111 writes ENSD for it (when its eta is not 0)
        return "uses_ensd" in self.names.flags

    @property
    def brownian(self) -> bool:  # SDE: its noise is a Brownian tree seeded with the batch's seeds
        return "brownian_noise" in self.names.flags

    @property
    def discard_penultimate(self) -> bool:  # asks for steps + 1 sigmas and drops the next-to-last
        return "discard_next_to_last_sigma" in self.names.flags

    @property
    def second_order(self) -> bool:  # two model evaluations a step (prompt editing counts them, as A1111)
        return "second_order" in self.names.flags

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

    @property
    def function(self):
        if self.kind == TIMESTEP:
            return {"DDIM": timestep_samplers.ddim, "DDIM CFG++": timestep_samplers.ddim_cfgpp,
                    "PLMS": timestep_samplers.plms, "UniPC": unipc.unipc}[self.name]
        return k_samplers.SAMPLERS[self.name]


_KINDS = {"DDIM": TIMESTEP, "DDIM CFG++": TIMESTEP, "PLMS": TIMESTEP, "UniPC": TIMESTEP, "LCM": LCM}
_BY_NAME = {names.name: Sampler(names, _KINDS.get(names.name, K)) for names in SAMPLER_NAMES}
SAMPLERS: tuple[Sampler, ...] = tuple(_BY_NAME[names.name] for names in SAMPLER_NAMES)  # every name has one
SAMPLERS_BY_NAME = {s.name: s for s in SAMPLERS}

_UNIPC_INFOTEXT = (("variant", "UniPC variant", "bh1"), ("skip_type", "UniPC skip type", "time_uniform"),
                   ("order", "UniPC order", 3), ("lower_order_final", "UniPC lower order final", True))
_S_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
_S_INFOTEXT = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}


def resolve(sampler_name: str | None, schedule: str | None = None, flow: bool = False) -> tuple[Sampler, str]:
    """(sampler, concrete schedule type) for A1111 names (`webui.core.samplers.resolve_name`); SamplerError
    otherwise. `flow`: a rectified-flow checkpoint, whose own schedule ("Uniform": what Automatic gives where the
    sampler has no type of its own) is the same sigmas as Forge's "Simple", and is named so."""
    names, concrete = resolve_name(sampler_name, schedule)
    if flow and concrete == "Uniform":
        concrete = "Simple"
    return SAMPLERS_BY_NAME[names.name], concrete


def _number(options, key: str, default: float = 0.0) -> float:
    try:
        value = options.get(key)
    except KeyError:
        return default
    return default if value is None else float(value)


@dataclass
class PassPlan:
    """One sampling pass, worked out: what the sampler runs over and what it adds to the infotext."""
    sampler: Sampler
    steps_shown: int  # A1111's sampling_steps for the progress bar
    sigmas: torch.Tensor | None = None  # K / LCM: the sigmas run (img2img: the tail)
    timesteps: torch.Tensor | None = None  # TIMESTEP: the timesteps given to the sampler
    start_scale: torch.Tensor | None = None  # txt2img K: noise x this; img2img K: init + noise x this
    img2img_alpha: int | None = None  # TIMESTEP img2img: the timestep the init latents are noised to
    brownian_range: tuple[float, float] | None = None
    kwargs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # infotext keys


def plan_pass(sampler: Sampler, schedule: str, steps: int, levels: NoiseLevels, options, family: str, *,
              eta: float | None = None, s_values: dict | None = None,
              img2img: tuple[int, int] | None = None) -> PassPlan:
    """The set-up A1111 1.10 makes for `steps` steps (txt2img), or with `img2img=(steps, t_enc)` for the img2img
    tail of a `steps`-step schedule running t_enc + 1 steps. `levels`: the checkpoint's noise levels (LCM's own
    table for LCM, `sampler_levels`)."""
    params: dict = {}
    discard = sampler.discard_penultimate
    if bool(options.get("always_discard_next_to_last_sigma")) and not discard:
        discard = True
        params["Discard penultimate sigma"] = True
    total = img2img[0] if img2img else steps
    if sampler.kind == TIMESTEP:
        return _plan_timesteps(sampler, total, discard, options, eta, img2img, params)
    sigmas = _sigmas(schedule, total + (1 if discard else 0), levels, options, family, params)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    full = sigmas
    plan = PassPlan(sampler, steps)
    if img2img:
        t_enc = img2img[1]
        sigmas = sigmas[total - t_enc - 1:]
        plan.steps_shown = t_enc + 1
    plan.sigmas = sigmas
    plan.start_scale = sigmas[0]
    if not img2img and bool(options.get("sgm_noise_multiplier")) and levels.prediction != "flow":
        params["SGM noise multiplier"] = True
        plan.start_scale = torch.sqrt(1.0 + sigmas[0] ** 2.0)
    positive = full[full > 0]
    plan.brownian_range = (float(positive.min()), float(full.max())) if sampler.brownian else None
    plan.kwargs = {}
    forwarded = k_samplers.A1111_OPTIONS[sampler.name]  # what A1111 passes this sampler's function
    if "eta" in forwarded:
        value = float(eta) if eta is not None else _number(options, "eta_ancestral", 1.0)
        if value != 1.0:
            params["Eta"] = value
        plan.kwargs["eta"] = value
    _s_params(options, s_values or {}, forwarded, plan.kwargs, params)
    accepted = inspect.signature(sampler.function).parameters
    if "sigma_min" in accepted:  # DPM fast / adaptive run between two sigmas, not over the list
        if img2img:
            if len(sigmas) < 3:  # one step: from sigma_sched[0] down to itself (A1111 fails there too)
                raise RequestError("denoising_strength",
                                   f"{sampler.name} needs at least 2 img2img steps, and steps x denoising strength "
                                   "gives 1 here: raise the denoising strength or the steps, or pick another "
                                   "sampler")
            plan.kwargs.update(sigma_min=sigmas[-2], sigma_max=sigmas[0])
        else:
            plan.kwargs.update(sigma_min=levels.sigma_min, sigma_max=levels.sigma_max)
        if "n" in accepted:
            plan.kwargs["n"] = len(sigmas) - 1 if img2img else steps
    plan.params = params
    return plan


def _sigmas(schedule: str, n: int, levels: NoiseLevels, options, family: str, params: dict):
    if schedule == "Uniform":
        return levels.uniform(n)
    kwargs = {}
    sigma_min, sigma_max, rho = (_number(options, key) for key in ("sigma_min", "sigma_max", "rho"))
    if sigma_min != 0 and sigma_min != levels.sigma_min:
        kwargs["sigma_min"] = sigma_min
        params["Schedule min sigma"] = sigma_min
    if sigma_max != 0 and sigma_max != levels.sigma_max:
        kwargs["sigma_max"] = sigma_max
        params["Schedule max sigma"] = sigma_max
    default_rho = {"Karras": 7.0, "Polyexponential": 1.0}.get(schedule)
    if default_rho is not None and rho != 0 and rho != default_rho:
        kwargs["rho"] = rho
        params["Schedule rho"] = rho
    if schedule == "Beta":
        kwargs["beta_alpha"] = _number(options, "beta_dist_alpha", 0.6)
        kwargs["beta_beta"] = _number(options, "beta_dist_beta", 0.6)
        params["Beta schedule alpha"] = kwargs["beta_alpha"]
        params["Beta schedule beta"] = kwargs["beta_beta"]
    return make_sigmas(schedule, n, levels, family=family, **kwargs)


def _s_params(options, requested: dict, forwarded, kwargs: dict, params: dict) -> None:
    """s_churn / s_tmin / s_tmax / s_noise as A1111 1.10 takes them: the setting when it was changed from its default,
    else the request's value, else the default; written to the infotext when not the default."""
    for key in _S_DEFAULTS:
        if key not in forwarded:
            continue
        setting = _number(options, key, _S_DEFAULTS[key])
        if key == "s_tmax" and setting == 0:
            setting = math.inf
        value = setting if setting != _S_DEFAULTS[key] else requested.get(key)
        if value is None:
            continue
        value = float(value)
        if key == "s_tmax" and value == 0:
            value = math.inf
        if value != _S_DEFAULTS[key]:
            kwargs[key] = value
            params[_S_INFOTEXT[key]] = value


def _plan_timesteps(sampler: Sampler, steps: int, discard: bool, options, eta, img2img, params) -> PassPlan:
    timesteps = timestep_samplers.a1111_timesteps(steps, discard)
    plan = PassPlan(sampler, steps, timesteps=timesteps)
    if img2img:
        t_enc = img2img[1]
        plan.timesteps = timesteps[:t_enc]
        plan.img2img_alpha = int(timesteps[t_enc])
        plan.steps_shown = t_enc + 1
        plan.kwargs["is_img2img"] = True
    accepted = inspect.signature(sampler.function).parameters
    if "eta" in accepted:
        value = float(eta) if eta is not None else _number(options, "eta_ddim", 0.0)
        if value != 0.0:
            params["Eta DDIM"] = value
        plan.kwargs["eta"] = value
    if sampler.name == "UniPC":
        order, runs = int(options.get("uni_pc_order")), len(plan.timesteps)
        if runs < order:
            raise RequestError("steps", f"UniPC of order {order} needs at least {order} steps, and this pass runs "
                               f"{runs}: raise the steps (or the denoising strength), or lower the UniPC order in "
                               "Settings > Sampler parameters")
        plan.kwargs.update(variant=str(options.get("uni_pc_variant")), order=order,
                           skip_type=str(options.get("uni_pc_skip_type")),
                           lower_order_final=bool(options.get("uni_pc_lower_order_final")))
        for key, label, default in _UNIPC_INFOTEXT:  # written when not the default, so the picture reproduces
            if plan.kwargs[key] != default:
                params[label] = plan.kwargs[key]
    if "is_img2img" in plan.kwargs and "is_img2img" not in accepted:
        del plan.kwargs["is_img2img"]
    plan.params = params
    return plan


def sampler_levels(sampler: Sampler, levels: NoiseLevels):
    """The noise table the sampler runs over: LCM's 50 levels for LCM, else the checkpoint's."""
    if sampler.kind == LCM:
        from .sampling.lcm import LCMNoiseLevels
        return LCMNoiseLevels(levels.alphas_cumprod)
    return levels


def brownian_noise(plan: PassPlan, x: torch.Tensor, seeds: list[int], source: str):
    """The SDE samplers' noise: one Brownian tree per image, seeded with its seed (A1111's batch determinism), its
    normals drawn from the run's random source as A1111 does."""
    low, high = plan.brownian_range
    return BrownianNoise(x, low, high, list(seeds),
                         randn=lambda seed, shape: seeded_randn(seed, shape, source, x.device))
