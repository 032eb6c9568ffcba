"""SD upscale's controls (A1111's labels, defaults and elem_ids `script_sd_upscale_*`, an img2img-only script); the
upscaler radio sends its index, as A1111's."""
from __future__ import annotations

import gradio as gr

from ...engine.scripts.sd_upscale import MAX_OVERLAP, MAX_SCALE, MIN_SCALE, upscaler_names

NOTE = ('<p style="margin-bottom:0.75em">Will upscale the image by the selected scale factor; use width and height '
        'sliders to set tile size</p>')


def build(mode: str, services=None) -> list:
    names = upscaler_names(getattr(services, "upscalers", None))
    info = gr.HTML(NOTE)
    overlap = gr.Slider(minimum=0, maximum=MAX_OVERLAP, step=16, label="Tile overlap", value=64,
                        elem_id="script_sd_upscale_overlap")
    scale = gr.Slider(minimum=MIN_SCALE, maximum=MAX_SCALE, step=0.05, label="Scale Factor", value=2.0,
                      elem_id="script_sd_upscale_scale_factor")
    upscaler = gr.Radio(label="Upscaler", choices=names, value=names[0], type="index",
                        elem_id="script_sd_upscale_upscaler_index")
    return [info, overlap, upscaler, scale]
