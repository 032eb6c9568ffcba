"""The img2img tab's image inputs as the request's (init image, mask), one rule per sub-tab.

Gradio's ImageEditor (`type="pil"`, `image_mode="RGBA"`) gives `{"background", "layers", "composite"}`: the
uploaded picture, one transparent image per drawn layer, and the picture with the strokes painted in. Where the
user drew is where a layer's alpha is not zero. Missing images and empty masks are `RequestError`s with a message
for the user, so that nothing is queued for them (never a silent full regeneration).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import RequestError
from ..core.images import normalise_mode
from ..engine.inpaint import flatten, normalise_mask

# A1111's img2img modes 0..5, in the order of its sub-tabs.
IMG2IMG_MODES = ("img2img", "sketch", "inpaint", "inpaint_sketch", "inpaint_upload", "batch")
INPAINT_MODES = ("inpaint", "inpaint_sketch", "inpaint_upload")

EMPTY_MASK = ("The mask is empty: paint over the part to regenerate (Inpaint, Inpaint sketch) or upload a mask "
              "that is white where the image should change (Inpaint upload)")
FULL_INVERTED_MASK = ("The mask covers the whole image, and with \"Inpaint not masked\" that leaves nothing to "
                      "regenerate: paint only the part to keep")

# Where each mode's picture comes from: (keyword of `init_and_mask`, the component's elem_id, its name in the UI).
SOURCES = {
    "img2img": ("image", "img2img_image", "img2img"),
    "sketch": ("sketch", "img2img_sketch", "Sketch"),
    "inpaint": ("inpaint", "img2maskimg", "Inpaint"),
    "inpaint_sketch": ("inpaint_sketch", "inpaint_sketch", "Inpaint sketch"),
    "inpaint_upload": ("inpaint_base", "img_inpaint_base", "Inpaint upload"),
}


def as_image(value) -> Image.Image | None:
    """A PIL image from what Gradio hands over: a PIL image, a NumPy array (H x W, H x W x 3 or x 4) or a path."""
    if value is None or isinstance(value, Image.Image):
        return normalise_mode(value) if value is not None else None  # CMYK, 16-bit, palette uploads, ...
    if isinstance(value, np.ndarray):
        array = value if value.dtype == np.uint8 else np.clip(value, 0, 255).astype(np.uint8)
        return Image.fromarray(array)
    if isinstance(value, (str, Path)):
        with Image.open(value) as opened:
            opened.load()
            return normalise_mode(opened.copy())
    raise RequestError("init_images", f"not an image: {type(value).__name__}")


def editor_parts(value) -> tuple[Image.Image | None, list[Image.Image], Image.Image | None]:
    """(background, layers, composite) of an ImageEditor value; a plain image counts as a background."""
    if value is None:
        return None, [], None
    if not isinstance(value, dict):
        image = as_image(value)
        return image, [], image
    layers = [as_image(layer) for layer in value.get("layers") or [] if layer is not None]
    return as_image(value.get("background")), layers, as_image(value.get("composite"))


def drawn_mask(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image:
    """The union of what was drawn on the layers: white (255) wherever any layer's alpha is above zero, an L image of
    `size` (a layer of another size is scaled to it)."""
    union = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        if "A" not in layer.getbands():
            continue  # an opaque layer carries no stroke shape (Gradio's layers are always RGBA)
        alpha = layer.getchannel("A")
        if alpha.size != tuple(size):
            alpha = alpha.resize(tuple(size), Image.Resampling.NEAREST)
        union |= np.asarray(alpha) > 0
    return Image.fromarray((union * 255).astype(np.uint8), "L")


def painted(background: Image.Image, layers: list[Image.Image], composite: Image.Image | None) -> Image.Image:
    """The picture with the strokes painted in, RGB: the editor's composite, or the layers laid over the
    background when the editor sent none."""
    if composite is not None:
        return flatten(composite)
    canvas = background.convert("RGBA")
    for layer in layers:
        layer = layer.convert("RGBA")
        if layer.size != canvas.size:
            layer = layer.resize(canvas.size, Image.Resampling.NEAREST)
        canvas.alpha_composite(layer)
    return flatten(canvas)


def mask_is_empty(mask: Image.Image, invert: bool = False) -> bool:
    """Whether the mask selects nothing, read the way the engine reads it (alpha of a transparent image, else
    brightness, above 128), after inverting it for "Inpaint not masked"."""
    binary = np.asarray(normalise_mask(mask, mask.size))
    return not (binary == 0).any() if invert else not binary.any()


def check_mask(mask: Image.Image | None, invert: bool = False, *, allow_empty: bool = False) -> Image.Image | None:
    """The mask unchanged, or a RequestError when it leaves nothing to regenerate. With `allow_empty` (outpainting,
    whose new area is masked anyway) an empty mask is dropped instead."""
    if mask is None:
        return None
    if mask_is_empty(mask):
        if allow_empty:
            return None
        raise RequestError("mask", EMPTY_MASK)
    if invert and mask_is_empty(mask, invert=True):
        raise RequestError("mask", FULL_INVERTED_MASK)
    return mask


def _missing(mode: str) -> RequestError:
    _, elem_id, name = SOURCES[mode]
    return RequestError(elem_id, f"No image in the {name} tab: upload the picture to work on first")


def init_and_mask(mode: str, *, image=None, sketch=None, inpaint=None, inpaint_sketch=None, inpaint_base=None,
                  inpaint_mask=None, invert: bool = False,
                  allow_empty_mask: bool = False) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask or None) for the sub-tab `mode` (one of IMG2IMG_MODES but "batch").

    img2img: the upload, no mask. Sketch: the picture with its strokes, no mask. Inpaint: the picture as uploaded
    (strokes never change it), the mask is the union of the strokes. Inpaint sketch: the picture with its strokes,
    masked where they are. Inpaint upload: the two uploads as given (the engine normalises the mask's mode and
    size)."""
    if mode not in SOURCES:
        raise RequestError("img2img_mode", f"unknown img2img mode {mode!r} (one of: {', '.join(SOURCES)})")
    given = {"image": image, "sketch": sketch, "inpaint": inpaint, "inpaint_sketch": inpaint_sketch,
             "inpaint_base": inpaint_base}[SOURCES[mode][0]]
    background, layers, composite = editor_parts(given)
    if background is None:
        raise _missing(mode)
    if mode == "img2img":
        return flatten(background), None
    if mode == "sketch":
        return painted(background, layers, composite), None
    if mode == "inpaint_upload":
        mask = as_image(inpaint_mask)
        if mask is None:
            raise RequestError("img_inpaint_mask", "No mask in the Inpaint upload tab: upload a mask image "
                               "(white = regenerate) beside the picture")
        return flatten(background), check_mask(mask, invert, allow_empty=allow_empty_mask)
    mask = check_mask(drawn_mask(layers, background.size), invert, allow_empty=allow_empty_mask)
    init = painted(background, layers, composite) if mode == "inpaint_sketch" else flatten(background)
    return init, mask
