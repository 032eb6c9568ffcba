"""Hires fix (A1111's txt2img second pass): the latent upscale modes and the second pass's set-up (the request's hires
fields, their validation and the target size are `webui/core/hires.py`).

The engine samples the first pass at the request's size, then calls in here to upscale each batch (in latent space,
or decoded and through an image upscaler) and to describe the img2img pass that refines it at the larger size:
the same seeds (noise drawn again at the new size), `hr_second_pass_steps` steps (0: the first pass's) run as the
tail of a schedule of int(steps / denoising strength) steps, as A1111 runs them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import RequestError
from ..core.hires import HiresSize, target_size
from ..core.request import GenerationRequest
from ..models.registry import UnknownCheckpointError
from . import samplers
from .img2img import Img2ImgSetup, blank_inpaint_input

# name -> (torch.nn.functional.interpolate mode, antialias), A1111's latent upscale modes
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def second_pass_sampler(request: GenerationRequest, flow: bool = False) -> tuple[samplers.Sampler, str]:
    """The hires pass's sampler and schedule type. "Use same scheduler" keeps the first pass's schedule when the
    hires sampler supports it, else that sampler's own (its Automatic)."""
    name = request.hr_sampler_name or request.sampler_name
    try:
        if request.hr_scheduler is not None:
            return samplers.resolve(name, request.hr_scheduler, flow)
        try:
            return samplers.resolve(name, request.scheduler, flow)
        except samplers.SamplerError:
            return samplers.resolve(name, "Automatic", flow)
    except samplers.SamplerError as exc:
        raise samplers.SamplerError(f"hires sampler: {exc}", "hr_scheduler") from None


@dataclass
class SecondPassRequest(GenerationRequest):
    """The img2img request of a hires second pass: it runs exactly `steps_to_run` steps, the tail of a schedule
    `steps` long (A1111's fixed-steps img2img)."""
    steps_to_run: int = 0


@dataclass
class HiresPlan:
    """A run's hires fix, worked out once: where to, how, and the second pass's request."""
    size: HiresSize
    upscaler: str
    latent_mode: tuple[str, bool] | None  # None: an image upscaler
    sampler: samplers.Sampler
    schedule: str
    request: SecondPassRequest
    prompt: str  # "" = each image's own prompt
    negative_prompt: str
    params: dict = field(default_factory=dict)  # the run's infotext keys (the prompts' are per image)
    model: object = None  # the second pass's loaded checkpoint (LoadedModel) and its CheckpointInfo
    info: object = None
    prompt_steps: int = 0  # the model evaluations prompt editing counts in the second pass
    first_pass_steps: int = 0  # ... and in the first (editing `when`s of the second pass count from its start)
    prompts: object = None  # set by the engine: the second pass's prompt encoding

    def prompts_for(self, prompts: list[str], negatives: list[str]) -> tuple[list[str], list[str]]:
        return ([self.prompt or p for p in prompts], [self.negative_prompt or n for n in negatives])

    def image_params(self, prompt: str, negative: str) -> dict:
        """Infotext keys for one image, in A1111's order; the hires prompts only where they differ."""
        hr_prompt, hr_negative = self.prompt or prompt, self.negative_prompt or negative
        ordered = {key: self.params.get(key) for key in ("Hires checkpoint", "Hires sampler")}
        ordered["Hires prompt"] = hr_prompt if hr_prompt != prompt else None
        ordered["Hires negative prompt"] = hr_negative if hr_negative != negative else None
        ordered.update({key: value for key, value in self.params.items() if key not in ordered})
        return {key: value for key, value in ordered.items() if value is not None}


def plan_hires(request: GenerationRequest, schedule: str, factor: int, checkpoint_label: str | None,
               train_steps: int = 1000, flow: bool = False) -> HiresPlan:
    """The hires plan of a validated txt2img request whose first pass uses `schedule`. `checkpoint_label`: the
    hires checkpoint's infotext name (None: the same checkpoint). An upscaler that is not a latent mode is an
    image upscaler: the caller checks the server has it."""
    size = target_size(request.width, request.height, request.hr_scale, request.hr_resize_x, request.hr_resize_y,
                       factor)
    sampler, hr_schedule = second_pass_sampler(request, flow)
    steps = request.hr_second_pass_steps or request.steps
    strength = request.denoising_strength
    schedule_steps = int(steps / min(strength, 0.999)) if strength > 0 else steps
    if schedule_steps > train_steps and sampler.kind == samplers.TIMESTEP:
        # A1111's timesteps (range(0, 1000, 1000 // steps)) need at most the training steps; sigma samplers don't
        schedule_steps = train_steps
        steps = max(1, min(steps, round(train_steps * strength)))
    pass_request = SecondPassRequest(**{f.name: getattr(request, f.name) for f in fields(GenerationRequest)})
    pass_request.mode, pass_request.width, pass_request.height = "img2img", size.width, size.height
    pass_request.steps, pass_request.steps_to_run = schedule_steps, steps if strength > 0 else 0
    pass_request.sampler_name, pass_request.scheduler = sampler.name, hr_schedule
    pass_request.initial_noise_multiplier, pass_request.init_images, pass_request.controlnet_units = 1.0, [], []
    params = {
        "Hires checkpoint": checkpoint_label,
        "Hires sampler": sampler.name if sampler.name != request.sampler_name else None,
        "Hires schedule type": hr_schedule if hr_schedule != schedule else None,
    }
    if request.hr_resize_x or request.hr_resize_y:
        params["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
    else:
        params["Hires upscale"] = f"{request.hr_scale:g}"
    params["Hires steps"] = request.hr_second_pass_steps or None
    params["Hires upscaler"] = request.hr_upscaler
    return HiresPlan(size, request.hr_upscaler, LATENT_UPSCALE_MODES.get(request.hr_upscaler), sampler, hr_schedule,
                     pass_request, request.hr_prompt, request.hr_negative_prompt,
                     {key: value for key, value in params.items() if value is not None})


def prepare(request: GenerationRequest, schedule: str, model, info, models, upscalers) -> HiresPlan:
    """`plan_hires` with the run's resources: the hires checkpoint fetched from the model manager once and held for
    the run (so batches never switch models back and forth), an image upscaler checked against the server's."""
    hr_info, hr_model, label = info, model, None
    if request.hr_checkpoint_name:
        try:
            hr_info, hr_model = models.get(request.hr_checkpoint_name)
        except UnknownCheckpointError as exc:
            raise RequestError("hr_checkpoint_name", f"hires checkpoint: {exc}", status=exc.status,
                               kind=exc.kind) from None  # an unknown name: 400, as the first pass's
        label = f"{hr_info.name_for_extra} [{hr_info.shorthash}]" if hr_info.shorthash else hr_info.name_for_extra
    from ..models.families import FAMILIES  # FLUX.1's own schedule is named Simple (samplers.resolve)
    family = FAMILIES.get(str(hr_model.family))
    plan = plan_hires(request, schedule, model.vae_scale_factor, label,
                      int(dict(hr_model.scheduler_config).get("num_train_timesteps", 1000)),
                      flow=family is not None and family.own_schedule == "Simple")
    if plan.latent_mode is None:
        try:
            if upscalers is None:
                raise ValueError("this server has no image upscalers")
            plan.upscaler = upscalers.find(plan.upscaler).name
        except ValueError:  # UnknownUpscalerError
            names = [*LATENT_UPSCALE_MODES, *(upscalers.names() if upscalers is not None else [])]
            raise RequestError("hr_upscaler", f"unknown hires upscaler {plan.upscaler!r} (one of: "
                               f"{', '.join(names)})", status=400, kind="UnknownUpscalerError") from None
    from .refiner import latent_space  # (refiner.py builds on this module)
    if plan.latent_mode is not None and latent_space(hr_model) != latent_space(model):
        raise RequestError("hr_checkpoint_name", f"hires checkpoint {hr_info.name} ({hr_model.label}) cannot take "
                           f"{model.label} latents: choose an image upscaler for Hires upscaler, or a hires "
                           "checkpoint of the same family", status=400, kind="IncompatibleHiresCheckpoint")
    plan.model, plan.info = hr_model, hr_info
    plan.prompt_steps = max(1, plan.request.steps_to_run) * (2 if plan.sampler.second_order else 1)
    return plan


def upscale_latents(latents: torch.Tensor, plan: HiresPlan) -> torch.Tensor:
    """The first pass's latents interpolated to the upscaled size (in float32, then back), then cut."""
    mode, antialias = plan.latent_mode
    size = (plan.size.upscale_height // plan.size.factor, plan.size.upscale_width // plan.size.factor)
    scaled = F.interpolate(latents.float(), size=size, mode=mode, antialias=antialias)
    return plan.size.crop_latents(scaled).to(latents.dtype)


def upscale_pictures(pictures: list[Image.Image], plan: HiresPlan, upscalers, control=None) -> Img2ImgSetup | None:
    """Decoded first-pass pictures through an image upscaler, cut, as the second pass's img2img start (the VAE
    encodes them with each image's generator, as img2img does). None when `control` was interrupted meanwhile."""
    size = plan.size
    upscaled = []
    for picture in pictures:
        bigger = upscalers.upscale(picture, plan.upscaler, size.upscale_width, size.upscale_height, control)
        if bigger is None:
            return None
        upscaled.append(size.crop_image(bigger.convert("RGB")))
    return Img2ImgSetup(size.width, size.height, upscaled)


@dataclass
class LatentStart(Img2ImgSetup):
    """The second pass's start when the latents were upscaled: no pictures to encode. An inpainting checkpoint
    gets a txt2img-style extra input (full mask over neutral grey), as A1111 gives an upscaled latent."""
    latents: torch.Tensor | None = None

    def source_index(self, item: int) -> int:
        return 0

    def conditioning(self, item: int, encode, mask_weight: float, layout: str = "mask-latents") -> torch.Tensor:
        if "grey" not in self._conditioning:
            self._conditioning["grey"] = blank_inpaint_input(self.width, self.height, encode, mask_weight, layout)
        return self._conditioning["grey"]


def latent_start(latents: torch.Tensor, plan: HiresPlan) -> LatentStart:
    return LatentStart(plan.size.width, plan.size.height, [], latents=upscale_latents(latents, plan))
