"""A1111's `modules.sd_samplers`: the samplers' names, aliases and options as A1111 1.10 lists them, from our
sampler table (webui/core/samplers.py): `all_samplers`, `samplers`, `samplers_for_img2img`, `samplers_map`,
`all_samplers_map`, `find_sampler_config`, `visible_sampler_names`, `get_sampler_and_scheduler`,
`get_sampler_from_infotext`. Sampling is our engine's: A1111's sampler objects (`create_sampler`, a
`SamplerData.constructor`) are reported as internals this web UI doesn't have.
"""
from __future__ import annotations

from collections import namedtuple

from webui.core.samplers import SamplerError, resolve_name, sampler_listing
from webui.extensions.a1111.runtime import RUNTIME
from webui.extensions.problems import ModelInternalsError

from . import sd_schedulers

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

A1111_INTERNALS = {name: "sampler internals" for name in (
    "create_sampler", "sample_to_image", "samples_to_image_grid", "store_latent", "KDiffusionSampler",
    "CompVisSampler", "CFGDenoiser", "samplers_data_k_diffusion", "samplers_data_timesteps", "sampler_extra_params",
    "set_samplers_hidden")}


def _constructor(name: str):
    def constructor(model):
        raise ModelInternalsError(f"modules.sd_samplers (the {name} sampler's constructor)", "sampler internals")
    return constructor


all_samplers = [SamplerData(entry["name"], _constructor(entry["name"]), list(entry["aliases"]),
                            dict(entry["options"])) for entry in sampler_listing()]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = list(all_samplers)
samplers_for_img2img = list(all_samplers)
samplers_map: dict[str, str] = {}
for _sampler in all_samplers:
    samplers_map[_sampler.name.lower()] = _sampler.name
    for _alias in _sampler.aliases:
        samplers_map[_alias.lower()] = _sampler.name
del _sampler, _alias


def set_samplers() -> None:
    """A1111 rebuilds its lists here; ours are fixed (every sampler works for txt2img and img2img)."""


def _hidden() -> set[str]:
    services = RUNTIME.services
    if services is None:
        return set()
    try:
        return set(services.options.get("hide_samplers") or [])
    except KeyError:
        return set()


def visible_sampler_names() -> list[str]:
    """The samplers the UI offers (the setting `hide_samplers` left out)."""
    hidden = _hidden()
    return [x.name for x in samplers if x.name not in hidden]


def visible_samplers() -> list:
    hidden = _hidden()
    return [x for x in samplers if x.name not in hidden]


def find_sampler_config(name):
    """The SamplerData named `name` (its exact name, as A1111; None when unknown); None -> the first."""
    if name is None:
        return all_samplers[0]
    return all_samplers_map.get(name)


def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    """(sampler name, schedule label) for what a user or an old infotext says ("DPM++ 2M Karras" -> "DPM++ 2M",
    "Karras"); a schedule that is the sampler's default becomes "Automatic" unless `convert_automatic` is False.
    Unknown names give the first sampler and "Automatic"."""
    try:
        sampler, schedule = resolve_name(sampler_name or samplers[0].name, scheduler_name or "Automatic")
    except SamplerError:
        return samplers[0].name, sd_schedulers.schedulers[0].label
    if convert_automatic and schedule == sampler.default_schedule:
        schedule = sd_schedulers.schedulers[0].label
    return sampler.name, schedule


def get_sampler_from_infotext(d: dict):
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict):
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def get_hr_sampler_and_scheduler(d: dict):
    sampler = d.get("Hires sampler") or "Use same sampler"
    scheduler = d.get("Hires schedule type") or "Use same scheduler"
    if sampler == "Use same sampler":
        return sampler, scheduler
    name, schedule = get_sampler_and_scheduler(sampler, None if scheduler == "Use same scheduler" else scheduler)
    return name, schedule if scheduler != "Use same scheduler" else scheduler


def __getattr__(name: str):
    if name in A1111_INTERNALS:
        raise ModelInternalsError(f"modules.sd_samplers.{name}", A1111_INTERNALS[name])
    raise AttributeError(f"module 'modules.sd_samplers' has no attribute {name!r}")
