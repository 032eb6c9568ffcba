"""Forge's "UI preset", done for the user: when the chosen checkpoint belongs to another model family than the
previous one (SD1.x to FLUX.1, FLUX.1 to SDXL, ...), txt2img's and img2img's steps, CFG scale, Distilled CFG
Scale, size, sampler and schedule type switch to that family's usual values (`webui.models.families`). Switching
between checkpoints of one family keeps whatever the user set."""
from __future__ import annotations

import gradio as gr

from ..models.families import FAMILIES

FIELDS = ("steps", "cfg_scale", "distilled_cfg_scale", "width", "height", "sampler", "scheduler")


def current_family(services) -> str | None:
    current = services.models.current
    return current[1].family if current is not None else None


def values_for(family: str) -> tuple:
    """The FIELDS' values for a family."""
    defaults = FAMILIES[family].defaults
    distilled = defaults.distilled_cfg_scale if defaults.distilled_cfg_scale is not None else gr.skip()
    return (defaults.steps, defaults.cfg_scale, distilled, defaults.width, defaults.height, defaults.sampler,
            defaults.scheduler)


def on_checkpoint_changed(services, previous: str | None, tabs: int) -> tuple:
    """(the family now, then each tab's FIELDS values, or gr.skip() for all when the family did not change)."""
    family = current_family(services)
    if family is None or previous is None or family == previous or family not in FAMILIES:
        return (family or previous, *([gr.skip()] * len(FIELDS) * tabs))
    return (family, *(values_for(family) * tabs))


def wire(services, dropdown: gr.Dropdown, tabs: list) -> None:
    """After the checkpoint picker's value changes (a switch finished), the tabs follow the family."""
    state = gr.State(current_family(services))
    outputs = [state, *(getattr(tab, name) for tab in tabs for name in FIELDS)]
    dropdown.change(lambda previous: on_checkpoint_changed(services, previous, len(tabs)), inputs=[state],
                    outputs=outputs, show_progress="hidden", api_visibility="undocumented")
