"""A ControlNet unit's preview (💥): run its preprocessor on the unit's picture (or, in img2img, on the img2img
input) and show the map, which the user can download, edit and upload again with preprocessor "none"; and "Use
the preview as input", which does that in one click.

The handler is a plain (sync) function: Gradio runs it on a worker thread, so a slow annotator never blocks the
event loop. Errors (no picture, unknown module, missing annotator weights) are notices.
"""
from __future__ import annotations

import gradio as gr
from PIL import Image

from ..control.runner import pixel_perfect_resolution
from ..control.units import NO_MODULE
from ..core.errors import RequestError, UserError
from . import canvas, notices
from .img2img_inputs import Img2ImgInputs

# The img2img tab's values a preview of "Use the img2img input" needs (named as `Img2ImgInputs` fields).
IMG2IMG_SOURCES = ("img2img_mode", "image", "sketch", "inpaint", "inpaint_sketch", "inpaint_base", "inpaint_mask")
# The unit's values the preview takes, in this order.
PREVIEW_FIELDS = ("image", "mask", "module", "processor_res", "threshold_a", "threshold_b", "pixel_perfect",
                  "resize_mode")


def preview_source(mode: str, index: int, image, mask, use_input: bool,
                   img2img: dict | None) -> tuple[Image.Image, Image.Image | None]:
    """(picture, mask or None) the preview runs on: the unit's upload, or with "Use the img2img input" the
    selected img2img sub-tab's picture (and its mask, where the unit has none)."""
    if mode == "img2img" and use_input:
        sources = dict(img2img or {})
        sub_tab = sources.pop("img2img_mode", None) or "img2img"
        if sub_tab == "batch":
            raise RequestError(f"controlnet_units[{index}]", "the Batch tab has no single picture to "
                               "preview; untick \"Use the img2img input\" and upload one")
        init, init_mask = canvas.init_and_mask(sub_tab, **sources, allow_empty_mask=True)
        unit_mask = canvas.as_image(mask)
        return init, unit_mask if unit_mask is not None else init_mask
    picture = canvas.as_image(image)
    if picture is None:
        raise RequestError(f"controlnet_units[{index}]", "no control image to preprocess; upload one "
                           "first")
    return picture, canvas.as_image(mask)


def preview_map(services, index: int, picture: Image.Image, mask: Image.Image | None, module, processor_res,
                threshold_a, threshold_b, pixel_perfect: bool, resize_mode, width, height) -> Image.Image:
    """The detected map, as Generate would compute it for this unit (resolution from Pixel Perfect when set)."""
    if pixel_perfect:
        processor_res = pixel_perfect_resolution(picture.size, (int(width), int(height)), str(resize_mode))
    return services.preprocessors.run(module or NO_MODULE, picture,
                                      -1 if processor_res is None else processor_res,
                                      -1 if threshold_a is None else threshold_a,
                                      -1 if threshold_b is None else threshold_b, mask=mask)


def run_preview(services, mode: str, index: int, values: dict, width, height, use_input: bool = False,
                img2img: dict | None = None):
    """💥: the map for the preview image, or a notice (and the preview unchanged) when it cannot be made.
    `values` are the unit's PREVIEW_FIELDS; `img2img` the img2img tab's IMG2IMG_SOURCES."""
    try:
        picture, mask = preview_source(mode, index, values.get("image"), values.get("mask"), use_input, img2img)
        return preview_map(services, index, picture, mask, values.get("module"), values.get("processor_res"),
                           values.get("threshold_a"), values.get("threshold_b"), bool(values.get("pixel_perfect")),
                           values.get("resize_mode"), width, height)
    except UserError as exc:
        notices.warn(f"ControlNet Unit {index}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a broken annotator is a notice, never a crash
        notices.report(exc)
    return gr.skip()


def use_preview(index: int, preview, has_use_input: bool) -> tuple:
    """"Use the preview as input": the map becomes the unit's control image with preprocessor "none" (and, in
    img2img, "Use the img2img input" is unticked). Returns (image, module[, use_input])."""
    count = 3 if has_use_input else 2
    picture = canvas.as_image(preview)
    if picture is None:
        notices.warn(f"ControlNet Unit {index}: no preview yet; press 💥 to run the preprocessor first")
        return (gr.skip(),) * count
    updates = (gr.update(value=picture, visible=True), NO_MODULE)
    return updates + (False,) if has_use_input else updates


def wire_preview(unit, services, width: gr.Slider, height: gr.Slider, img2img: Img2ImgInputs | None) -> None:
    """💥 and "Use the preview as input" of one unit (`controlnet.ControlNetUnitUI`)."""
    own = unit.components(PREVIEW_FIELDS)
    sources = img2img.components(IMG2IMG_SOURCES) if img2img is not None and unit.use_input is not None else []
    use_input = [unit.use_input] if unit.use_input is not None else []

    def preview(*values):
        values = list(values)
        named = dict(zip(PREVIEW_FIELDS, values[:len(own)]))
        width_value, height_value = values[len(own):len(own) + 2]
        rest = values[len(own) + 2:]
        using_input = bool(rest[0]) if use_input else False
        img2img_values = dict(zip(IMG2IMG_SOURCES, rest[len(use_input):])) if sources else None
        return run_preview(services, unit.mode, unit.index, named, width_value, height_value, using_input,
                           img2img_values)

    unit.run_preprocessor.click(preview, inputs=[*own, width, height, *use_input, *sources], outputs=[unit.preview],
                                show_progress="minimal", api_visibility="undocumented")
    unit.use_preview.click(lambda picture: use_preview(unit.index, picture, bool(use_input)), inputs=[unit.preview],
                           outputs=[unit.image, unit.module, *use_input], show_progress="hidden",
                           api_visibility="undocumented")
