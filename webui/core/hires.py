"""Hires fix's request fields (A1111's txt2img second pass): the names that mean "the first pass's", the target-size
rule and the fields' validation, which `GenerationRequest.validate` runs when `enable_hr` is on. The second pass
itself is the engine's (`webui/engine/hires.py`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import RequestError
from .samplers import SCHEDULE_NAMES, SamplerError, resolve_name
from .sizes import MAX_SIDE

if TYPE_CHECKING:
    from .request import GenerationRequest

DEFAULT_UPSCALER = "Latent"
SAME_CHECKPOINT = "Use same checkpoint"
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"


@dataclass(frozen=True)
class HiresSize:
    """Where the first pass is upscaled to, and the part of it kept. When both "Resize width/height to" are given
    A1111 upscales to cover that size (keeping the aspect) and cuts the excess evenly from both sides, in latent
    units (`cut_x`, `cut_y`); the result is `width` x `height`."""
    upscale_width: int
    upscale_height: int
    cut_x: int = 0
    cut_y: int = 0
    factor: int = 8  # pixels per latent

    @property
    def width(self) -> int:
        return self.upscale_width - self.cut_x * self.factor

    @property
    def height(self) -> int:
        return self.upscale_height - self.cut_y * self.factor

    def crop_latents(self, latents: torch.Tensor) -> torch.Tensor:
        height, width = latents.shape[-2:]
        top, left = self.cut_y // 2, self.cut_x // 2
        return latents[..., top:height - (self.cut_y - top), left:width - (self.cut_x - left)]

    def crop_image(self, image: Image.Image) -> Image.Image:
        """The same region `crop_latents` keeps, cut from the upscaled picture (before it is encoded)."""
        left, top = self.cut_x // 2 * self.factor, self.cut_y // 2 * self.factor
        return image.crop((left, top, left + self.width, top + self.height)) if self.cut_x or self.cut_y else image


def target_size(width: int, height: int, scale: float, resize_x: int, resize_y: int, factor: int = 8) -> HiresSize:
    """A1111's rule: by `scale` unless a resize side is given; one side given: the other follows the aspect; both:
    cover and cut. Sizes are rounded down to whole latents."""
    target_w = target_h = None
    if not resize_x and not resize_y:
        up_w, up_h = int(width * scale), int(height * scale)
    elif not resize_y:
        up_w, up_h = resize_x, resize_x * height // width
    elif not resize_x:
        up_w, up_h = resize_y * width // height, resize_y
    else:
        if width / height < resize_x / resize_y:
            up_w, up_h = resize_x, resize_x * height // width
        else:
            up_w, up_h = resize_y * width // height, resize_y
        target_w, target_h = resize_x, resize_y
    cut_x = (up_w - target_w) // factor if target_w else 0
    cut_y = (up_h - target_h) // factor if target_h else 0
    return HiresSize(up_w // factor * factor, up_h // factor * factor, cut_x, cut_y, factor)


def validate_fields(request: "GenerationRequest") -> None:
    """Check and normalise the hires fields in place (only when hires fix is on, as A1111 ignores them otherwise)."""
    if request.mode != "txt2img":
        raise RequestError("enable_hr", "hires fix is for txt2img: untick it for img2img")
    for name in ("hr_resize_x", "hr_resize_y"):
        request._int_range(name, 0, MAX_SIDE)
        if 0 < getattr(request, name) < 64:
            raise RequestError(name, f"{name} must be 0 (use the scale) or at least 64, got {getattr(request, name)}")
    if request.hr_resize_x or request.hr_resize_y:
        request._number("hr_scale", float)  # unused when resizing to a size, as in A1111
    else:
        request._float_range("hr_scale", 1.0, 8.0)
    request._int_range("hr_second_pass_steps", 0, 150)
    request.hr_upscaler = str(request.hr_upscaler or "").strip() or DEFAULT_UPSCALER
    request.hr_checkpoint_name = _unless(request.hr_checkpoint_name, SAME_CHECKPOINT)
    request.hr_scheduler = _unless(request.hr_scheduler, SAME_SCHEDULER)
    request.hr_sampler_name = _unless(request.hr_sampler_name, SAME_SAMPLER)
    request.hr_prompt = "" if request.hr_prompt is None else str(request.hr_prompt)
    request.hr_negative_prompt = "" if request.hr_negative_prompt is None else str(request.hr_negative_prompt)
    if request.hr_scheduler is not None:
        match = next((s for s in SCHEDULE_NAMES
                      if s.lower() == request.hr_scheduler.lower().replace("_", " ")), None)
        if match is None:
            raise SamplerError(f"unknown hires schedule type {request.hr_scheduler!r} (one of: "
                               f"{SAME_SCHEDULER}, {', '.join(SCHEDULE_NAMES)})", "hr_scheduler")
        request.hr_scheduler = match
    if request.hr_sampler_name is not None:
        try:
            sampler, schedule = resolve_name(request.hr_sampler_name, request.hr_scheduler)
        except SamplerError as exc:
            raise SamplerError(f"hires sampler: {exc}", "hr_sampler_name") from None  # 400, as the first pass's
        if request.hr_scheduler is None and schedule != sampler.default_schedule:  # "DPM++ 2M Karras"
            request.hr_scheduler = schedule
        request.hr_sampler_name = sampler.name
    size = target_size(request.width, request.height, request.hr_scale, request.hr_resize_x, request.hr_resize_y)
    if not (64 <= size.width <= MAX_SIDE and 64 <= size.height <= MAX_SIDE):
        field_name = "hr_resize_x" if request.hr_resize_x or request.hr_resize_y else "hr_scale"
        raise RequestError(field_name, f"hires fix would make {size.width}x{size.height} images: each side must "
                           f"be from 64 to {MAX_SIDE} pixels")


def _unless(value, same: str) -> str | None:
    text = "" if value is None else str(value).strip()
    return None if not text or text == same else text
