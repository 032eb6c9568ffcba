"""Where A1111's "Send to" buttons (`modules.infotext_utils.register_paste_params_button`, `bind_buttons`) meet the
web UI's tabs: `connect(...)` is called by the page build (`webui.ui.blocks`) once txt2img, img2img and Extras
exist; it records the tabs' paste fields under A1111's names and wires every button extensions registered so that it
does what PNG Info's own Send buttons do: the infotext's prompts and settings into the tab, the picture into
img2img / inpaint / Extras, and the tab shown.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import gradio as gr

# A1111's infotext key of each control `pnginfo.FIELDS` names (what `modules.ui.txt2img_paste_fields` lists).
_INFOTEXT_KEYS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "steps": "Steps", "sampler": "Sampler",
                  "scheduler": "Schedule type", "cfg_scale": "CFG scale", "seed": "Seed", "width": "Size-1",
                  "height": "Size-2", "subseed": "Variation seed", "subseed_strength": "Variation seed strength",
                  "seed_resize_from_w": "Seed resize from-1", "seed_resize_from_h": "Seed resize from-2",
                  "denoising_strength": "Denoising strength", "mask_blur": "Mask blur",
                  "distilled_cfg_scale": "Distilled CFG Scale"}
_COPIED_FROM_TAB = ("Prompt", "Negative prompt", "Steps", "Face restoration")  # A1111's, for source_tabname


@dataclass
class Page:
    tabs: gr.Tabs
    txt2img: Any  # webui.ui.generation_tab.GenerationTab
    img2img: Any
    extras: Any  # webui.ui.extras_tab.ExtrasTab or None
    services: Any


_page: Page | None = None


def current_page() -> Page | None:
    return _page


def connect(tabs, txt2img, img2img, extras, services) -> None:
    """Called inside the page's Blocks once its tabs are built (nothing to do when no extension imported A1111's
    infotext module)."""
    global _page
    _page = Page(tabs, txt2img, img2img, extras, services)
    module = sys.modules.get("modules.infotext_utils")
    if module is None:
        return
    fill_paste_fields(txt2img, img2img)
    module.connect_paste_params_buttons(_page)


def fill_paste_fields(txt2img, img2img) -> None:
    """A1111's `modules.ui.txt2img_paste_fields` / `img2img_paste_fields` from the built tabs, as soon as they are
    built (extensions' `on_ui_tabs` read them); listing them again replaces them."""
    module = sys.modules.get("modules.infotext_utils")
    if module is None:
        return
    from webui.ui import pnginfo
    for tab in (txt2img, img2img):
        fields = [(getattr(tab, name), _INFOTEXT_KEYS[name]) for name in pnginfo.FIELDS if name in _INFOTEXT_KEYS]
        if tab.img2img:
            fields += [(getattr(tab.img2img, name), _INFOTEXT_KEYS[name]) for name in pnginfo.IMG2IMG_FIELDS
                       if name in _INFOTEXT_KEYS]
        module.add_paste_fields(tab.mode, tab.img2img.image if tab.img2img else None, fields,
                                getattr(tab, "override_settings", None))


def _fields(page: Page, mode: str, target: str) -> list:
    from webui.ui import pnginfo
    tab = page.txt2img if mode == "txt2img" else page.img2img
    outputs = [getattr(tab, name) for name in pnginfo.FIELDS]
    if mode == "img2img":
        own = tab.img2img
        outputs += [own.inpaint if target == "inpaint" else own.image, *own.components(pnginfo.IMG2IMG_FIELDS),
                    *own.switch_outputs()]
    return outputs + [page.tabs]


def _sender(page: Page, mode: str, target: str, picture_of):
    """(infotext, sampler, scheduler[, picture]) -> the tab's values, as PNG Info's Send; a picture without
    infotext is still sent (as A1111 does)."""
    from webui.ui import img2img_inputs, pnginfo
    host = getattr(page.services, "extension_host", None)

    def pasted(text: str, params: dict) -> None:
        host.callbacks.call("infotext_pasted", text, params)

    def send(text, sampler, scheduler, picture=None):
        image = picture_of(picture) if mode == "img2img" else None
        if mode == "img2img" and image is not None and not (text or "").strip():
            return ((gr.skip(),) * len(pnginfo.FIELDS) + (image,) + (gr.skip(),) * len(pnginfo.IMG2IMG_FIELDS)
                    + img2img_inputs.switch_to(target) + (gr.Tabs(selected="img2img"),))
        return pnginfo.send_to(mode, text or "", sampler, scheduler, image,
                               on_pasted=pasted if host is not None else None, target=target)
    return send


def wire(page: Page, binding, picture_of) -> None:
    """One registered button onto the page (`picture_of`: infotext_utils.image_from_url_text)."""
    from webui.ui import extras_tab, pnginfo
    button, name = binding.paste_button, str(binding.tabname)
    image, text = binding.source_image_component, binding.source_text_component
    if name == "extras":
        if page.extras is None:
            raise ValueError("this page has no Extras tab to send to")
        if image is None:
            raise ValueError("a Send to extras button needs a source image")
        button.click(lambda picture: pnginfo.send_image_to_extras(picture_of(picture), extras_tab.receive_image),
                     inputs=[image], outputs=[*page.extras.receive_outputs(), page.tabs], show_progress="hidden",
                     api_visibility="undocumented")
        return
    if name not in ("txt2img", "img2img", "inpaint"):
        raise ValueError(f"no tab {name!r} to send to (txt2img, img2img, inpaint or extras)")
    mode = "txt2img" if name == "txt2img" else "img2img"
    tab = page.txt2img if mode == "txt2img" else page.img2img
    if text is not None or image is not None:
        if text is None:  # a picture alone: an empty infotext
            text_inputs = [gr.State("")]
        else:
            text_inputs = [text]
        inputs = [*text_inputs, tab.sampler, tab.scheduler] + ([image] if mode == "img2img" and image else [])
        button.click(_sender(page, mode, name, picture_of), inputs=inputs, outputs=_fields(page, mode, name),
                     show_progress="hidden", api_visibility="undocumented")
    if binding.source_tabname in ("txt2img", "img2img"):  # the prompts (and steps) of another tab
        keys = set(_COPIED_FROM_TAB) | set(binding.paste_field_names or ())
        names = [n for n in pnginfo.FIELDS if _INFOTEXT_KEYS.get(n) in keys]
        source = page.txt2img if binding.source_tabname == "txt2img" else page.img2img
        button.click(lambda *values: values, inputs=[getattr(source, n) for n in names],
                     outputs=[getattr(tab, n) for n in names], show_progress="hidden", api_visibility="undocumented")
        button.click(lambda: gr.Tabs(selected=mode), outputs=[page.tabs], show_progress="hidden",
                     api_visibility="undocumented")
