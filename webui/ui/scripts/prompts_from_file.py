"""Prompts from file or textbox's controls (A1111's labels, defaults and elem_ids
`script_{tab}_prompts_from_file_or_textbox_*`). Uploading a text file puts its lines into the textbox (the textbox is
what runs, as in A1111, so an uploaded list can be edited first)."""
from __future__ import annotations

import gradio as gr

from ...engine.scripts.prompts_from_file import POSITIONS


def file_text(data) -> str:
    """An uploaded file's lines (UTF-8; undecodable bytes dropped, as A1111), each stripped."""
    if isinstance(data, str):  # a path, where Gradio hands one over
        with open(data, "rb") as handle:
            data = handle.read()
    return "\n".join(line.strip() for line in bytes(data).decode("utf8", errors="ignore").split("\n"))


def load_file(data):
    """(file box emptied, textbox filled) for an upload; nothing changes when the box was cleared."""
    if data is None:
        return None, gr.skip()
    return None, gr.Textbox(value=file_text(data), lines=7)


def build(mode: str, services=None) -> list:
    prefix = f"script_{mode}_prompts_from_file_or_textbox"
    iterate = gr.Checkbox(label="Iterate seed every line", value=False, elem_id=f"{prefix}_checkbox_iterate")
    same_seed = gr.Checkbox(label="Use same random seed for all lines", value=False,
                            elem_id=f"{prefix}_checkbox_iterate_batch")
    position = gr.Radio(list(POSITIONS), label="Insert prompts at the", value="start",
                        elem_id=f"{prefix}_prompt_position")
    text = gr.Textbox(label="List of prompt inputs", lines=1, elem_id=f"{prefix}_prompt_txt")
    upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=f"{prefix}_file")
    upload.change(fn=load_file, inputs=[upload], outputs=[upload, text], show_progress="hidden",
                  api_visibility="undocumented")
    text.change(lambda value: gr.Textbox(lines=7 if "\n" in (value or "") else 2), inputs=[text], outputs=[text],
                show_progress="hidden", queue=False, api_visibility="undocumented")
    return [iterate, same_seed, position, text]
