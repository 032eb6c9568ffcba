"""Loopback's controls (A1111's labels and defaults; elem_ids `script_loopback_*`, an img2img-only script). The
interrogation dropdown offers only "None": this server has no CLIP / DeepBooru interrogator."""
from __future__ import annotations

import gradio as gr

from ...engine.scripts.loopback import CURVES, INTERROGATORS, MAX_LOOPS


def build(mode: str, services=None) -> list:
    loops = gr.Slider(minimum=1, maximum=MAX_LOOPS, step=1, label="Loops", value=4, elem_id="script_loopback_loops")
    final = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength", value=0.5,
                      elem_id="script_loopback_final_denoising_strength")
    curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear")
    interrogation = gr.Dropdown(label="Append interrogated prompt at each iteration", choices=list(INTERROGATORS),
                                value="None", info="CLIP and DeepBooru interrogators are not available here")
    return [loops, final, curve, interrogation]
