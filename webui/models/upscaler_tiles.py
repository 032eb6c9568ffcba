"""Running an image-to-image model over an image in overlapping tiles, blended so no seams show.

Each tile is run on its own (so a large image fits in memory); its output lands at `scale x` the tile's position.
Where neighbouring tiles overlap, the outer quarter of the overlap on each side is dropped (a convolution near a
tile's edge sees padding, not the neighbour's pixels) and the middle half is cross-faded linearly.
"""
from __future__ import annotations

from typing import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: every tile is `tile` long (the last one aligned to the end), neighbours overlap
    by at least `overlap`. One tile when the axis fits in one."""
    if tile <= 0 or length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def edge_weights(size: int, ramp: float, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """A 1-D blending weight for one output tile: 1 inside; on a side shared with a neighbour, 0 for the outer
    quarter of the overlap (`ramp` output pixels), rising linearly over the middle half."""
    weight = torch.ones(size, dtype=torch.float32)
    if ramp <= 0:
        return weight
    distance = torch.arange(size, dtype=torch.float32) + 0.5
    rising = ((distance - ramp / 4) / (ramp / 2)).clamp(0, 1)
    if fade_start:
        weight = weight * rising
    if fade_end:
        weight = weight * rising.flip(0)
    return weight


def run_tiled(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, on_tile: Callable[[int, int], bool] | None = None) -> torch.Tensor | None:
    """`run` (a (1, C, h, w) tensor in [0, 1] -> (1, C, h*scale, w*scale)) over `image` in tiles of `tile` px
    overlapping by `overlap` px; `tile` 0 runs the whole image at once. `on_tile(done, total)` is called before each
    tile; when it returns False the run stops and None is returned. The result is float32 on the CPU."""
    _, channels, height, width = image.shape
    overlap = max(0, min(overlap, tile // 2)) if tile > 0 else 0
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total = len(ys) * len(xs)
    if total == 1:
        if on_tile is not None and not on_tile(0, 1):
            return None
        return run(image).float().cpu()
    tile_h, tile_w = min(tile, height), min(tile, width)
    out = torch.zeros(1, channels, height * scale, width * scale, dtype=torch.float32)
    weights = torch.zeros(1, 1, height * scale, width * scale, dtype=torch.float32)
    ramp = overlap * scale
    done = 0
    for row, y in enumerate(ys):
        wy = edge_weights(tile_h * scale, ramp, row > 0, row < len(ys) - 1)
        for col, x in enumerate(xs):
            if on_tile is not None and not on_tile(done, total):
                return None
            piece = run(image[:, :, y:y + tile_h, x:x + tile_w]).float().cpu()
            wx = edge_weights(tile_w * scale, ramp, col > 0, col < len(xs) - 1)
            mask = (wy[:, None] * wx[None, :])[None, None]
            oy, ox = y * scale, x * scale
            out[:, :, oy:oy + tile_h * scale, ox:ox + tile_w * scale] += piece * mask
            weights[:, :, oy:oy + tile_h * scale, ox:ox + tile_w * scale] += mask
            done += 1
    return out / weights.clamp_min(1e-8)
