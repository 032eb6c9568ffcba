"""The txt2img tab's "Hires. fix" accordion (A1111's controls and elem_ids), its values for the request, and what
pasting an infotext with `Hires …` keys sets in it."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import gradio as gr

from ..core.hires import DEFAULT_UPSCALER, SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, target_size
from ..core.request import GenerationRequest
from ..core.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from ..core.sizes import MAX_SIDE
from ..engine.hires import LATENT_UPSCALE_MODES
from . import checkpoints, notices
from .input_accordion import InputAccordion

# The accordion's values `generation.build_request` takes, in this order (names of HiresInputs fields and of the
# request's fields).
HIRES_FIELDS = ("enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x",
                "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
                "hr_negative_prompt")
UI_DENOISING = 0.7  # A1111's txt2img slider default (the API's is 0.75)
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


@dataclass
class HiresInputs:
    accordion: gr.Accordion
    enable_hr: gr.Checkbox
    hr_upscaler: gr.Dropdown
    refresh: gr.Button
    hr_second_pass_steps: gr.Slider
    denoising_strength: gr.Slider
    hr_scale: gr.Slider
    hr_resize_x: gr.Slider
    hr_resize_y: gr.Slider
    hr_checkpoint_name: gr.Dropdown
    hr_sampler_name: gr.Dropdown
    hr_scheduler: gr.Dropdown
    hr_prompt: gr.Textbox
    hr_negative_prompt: gr.Textbox
    final_resolution: gr.HTML

    def components(self, names=HIRES_FIELDS) -> list:
        return [getattr(self, name) for name in names]


def upscaler_choices(services) -> list[str]:
    """Latent modes, then the server's image upscalers (Lanczos, Nearest, model files)."""
    registry = getattr(services, "upscalers", None)
    names = [name for name in (registry.names() if registry is not None else []) if name != "None"]
    return [*LATENT_UPSCALE_MODES, *names]


def checkpoint_choices(services) -> list[str]:
    return checkpoints.choices_after(services, SAME_CHECKPOINT)


def checkpoint_dropdown(services, current: str | None) -> gr.Dropdown:
    """The Hires checkpoint list as the model manager has it now (no rescan), the choice kept while it is listed."""
    return checkpoints.dropdown_after(services, SAME_CHECKPOINT, current)


def build(services) -> HiresInputs:
    """The accordion (inside the txt2img settings column)."""
    c = {}
    # the Enable checkbox in the header (input_accordion), A1111's elem_ids
    with InputAccordion("Hires. fix", elem_id="txt2img_hr", checkbox_elem_id="txt2img_enable_hr",
                        checkbox_label="Enable: generate small, upscale, then refine at the larger size") as section:
        c["accordion"], c["enable_hr"] = section.accordion, section.checkbox
        c["final_resolution"] = gr.HTML(resolution_text(False, 512, 512, 2.0, 0, 0), elem_id="txtimg_hr_finalres")
        with gr.Row():
            c["hr_upscaler"] = gr.Dropdown(upscaler_choices(services), value=DEFAULT_UPSCALER, label="Upscaler",
                                           elem_id="txt2img_hr_upscaler", scale=3)
            c["refresh"] = gr.Button("🔄", elem_id="txt2img_hr_refresh", elem_classes="tool-button", scale=0,
                                     min_width=40)
            c["hr_second_pass_steps"] = gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                                  elem_id="txt2img_hires_steps", scale=3)
            c["denoising_strength"] = gr.Slider(0.0, 1.0, value=UI_DENOISING, step=0.01, label="Denoising strength",
                                                elem_id="txt2img_denoising_strength", scale=3)
        with gr.Row():
            c["hr_scale"] = gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by", elem_id="txt2img_hr_scale")
            c["hr_resize_x"] = gr.Slider(0, MAX_SIDE, value=0, step=8, label="Resize width to",
                                         elem_id="txt2img_hr_resize_x")
            c["hr_resize_y"] = gr.Slider(0, MAX_SIDE, value=0, step=8, label="Resize height to",
                                         elem_id="txt2img_hr_resize_y")
        with gr.Row():
            c["hr_checkpoint_name"] = gr.Dropdown(checkpoint_choices(services), value=SAME_CHECKPOINT,
                                                  label="Hires checkpoint", elem_id="hr_checkpoint")
            c["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *(s.name for s in SAMPLER_NAMES)], value=SAME_SAMPLER,
                                               label="Hires sampling method", elem_id="hr_sampler")
            c["hr_scheduler"] = gr.Dropdown([SAME_SCHEDULER, *SCHEDULE_NAMES], value=SAME_SCHEDULER,
                                            label="Hires schedule type", elem_id="hr_scheduler")
        with gr.Row():
            c["hr_prompt"] = gr.Textbox(label="Hires prompt", elem_id="hires_prompt", lines=2,
                                        placeholder="Prompt for the hires pass (empty: the same prompt)")
            c["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt", elem_id="hires_neg_prompt", lines=2,
                                                 placeholder="Negative prompt for the hires pass (empty: the same)")
    return HiresInputs(**c)


def resolution_text(enabled, width, height, scale, resize_x, resize_y) -> str:
    """The line under the checkbox: "from 512x512 to 1024x1024" (A1111's rule, see engine/hires.py)."""
    try:
        width, height = int(width) // 8 * 8, int(height) // 8 * 8
        size = target_size(width, height, float(scale), int(resize_x or 0), int(resize_y or 0))
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    state = "" if enabled else " (when enabled)"
    return (f'<span class="hires-resolution">from <b>{width}x{height}</b> to '
            f"<b>{size.width}x{size.height}</b>{html.escape(state)}</span>")


def wire(hires: HiresInputs, width: gr.Slider, height: gr.Slider, services) -> None:
    """The resolution line follows the sizes; 🔄 rescans the upscalers and checkpoints (ticking Enable opens the
    accordion: `input_accordion`)."""
    sizes = [hires.enable_hr, width, height, hires.hr_scale, hires.hr_resize_x, hires.hr_resize_y]
    for component in sizes:
        component.change(resolution_text, inputs=sizes, outputs=[hires.final_resolution], show_progress="hidden",
                         queue=False, api_visibility="undocumented")

    def refresh(upscaler, checkpoint):
        registry = getattr(services, "upscalers", None)
        if registry is not None:
            registry.refresh()
        services.models.refresh()
        upscalers = upscaler_choices(services)
        return (gr.Dropdown(choices=upscalers, value=upscaler if upscaler in upscalers else DEFAULT_UPSCALER),
                checkpoint_dropdown(services, checkpoint))

    hires.refresh.click(refresh, inputs=[hires.hr_upscaler, hires.hr_checkpoint_name],
                        outputs=[hires.hr_upscaler, hires.hr_checkpoint_name], show_progress="hidden",
                        api_visibility="undocumented")


def apply_hires(request: GenerationRequest, values: dict | None) -> GenerationRequest:
    """Fill the request's hires fields from the accordion's values (named as HIRES_FIELDS); off when not enabled."""
    values = values or {}
    request.enable_hr = bool(values.get("enable_hr"))
    if not request.enable_hr:
        return request
    for name in HIRES_FIELDS[1:]:
        if values.get(name) is not None:
            setattr(request, name, values[name])
    for name in ("hr_second_pass_steps", "hr_resize_x", "hr_resize_y"):
        request_value = getattr(request, name)
        if isinstance(request_value, float) and request_value.is_integer():  # sliders give floats
            setattr(request, name, int(request_value))
    return request


def paste_values(services, params: dict) -> tuple:
    """Values for HIRES_FIELDS from parsed infotext (A1111's paste rules): hires is on when the infotext has a
    denoising strength and a `Hires upscale`, `Hires resize` or `Hires upscaler`; missing keys reset the controls
    to their defaults ("Use same …", empty prompts, scale 2, no resize, 0 steps). Without hires keys, hires is
    switched off and the rest left as it is."""
    enabled = "Denoising strength" in params and any(key in params for key in (
        "Hires upscale", "Hires resize-1", "Hires resize", "Hires upscaler"))
    if not enabled:
        return (False,) + (gr.skip(),) * (len(HIRES_FIELDS) - 1)
    upscaler = str(params.get("Hires upscaler") or DEFAULT_UPSCALER)
    known = upscaler_choices(services)
    upscaler = next((name for name in known if name.lower() == upscaler.lower()), upscaler)
    return (
        True,
        upscaler,
        _whole(params.get("Hires steps"), 0, 150, 0),
        _float(params.get("Denoising strength"), 0.0, 1.0, UI_DENOISING),
        _float(params.get("Hires upscale"), 1.0, 4.0, 2.0),
        _whole(params.get("Hires resize-1"), 0, MAX_SIDE, 0),
        _whole(params.get("Hires resize-2"), 0, MAX_SIDE, 0),
        _checkpoint(services, params.get("Hires checkpoint")),
        _choice(params.get("Hires sampler"), [s.name for s in SAMPLER_NAMES], SAME_SAMPLER),
        _choice(params.get("Hires schedule type"), list(SCHEDULE_NAMES), SAME_SCHEDULER),
        str(params.get("Hires prompt") or ""),
        str(params.get("Hires negative prompt") or ""),
    )


def _whole(value, low: int, high: int, default: int) -> int:
    try:
        return max(low, min(high, int(float(value))))
    except (TypeError, ValueError):
        return default


def _float(value, low: float, high: float, default: float) -> float:
    try:
        return max(low, min(high, float(value)))
    except (TypeError, ValueError):
        return default


def _choice(value, choices: list[str], same: str) -> str:
    text = str(value or "").strip().lower()
    return next((choice for choice in choices if choice.lower() == text), same)


def _checkpoint(services, value) -> str:
    """A1111 writes `name [hash]` (the file stem): the listed title of that checkpoint, or "Use same checkpoint"
    when it is not here."""
    if not value or str(value).strip() == SAME_CHECKPOINT:
        return SAME_CHECKPOINT
    text = str(value).strip()
    for query in (text, _HASH_SUFFIX.sub("", text)):
        try:
            return services.models.resolve(query).title
        except (KeyError, ValueError, AttributeError):
            continue
    notices.warn(f"Hires checkpoint {text} is not here: the hires pass will use the same checkpoint")
    return SAME_CHECKPOINT
