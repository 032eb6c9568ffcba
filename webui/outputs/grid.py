"""Image grids as A1111 1.10 makes them: a batch's grid, the labelled grids of X/Y/Z plot and Prompt matrix, and
grid files (`grid-NNNN.png` in the grids folder).

Layout (A1111's): `rows` from the `n_rows` option (`grid_rows`), `cols = ceil(n / rows)`, filled left to right,
then top to bottom; every cell is as large as the largest image, a smaller image sits in the middle of its cell;
what no image covers is the `grid_background_color`. Labels (`draw_grid_annotations`): column labels above, row
labels on the left (a margin three quarters of a cell wide), font size `(cell width + cell height) // 25`, words
wrapped to the cell (a word too wide for it gets a smaller font), inactive labels greyed and struck through;
`margin` pixels between cells. Colours come from the options `grid_text_active_color`, `grid_text_inactive_color`
and `grid_background_color`; a colour Pillow cannot read falls back to A1111's default.

Fonts: never downloaded. DejaVu Sans (or Liberation Sans) when the system has it, else Pillow's built-in scalable
font (`ImageFont.load_default(size)`), else its small bitmap font.
"""
from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from .filename_pattern import context_from_infotext, plan
from .save import encoding, save_numbered

log = logging.getLogger(__name__)

__all__ = ["GridAnnotation", "grid_rows", "image_grid", "draw_grid_annotations", "draw_prompt_matrix", "save_grid",
           "next_grid_number"]

# A1111's defaults of the grid options (used when `options` is None or lacks the key).
DEFAULTS = {
    "n_rows": -1, "grid_prevent_empty_spots": False, "grid_background_color": "#ffffff",
    "grid_text_active_color": "#000000", "grid_text_inactive_color": "#999999", "grid_format": "png",
    "grid_extended_filename": False, "save_to_dirs": True,
}
_SYSTEM_FONTS = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf")
_STRIKE_WIDTH = 4  # pixels: the line through an inactive label
_RE_GRID_NUMBER = re.compile(r"^grid-(\d+)")


@dataclass
class GridAnnotation:
    """One label of a labelled grid; an inactive one (a prompt matrix part left out) is drawn greyed, struck."""
    text: str = ""
    is_active: bool = True


def _option(options, key: str):
    """`options[key]`, or A1111's default when there are no options, no such key, or no value."""
    if options is not None:
        try:
            value = options.get(key)
        except KeyError:
            value = None
        if value is not None:
            return value
    return DEFAULTS[key]


def _colour(options, key: str) -> tuple[int, int, int]:
    value = _option(options, key)
    try:
        return ImageColor.getrgb(str(value))[:3]
    except ValueError:
        log.warning("option %s: %r is not a colour; using %s", key, value, DEFAULTS[key])
        return ImageColor.getrgb(DEFAULTS[key])[:3]


def grid_rows(count: int, batch_size: int, options) -> int:
    """A1111's row count for a grid of `count` images: the `n_rows` option when > 0; 0: the batch size; -1
    (automatic): round(sqrt(count)), or with `grid_prevent_empty_spots` the largest row count up to
    floor(sqrt(count)) that divides `count`. Never more rows than images, never fewer than one."""
    count = max(1, int(count))
    wanted = int(_option(options, "n_rows"))
    if wanted > 0:
        rows = wanted
    elif wanted == 0:
        rows = int(batch_size)
    elif _option(options, "grid_prevent_empty_spots"):
        rows = math.isqrt(count)
        while count % rows:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def image_grid(images: list, rows: int, *, background=None, options=None) -> Image.Image:
    """The images in `rows` rows (`cols = ceil(n / rows)`), each in a cell the size of the largest image, centred
    in it. `background`: a colour (name, "#rrggbb" or RGB tuple) for what no image covers; else the
    `grid_background_color` of `options` (white by default)."""
    if not images:
        raise ValueError("image_grid: no images")
    rows = max(1, min(int(rows), len(images)))
    cols = math.ceil(len(images) / rows)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    if background is None:
        fill = _colour(options, "grid_background_color")
    else:
        fill = ImageColor.getrgb(background)[:3] if isinstance(background, str) else tuple(background)[:3]
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h), fill)
    for index, image in enumerate(images):
        x = index % cols * cell_w + (cell_w - image.width) // 2
        y = index // cols * cell_h + (cell_h - image.height) // 2
        grid.paste(image if image.mode == "RGB" else image.convert("RGB"), (x, y))
    return grid


# --- labels -------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _font(size: int):
    """A scalable font of `size` pixels: a system one, else Pillow's own; the bitmap font when neither scales."""
    size = max(1, int(size))
    for name in _SYSTEM_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size)
    except (TypeError, ValueError, OSError):  # a Pillow without FreeType: its fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    return font.getlength(text) if hasattr(font, "getlength") else font.getbbox(text)[2]


def _line_height(font) -> int:
    if hasattr(font, "getmetrics"):
        ascent, descent = font.getmetrics()
        return ascent + descent
    box = font.getbbox("Ag")
    return box[3] - box[1]


def _wrap(text: str, font, width: float) -> list[str]:
    """Words joined into lines no wider than `width` (a single word wider than that stays alone on its line)."""
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if _text_width(font, joined) <= width or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


@dataclass
class _Line:
    text: str
    is_active: bool
    width: int  # the room it has


def _lines(annotations: list[GridAnnotation], font, width: int) -> list[_Line]:
    return [_Line(text, annotation.is_active, width)
            for annotation in annotations for text in _wrap(str(annotation.text), font, width)]


def _block_height(lines: list[_Line], line_height: int, spacing: int) -> int:
    return len(lines) * line_height + max(0, len(lines) - 1) * spacing if lines else 0


def _fitting_font(line: _Line, size: int):
    """The font for `line`: the grid's size, smaller until the line fits its room (A1111's rule)."""
    font = _font(size)
    while size > 1 and _text_width(font, line.text) > line.width:
        size -= 1
        font = _font(size)
    return font


def _draw_lines(draw: ImageDraw.ImageDraw, centre_x: float, top: float, lines: list[_Line], size: int,
                line_height: int, spacing: int, colours: tuple) -> None:
    active, inactive = colours
    for line in lines:
        font = _fitting_font(line, size)
        middle = top + line_height / 2
        draw.text((centre_x, middle), line.text, font=font, fill=active if line.is_active else inactive,
                  anchor="mm")
        if not line.is_active and line.text:
            half = _text_width(font, line.text) / 2
            draw.line((centre_x - half, middle, centre_x + half, middle), fill=inactive, width=_STRIKE_WIDTH)
        top += line_height + spacing


def draw_grid_annotations(grid: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0, options=None) -> Image.Image:
    """`grid` (cells of `width` x `height`) with labels: `hor_texts[col]` above each column, `ver_texts[row]` left
    of each row, and `margin` pixels between cells. A new image; `grid` and the lists are left as they were.
    Raises ValueError when the label lists do not match the grid's columns and rows."""
    width, height, margin = int(width), int(height), max(0, int(margin))
    cols, rows = grid.width // width, grid.height // height
    if len(hor_texts) != cols:
        raise ValueError(f"bad number of column labels: {len(hor_texts)}; the grid has {cols} columns")
    if len(ver_texts) != rows:
        raise ValueError(f"bad number of row labels: {len(ver_texts)}; the grid has {rows} rows")
    size = max(1, (width + height) // 25)
    spacing = size // 2
    font = _font(size)
    line_height = _line_height(font)
    has_row_labels = any(str(a.text) for labels in ver_texts for a in labels)
    pad_left = width * 3 // 4 if has_row_labels else 0

    columns = [_lines(labels, font, width) for labels in hor_texts]
    row_lines = [_lines(labels, font, pad_left) for labels in ver_texts]
    column_heights = [_block_height(lines, line_height, spacing) for lines in columns]
    row_heights = [_block_height(lines, line_height, spacing) for lines in row_lines]
    has_column_labels = any(line.text for lines in columns for line in lines)
    pad_top = max(column_heights) + spacing * 2 if has_column_labels else 0

    background = _colour(options, "grid_background_color")
    canvas = (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1))
    result = Image.new("RGB", canvas, background)
    source = grid if grid.mode == "RGB" else grid.convert("RGB")
    for row in range(rows):
        for col in range(cols):
            cell = source.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    colours = (_colour(options, "grid_text_active_color"), _colour(options, "grid_text_inactive_color"))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        centre = pad_left + (width + margin) * col + width / 2
        _draw_lines(draw, centre, pad_top / 2 - column_heights[col] / 2, lines, size, line_height, spacing, colours)
    for row, lines in enumerate(row_lines):
        top = pad_top + (height + margin) * row + height / 2 - row_heights[row] / 2
        _draw_lines(draw, pad_left / 2, top, lines, size, line_height, spacing, colours)
    return result


def draw_prompt_matrix(grid: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0,
                       options=None) -> Image.Image:
    """Prompt matrix labels (A1111's): `all_prompts[1:]` are the optional parts; the first half (rounded up) label
    the columns, the rest the rows. Column c has part i active when bit i of c is set (rows likewise), so the
    grid's cell (c, r) is the prompt with those parts."""
    parts = [str(part) for part in all_prompts[1:]]
    boundary = math.ceil(len(parts) / 2)
    across, down = parts[:boundary], parts[boundary:]

    def labels(items: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, bool(position & (1 << i))) for i, text in enumerate(items)]
                for position in range(1 << len(items))]

    return draw_grid_annotations(grid, width, height, labels(across), labels(down), margin, options)


# --- files --------------------------------------------------------------------------------------------------------
def next_grid_number(folder: str | Path) -> int:
    """1 + the largest number of the `grid-NNNN...` files in `folder` (0 when there are none), as A1111 counts."""
    try:
        names = [path.name for path in Path(folder).iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    numbers = [int(m.group(1)) for m in map(_RE_GRID_NUMBER.match, names) if m]
    return max(numbers) + 1 if numbers else 0


def save_grid(grid: Image.Image, folder, *, seed: int, prompt: str, infotext: str, options,
              now: datetime | None = None) -> Path:
    """Save a grid as A1111 does: `folder/<directory pattern>/grid-NNNN.<grid_format>` (the folder with
    `grid_save_to_dirs`; default `[date]`: YYYY-MM-DD) with the infotext embedded (PNG chunk or EXIF comment, as
    every saved image). With `grid_extended_filename` the name ends with the file name pattern (default `-SEED`;
    `-SEED-prompt` where `save_to_dirs` is off, as A1111). Written atomically; an existing file is never replaced."""
    extension = str(_option(options, "grid_format") or "png").lower()
    ctx = context_from_infotext(infotext, seed=int(seed), prompt=prompt or None, image=grid,
                                now=now or datetime.now())
    target, _, name = plan(folder, ctx, options, extension=extension, grid=True, basename="grid")
    return save_numbered(grid, target, infotext, extension=extension, first_number=next_grid_number, name=name,
                         **encoding(options))
