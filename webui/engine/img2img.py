"""What an img2img run starts from, prepared once per run: the pictures the VAE encodes, the mask (inpainting and
outpainting), the latent masks, the inpainting checkpoints' extra UNet input, and the infotext it adds."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import RequestError
from ..core.request import INPAINT_FILLS, MASK_MODES, GenerationRequest
from . import images as imaging
from .inpaint import EmptyMaskError, InpaintPlan, extend_canvas, flatten, normalise_mask, plan_image, plan_mask


@dataclass
class Img2ImgSetup:
    width: int  # the size sampled at (outpainting grows it)
    height: int
    sources: list[Image.Image]  # per init image: what the VAE encodes
    plans: list[InpaintPlan] | None = None  # per init image, when there is a mask
    params: dict = field(default_factory=dict)  # infotext additions
    _conditioning: dict = field(default_factory=dict)  # per init image: the inpainting model's extra input

    @property
    def masked(self) -> bool:
        return self.plans is not None

    def source_index(self, item: int) -> int:
        return item % len(self.sources)

    def latent_masks(self, items: list[int], latent_size: tuple[int, int], device, dtype) -> torch.Tensor:
        """(N, 1, h, w), 1 where the image is regenerated: the mask resized to the latents' size with Pillow's
        default (bicubic) filter and rounded to 0/1, as A1111 makes its latent mask."""
        height, width = latent_size
        masks = []
        for i in items:
            mask = self.plans[self.source_index(i)].mask.convert("RGB").resize((width, height))
            values = np.asarray(mask, dtype=np.float32)[:, :, 0] / 255
            masks.append(torch.from_numpy(np.around(values))[None, None])
        return torch.cat(masks).to(device, dtype)

    def generated_region(self) -> tuple[tuple[int, int, int, int], tuple[int, int]] | None:
        """For "only masked": ((x, y, w, h) of the region generated, the init image's size); else None."""
        if not self.plans or self.plans[0].paste_to is None:
            return None
        return self.plans[0].paste_to, self.plans[0].overlay.size

    def paste_back(self, picture: Image.Image, item: int) -> Image.Image:
        return self.plans[self.source_index(item)].paste_back(picture) if self.plans else picture

    def conditioning(self, item: int, encode, mask_weight: float, layout: str = "mask-latents") -> torch.Tensor:
        """An inpainting checkpoint's extra input for one image (`inpaint_input`), from the source and its mask.
        Without a mask the whole image counts as masked (A1111's img2img with an inpainting checkpoint)."""
        index = self.source_index(item)
        if index not in self._conditioning:
            source = imaging.to_tensor([self.sources[index]])
            if self.plans:
                mask = _mask_tensor(self.plans[index].mask)
            else:
                mask = torch.ones(1, 1, self.height, self.width)
            self._conditioning[index] = inpaint_input(source, mask, encode, mask_weight, layout)
        return self._conditioning[index]


def inpaint_input(source: torch.Tensor, mask: torch.Tensor, encode, mask_weight: float,
                  layout: str) -> torch.Tensor:
    """An inpainting checkpoint's extra network input for one image: `source` [1, 3, H, W] in [-1, 1], `mask`
    [1, 1, H, W] (1: regenerate) rounded to 0 / 1, the masked part of the source blanked (grey) `mask_weight` of
    the way (A1111's conditional mask weight) and encoded by `encode` (pixels -> model latents). `layout` is the
    family's `inpaint_input`: "mask-latents" (SD's 9-channel UNets: the mask at latent size, then the latents) or
    "latents-pixel-mask" (FLUX.1 Fill: the latents, then each latent pixel's 8x8 block of the mask as 64
    channels, row by row, as BFL's reference code and diffusers' FluxFillPipeline arrange it)."""
    mask = mask.round()
    latents = encode(source * (1.0 - mask_weight * mask))
    if layout == "latents-pixel-mask":
        rows, columns = latents.shape[-2:]
        factor = mask.shape[-1] // columns
        blocks = mask[:, 0].reshape(1, rows, factor, columns, factor).permute(0, 2, 4, 1, 3)
        blocks = blocks.reshape(1, factor * factor, rows, columns).to(latents.device, latents.dtype)
        return torch.cat([latents, blocks], dim=1)
    small = F.interpolate(mask, size=latents.shape[-2:]).to(latents.device, latents.dtype)
    return torch.cat([small, latents], dim=1)


def blank_inpaint_input(width: int, height: int, encode, mask_weight: float, layout: str) -> torch.Tensor:
    """An inpainting checkpoint's extra input without a picture (txt2img, a hires pass from upscaled latents): a
    full mask over neutral grey, as A1111 conditions them."""
    return inpaint_input(torch.zeros(1, 3, height, width), torch.ones(1, 1, height, width), encode, mask_weight,
                         layout)


def _mask_tensor(mask: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]


def prepare_img2img(request: GenerationRequest, seed: int, background: str) -> Img2ImgSetup:
    """The run's starting pictures and mask plans. An empty mask is a RequestError (never a silent full
    regeneration)."""
    pictures = [flatten(image, background) for image in request.init_images]
    width, height, resize_mode = request.width, request.height, request.resize_mode
    mask, invert, only_masked = request.mask, bool(request.inpainting_mask_invert), request.inpaint_full_res
    params: dict = {}
    outpaint = request.outpaint if request.outpaint is not None and request.outpaint.active else None
    if outpaint is not None:
        pictures, mask = _outpaint(request, pictures, seed)
        width, height = width + outpaint.left + outpaint.right, height + outpaint.up + outpaint.down
        invert, only_masked, resize_mode = False, False, 0  # the user's mask was inverted before the union
    if mask is None:
        if request.initial_noise_multiplier != 1.0:
            params["Noise multiplier"] = f"{request.initial_noise_multiplier:g}"
        return Img2ImgSetup(width, height, [imaging.fit(p, width, height, resize_mode) for p in pictures],
                            params=params)
    mask_plans = {}
    plans = []
    for picture in pictures:
        if picture.size not in mask_plans:
            try:
                mask_plans[picture.size] = plan_mask(mask, picture.size, width, height, resize_mode, invert,
                                                     request.mask_blur_x, request.mask_blur_y, only_masked,
                                                     request.inpaint_full_res_padding)
            except EmptyMaskError as exc:
                raise RequestError("mask", f"{exc}: paint over the part of the image to regenerate") from None
        plans.append(plan_image(picture, mask_plans[picture.size], width, height, resize_mode,
                                request.inpainting_fill))
    params.update(_mask_params(request, only_masked))
    if outpaint is not None:
        params["Outpaint"] = " ".join(f"{side} {getattr(outpaint, side)}" for side in ("left", "right", "up", "down"))
        params["Outpaint fill"] = outpaint.fill
        params["Outpaint overlap"] = outpaint.overlap
    return Img2ImgSetup(width, height, [plan.source for plan in plans], plans, params)


def _outpaint(request: GenerationRequest, pictures: list[Image.Image], seed: int):
    """Fit each picture to width x height, grow its canvas, and build the outpainting mask (the user's mask, if
    any, fitted the same way and inverted when asked, joins the new area)."""
    spec = request.outpaint
    user_mask = None
    if request.mask is not None:
        binary = normalise_mask(request.mask, pictures[0].size)
        if request.inpainting_mask_invert:
            binary = binary.point(lambda value: 255 - value)
        user_mask = normalise_mask(imaging.fit(binary, request.width, request.height, request.resize_mode),
                                   (request.width, request.height))
    grown, mask = [], None
    for index, picture in enumerate(pictures):
        fitted = imaging.fit(picture, request.width, request.height, request.resize_mode)
        canvas, mask = extend_canvas(fitted, user_mask, spec.left, spec.right, spec.up, spec.down, spec.fill,
                                     spec.overlap, seed + index)
        grown.append(canvas)
    return grown, mask


def _mask_params(request: GenerationRequest, only_masked: bool) -> dict:
    """A1111's infotext for a masked run (keys at their defaults are left out, as A1111 does)."""
    params: dict = {}
    if request.mask_blur_x == request.mask_blur_y:
        params["Mask blur"] = request.mask_blur_x
    else:
        params["Mask blur x"], params["Mask blur y"] = request.mask_blur_x, request.mask_blur_y
    if request.inpainting_mask_invert:
        params["Mask mode"] = MASK_MODES[1]
    if request.inpainting_fill != 1:
        params["Masked content"] = INPAINT_FILLS[request.inpainting_fill]
    if only_masked:
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = request.inpaint_full_res_padding
    if request.initial_noise_multiplier != 1.0:
        params["Noise multiplier"] = f"{request.initial_noise_multiplier:g}"
    return params
