"""Hires fix (A1111's txt2img second pass): the target size, the latent upscale modes, and the second pass's set-up.

The engine samples the first pass at the request's size, then calls in here to upscale each batch (in latent space,
or decoded and through an image upscaler) and to describe the img2img pass that refines it at the larger size.
"""
from __future__ import annotations

# name -> (torch.nn.functional.interpolate mode, antialias), A1111's latent upscale modes
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
