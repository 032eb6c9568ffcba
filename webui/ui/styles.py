"""Prompt styles in the txt2img / img2img tabs: the style picker, 📋 (write the chosen styles into the prompt
boxes); creating, editing and deleting styles is the 🖌️ editor's (`style_editor.py`). The styles live in
`styles.csv` (see `prompts.styles`)."""
from __future__ import annotations

import gradio as gr

from . import notices


def style_names(services) -> list[str]:
    return services.styles.names()


def styles_dropdown(services) -> gr.Dropdown:
    """The picker with the current list of styles (what is chosen stays chosen)."""
    if services.styles.error:
        notices.warn(services.styles.error)
    return gr.Dropdown(choices=style_names(services))


def apply_styles(services, prompt: str, negative_prompt: str, names: list[str] | None) -> tuple:
    """📋: (prompt, negative prompt, picker): the chosen styles written into the prompts and the choice cleared,
    so they are not applied a second time when generating."""
    names = list(names or [])
    if not names:
        notices.warn("Choose one or more styles to apply")
        return gr.skip(), gr.skip(), gr.skip()
    try:
        prompt, negative_prompt = services.styles.apply(prompt or "", negative_prompt or "", names)
    except Exception as exc:  # noqa: BLE001 - an unknown style (deleted from the file meanwhile) is a notice
        notices.report(exc)
        return gr.skip(), gr.skip(), gr.skip()
    return prompt, negative_prompt, gr.Dropdown(value=[])
