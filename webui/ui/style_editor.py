"""The 🖌️ style editor of the txt2img / img2img tabs (A1111 1.10's styles dialog, its elem_ids): pick a style
(or type a new name), edit its prompt and negative prompt, Save (written to `styles.csv`), Delete (after the
browser's confirmation), 📝 copy the tab's prompts into it, 📋 write the chosen styles into the tab's prompts,
🔄 re-read the file. After a change every styles picker and editor of both tabs gets the new list.

Handlers are module-level functions of `services` and plain values (tests drive them directly); `wire_editors`
connects the editors of all tabs so each change refreshes them all.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import notices, styles

EDIT_SYMBOL = "🖌️"
INFO = ("Styles add text to the prompt. Where a style has the {prompt} token, the user's prompt goes there when "
        "the style is applied; otherwise the style's text is added to the end of the prompt.")


@dataclass
class StyleEditor:
    tab: str
    button: gr.Button  # 🖌️ in the tab's tools row
    dialog: gr.Column
    selection: gr.Dropdown
    refresh: gr.Button
    copy: gr.Button
    apply: gr.Button
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    save: gr.Button
    delete: gr.Button
    close: gr.Button
    opened: gr.State


def build_button(tab: str) -> gr.Button:
    """🖌️, laid out where it is called (beside 📋)."""
    return gr.Button(EDIT_SYMBOL, elem_id=f"{tab}_styles_edit_button", elem_classes="tool-button", scale=0,
                     min_width=40)


def build_dialog(tab: str, button: gr.Button) -> StyleEditor:
    """The (closed) editor, laid out where it is called (under the tools rows)."""
    c = {}
    with gr.Column(visible=False, elem_id=f"{tab}_styles_dialog", elem_classes="styles-dialog",
                   variant="panel") as c["dialog"]:
        with gr.Row(elem_classes="styles-dialog-row"):
            c["selection"] = gr.Dropdown([], value="", label="Styles", elem_id=f"{tab}_styles_edit_select",
                                         allow_custom_value=True, info=INFO, scale=1)
            c["refresh"] = gr.Button("🔄", elem_id=f"refresh_{tab}_styles", elem_classes="tool-button", scale=0,
                                     min_width=40)
            c["copy"] = gr.Button("📝", elem_id=f"{tab}_style_copy", elem_classes="tool-button", scale=0,
                                  min_width=40)
            c["apply"] = gr.Button("📋", elem_id=f"{tab}_style_apply_dialog", elem_classes="tool-button", scale=0,
                                   min_width=40)
        c["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tab}_edit_style_prompt")
        c["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=3, elem_id=f"{tab}_edit_style_neg_prompt")
        with gr.Row(elem_classes="styles-dialog-buttons"):
            c["save"] = gr.Button("Save", variant="primary", elem_id=f"{tab}_edit_style_save", visible=False,
                                  size="sm")
            c["delete"] = gr.Button("Delete", variant="stop", elem_id=f"{tab}_edit_style_delete", visible=False,
                                    size="sm")
            c["close"] = gr.Button("Close", elem_id=f"{tab}_edit_style_close", size="sm")
    c["opened"] = gr.State(False)
    return StyleEditor(tab=tab, button=button, **c)


# --- handlers ----------------------------------------------------------------------------------------------------

def _buttons(services, name: str) -> tuple:
    """(Save, Delete): Save once there is a name, Delete for a style that exists."""
    name = (name or "").strip()
    return gr.Button(visible=bool(name)), gr.Button(visible=bool(name) and name in styles.style_names(services))


def toggle_editor(services, opened: bool, chosen: list[str] | None) -> tuple:
    """🖌️: (opened, dialog, selection, prompt, negative prompt, Save, Delete). Opening reads the styles anew and
    starts on the first style chosen in the tab's picker (empty when none is)."""
    if opened:
        return (False, gr.Column(visible=False), *(gr.skip(),) * 5)
    names = styles.style_names(services)
    if services.styles.error:
        notices.warn(services.styles.error)
    first = next((name for name in chosen or [] if name in names), "")
    prompt, negative = gr.skip(), gr.skip()
    if first:
        style = services.styles.get(first)
        prompt, negative = style.prompt, style.negative_prompt
    return (True, gr.Column(visible=True), gr.Dropdown(choices=names, value=first, allow_custom_value=True),
            prompt, negative,
            *_buttons(services, first))


def close_editor() -> tuple:
    return False, gr.Column(visible=False)


def select_style(services, name: str | None) -> tuple:
    """A style picked (or a name typed) in the editor: (prompt, negative prompt, Save, Delete); a new name keeps
    what the boxes hold, so the prompts copied in become the new style."""
    name = (name or "").strip()
    prompt, negative = gr.skip(), gr.skip()
    if name in styles.style_names(services):
        style = services.styles.get(name)
        prompt, negative = style.prompt, style.negative_prompt
    return (prompt, negative, *_buttons(services, name))


def save_style(services, name: str | None, prompt: str, negative_prompt: str) -> tuple:
    """Save: write the style (a new one, or replace the one of that name) to styles.csv. Returns (Save, Delete)."""
    name = (name or "").strip()
    try:
        existed = name in styles.style_names(services)
        services.styles.save(name, prompt or "", negative_prompt or "")
    except Exception as exc:  # noqa: BLE001 - no name, or the file cannot be written
        notices.report(exc)
        return gr.skip(), gr.skip()
    notices.info(f"Style '{name}' {'updated' if existed else 'saved'}")
    return _buttons(services, name)


def delete_style(services, name: str | None) -> tuple:
    """Delete (`name` is "" when the user did not confirm): (selection, prompt, negative prompt, Save, Delete)."""
    name = (name or "").strip()
    if not name:
        return (gr.skip(),) * 5
    try:
        services.styles.delete(name)
    except Exception as exc:  # noqa: BLE001 - deleted meanwhile, or the file cannot be written
        notices.report(exc)
        return (gr.skip(),) * 5
    notices.info(f"Style '{name}' deleted")
    return "", "", "", gr.Button(visible=False), gr.Button(visible=False)


def refreshed(services, picked: list) -> list:
    """New choices for the tabs' pickers (`picked`: their current values; a style no longer there is unticked,
    so Generate does not send an unknown style) followed by the same for the editors' selections."""
    names = styles.style_names(services)
    pickers = [gr.Dropdown(choices=names, value=[name for name in value or [] if name in names], multiselect=True)
               for value in picked]
    return pickers + [gr.Dropdown(choices=names, allow_custom_value=True) for _ in picked]


# --- wiring --------------------------------------------------------------------------------------------------------

def wire_editors(editors: list[StyleEditor], tabs: list, services) -> None:
    """Each tab's editor (`tabs[i]` holds `prompt`, `negative_prompt`, `styles` of the editor `editors[i]`)."""
    pickers = [tab.styles for tab in tabs]
    for editor, tab in zip(editors, tabs):
        others = [other.selection for other in editors if other is not editor]
        everything = pickers + [editor.selection] + others

        def refresh_all(*picked):
            return refreshed(services, list(picked))

        def toggle(opened, chosen):
            return toggle_editor(services, opened, chosen)

        def select(name):
            return select_style(services, name)

        def save(name, prompt, negative_prompt):
            return save_style(services, name, prompt, negative_prompt)

        def delete(name):
            return delete_style(services, name)

        def apply(prompt, negative_prompt, chosen):
            result = styles.apply_styles(services, prompt, negative_prompt, chosen)
            if result == (gr.skip(),) * 3:  # nothing chosen (a notice says so): the editor stays open
                return (*result, gr.skip(), gr.skip())
            return (*result, False, gr.Column(visible=False))

        quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
        editor.button.click(toggle, inputs=[editor.opened, tab.styles],
                            outputs=[editor.opened, editor.dialog, editor.selection, editor.prompt,
                                     editor.negative_prompt, editor.save, editor.delete], **quiet)
        editor.close.click(close_editor, outputs=[editor.opened, editor.dialog], queue=False, **quiet)
        editor.selection.change(select, inputs=[editor.selection],
                                outputs=[editor.prompt, editor.negative_prompt, editor.save, editor.delete], **quiet)
        editor.copy.click(lambda prompt, negative: (prompt, negative), inputs=[tab.prompt, tab.negative_prompt],
                          outputs=[editor.prompt, editor.negative_prompt], queue=False, **quiet)
        editor.apply.click(apply, inputs=[tab.prompt, tab.negative_prompt, tab.styles],
                           outputs=[tab.prompt, tab.negative_prompt, tab.styles, editor.opened, editor.dialog],
                           **quiet)
        editor.save.click(save, inputs=[editor.selection, editor.prompt, editor.negative_prompt],
                          outputs=[editor.save, editor.delete], **quiet).then(
            refresh_all, inputs=pickers, outputs=everything, **quiet)
        confirm = "(name) => [name && confirm(`Delete style ${name}?`) ? name : '']"
        editor.delete.click(delete, inputs=[editor.selection],
                            outputs=[editor.selection, editor.prompt, editor.negative_prompt, editor.save,
                                     editor.delete], js=confirm, **quiet).then(
            refresh_all, inputs=pickers, outputs=everything, **quiet)
        editor.refresh.click(refresh_all, inputs=pickers, outputs=everything, **quiet)
