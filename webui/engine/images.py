"""Fitting init images to the requested size (A1111's resize modes) and tensor <-> PIL conversion (any picture as
8-bit RGB is `webui.core.images.as_rgb`)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

RESAMPLE = Image.Resampling.LANCZOS


def fit(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """0 just resize; 1 crop and resize (cover, centre crop); 2 resize and fill (fit, then stretch the edge rows
    or columns into the empty bands); 3 is a latent-space resize, which starts like 0 here."""
    image = image.convert("RGB")
    if mode in (0, 3) or image.size == (width, height):
        return image.resize((width, height), RESAMPLE)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        scale_w = width if ratio > src_ratio else image.width * height // image.height
        scale_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = image.resize((scale_w, scale_h), RESAMPLE)
        canvas = Image.new("RGB", (width, height))
        canvas.paste(resized, (width // 2 - scale_w // 2, height // 2 - scale_h // 2))
        return canvas
    scale_w = width if ratio < src_ratio else image.width * height // image.height
    scale_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = image.resize((scale_w, scale_h), RESAMPLE)
    canvas = Image.new("RGB", (width, height))
    left, top = width // 2 - scale_w // 2, height // 2 - scale_h // 2
    canvas.paste(resized, (left, top))
    if ratio < src_ratio and top > 0:  # bands above and below
        canvas.paste(resized.resize((width, top), box=(0, 0, width, 0)), (0, 0))
        bottom = top + scale_h
        canvas.paste(resized.resize((width, height - bottom), box=(0, scale_h, width, scale_h)), (0, bottom))
    elif ratio > src_ratio and left > 0:  # bands left and right
        canvas.paste(resized.resize((left, height), box=(0, 0, 0, height)), (0, 0))
        right = left + scale_w
        canvas.paste(resized.resize((width - right, height), box=(scale_w, 0, scale_w, height)), (right, 0))
    return canvas


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """[-1, 1] NCHW float tensor, as diffusers' VaeImageProcessor prepares images."""
    array = np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255.0 for i in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0


def to_pil(decoded: torch.Tensor) -> list[Image.Image]:
    """VAE output in [-1, 1] -> 8-bit images as A1111 makes them: (x + 1) / 2 clamped in float32, times 255,
    truncated (not rounded)."""
    array = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((255.0 * a).astype("uint8")) for a in array]
