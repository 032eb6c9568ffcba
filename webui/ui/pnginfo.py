"""PNG Info: read the parameters stored in an image and send them to txt2img, img2img or inpaint (or the picture
alone to Extras: `send_image_to_extras`); the galleries' "Send to img2img" / "Send to inpaint" buttons send a
generated image the same way."""
from __future__ import annotations

import html
import re

import gradio as gr

from ..control.units import INFOTEXT_KEY, parse_unit_infotext
from ..core import samplers
from ..core.request import INPAINT_AREAS, INPAINT_FILLS, MASK_MODES, OUTPAINT_FILLS
from ..core.sizes import MAX_SIDE, MIN_SIDE
from ..outputs.infotext import parse_infotext
from ..outputs.save import read_infotext
from . import controlnet, hires_inputs, img2img_inputs, notices

# The generation tab's controls `send_to` sets, in this order (names of `GenerationTab` fields).
FIELDS = ("prompt", "negative_prompt", "steps", "sampler", "scheduler", "cfg_scale", "seed", "width", "height",
          "subseed_show", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "tiling",
          "distilled_cfg_scale")
# img2img's own controls it sets after the image (names of `Img2ImgInputs` fields).
IMG2IMG_FIELDS = ("denoising_strength", "mask_blur", "mask_mode", "inpainting_fill", "inpaint_area",
                  "inpaint_padding", "outpaint_enable", "outpaint_left", "outpaint_right", "outpaint_up",
                  "outpaint_down", "outpaint_fill", "outpaint_overlap")
_OUTPAINT_SIDE = re.compile(r"\b(left|right|up|down)\s+(\d+)")


def parameters_html(text: str) -> str:
    """The parsed parameters as a small table under the prompts."""
    if not text:
        return '<div class="pnginfo-empty">No generation parameters found in this image.</div>'
    params = parse_infotext(text)
    parts = [f'<p class="pnginfo-prompt"><b>Prompt:</b> {html.escape(str(params.pop("Prompt")))}</p>']
    negative = params.pop("Negative prompt")
    if negative:
        parts.append(f'<p class="pnginfo-negative"><b>Negative prompt:</b> {html.escape(str(negative))}</p>')
    last_line = text.rstrip().split("\n")[-1]
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>"
                   for key, value in params.items()
                   if not key.endswith(("-1", "-2")) and f"{key}:" in last_line)  # not the parser's defaults
    if rows:
        parts.append(f'<table class="pnginfo-params">{rows}</table>')
    return f'<div class="pnginfo">{"".join(parts)}</div>'


def read_parameters(image) -> tuple[str, str]:
    """(HTML to show, raw infotext) for a dropped image."""
    if image is None:
        return "", ""
    try:
        text = read_infotext(image) or ""
    except Exception as exc:  # noqa: BLE001 - a broken file is a notice
        notices.report(exc)
        text = ""
    return parameters_html(text), text


def _number(value, kind, low, high):
    """The value as `kind`, clamped to the control's range; gr.skip() when missing or not a number."""
    try:
        number = kind(float(value))
    except (TypeError, ValueError):
        return gr.skip()
    return max(low, min(high, number))


def _number_or(value, kind, low, high, default):
    """Like `_number`, with `default` where the value is missing or not a number."""
    number = _number(value, kind, low, high)
    return default if isinstance(number, dict) else number


def _sampler_and_schedule(params: dict, current_sampler, current_scheduler) -> tuple:
    """Sampler and schedule type from infotext; old names ("DPM++ 2M Karras") are split in two."""
    name = str(params.get("Sampler") or "").strip()
    schedule = str(params.get("Schedule type") or "Automatic").strip()
    if not name:
        return gr.skip(), gr.skip()
    try:
        sampler, concrete = samplers.resolve_name(name, schedule)
    except samplers.SamplerError as exc:
        notices.warn(f"{exc}; the sampler stays {current_sampler} ({current_scheduler})")
        return gr.skip(), gr.skip()
    known = {sampler.name.lower(), *(alias.lower() for alias in sampler.aliases)}
    if schedule.lower() == "automatic" and name.lower() not in known:
        schedule = concrete  # the schedule was part of the old sampler name
    else:
        schedule = next((s for s in samplers.SCHEDULE_NAMES if s.lower() == schedule.lower().replace("_", " ")),
                        concrete)
    return sampler.name, schedule


def generation_values(text: str, current_sampler=None, current_scheduler=None, params: dict | None = None) -> tuple:
    """Values for FIELDS from infotext (gr.skip() for what it lacks or what is unusable). `params`: the infotext
    already parsed (and perhaps amended by extensions' infotext_pasted callbacks). As A1111: "Extra" is ticked when
    the infotext has a variation seed or "Seed resize from" (else unticked), and Tiling follows its `Tiling` key."""
    params = parse_infotext(text) if params is None else params
    sampler, schedule = _sampler_and_schedule(params, current_sampler, current_scheduler)
    return (
        params["Prompt"], params["Negative prompt"],
        _number(params.get("Steps"), int, 1, 150),
        sampler, schedule,
        _number(params.get("CFG scale"), float, 1.0, 30.0),
        _number(params.get("Seed"), int, -1, 2 ** 32),
        _number(params.get("Size-1"), int, MIN_SIDE, MAX_SIDE),
        _number(params.get("Size-2"), int, MIN_SIDE, MAX_SIDE),
        "Variation seed" in params or "Seed resize from-1" in params,
        _number(params.get("Variation seed"), int, -1, 2 ** 32),
        _number(params.get("Variation seed strength"), float, 0.0, 1.0),
        _number(params.get("Seed resize from-1"), int, 0, MAX_SIDE),
        _number(params.get("Seed resize from-2"), int, 0, MAX_SIDE),
        str(params.get("Tiling", "")).strip().lower() == "true",
        _number(params.get("Distilled CFG Scale"), float, 0.0, 30.0),
    )


def _choice(value, choices: tuple[str, ...], default: str) -> str:
    match = next((choice for choice in choices if choice.lower() == str(value or "").strip().lower()), None)
    return match or default


def img2img_values(text: str, params: dict | None = None) -> tuple:
    """Values for IMG2IMG_FIELDS from infotext. A missing inpaint key takes A1111's default (mask blur 4, inpaint
    masked, original, whole picture, padding 32); without an `Outpaint` key outpainting is off (sides 0, edge, 8).
    A missing denoising strength keeps the slider as it is."""
    params = parse_infotext(text) if params is None else params
    outpaint = {side: int(pixels) for side, pixels in _OUTPAINT_SIDE.findall(str(params.get("Outpaint") or ""))}
    sides = tuple(min(outpaint.get(side, 0), 512) // 8 * 8 for side in ("left", "right", "up", "down"))
    return (
        _number(params.get("Denoising strength"), float, 0.0, 1.0),
        _number_or(params.get("Mask blur", params.get("Mask blur x")), int, 0, 64, 4),
        _choice(params.get("Mask mode"), MASK_MODES, MASK_MODES[0]),
        _choice(params.get("Masked content"), INPAINT_FILLS, "original"),
        _choice(params.get("Inpaint area"), INPAINT_AREAS, INPAINT_AREAS[0]),
        _number_or(params.get("Masked area padding"), int, 0, 256, 32),
        any(sides),
        *sides,
        _choice(params.get("Outpaint fill"), OUTPAINT_FILLS, OUTPAINT_FILLS[0]),
        _number_or(params.get("Outpaint overlap"), int, 0, 64, 8),
    )


def send_to(mode: str, text: str, current_sampler=None, current_scheduler=None, image=None,
            on_pasted=None, target: str = "img2img") -> tuple:
    """PNG Info's Send buttons: values for the target tab's FIELDS, then for img2img the picture (into the `target`
    sub-tab: "img2img", or "inpaint" for Send to inpaint), IMG2IMG_FIELDS and the sub-tab switch
    (`Img2ImgInputs.switch_outputs()`), and last the tab switch."""
    extra = 1 + len(IMG2IMG_FIELDS) + 3 if mode == "img2img" else 0
    if not (text or "").strip():
        notices.warn("No generation parameters to send: drop an image made by this web UI (or paste its text)")
        return (gr.skip(),) * (len(FIELDS) + extra + 1)
    params = parse_infotext(text)
    if on_pasted is not None:  # extensions' infotext_pasted callbacks may amend the parsed values
        on_pasted(text, params)
    values = generation_values(text, current_sampler, current_scheduler, params)
    if mode == "img2img":
        own = img2img_values(text, params)
        outpaint_enabled = own[IMG2IMG_FIELDS.index("outpaint_enable")]
        values += (image if image is not None else gr.skip(), *own,
                   *img2img_inputs.switch_to(target, outpaint_enabled))
    return values + (gr.Tabs(selected=mode),)


def controlnet_values(services, text: str, unit_count: int) -> tuple:
    """The ControlNet units' values for pasted infotext: `ControlNet N` entries restore unit N's settings
    (`controlnet.PASTE_FIELDS`, unit after unit); units without an entry are disabled. Nothing changes when
    there is no text (`send_to` says so)."""
    if not (text or "").strip():
        return (gr.skip(),) * (len(controlnet.PASTE_FIELDS) * unit_count)
    units = {}
    for key, value in parse_infotext(text).items():
        match = INFOTEXT_KEY.match(key)
        if match:
            units[int(match.group(1))] = parse_unit_infotext(str(value))
    beyond = sorted(index for index in units if index >= unit_count)
    if beyond:
        notices.warn(f"ControlNet {', '.join(map(str, beyond))} not pasted: this UI has {unit_count} units (raise "
                     "the setting \"ControlNet units\" and restart the UI to have more)")
    return tuple(value for index in range(unit_count) for value in controlnet.pasted_unit(services, index,
                                                                                           units.get(index)))


def hires_values(services, text: str) -> tuple:
    """txt2img's Hires. fix accordion from pasted infotext (`hires_inputs.HIRES_FIELDS` order): on with its
    `Hires …` settings when the infotext has them, else off. Nothing changes when there is no text."""
    if not (text or "").strip():
        return (gr.skip(),) * len(hires_inputs.HIRES_FIELDS)
    return hires_inputs.paste_values(services, parse_infotext(text))


def selected_infotext(state: dict | None) -> str:
    """The infotext of the gallery's selected image ("" for a detected map, or when nothing is there)."""
    state = state or {}
    texts, index = state.get("infotexts") or [], state.get("selected") or 0
    return texts[index] if 0 <= index < len(texts) else ""


def send_from_gallery(target: str, state: dict | None, gallery, current_sampler=None, current_scheduler=None,
                      outpaint_enabled: bool = False) -> tuple:
    """The galleries' "Send to img2img" (`target` "img2img") and "Send to inpaint" ("inpaint"): the selected image
    into that sub-tab's picture, its prompts, seed, size, steps, sampler and CFG into the img2img tab's FIELDS, and
    the switch to that tab and sub-tab. Returns FIELDS' values, the picture, the sub-tab switch
    (`Img2ImgInputs.switch_outputs()`), and the tab switch."""
    state = state or {}
    texts, images = state.get("infotexts") or [], list(gallery or [])
    index = state.get("selected") or 0
    if not images:
        notices.warn("No image to send: generate one first")
        return (gr.skip(),) * (len(FIELDS) + 1 + 3 + 1)
    index = index if 0 <= index < len(images) else 0
    image = images[index][0] if isinstance(images[index], (tuple, list)) else images[index]
    text = texts[index] if index < len(texts) else ""
    values = generation_values(text, current_sampler, current_scheduler) if text.strip() else (gr.skip(),) * len(FIELDS)
    return (*values, image, *img2img_inputs.switch_to(target, outpaint_enabled), gr.Tabs(selected="img2img"))


def send_image_to_extras(image, receive) -> tuple:
    """PNG Info's "Send to extras": the dropped picture into Extras' single image (`receive(picture)`:
    `extras_tab.receive_image`) and the switch to the Extras tab; a notice when no picture is there."""
    if image is None:
        notices.warn("No image to send: drop an image into PNG Info first")
        return (gr.skip(),) * 4
    return (*receive(image), gr.Tabs(selected="extras"))
