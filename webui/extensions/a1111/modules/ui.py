"""A1111's `modules.ui`: the names extensions import from it.

`txt2img_paste_fields` / `img2img_paste_fields` are A1111's `(component, infotext key)` lists of the tabs'
controls; they are filled once the page's txt2img and img2img tabs are built (empty before, e.g. while
`on_ui_tabs` callbacks run, which this web UI calls before building its own tabs). Names of A1111's page
internals that this web UI does not have (such as `ui_system_tabs`) are not defined, so `from modules.ui import
...` of them raises ImportError, which extensions test for.
"""
from __future__ import annotations

import gradio as gr

from .ui_common import create_output_panel, create_refresh_button, plaintext_to_html, save_files  # noqa: F401
from .ui_components import ToolButton  # noqa: F401

refresh_symbol = "\U0001f504"  # 🔄
save_style_symbol = "\U0001f4be"  # 💾
apply_style_symbol = "\U0001f4cb"  # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001F3B4"  # 🎴
switch_values_symbol = "\U000021C5"  # ⇅
restore_progress_symbol = "\U0001F300"  # 🌀
detect_image_size_symbol = "\U0001F4D0"  # 📐
folder_symbol = "\U0001f4c2"  # 📂

txt2img_paste_fields: list = []
img2img_paste_fields: list = []


def gr_show(visible=True):
    """A Gradio update that shows (or hides) a component."""
    return gr.update(visible=visible)


def gr_show_value_none(visible=True):
    return gr.update(visible=visible, value=None)


def send_gradio_gallery_to_image(x):
    """The first picture of a gallery's value (None when it is empty)."""
    from .infotext_utils import image_from_url_text
    return image_from_url_text(x) if x else None
