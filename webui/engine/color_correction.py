"""A1111's "Apply color correction to img2img results to match original colors." (`img2img_color_correction`).

The result is converted to LAB (OpenCV's 8-bit LAB, as A1111), each of its channels histogram-matched to the init
image's (the value at each quantile of the result becomes the init image's value at that quantile: what
`skimage.exposure.match_histograms` does, written here with numpy so scikit-image is no dependency), converted back to
RGB, and then given the luminosity of the uncorrected result again (the "Luminosity" blend mode, W3C compositing:
colours from the matched image, brightness from the generated one), so the detail the model made stays.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

__all__ = ["match_histograms", "correct"]


def _match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`source`'s values mapped so its histogram is `reference`'s (quantile to quantile, linear in between)."""
    values, inverse, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    mapped = np.interp(quantiles, ref_quantiles, ref_values)
    return mapped[inverse].reshape(source.shape)


def match_histograms(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each channel of `image` (H, W, C) matched to the same channel of `reference` (any H, W); float64."""
    return np.stack([_match_channel(image[..., c], reference[..., c]) for c in range(image.shape[-1])], axis=-1)


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.3 + rgb[..., 1] * 0.59 + rgb[..., 2] * 0.11


def _clip_color(rgb: np.ndarray) -> np.ndarray:
    lum = _lum(rgb)[..., None]
    low = rgb.min(axis=-1, keepdims=True)
    high = rgb.max(axis=-1, keepdims=True)
    out = rgb.copy()
    below = (low < 0.0)[..., 0]
    if below.any():
        scale = lum[below] / np.maximum(lum[below] - low[below], 1e-12)
        out[below] = lum[below] + (out[below] - lum[below]) * scale
    above = (high > 1.0)[..., 0]
    if above.any():
        scale = (1.0 - lum[above]) / np.maximum(high[above] - lum[above], 1e-12)
        out[above] = lum[above] + (out[above] - lum[above]) * scale
    return out


def luminosity_blend(colour: np.ndarray, luminosity: np.ndarray) -> np.ndarray:
    """W3C's Luminosity blend mode (RGB in 0..1): the hue and saturation of `colour`, the luminosity of
    `luminosity`."""
    delta = (_lum(luminosity) - _lum(colour))[..., None]
    return np.clip(_clip_color(colour + delta), 0.0, 1.0)


def correct(result: Image.Image, init: Image.Image) -> Image.Image:
    """`result` with the colours of `init` (A1111's apply_color_correction): LAB histograms matched to the init
    image's, then the result's own luminosity."""
    generated = np.asarray(result.convert("RGB"))
    target = cv2.cvtColor(np.asarray(init.convert("RGB")), cv2.COLOR_RGB2LAB)
    lab = cv2.cvtColor(generated, cv2.COLOR_RGB2LAB)
    matched = np.clip(np.rint(match_histograms(lab, target)), 0, 255).astype(np.uint8)
    recoloured = cv2.cvtColor(matched, cv2.COLOR_LAB2RGB).astype(np.float64) / 255.0
    blended = luminosity_blend(recoloured, generated.astype(np.float64) / 255.0)
    return Image.fromarray(np.rint(blended * 255.0).astype(np.uint8), "RGB")
