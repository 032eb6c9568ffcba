"""Overlapping tiles for SD upscale, laid out and blended back as A1111's `split_grid` / `combine_grid` do.

Split: columns = ceil((width - overlap) / (tile width - overlap)) (rows likewise), spread evenly so the first tile
starts at 0 and the last ends at the image's edge (a tile that would pass the edge is moved back to end on it).
Combine, row by row: each tile but the first of its row is pasted with its first `overlap` columns blended over what
is there by a ramp from 0 to 255 x (overlap - 1) / overlap (whole numbers, rounded down), the rest of it pasted
as is; then the rows are stacked the same way with a ramp over their first `overlap` lines. With no overlap the
tiles are simply pasted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Tile:
    x: int
    image: Image.Image


@dataclass
class TileRow:
    y: int
    tiles: list[Tile] = field(default_factory=list)


@dataclass
class TileGrid:
    rows: list[TileRow]
    tile_width: int
    tile_height: int
    width: int  # the whole image's
    height: int
    overlap: int

    def tiles(self) -> list[Tile]:
        """Every tile, row after row (the order they are generated and put back)."""
        return [tile for row in self.rows for tile in row.tiles]


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    count = max(1, math.ceil((size - overlap) / (tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    starts = []
    for index in range(count):
        start = int(index * step)
        if start + tile >= size:
            start = size - tile
        starts.append(start)
    return starts


def count(width: int, height: int, tile_width: int, tile_height: int, overlap: int) -> int:
    """How many tiles `split` makes of an image of that size."""
    return len(_starts(width, tile_width, overlap)) * len(_starts(height, tile_height, overlap))


def split(image: Image.Image, tile_width: int, tile_height: int, overlap: int) -> TileGrid:
    """`image` cut into tiles of exactly tile_width x tile_height (an image smaller than a tile gets one tile that
    reaches past its top-left corner, filled black there). `overlap` must be smaller than both tile sides."""
    if not 0 <= overlap < min(tile_width, tile_height):
        raise ValueError(f"tile overlap {overlap} must be at least 0 and less than the tile size "
                         f"{tile_width}x{tile_height}")
    grid = TileGrid([], tile_width, tile_height, image.width, image.height, overlap)
    for y in _starts(image.height, tile_height, overlap):
        row = TileRow(y)
        for x in _starts(image.width, tile_width, overlap):
            row.tiles.append(Tile(x, image.crop((x, y, x + tile_width, y + tile_height))))
        grid.rows.append(row)
    return grid


def _ramp(overlap: int, across: int, horizontal: bool) -> Image.Image:
    values = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    array = np.tile(values, (across, 1)) if horizontal else np.tile(values[:, None], (1, across))
    return Image.fromarray(array, "L")


def combine(grid: TileGrid) -> Image.Image:
    """The tiles (each `Tile.image`, as generated) put back into one image of the grid's size."""
    overlap = grid.overlap
    combined = Image.new("RGB", (grid.width, grid.height))
    across = _ramp(overlap, grid.tile_height, True) if overlap else None
    down = _ramp(overlap, grid.width, False) if overlap else None
    for row in grid.rows:
        strip = Image.new("RGB", (grid.width, grid.tile_height))
        for tile in row.tiles:
            picture = tile.image.convert("RGB")
            if tile.x == 0 or not overlap:
                strip.paste(picture, (tile.x, 0))
                continue
            strip.paste(picture.crop((0, 0, overlap, grid.tile_height)), (tile.x, 0), mask=across)
            strip.paste(picture.crop((overlap, 0, grid.tile_width, grid.tile_height)), (tile.x + overlap, 0))
        if row.y == 0 or not overlap:
            combined.paste(strip, (0, row.y))
            continue
        combined.paste(strip.crop((0, 0, grid.width, overlap)), (0, row.y), mask=down)
        combined.paste(strip.crop((0, overlap, grid.width, grid.tile_height)), (0, row.y + overlap))
    return combined
