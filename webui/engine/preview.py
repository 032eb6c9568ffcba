"""Live previews of a running batch from its latents.

"Approximate cheap": a fixed linear map from the 4 latent channels to RGB, no weights and no model call, so a preview
costs a small matrix product on the latents of the first image. The factors are rough fits of what the SD VAEs
decode a latent channel to; good enough to see the composition form, which is what a preview is for.
"""
from __future__ import annotations

import torch
from PIL import Image

# rows: latent channels 0..3; columns: R, G, B
_SD_FACTORS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_FACTORS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                 (-0.3730, -0.2499, -0.2088))


def cheap_preview(latents: torch.Tensor, family: str = "sd1", index: int = 0) -> Image.Image:
    """The `index`-th image of a (batch, 4, h, w) latent tensor as an RGB picture of h x w pixels (1/8 of the
    final size)."""
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ValueError(f"expected latents of shape (batch, 4, h, w), got {tuple(latents.shape)}")
    factors = torch.tensor(_SDXL_FACTORS if family == "sdxl" else _SD_FACTORS, dtype=torch.float32)
    latent = latents[min(index, latents.shape[0] - 1)].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent, factors)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def current_preview(control) -> Image.Image | None:
    """A preview of what `control`'s run is sampling now; None before its first step."""
    latents = control.latents
    if latents is None:
        return None
    return cheap_preview(latents, control.latent_family)
