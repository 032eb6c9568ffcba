"""The "Refiner" accordion of txt2img and img2img (A1111 1.6+'s controls and elem_ids), its values for the request,
and what pasting an infotext with `Refiner` keys sets in it.

A1111 builds it as a built-in script titled "Refiner", so its elem_ids are the script's: `script_txt2img_refiner_enable`
(the accordion; its checkbox `..._enable-checkbox`), `..._checkpoint` (with `..._checkpoint_refresh`) and
`..._switch_at`. The checkpoint list is the model manager's (refreshed by 🔄); "" is no refiner.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..core.request import GenerationRequest
from ..outputs.infotext import parse_infotext
from . import checkpoints, notices
from .input_accordion import InputAccordion

# The accordion's values `generation.build_request` takes, in this order (names of RefinerInputs fields).
REFINER_FIELDS = ("enable_refiner", "refiner_checkpoint", "refiner_switch_at")
NO_CHECKPOINT = ""  # A1111's first choice: no refiner
DEFAULT_SWITCH_AT = 0.8


@dataclass
class RefinerInputs:
    accordion: gr.Accordion
    enable_refiner: gr.Checkbox
    refiner_checkpoint: gr.Dropdown
    refresh: gr.Button
    refiner_switch_at: gr.Slider

    def components(self, names=REFINER_FIELDS) -> list:
        return [getattr(self, name) for name in names]


def elem_id(mode: str, item: str) -> str:
    """A1111's `Script.elem_id` for its Refiner script: `script_<tab>_refiner_<item>`."""
    return f"script_{mode}_refiner_{item}"


def checkpoint_choices(services) -> list[str]:
    return checkpoints.choices_after(services, NO_CHECKPOINT)


def checkpoint_dropdown(services, current: str | None) -> gr.Dropdown:
    """The list as the model manager has it now (no rescan), the choice kept while it is listed."""
    return checkpoints.dropdown_after(services, NO_CHECKPOINT, current)


def build(mode: str, services) -> RefinerInputs:
    """The accordion (inside the tab's settings column): closed and off, as A1111's."""
    accordion_id = elem_id(mode, "enable")
    # the checkbox in the header (input_accordion): A1111's `{accordion}-checkbox`
    with InputAccordion("Refiner", elem_id=accordion_id, checkbox_label="Refiner") as section:
        accordion, enable = section.accordion, section.checkbox
        with gr.Row():
            checkpoint = gr.Dropdown(checkpoint_choices(services), value=NO_CHECKPOINT, label="Checkpoint",
                                     elem_id=elem_id(mode, "checkpoint"), scale=3,
                                     info="switch to another model in the middle of generation")
            refresh = gr.Button("🔄", elem_id=elem_id(mode, "checkpoint_refresh"), elem_classes="tool-button",
                                scale=0, min_width=40)
            switch_at = gr.Slider(0.01, 1.0, value=DEFAULT_SWITCH_AT, step=0.01, label="Switch at",
                                  elem_id=elem_id(mode, "switch_at"), scale=3,
                                  info="fraction of sampling steps when the switch to refiner model should happen; "
                                       "1=never, 0.5=switch in the middle of generation")
    return RefinerInputs(accordion, enable, checkpoint, refresh, switch_at)


def wire(refiner: RefinerInputs, services) -> None:
    """🔄 rescans the checkpoints (the choice stays when it is still there); ticking the checkbox opens the
    accordion (`input_accordion`)."""

    def refresh(current):
        services.models.refresh()
        return checkpoint_dropdown(services, current)

    refiner.refresh.click(refresh, inputs=[refiner.refiner_checkpoint], outputs=[refiner.refiner_checkpoint],
                          show_progress="hidden", api_visibility="undocumented")


def apply_refiner(request: GenerationRequest, values: dict | None) -> GenerationRequest:
    """The request's refiner fields from the accordion's values (named as REFINER_FIELDS): as A1111's script, no
    refiner unless it is enabled and a checkpoint is chosen."""
    values = values or {}
    checkpoint = values.get("refiner_checkpoint")
    if not values.get("enable_refiner") or checkpoint in (None, NO_CHECKPOINT, "None"):
        request.refiner_checkpoint = None
        return request
    request.refiner_checkpoint = str(checkpoint)
    switch_at = values.get("refiner_switch_at")
    request.refiner_switch_at = DEFAULT_SWITCH_AT if switch_at is None else switch_at
    return request


def paste_values(services, params: dict) -> tuple:
    """Values for REFINER_FIELDS from parsed infotext (A1111's paste fields): on when it has `Refiner`, the
    checkpoint as this server lists it (a notice, and the choice left as it is, when it is not here), the switch
    point from `Refiner switch at`. Without `Refiner` the accordion is switched off and the rest left as it is."""
    if "Refiner" not in params:
        return False, gr.skip(), gr.skip()
    text = str(params.get("Refiner") or "").strip()
    try:
        checkpoint = services.models.resolve(text).title  # A1111 writes `name [hash]`: the stem, then the title
    except (KeyError, ValueError, AttributeError):
        notices.warn(f"Refiner checkpoint {text} is not here: choose the refiner in the Refiner accordion")
        checkpoint = gr.skip()
    try:
        switch_at = min(1.0, max(0.01, float(params.get("Refiner switch at"))))
    except (TypeError, ValueError):
        switch_at = gr.skip()
    return True, checkpoint, switch_at


def pasted(services, text: str) -> tuple:
    """`paste_values` for an infotext sent to the tab (PNG Info, History, the galleries' Send buttons); nothing
    changes when there is no text."""
    if not (text or "").strip():
        return (gr.skip(),) * len(REFINER_FIELDS)
    return paste_values(services, parse_infotext(text))
