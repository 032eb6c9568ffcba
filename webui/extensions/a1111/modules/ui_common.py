"""A1111's `modules.ui_common`: helpers extensions use in their tabs (`plaintext_to_html`, `save_files`,
`create_refresh_button`, `update_generation_info`, `setup_dialog`, `create_output_panel`)."""
from __future__ import annotations

import dataclasses
import html
import json
import os

import gradio as gr

from . import images as _images
from . import infotext_utils as parameters_copypaste
from .infotext_utils import image_from_url_text
from .ui_components import ToolButton

folder_symbol = "\U0001f4c2"  # 📂
refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text, classname=None) -> str:
    """`text` escaped, its lines joined by <br>, in a <p> (with `classname` as its class)."""
    content = "<br>\n".join(html.escape(line) for line in str(text).split("\n"))
    return f"<p class='{html.escape(classname, quote=True)}'>{content}</p>" if classname else f"<p>{content}</p>"


def update_generation_info(generation_info, html_info, img_index):
    """The infotext of picture `img_index` of a results' JSON, as HTML (the old HTML when it cannot be read)."""
    try:
        texts = json.loads(generation_info)["infotexts"]
        if 0 <= int(img_index) < len(texts):
            return plaintext_to_html(texts[int(img_index)]), gr.update()
    except (ValueError, KeyError, TypeError):
        pass
    return html_info, gr.update()


def save_files(js_data, images, do_make_zip, index):
    """Save pictures (each as `image_from_url_text` reads it) with their infotexts into the `outdir_save` folder
    (outputs/save when it is empty: A1111's "Save" button); returns (the files' update, an HTML "Saved: ..." note)."""
    from .shared import opts
    data = json.loads(js_data) if isinstance(js_data, str) else dict(js_data or {})
    infotexts = list(data.get("infotexts") or [])
    first = int(data.get("index_of_first_image", 0) or 0)
    folder = str(getattr(opts, "outdir_save", "") or "")
    if not folder:  # the setting left empty: outputs/save, as the web UI's own Save button
        from webui.extensions.a1111.runtime import RUNTIME
        from webui.outputs.save_log import save_dir
        folder = str(save_dir({}, RUNTIME.require().paths.outputs))
    start = 0
    if index is not None and int(index) > -1 and getattr(opts, "save_selected_only", True) and int(index) >= first:
        images, start = [images[int(index)]], int(index)
    os.makedirs(folder, exist_ok=True)
    extension = str(getattr(opts, "samples_format", "png") or "png")
    saved = []
    for number, filedata in enumerate(images, start):
        image = image_from_url_text(filedata)
        if image is None:
            continue
        info = infotexts[number] if number < len(infotexts) else None
        fullfn, _ = _images.save_image(image, folder, "", extension=extension, info=info,
                                       save_to_dirs=bool(getattr(opts, "use_save_to_dirs_for_ui", False)))
        saved.append(fullfn)
    if not saved:
        return gr.update(), plaintext_to_html("Nothing saved: no picture")
    if do_make_zip:
        import zipfile
        zip_path = os.path.join(folder, f"{os.path.splitext(os.path.basename(saved[0]))[0]}.zip")
        with zipfile.ZipFile(zip_path, "w") as archive:
            for path in saved:
                archive.write(path, os.path.relpath(path, folder))
        saved.insert(0, zip_path)
    return gr.update(value=saved, visible=True), plaintext_to_html(f"Saved: {os.path.relpath(saved[-1], folder)}")


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    """A 🔄 button: calls `refresh_method()`, then sets `refreshed_args` (a dict, or a function returning one) on
    the component(s) and on the page."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        for key, value in (args or {}).items():
            for component in components:
                setattr(component, key, value)
        updates = [gr.update(**(args or {})) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id)
    button.click(fn=refresh, inputs=[], outputs=components, show_progress="hidden")
    return button


def setup_dialog(button_show, dialog, *, button_close=None):
    """`dialog` hidden until `button_show` is pressed; `button_close` hides it again."""
    dialog.visible = False
    button_show.click(fn=lambda: gr.update(visible=True), inputs=[], outputs=[dialog])
    if button_close:
        button_close.click(fn=lambda: gr.update(visible=False), inputs=[], outputs=[dialog])


@dataclasses.dataclass
class OutputPanel:
    gallery: object = None
    generation_info: object = None
    infotext: object = None
    html_log: object = None
    button_upscale: object = None


def create_output_panel(tabname, outdir, toprow=None):
    """A results panel for an extension's own tab: a gallery, its infotext and "Send to" buttons (img2img,
    inpaint, extras) that send its first picture (A1111's element ids, `{tabname}_gallery`, ...)."""
    panel = OutputPanel()
    with gr.Column(elem_id=f"{tabname}_results"):
        with gr.Group(elem_id=f"{tabname}_gallery_container"):
            panel.gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                                       preview=True)
        with gr.Row(elem_id=f"image_buttons_{tabname}", elem_classes="image-buttons"):
            buttons = {"img2img": ToolButton("🖼️", elem_id=f"{tabname}_send_to_img2img"),
                       "inpaint": ToolButton("🎨️", elem_id=f"{tabname}_send_to_inpaint"),
                       "extras": ToolButton("📐", elem_id=f"{tabname}_send_to_extras")}
        panel.generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
        panel.infotext = gr.HTML(elem_id=f"html_info_{tabname}", elem_classes="infotext")
        panel.html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes="html-log")
    for target, button in buttons.items():
        parameters_copypaste.register_paste_params_button(parameters_copypaste.ParamBinding(
            paste_button=button, tabname=target, source_image_component=panel.gallery))
    return panel
