"""PNG Info: read the parameters stored in an image and send them to txt2img or img2img."""
from __future__ import annotations

import html

import gradio as gr

from ..engine import samplers
from ..outputs.infotext import parse_infotext
from ..outputs.save import read_infotext
from . import notices

# What `send_to` returns, in this order (img2img adds "init_image").
FIELDS = ("prompt", "negative_prompt", "steps", "sampler", "scheduler", "cfg_scale", "seed", "width", "height")


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


def _sampler_and_schedule(params: dict, current_sampler, current_scheduler) -> tuple:
    """Sampler and schedule type from infotext; old names ("DPM++ 2M Karras") are split in two."""
    name = str(params.get("Sampler") or "").strip()
    schedule = str(params.get("Schedule type") or "Automatic").strip()
    if not name:
        return gr.skip(), gr.skip()
    try:
        sampler, concrete = samplers.resolve(name, schedule)
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


def send_to(mode: str, text: str, current_sampler=None, current_scheduler=None, image=None) -> tuple:
    """Values for the target tab's FIELDS (+ the init image for img2img) and the tab switch."""
    fields = len(FIELDS) + (1 if mode == "img2img" else 0)
    if not (text or "").strip():
        notices.warn("No generation parameters to send: drop an image made by this web UI (or paste its text)")
        return (gr.skip(),) * fields + (gr.skip(),)
    params = parse_infotext(text)
    sampler, schedule = _sampler_and_schedule(params, current_sampler, current_scheduler)
    values = (
        params["Prompt"], params["Negative prompt"],
        _number(params.get("Steps"), int, 1, 150),
        sampler, schedule,
        _number(params.get("CFG scale"), float, 1.0, 30.0),
        _number(params.get("Seed"), int, -1, 2 ** 32),
        _number(params.get("Size-1"), int, 64, 2048),
        _number(params.get("Size-2"), int, 64, 2048),
    )
    if mode == "img2img":
        values += (image if image is not None else gr.skip(),)
    return values + (gr.Tabs(selected=mode),)
