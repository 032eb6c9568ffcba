"""Calling Z-Image's transformer with the latents the samplers work on.

diffusers' ZImageTransformer2DModel takes lists: one latent [16, 1, h, w] per row (a frame axis of one) and one
caption [L_i, width] per row, each at its real length (the model pads a caption to a multiple of 32 with its own
learned pad token and places the image's positions after it, so padding a caption with zeros would change the
result). ZImagePipeline passes the timestep as (1000 - 1000 sigma) / 1000 and negates the model's output: the
negated output is the velocity noise - x0 our flow denoiser expects (x0 = x - sigma * v).

The engine stacks the rows' captions with `stack_captions` and hands the lengths to the call where other transformer
families hand their pooled embedding.
"""
from __future__ import annotations

from typing import Sequence

import torch


def stack_captions(captions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions [1, L_i, width] (or [L_i, width]) -> (embeds [rows, max L, width], zero-padded; lengths [rows])."""
    rows = [c.reshape(-1, c.shape[-1]) for c in captions]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    embeds = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return embeds, lengths


class ZImageCall:
    """Z-Image's transformer as the denoiser calls it: (latent rows [rows, 16, h, w], sigma, caption rows
    [rows, L, width], the rows' caption lengths or None) -> velocity rows shaped like the latents. Z-Image has no
    guidance embedding (`guidance` is ignored) and no pooled text input."""

    def __init__(self, transformer, guidance: float | None = None):
        self.transformer = transformer

    def __call__(self, latents: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor,
                 lengths: torch.Tensor | None = None, residuals: dict | None = None) -> torch.Tensor:
        rows = latents.shape[0]
        if embeds.shape[0] != rows:
            raise ValueError(f"{embeds.shape[0]} caption rows for {rows} latent rows")
        sizes = [embeds.shape[1]] * rows if lengths is None else [int(n) for n in lengths.reshape(-1).tolist()]
        captions = [embeds[i, :sizes[i]] for i in range(rows)]
        timestep = sigma.reshape(-1)[:1].to(latents.device, torch.float32) * 1000
        timestep = ((1000 - timestep) / 1000).expand(rows)  # ZImagePipeline's t, computed as it does
        images = list(latents.unsqueeze(2).unbind(dim=0))
        output = self.transformer(images, timestep, captions, return_dict=False, **(residuals or {}))[0]
        return -torch.stack(output, dim=0).squeeze(2).to(latents.dtype)
