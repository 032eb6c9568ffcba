"""The notice at the top of the page while there is no checkpoint at all (`no_checkpoint_notice`): it names the
folder to put one into and offers the refresh, so a new user learns it before pressing Generate. A refresh (its own
button, or 🔄 beside the checkpoint picker) or a page load that finds a checkpoint hides it."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from . import checkpoints


@dataclass
class CheckpointNotice:
    box: gr.Row
    text: gr.HTML
    refresh: gr.Button


def has_checkpoints(services) -> bool:
    return bool(checkpoints.checkpoint_titles(services))


def folder_shown(services) -> str:
    """The checkpoint folder as the notice names it: its full path, except under --hide-ui-dir-config, where
    server paths stay out of the page (relative to the data folder, else a description)."""
    folder = Path(services.paths.checkpoints)
    if not getattr(services.flags, "hide_ui_dir_config", False):
        return str(folder)
    try:
        return str(folder.relative_to(services.paths.data_dir))
    except ValueError:
        return "the checkpoint folder the server was started with (--ckpt-dir)"


def notice_html(services) -> str:
    folder = html.escape(folder_shown(services))
    return ('<div class="no-checkpoint"><b>No Stable Diffusion checkpoint found.</b> Put a checkpoint '
            f'(<code>.safetensors</code> or <code>.ckpt</code>) into <code>{folder}</code>, then press 🔄 beside '
            'the checkpoint picker (or Refresh here).</div>')


def build(services) -> CheckpointNotice:
    """The notice (inside the current layout, under the quicksettings row): shown now when no checkpoint is listed."""
    with gr.Row(elem_id="no_checkpoint_notice", visible=not has_checkpoints(services),
                elem_classes="no-checkpoint-notice") as box:
        text = gr.HTML(notice_html(services), elem_id="no_checkpoint_notice_text")
        refresh = gr.Button("🔄 Refresh", elem_id="no_checkpoint_refresh", scale=0, min_width=120, size="sm")
    return CheckpointNotice(box, text, refresh)


def update(services) -> tuple:
    """(box, text) as the checkpoint list now is: hidden once a checkpoint is there."""
    return gr.Row(visible=not has_checkpoints(services)), notice_html(services)


def wire(notice: CheckpointNotice, dropdown: gr.Dropdown, picker_refresh, services) -> None:
    """The notice's Refresh rescans like 🔄 and sets the picker; after either, the notice shows or hides
    (`picker_refresh`: the Dependency of 🔄's rescan, so the check runs after it). Any change of the picker's
    value (the page load showing the current checkpoint, a merge) checks again."""
    quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
    outputs = [notice.box, notice.text]
    notice.refresh.click(lambda: checkpoints.refresh_checkpoints(services), outputs=[dropdown], **quiet) \
        .then(lambda: update(services), outputs=outputs, **quiet)
    picker_refresh.then(lambda: update(services), outputs=outputs, **quiet)
    dropdown.change(lambda: update(services), outputs=outputs, **quiet)
