"""Calling a transformer-family network with the latents the samplers work on.

The samplers, the CFG denoiser and img2img work on latents shaped [batch, channels, h, w] for every family. FLUX.1
works on 2x2 patches of them: the latents are packed into a sequence of (h/2)(w/2) tokens of 4 x channels values,
with each token's (0, row, column) position ids for the rotary embedding and all-zero ids for the text tokens (as
BFL's reference code and diffusers' FluxPipeline), and the prediction is unpacked again.
"""
from __future__ import annotations

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[b, c, h, w] -> [b, (h/2)(w/2), 4c]: each token is a 2x2 patch, channels first within it."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of height x width."""
    b, _, packed = tokens.shape
    c = packed // 4
    patches = tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, height, width)


def image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """[(h/2)(w/2), 3] position ids of the packed latent tokens: (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class SD3Call:
    """SD3's MMDiT as the denoiser calls it: it patches the latents itself; its timestep is sigma x 1000 (the
    scheduler's timesteps, as diffusers' StableDiffusion3Pipeline passes them)."""

    def __init__(self, transformer, guidance: float | None = None):
        self.transformer = transformer

    def __call__(self, latents: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
                 residuals: dict | None = None) -> torch.Tensor:
        rows = latents.shape[0]
        timestep = (sigma.reshape(-1)[:1].float() * 1000).expand(rows).to(latents.device, latents.dtype)
        return self.transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=embeds,
                                pooled_projections=pooled, return_dict=False, **(residuals or {}))[0]


class FluxCall:
    """FLUX.1's transformer as the denoiser calls it: (latent rows, timestep sigma, T5 sequence rows, CLIP pooled
    rows) -> velocity rows shaped like the latents. `guidance` is the Distilled CFG Scale (None: the checkpoint has
    no guidance embedding, as schnell)."""

    def __init__(self, transformer, guidance: float | None):
        self.transformer = transformer
        self.guidance = guidance if transformer.config.guidance_embeds else None
        self._ids: dict = {}

    def _position_ids(self, height: int, width: int, text_length: int, device, dtype):
        key = (height, width, text_length, device, dtype)
        if key not in self._ids:
            self._ids = {key: (image_ids(height, width, device, dtype),
                               torch.zeros(text_length, 3, device=device, dtype=dtype))}
        return self._ids[key]

    def __call__(self, latents: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
                 residuals: dict | None = None) -> torch.Tensor:
        rows, _, height, width = latents.shape
        dtype = latents.dtype
        img_ids, txt_ids = self._position_ids(height, width, embeds.shape[1], latents.device, dtype)
        timestep = sigma.reshape(-1)[:1].expand(rows).to(latents.device, dtype)
        guidance = None
        if self.guidance is not None:
            guidance = torch.full([rows], float(self.guidance), device=latents.device, dtype=torch.float32)
        output = self.transformer(hidden_states=pack(latents), timestep=timestep, guidance=guidance,
                                  pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=txt_ids,
                                  img_ids=img_ids, return_dict=False, **(residuals or {}))[0]
        return unpack(output, height, width)


def _zimage_call(transformer, guidance):
    from .zimage_call import ZImageCall
    return ZImageCall(transformer, guidance)


NETWORK_CALLS = {"flux": FluxCall, "sd3": SD3Call, "zimage": _zimage_call}  # families.Family.network -> its call


def network_call(family, transformer, guidance: float | None):
    """The call of a transformer family's network (None for the UNet families: the engine calls the UNet)."""
    call = NETWORK_CALLS.get(family.network)
    return call(transformer, guidance) if call is not None else None
