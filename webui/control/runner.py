"""ControlNet units during a generation: preparing each enabled unit once per run (preprocessor, map resized to the
generation size, model from the cache, checked against the checkpoint), then at every model evaluation the summed
residuals the UNet adds to its skip connections and middle block.

Control modes as A1111's extension: "Balanced" scales every residual by the weight, on both halves of the CFG batch;
"My prompt is more important" scales residual i of n (the middle block last) by weight x 0.825^(n-1-i) on both
halves; "ControlNet is more important" uses those same soft weights on the conditional half only. A unit applies
while (evaluation index / evaluations) lies within [guidance_start, guidance_end].
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image

from ..core.errors import RequestError
from ..core.request import GenerationRequest
from ..models.controlnet import ControlNetLoadError
from .preprocessors import PreprocessorError, UnknownPreprocessorError
from .units import CONTROL_MODES, NO_MODEL, SOFT_BASE, ControlUnit, unit_infotext

log = logging.getLogger(__name__)


def pixel_perfect_resolution(image_size: tuple[int, int], target: tuple[int, int], resize_mode: str) -> int:
    """A1111's pixel-perfect preprocessor resolution: the image's shorter side scaled as the resize mode will scale
    it to the target (cover for crop/just resize, fit inside for "Resize and Fill")."""
    (raw_w, raw_h), (target_w, target_h) = image_size, target
    k_h, k_w = target_h / raw_h, target_w / raw_w
    k = min(k_h, k_w) if resize_mode == "Resize and Fill" else max(k_h, k_w)
    return int(round(k * min(raw_h, raw_w)))


def fit_map(detected: np.ndarray, width: int, height: int, resize_mode: str) -> np.ndarray:
    """A detected map (HWC) at the generation size: stretched ("Just Resize"), scaled to cover and centre-cropped
    ("Crop and Resize"), or scaled to fit inside with the edges extended into the bands ("Resize and Fill")."""
    raw_h, raw_w = detected.shape[:2]

    def resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
        shrinking = w * h < image.shape[0] * image.shape[1]
        return cv2.resize(image, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)

    if resize_mode == "Just Resize" or (raw_w, raw_h) == (width, height):
        return resize(detected, width, height)
    if resize_mode == "Crop and Resize":
        k = max(width / raw_w, height / raw_h)
        scaled = resize(detected, int(round(raw_w * k)), int(round(raw_h * k)))
        top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
        return scaled[top:top + height, left:left + width]
    k = min(width / raw_w, height / raw_h)
    scaled = resize(detected, min(width, int(round(raw_w * k))), min(height, int(round(raw_h * k))))
    top, left = (height - scaled.shape[0]) // 2, (width - scaled.shape[1]) // 2
    # The bands take the median colour of the map's border (as A1111), never a smear of edge pixels: a line that
    # touches the border must not become a band-wide line the ControlNet would follow.
    border = np.concatenate([scaled[0], scaled[-1], scaled[:, 0], scaled[:, -1]])
    fill = np.median(border, axis=0).astype(scaled.dtype)
    if scaled.shape[2] == 4:
        fill[3] = scaled.dtype.type(1.0 if scaled.dtype.kind == "f" else 255)
    canvas = np.empty((height, width, scaled.shape[2]), scaled.dtype)
    canvas[:] = fill
    canvas[top:top + scaled.shape[0], left:left + scaled.shape[1]] = scaled
    return canvas


def map_tensor(detected: Image.Image, width: int, height: int, resize_mode: str) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] as ControlNets are trained; an RGBA map (the inpaint modules) marks alpha-0 pixels
    with -1, the value inpaint ControlNets read as "to fill"."""
    pixels = np.asarray(detected.convert("RGBA" if detected.mode == "RGBA" else "RGB"), dtype=np.float32) / 255.0
    fitted = fit_map(pixels, width, height, resize_mode)
    rgb = fitted[:, :, :3]
    if fitted.shape[2] == 4:
        rgb = np.where(fitted[:, :, 3:4] < 0.5, -1.0, rgb)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()


@dataclass
class PreparedUnit:
    index: int
    unit: ControlUnit
    net: object  # webui.models.controlnet.LoadedControlNet
    conds: list[torch.Tensor]  # per source picture (one when the unit has its own image)
    scales: list[float]  # per residual, the middle block's last
    cond_only: bool  # "ControlNet is more important": no residual on the unconditional half
    _batch: tuple | None = field(default=None, repr=False)  # (key, tensor) of batch_cond's last answer
    _dtype: torch.dtype | None = field(default=None, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        """The ControlNet's dtype, read once (diffusers' `dtype` walks every parameter, at every evaluation)."""
        if self._dtype is None:
            self._dtype = self.net.model.dtype
        return self._dtype

    def to(self, device) -> None:
        self.conds = [cond.to(device) for cond in self.conds]
        self._batch = None

    def applies_at(self, fraction: float) -> bool:
        return self.unit.guidance_start <= fraction <= self.unit.guidance_end

    def batch_cond(self, sources: list[int], copies: int, device, dtype) -> torch.Tensor:
        """The control maps for a batch (each item's source picture), repeated for the CFG copies the net sees;
        built once per batch and reused at every evaluation."""
        key = (tuple(sources), copies, device, dtype)
        if self._batch is None or self._batch[0] != key:
            cond = torch.cat([self.conds[s % len(self.conds)] for s in sources]).to(device, dtype)
            self._batch = (key, cond.repeat(copies, 1, 1, 1))
        return self._batch[1]


@dataclass
class ControlPlan:
    units: list[PreparedUnit]
    maps: list[Image.Image] = field(default_factory=list)  # detected maps of units that keep theirs
    params: dict = field(default_factory=dict)  # "ControlNet N" infotext entries

    def to(self, device) -> "ControlPlan":
        """The control maps on the sampling device, once per run rather than at every step."""
        for prepared in self.units:
            prepared.to(device)
        return self

    def nets(self) -> list:
        return [prepared.net.model for prepared in self.units]

    def residuals(self, fraction: float, sample: torch.Tensor, timestep, embeds: torch.Tensor, added, sources,
                  batch: int, do_cfg: bool) -> dict:
        """UNet keyword arguments with the summed residuals of the units in force ({} when none is). `sample` is the
        scaled 4-channel latent batch [uncond, cond...] x batch; `sources` the source picture of each batch item."""
        down, middle = None, None
        for prepared in self.units:
            if prepared.unit.weight == 0 or not prepared.applies_at(fraction):
                continue
            net, dtype = prepared.net.model, prepared.dtype
            rows = sample.shape[0]
            skip = batch if (prepared.cond_only and do_cfg) else 0  # rows of the unconditional half left out
            cond = prepared.batch_cond(sources, (rows - skip) // batch, sample.device, dtype)
            extra = None
            if added is not None:
                extra = {key: value[skip:] for key, value in added.items()}
            downs, mid = net(sample[skip:].to(dtype), timestep, encoder_hidden_states=embeds[skip:].to(dtype),
                             controlnet_cond=cond, conditioning_scale=1.0, added_cond_kwargs=extra,
                             return_dict=False)
            residuals = [*downs, mid]
            scaled = []
            for scale, residual in zip(prepared.scales, residuals):
                residual = residual * scale
                if skip:
                    residual = torch.cat([torch.zeros_like(residual[:skip]), residual])
                scaled.append(residual)
            if down is None:
                down, middle = scaled[:-1], scaled[-1]
            else:
                down = [a + b for a, b in zip(down, scaled[:-1])]
                middle = middle + scaled[-1]
        if down is None:
            return {}
        return {"down_block_additional_residuals": tuple(down), "mid_block_additional_residual": middle}


def _crop_like(picture: Image.Image | None, setup) -> Image.Image | None:
    """A unit's own picture (or mask) cut to the region an "only masked" inpaint generates, in the picture's own
    coordinates (it may be of another size than the init image), so map, mask and latents cover the same area."""
    region = setup.generated_region() if setup is not None and picture is not None else None
    if region is None:
        return picture
    (x, y, w, h), (full_w, full_h) = region
    sx, sy = picture.width / full_w, picture.height / full_h
    box = (round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy))
    return picture.crop(box)


def residual_scales(weight: float, count: int, control_mode: str) -> list[float]:
    """Per residual (the middle block's last): the weight, or for the soft modes A1111's 13 weights
    weight x 0.825^(12-i), of which a net with fewer residuals (SDXL: 10) takes the first `count`."""
    if control_mode == CONTROL_MODES[0]:
        return [weight] * count
    soft = [weight * SOFT_BASE ** (12 - i) for i in range(max(13, count))]
    return soft[:count]


def prepare_control(request: GenerationRequest, controlnets, cache, preprocessors, unet, width: int, height: int,
                    setup=None, warnings: list | None = None, family: str | None = None) -> ControlPlan | None:
    """The run's enabled units, ready to apply; None when there are none. Units that cannot apply to this
    checkpoint (no model chosen, another architecture) are skipped with a warning; unknown modules and models
    and preprocessor failures raise, with the unit named."""
    warnings = warnings if warnings is not None else []
    enabled = [(i, u) for i, u in enumerate(request.controlnet_units) if u.enabled]
    if not enabled:
        return None
    if controlnets is None or preprocessors is None:
        raise RequestError("controlnet_units", "ControlNet is not available in this server")
    plan = ControlPlan([])
    for index, unit in enabled:
        where = f"controlnet_units[{index}]"
        try:
            entry = preprocessors.get(unit.module)
        except UnknownPreprocessorError as exc:
            raise RequestError(where, f"ControlNet unit {index}: {exc}") from None
        if unit.model == NO_MODEL:
            warnings.append(f"ControlNet unit {index} is enabled but has no model: skipped")
            continue
        try:
            info = controlnets.resolve(unit.model)
        except KeyError as exc:  # UnknownControlNetError
            raise RequestError(where, f"ControlNet unit {index}: {exc}") from None
        try:
            loaded = cache.get(info)
        except ControlNetLoadError as exc:  # a broken or foreign file: the unit's bad value, a 422 naming it
            raise ControlNetLoadError(f"ControlNet unit {index}: {exc}") from None
        problem = loaded.fits(unet, family)
        if problem:
            warnings.append(f"ControlNet unit {index} skipped: {problem}")
            continue
        if unit.image is not None:
            pictures, masks = [_crop_like(unit.image, setup)], [_crop_like(unit.mask, setup)]
        else:
            pictures, masks = list(setup.sources), [_crop_like(unit.mask, setup)] * len(setup.sources)
        if unit.mask is None:  # the inpaint modules fall back to the request's mask, as generated
            masks = [setup.plans[i % len(setup.plans)].mask if setup is not None and setup.plans else None
                     for i in range(len(pictures))]
        conds = []
        used = None
        for picture, mask in zip(pictures, masks):
            res = unit.processor_res
            if unit.pixel_perfect:
                res = pixel_perfect_resolution(picture.size, (width, height), unit.resize_mode)
            used = entry.resolve(res, unit.threshold_a, unit.threshold_b)
            if mask is not None and mask.size != picture.size:
                mask = mask.convert("L").resize(picture.size)
            try:
                detected = preprocessors.run(entry.name, picture, *used, mask=mask)
            except PreprocessorError as exc:
                raise PreprocessorError(f"ControlNet unit {index}: {exc}") from None
            conds.append(map_tensor(detected, width, height, unit.resize_mode))
            if unit.save_detected_map:
                plan.maps.append(detected)
        count = len(loaded.model.controlnet_down_blocks) + 1
        plan.units.append(PreparedUnit(index, unit, loaded, conds, residual_scales(unit.weight, count,
                                                                                 unit.control_mode),
                                       unit.control_mode == CONTROL_MODES[2]))
        plan.params[f"ControlNet {index}"] = unit_infotext(unit, info.title, *used)
    return plan if plan.units else None
