"""Prompt matrix's controls (A1111's labels, defaults and elem_ids `script_{tab}_prompt_matrix_*`)."""
from __future__ import annotations

import gradio as gr

from ...engine.scripts.prompt_matrix import DELIMITERS, MAX_MARGIN, PROMPT_TYPES


def build(mode: str, services=None) -> list:
    prefix = f"script_{mode}_prompt_matrix"
    with gr.Row():
        with gr.Column():
            put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                       elem_id=f"{prefix}_put_at_start")
            different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                          elem_id=f"{prefix}_different_seeds")
        with gr.Column():
            prompt_type = gr.Radio(list(PROMPT_TYPES), label="Select prompt", value="positive",
                                   elem_id=f"{prefix}_prompt_type")
            delimiter = gr.Radio(list(DELIMITERS), label="Select joining char", value="comma",
                                 elem_id=f"{prefix}_variations_delimiter")
        with gr.Column():
            margin = gr.Slider(label="Grid margins (px)", minimum=0, maximum=MAX_MARGIN, value=0, step=2,
                               elem_id=f"{prefix}_margin_size")
    return [put_at_start, different_seeds, prompt_type, delimiter, margin]
