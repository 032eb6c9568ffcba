"""A1111's `modules.images`: saving images with their infotext (`save_image`), reading it back, resizing to a
size with A1111's resize modes, and grids (plain or labelled).

`save_image` writes through `webui.outputs.save` (atomic writes; the infotext in the PNG `parameters` chunk or
the JPEG/WEBP EXIF comment) and calls the extensions' `before_image_saved` / `image_saved` callbacks.
"""
from __future__ import annotations

import os
import re
import uuid
from datetime import datetime
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.engine.images import fit
from webui.extensions.a1111.runtime import RUNTIME
from webui.outputs.save import read_infotext, save_image_as
from webui.outputs.grid import GridAnnotation, grid_rows  # noqa: F401 - A1111's names
from webui.outputs.grid import draw_grid_annotations as _draw_grid_annotations
from webui.outputs.grid import draw_prompt_matrix as _draw_prompt_matrix
from webui.outputs.grid import image_grid as _image_grid

from .script_callbacks import ImageSaveParams

_FORMATS = {"png", "jpg", "jpeg", "webp"}
# Pillow's own entries of `image.info`: not texts a generator wrote.
_PILLOW_INFO_KEYS = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
                     "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity",
                     "photoshop", "transparency", "gamma", "aspect"}


def _callbacks():
    host = RUNTIME.host
    return host.callbacks if host is not None else None


def _next_number(folder: Path, basename: str) -> int:
    """1 + the highest number among the folder's numbered files (`00012-...` or `basename-0012...`)."""
    pattern = re.compile(rf"{re.escape(basename)}-(\d+)" if basename else r"(\d+)(?:[-.]|$)")
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]  # not the dated folders
    except FileNotFoundError:
        return 0
    numbers = [int(m.group(1)) for m in map(pattern.match, names) if m]
    return max(numbers) + 1 if numbers else 0


def _numbered_path(folder: Path, basename: str, seed, suffix: str, extension: str) -> Path:
    number = _next_number(folder, basename)
    while True:
        stem = f"{basename}-{number:04d}" if basename else f"{number:05d}"
        if seed is not None:
            stem += f"-{seed}"
        candidate = folder / f"{stem}{suffix}.{extension}"
        if not candidate.exists():
            return candidate
        number += 1


def _write_png_texts(image: Image.Image, target: Path, texts: dict[str, str]) -> None:
    """A PNG with several text chunks (an extension's own beside `parameters`), written atomically."""
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as fh:
            image.copy().save(fh, "PNG", pnginfo=info)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write(image: Image.Image, target: Path, pnginfo: dict, section: str) -> None:
    texts = {str(k): str(v) for k, v in (pnginfo or {}).items() if v is not None}
    if target.suffix.lower() == ".png" and set(texts) - {"parameters"}:
        _write_png_texts(image, target, texts)
    else:  # JPEG and WEBP hold one text, in their EXIF comment
        save_image_as(image, target, texts.get(section) or texts.get("parameters") or "")


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    """Save `image` with `info` (its infotext) and return `(path, None)` (no text file is written).

    The file goes into `path` (in a dated sub-folder, as the server's own outputs, unless `save_to_dirs` is
    False), named `NNNNN-SEED<suffix>.<extension>` (`basename-NNNN-SEED...` with a basename), or exactly
    `forced_filename.<extension>`. `before_image_saved` callbacks may change the image, the file name and the
    texts (`pnginfo`) first; `image_saved` callbacks are told where it went. The prompt is not put in names.
    """
    extension = str(extension).lower().lstrip(".")
    if extension not in _FORMATS:
        raise ValueError(f"save_image: cannot save as {extension!r} (png, jpg or webp)")
    folder = Path(path)
    if forced_filename:
        filename = folder / f"{forced_filename}.{extension}"
    else:
        if save_to_dirs is None or save_to_dirs:
            folder = folder / datetime.now().strftime("%Y-%m-%d")
        filename = _numbered_path(folder, basename or "", seed, suffix or "", extension)

    pnginfo = dict(existing_info or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = ImageSaveParams(image, p, str(filename), pnginfo)
    callbacks = _callbacks()
    if callbacks is not None:
        callbacks.call("before_image_saved", params)

    target = Path(params.filename)
    if target.suffix.lower().lstrip(".") not in _FORMATS:
        raise ValueError(f"save_image: cannot save {target.name!r}: unknown image format {target.suffix!r}")
    if target == filename and not forced_filename and target.exists():  # taken meanwhile: the next number
        target = _numbered_path(target.parent, basename or "", seed, suffix or "", target.suffix.lstrip("."))
    _write(params.image, target, params.pnginfo, pnginfo_section_name)
    params.filename = str(target)
    if callbacks is not None:
        callbacks.call("image_saved", params)
    return str(target), None


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict]:
    """(infotext or None, the image's other text entries)."""
    geninfo = read_infotext(image)
    items = {k: v for k, v in (image.info or {}).items() if k != "parameters" and k not in _PILLOW_INFO_KEYS}
    return geninfo, items


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name=None) -> Image.Image:
    """`im` at `width` x `height`: 0 just resize, 1 crop and resize, 2 resize and fill (as img2img does). With
    `upscaler_name` (one of `shared.sd_upscalers`, not "None"), an enlargement runs that upscaler first, as A1111;
    otherwise images are resized with Lanczos."""
    mode = resize_mode if resize_mode in (0, 1) else 2
    width, height = int(width), int(height)
    services = RUNTIME.services
    if upscaler_name and upscaler_name != "None" and services is not None and services.upscalers is not None:
        ratios = (width / im.width, height / im.height)
        scale = min(ratios) if mode == 2 else max(ratios)
        if scale > 1.0:
            upscaled = services.upscalers.upscale(im, upscaler_name, round(im.width * scale),
                                                  round(im.height * scale))
            im = upscaled if upscaled is not None else im
    return fit(im, width, height, mode)


def flatten(img: Image.Image, bgcolor) -> Image.Image:
    """An RGB image: transparency replaced by `bgcolor` ("#ffffff", a colour name or an RGB tuple)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, bgcolor)
        background.alpha_composite(rgba)
        img = background
    return img.convert("RGB")


def _options():
    services = RUNTIME.services
    return services.options if services is not None else None


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """The images in a grid as A1111 1.10 lays it out (webui.outputs.grid): left to right then top to bottom, cells
    the size of the largest image, the `grid_background_color` around smaller ones; `rows` defaults to the `n_rows`
    option's count (automatic: about the square root of their number)."""
    if not imgs:
        raise ValueError("image_grid: no images")
    options = _options()
    if rows is None or rows <= 0:
        rows = grid_rows(len(imgs), batch_size, options)
    return _image_grid(imgs, rows, options=options)


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    """A1111's labelled grid: column labels on top, row labels on the left, `margin` pixels between cells."""
    return _draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin, _options())


def draw_prompt_matrix(im, width, height, all_prompts, margin=0):
    """A1111's prompt matrix labels: the prompt's optional parts, active or struck through, along both edges."""
    return _draw_prompt_matrix(im, width, height, all_prompts, margin, _options())
