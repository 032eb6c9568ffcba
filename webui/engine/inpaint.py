"""Inpainting in pixel space: the mask (normalise, invert, blur), the "only masked" crop, the masked-content fill,
outpainting's extended canvas, and pasting the result back so that pixels outside the mask stay the input's.

A mask is an 8-bit "L" image, white = regenerate. Everything here is plain PIL / NumPy / OpenCV, no model.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..core.images import as_rgb
from .images import RESAMPLE, fit

# Known colour is spread into the hole by blurring it at these radii, widest first; each pass is laid over the
# previous one as many times as given, so near the hole's edge the nearby colours win.
_FILL_PASSES = ((192, 1), (48, 1), (12, 2), (4, 2), (1, 2))


class EmptyMaskError(ValueError):
    """The mask selects nothing to regenerate."""


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB, with any transparency laid over `background` (A1111's img2img background colour) and 16-bit images
    scaled to 8 bits."""
    return as_rgb(image, background)


def normalise_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Any uploaded or drawn mask as a binary L image of `size`, white = regenerate. An RGBA mask with
    transparency is its alpha (what was painted); otherwise its brightness. Values above 128 count as masked."""
    if mask.mode in ("RGBA", "LA") and mask.getchannel("A").getextrema() != (255, 255):
        grey = mask.getchannel("A")
    elif mask.mode == "P" and "transparency" in mask.info:
        grey = mask.convert("RGBA").getchannel("A")
    else:
        grey = mask.convert("L")
    if grey.size != tuple(size):
        grey = grey.resize(tuple(size), Image.Resampling.BILINEAR)
    return grey.point(lambda value: 255 if value > 128 else 0)


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """Separable Gaussian blur with standard deviation blur_x / blur_y pixels (a kernel of about 2.5 sigma on
    each side), so the regenerated area fades into the kept one."""
    array = np.asarray(mask, dtype=np.uint8)
    if blur_x > 0:
        array = cv2.GaussianBlur(array, (2 * int(2.5 * blur_x + 0.5) + 1, 1), blur_x)
    if blur_y > 0:
        array = cv2.GaussianBlur(array, (1, 2 * int(2.5 * blur_y + 0.5) + 1), blur_y)
    return Image.fromarray(array, "L")


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), right/bottom exclusive: the masked pixels' bounding box grown by `padding` on
    every side and kept inside the image; None when nothing is masked."""
    array = np.asarray(mask)
    rows, columns = np.nonzero(array.max(axis=1))[0], np.nonzero(array.max(axis=0))[0]
    if not len(rows):
        return None
    height, width = array.shape
    return (max(columns[0] - padding, 0), max(rows[0] - padding, 0),
            min(columns[-1] + 1 + padding, width), min(rows[-1] + 1 + padding, height))


def match_aspect(region: tuple[int, int, int, int], width: int, height: int, image_width: int,
                 image_height: int) -> tuple[int, int, int, int]:
    """Grow the region (never shrink it) to the width:height of the generation, centred on it and shifted back
    inside the image where it would leave it; where the image is too small it is clamped to the image."""
    left, top, right, bottom = region
    box_w, box_h = right - left, bottom - top
    if box_w * height < box_h * width:  # too narrow: widen
        box_w = min(image_width, round(box_h * width / height))
    else:  # too flat: heighten
        box_h = min(image_height, round(box_w * height / width))
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    left = int(min(max(round(centre_x - box_w / 2), 0), image_width - box_w))
    top = int(min(max(round(centre_y - box_h / 2), 0), image_height - box_h))
    return left, top, left + box_w, top + box_h


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": replace the masked pixels with colours spread in from around the mask (a grey-free
    start for the sampler). Partly masked pixels (a blurred edge) keep their share of the original."""
    colour = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    known = 1.0 - np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    premultiplied = np.concatenate([colour * known, known], axis=2)
    out = np.zeros_like(premultiplied)
    for radius, repeats in _FILL_PASSES:
        layer = _blur_large(premultiplied, radius)
        for _ in range(repeats):
            out = layer + out * (1.0 - layer[..., 3:])
    out = premultiplied + out * (1.0 - known)  # the original where it is known, exactly
    alpha = np.clip(out[..., 3:], 1e-6, None)
    rgb = np.where(out[..., 3:] > 1e-6, out[..., :3] / alpha, 0.0)
    return Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def _blur_large(array: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of standard deviation `sigma` that stays cheap for wide sigmas: it blurs a shrunken copy."""
    height, width = array.shape[:2]
    factor = max(1, int(sigma // 4))
    if factor == 1:
        return cv2.GaussianBlur(array, (0, 0), sigma)
    small = cv2.resize(array, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def extend_canvas(image: Image.Image, mask: Image.Image | None, left: int, right: int, up: int, down: int,
                  fill: str, overlap: int, seed: int) -> tuple[Image.Image, Image.Image]:
    """Outpainting: the image on a canvas grown by the given pixels, the new area filled ("edge": the border
    colours stretched outwards and softened; "noise": seeded random pixels), and the mask: the new area plus
    `overlap` pixels into the original along each grown side, united with the given mask (if any)."""
    width, height = image.size
    source = np.asarray(image.convert("RGB"))
    grown = cv2.copyMakeBorder(source, up, down, left, right, cv2.BORDER_REPLICATE)
    new_area = np.ones(grown.shape[:2], dtype=bool)
    new_area[up:up + height, left:left + width] = False
    if fill == "noise":
        noise = np.random.default_rng(seed).integers(0, 256, size=grown.shape, dtype=np.uint8)
        grown[new_area] = noise[new_area]
    else:
        softened = cv2.GaussianBlur(grown, (0, 0), max(4.0, max(left, right, up, down) / 8))
        grown[new_area] = softened[new_area]
    out_mask = np.zeros(grown.shape[:2], dtype=np.uint8)
    out_mask[new_area] = 255
    if left:
        out_mask[:, left:left + overlap] = 255
    if right:
        out_mask[:, max(left + width - overlap, 0):left + width] = 255
    if up:
        out_mask[up:up + overlap, :] = 255
    if down:
        out_mask[max(up + height - overlap, 0):up + height, :] = 255
    if mask is not None:
        inner = out_mask[up:up + height, left:left + width]
        np.maximum(inner, np.asarray(mask.convert("L")), out=inner)
    return Image.fromarray(grown, "RGB"), Image.fromarray(out_mask, "L")


@dataclass
class InpaintPlan:
    """How one init image is inpainted: `source` is what the VAE encodes (width x height, masked content already
    filled), `mask` the blurred mask at that size (the latent mask and the inpainting model's conditioning are made
    from it), and `overlay`/`paste_to` put the result back: the generated picture is resized into `paste_to`'s box
    (x, y, w, h) of a canvas of the overlay's size (or fills it when None), then the overlay, the original with
    alpha = 1 - mask, is laid on top."""
    source: Image.Image
    mask: Image.Image
    overlay: Image.Image
    paste_to: tuple[int, int, int, int] | None = None

    def paste_back(self, picture: Image.Image) -> Image.Image:
        if self.paste_to is None:
            base = picture.convert("RGBA")
        else:
            x, y, w, h = self.paste_to
            base = Image.new("RGBA", self.overlay.size)
            base.paste(picture.resize((w, h), RESAMPLE).convert("RGBA"), (x, y))
        base.alpha_composite(self.overlay)
        return base.convert("RGB")


@dataclass
class MaskPlan:
    """The mask of a request, prepared once: `working` is the blurred mask at the generation size; `overlay_mask`
    how strongly each output pixel is regenerated; `crop` the "only masked" region of the init image (or None)."""
    working: Image.Image
    overlay_mask: Image.Image
    crop: tuple[int, int, int, int] | None


def plan_mask(mask: Image.Image, image_size: tuple[int, int], width: int, height: int, resize_mode: int,
              invert: bool, blur_x: int, blur_y: int, only_masked: bool, padding: int) -> MaskPlan:
    """Normalise, invert and blur the mask; for "only masked", find the region to crop (grown by `padding` and to
    the generation's aspect) and scale the mask's crop to width x height; else fit it to width x height as the image
    is. Raises EmptyMaskError when nothing is left to regenerate."""
    binary = normalise_mask(mask, image_size)
    if invert:
        binary = binary.point(lambda value: 255 - value)
    if binary.getextrema()[1] == 0:
        raise EmptyMaskError("The mask is empty: nothing is marked to regenerate" +
                             (" (with \"Inpaint not masked\" a mask covering the whole image leaves nothing)"
                              if invert else ""))
    blurred = blur_mask(binary, blur_x, blur_y)
    if only_masked:
        region = match_aspect(crop_region(blurred, padding), width, height, *image_size)
        working = blurred.crop(region).resize((width, height), RESAMPLE)
        return MaskPlan(working, blurred, region)
    working = fit(blurred, width, height, resize_mode).convert("L")
    doubled = np.clip(np.asarray(working, dtype=np.uint16) * 2, 0, 255).astype(np.uint8)
    return MaskPlan(working, Image.fromarray(doubled, "L"), None)


def plan_image(image: Image.Image, masks: MaskPlan, width: int, height: int, resize_mode: int,
               inpainting_fill: int) -> InpaintPlan:
    """The plan for one (flattened, RGB) init image under a prepared mask."""
    if masks.crop is None:
        image = fit(image, width, height, resize_mode)
    overlay = image.convert("RGBA")
    overlay.putalpha(masks.overlay_mask.point(lambda value: 255 - value))
    if masks.crop is not None:
        left, top, right, bottom = masks.crop
        source = image.crop(masks.crop).resize((width, height), RESAMPLE)
        paste_to = (left, top, right - left, bottom - top)
    else:
        source, paste_to = image, None
    if inpainting_fill != 1:  # every mode but "original" starts from filled pixels
        source = fill_masked(source, masks.working)
    return InpaintPlan(source, masks.working, overlay, paste_to)
