"""The "Restored last used values" note of a generation tab: shown when a newly opened page started from the values
the tab's Generate last sent (`ui_config.wire_last_used`), naming the features that restore switched on ("Hires.
fix, Outpainting on"), with Undo (the tab's restored inputs back to their ui-config defaults) and ✕ (dismiss).

A1111 has no such note; its elem_ids follow the tab's: `{tab}_restored_note`, `{tab}_restored_undo`,
`{tab}_restored_dismiss`.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

TITLE = "Restored last used values"


@dataclass
class RestoredNote:
    row: gr.Row
    text: gr.HTML
    undo: gr.Button
    dismiss: gr.Button
    keys: gr.State  # the ui-config keys the restore changed (what Undo puts back)

    def outputs(self) -> list:
        """What the page's load event and Undo / ✕ set: the row (shown or not), its text, the restored keys."""
        return [self.row, self.text, self.keys]


def build(tab: str) -> RestoredNote:
    """The note, hidden (inside the current layout)."""
    with gr.Row(visible=False, elem_id=f"{tab}_restored_note", elem_classes="restored-note",
                equal_height=True) as row:
        text = gr.HTML("", elem_id=f"{tab}_restored_note_text", elem_classes="restored-note-text", padding=False)
        undo = gr.Button("Undo", elem_id=f"{tab}_restored_undo", size="sm", scale=0, min_width=60)
        dismiss = gr.Button("✕", elem_id=f"{tab}_restored_dismiss", size="sm", scale=0, min_width=36)
    keys = gr.State([])
    return RestoredNote(row, text, undo, dismiss, keys)


def note_text(features: list[str]) -> str:
    """The note's HTML: the title, and the features switched on ("Hires. fix, Outpainting on")."""
    text = f"<b>{html.escape(TITLE)}</b>"
    if features:
        text += f": {html.escape(', '.join(features))} on"
    return f'<span title="the values this tab\'s Generate last used; Undo puts back the defaults">{text}</span>'


def shown(features: list[str], keys: list[str]) -> tuple:
    """Updates for `RestoredNote.outputs()` after a restore that changed `keys` (hidden when it changed none)."""
    if not keys:
        return gr.Row(visible=False), "", []
    return gr.Row(visible=True), note_text(features), list(keys)


def hidden() -> tuple:
    return gr.Row(visible=False), "", []
