"""Decoding and encoding big images with the VAE in overlapping tiles, so that memory stays that of one tile.

Past `vae_tiling_threshold` pixels on a side, the latents (decode) or the pixels (encode) are cut into tiles of
`vae_tile_size` pixels overlapping by at least `vae_tile_overlap`, spread evenly so that every tile has the full
size (no thin leftover tile at an edge); each tile goes through the VAE alone, one image at a time, and the results
are blended with linear ramps across the overlaps (weights summing to one everywhere), so there are no seams. The
VAE's GroupNorm layers see one tile's statistics instead of the whole image's, so a tiled result differs slightly
from an untiled one (tests/test_vae_tiling.py states by how much). Below the threshold the VAE runs as usual, with
identical results.

Not diffusers' own `AutoencoderKL.enable_tiling`: it leaves a thin last tile when the size is not a multiple of
its stride, switches on at its tile size rather than at a threshold, and its tiled encode is deprecated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


@dataclass(frozen=True)
class TileSettings:
    threshold: int = 1536  # pixels on a side past which the VAE works in tiles; 0: never
    tile_size: int = 512  # pixels
    overlap: int = 64  # pixels

    @classmethod
    def from_options(cls, options) -> "TileSettings":
        return cls(int(options.get("vae_tiling_threshold")), int(options.get("vae_tile_size")),
                   int(options.get("vae_tile_overlap")))

    def applies(self, width: int, height: int) -> bool:
        return self.threshold > 0 and max(width, height) > self.threshold

    def in_latents(self, factor: int) -> tuple[int, int]:
        """(tile, overlap) in latent units: the tile at least two latents, the overlap at most half a tile."""
        tile = max(2, self.tile_size // factor)
        return tile, min(max(0, -(-self.overlap // factor)), tile // 2)


def scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles `tile` long covering [0, length), neighbours overlapping by at least `overlap`, spread evenly
    from 0 to length - tile."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(start: int, size: int, previous_end: int | None, next_start: int | None) -> torch.Tensor:
    """Blend weights along one axis of a tile: rising across the overlap with the previous tile, falling across
    the overlap with the next, 1 elsewhere (never 0, so every pixel has weight)."""
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weight = torch.ones(size)
    if previous_end is not None and previous_end > start:
        weight = torch.minimum(weight, position / (previous_end - start))
    if next_start is not None and next_start < start + size:
        weight = torch.minimum(weight, (size - position) / (start + size - next_start))
    return weight


def _tiles(length: int, tile: int, overlap: int, factor_out: int) -> list[tuple[int, int, torch.Tensor]]:
    """(start, size, blend weights at the output's resolution) of each tile along one axis."""
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    tiles = []
    for i, start in enumerate(starts):
        previous_end = (starts[i - 1] + size) * factor_out if i else None
        next_start = starts[i + 1] * factor_out if i + 1 < len(starts) else None
        tiles.append((start, size, _ramp(start * factor_out, size * factor_out, previous_end, next_start)))
    return tiles


def _blend(height: int, width: int, tile: int, overlap: int, factor_out: int, run) -> torch.Tensor:
    """Blend the outputs of `run(top, left, tile_height, tile_width)` over overlapping tiles of a height x width
    grid (in latents) into one float32 tensor; each output is `factor_out` times its tile's size."""
    output = weights = None
    for top, tile_h, weight_y in _tiles(height, tile, overlap, factor_out):
        for left, tile_w, weight_x in _tiles(width, tile, overlap, factor_out):
            result = run(top, left, tile_h, tile_w).float()
            if output is None:
                output = torch.zeros(*result.shape[:2], height * factor_out, width * factor_out, device=result.device)
                weights = torch.zeros(height * factor_out, width * factor_out, device=result.device)
            weight = (weight_y[:, None] * weight_x[None, :]).to(result.device)
            y, x = top * factor_out, left * factor_out
            output[..., y:y + result.shape[-2], x:x + result.shape[-1]] += result * weight
            weights[y:y + result.shape[-2], x:x + result.shape[-1]] += weight
    return output / weights


def decode(vae, latents: torch.Tensor, settings: TileSettings) -> torch.Tensor:
    """`vae.decode(latents)` (latents already divided by the scaling factor), in tiles when the image is past the
    threshold. Pixels in [-1, 1], (N, 3, H, W)."""
    factor = scale_factor(vae)
    height, width = latents.shape[-2:]
    if not settings.applies(width * factor, height * factor):
        return vae.decode(latents, return_dict=False)[0]
    tile, overlap = settings.in_latents(factor)
    pictures = []
    for latent in latents.split(1):
        def run(top, left, tile_h, tile_w, latent=latent):
            return vae.decode(latent[..., top:top + tile_h, left:left + tile_w], return_dict=False)[0]
        pictures.append(_blend(height, width, tile, overlap, factor, run))
    return torch.cat(pictures).to(latents.dtype)


def encode(vae, pixels: torch.Tensor, settings: TileSettings) -> DiagonalGaussianDistribution:
    """`vae.encode(pixels).latent_dist`, in tiles when the image is past the threshold (the distributions' means
    and log-variances are blended). Tiles start on whole latents."""
    factor = scale_factor(vae)
    if not settings.applies(pixels.shape[-1], pixels.shape[-2]):
        return vae.encode(pixels).latent_dist
    if pixels.shape[-1] % factor or pixels.shape[-2] % factor:
        raise ValueError(f"tiled VAE encode needs a size in whole latents ({factor} pixels), "
                         f"got {pixels.shape[-1]}x{pixels.shape[-2]}")
    tile, overlap = settings.in_latents(factor)
    height, width = pixels.shape[-2] // factor, pixels.shape[-1] // factor
    moments = []
    for picture in pixels.split(1):
        def run(top, left, tile_h, tile_w, picture=picture):
            part = picture[..., top * factor:(top + tile_h) * factor, left * factor:(left + tile_w) * factor]
            return vae.encode(part).latent_dist.parameters
        moments.append(_blend(height, width, tile, overlap, 1, run))
    return DiagonalGaussianDistribution(torch.cat(moments).to(pixels.dtype))


def to_model_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's latents as the sampler's: (z - shift) x scaling (FLUX.1's AE has a shift; SD's VAEs none)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def from_model_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The sampler's latents as the VAE's: the inverse of `to_model_latents`."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return latents / vae.config.scaling_factor + shift
