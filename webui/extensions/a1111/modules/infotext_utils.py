"""A1111's `modules.infotext_utils` (old name `generation_parameters_copypaste`): reading the "parameters" text
of an image into a dict, turning infotext entries into settings overrides, and the "Send to" buttons extensions
make (`create_buttons` + `bind_buttons`, or `register_paste_params_button(ParamBinding(...))`).

Registered buttons are wired when the page is built (`connect_paste_params_buttons`, called by the web UI once its
txt2img / img2img / Extras tabs exist): they send the picture and the infotext to that tab as PNG Info's own Send
buttons do (prompts, settings, the picture into img2img / inpaint / Extras, then the tab shown).
`paste_fields[tab]["fields"]` (and `modules.ui.txt2img_paste_fields` / `img2img_paste_fields`) list the tab's
controls as A1111's `(component, infotext key)` pairs once the page is built.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path
from typing import Iterable

import gradio as gr
from PIL import Image

from webui.extensions.a1111.runtime import RUNTIME
from webui.outputs.infotext import SETTING_KEYS, parse_infotext

__all__ = ["parse_generation_parameters", "infotext_to_setting_name_mapping", "create_override_settings_dict",
           "quote", "unquote", "MISSING_KEY_DEFAULTS", "ParamBinding", "PasteField", "paste_fields",
           "registered_param_bindings", "reset", "image_from_url_text", "add_paste_fields", "create_buttons",
           "bind_buttons", "register_paste_params_button", "connect_paste_params_buttons", "send_image_and_dimensions"]

log = logging.getLogger("webui.extensions")
_SIZE = re.compile(r"^-?\d+x-?\d+$")

# Values A1111 assumes for keys a pasted infotext lacks (beyond the ones parse_infotext fills in).
MISSING_KEY_DEFAULTS = {
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}

# Infotext keys that are settings: (infotext key, option key). Extensions' options declared with
# `OptionInfo(..., infotext="Key")` count too.
infotext_to_setting_name_mapping: list[tuple[str, str]] = list(SETTING_KEYS)


def quote(text):
    """`text` JSON-quoted when it holds a comma, a colon or a newline (as infotext values are written)."""
    if not any(c in str(text) for c in ",:\n"):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    """Undo `quote`; text that is not a JSON string is returned as is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse_generation_parameters(x: str, skip_fields: Iterable[str] | None = None) -> dict:
    """The infotext `x` as a dict: "Prompt", "Negative prompt" and every "Key: value" of its last line (`WxH`
    values as "Key-1" and "Key-2"), with A1111's values for the keys it lacks; `skip_fields` are left out."""
    parsed = parse_infotext(x)
    result = {}
    for key, value in parsed.items():
        split = isinstance(value, str) and _SIZE.match(value) is not None and f"{key}-1" in parsed
        if not split:  # A1111 keeps only the -1/-2 halves of a WxH value
            result[key] = value
    for key, value in MISSING_KEY_DEFAULTS.items():
        result.setdefault(key, value)
    skip = set(skip_fields or ())
    return {k: v for k, v in result.items() if k not in skip}


def _setting_names() -> list[tuple[str, str]]:
    mapping = list(infotext_to_setting_name_mapping)
    services = RUNTIME.services
    if services is not None:
        from .options import registered_infos
        mapping += [(info.infotext, key) for key, info in registered_infos(services.options).items()
                    if info.infotext]
    return mapping


def create_override_settings_dict(text_pairs: Iterable[str]) -> dict:
    """`["Clip skip: 2", "ENSD: 31337"]` -> `{"CLIP_stop_at_last_layers": 2, ...}` (values converted to the
    option's type when the server is running; entries that are not settings are left out)."""
    params = {}
    for pair in text_pairs:
        key, sep, value = str(pair).partition(":")
        if sep:
            params[key.strip()] = value.strip()
    result = {}
    for infotext_key, setting in _setting_names():
        value = params.get(infotext_key)
        if value is None:
            continue
        if RUNTIME.services is not None:
            from .shared import opts
            try:
                value = opts.cast_value(setting, value)
            except (TypeError, ValueError):
                log.warning("override setting %s: %r is not a valid value; left out", setting, value)
                continue
        result[setting] = value
    return result


# --- "Send to" buttons -----------------------------------------------------------------------------------------

class ParamBinding:
    """A button that sends to the tab `tabname` ("txt2img", "img2img", "inpaint", "extras"): the picture of
    `source_image_component`, the infotext of `source_text_component`, or the prompts of the tab
    `source_tabname` (plus `paste_field_names`)."""

    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    """`(component, infotext key or function)`, with `.component`, `.label`, `.function`, `.api`."""

    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


def _readable_file(name: str) -> Path:
    """A file the page may hand back: inside Gradio's upload / cache folder or the outputs folders (the ones the
    page serves), never a blocked file (settings, history, models), nowhere else."""
    from webui.ui.file_access import blocked_paths, served_folders, upload_folder
    path = Path(str(name).split("?", 1)[0]).resolve()
    roots = [upload_folder()]
    services = RUNTIME.services
    blocked = []
    if services is not None:
        roots += served_folders(services)
        blocked = blocked_paths(services)
    inside = any(path == root or root in path.parents for root in roots)
    if not inside or any(path == b or b in path.parents for b in blocked):
        raise ValueError(f"trying to open image file outside of allowed directories: {name}")
    return path


def image_from_url_text(filedata):
    """A picture from what a Gradio image / gallery hands back: a PIL image, a file dict (`path` / `name`), a
    `(file, caption)` pair, a list of those (its first), or a base64 data URL. None for nothing."""
    if filedata is None:
        return None
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, (list, tuple)):
        if not filedata:
            return None
        first = filedata[0]
        if isinstance(filedata, tuple) and len(filedata) == 2 and isinstance(filedata[1], (str, type(None))) \
                and not isinstance(first, (list, tuple)):
            return image_from_url_text(first)  # (picture, caption)
        return image_from_url_text(first)
    if isinstance(filedata, dict):
        if isinstance(filedata.get("image"), (dict, str, Image.Image)):
            return image_from_url_text(filedata["image"])  # a gallery item {"image": ..., "caption": ...}
        name = filedata.get("path") or filedata.get("name")
        if name is None:
            return None
        with Image.open(_readable_file(name)) as opened:
            opened.load()
            return opened.copy()
    text = str(filedata)
    if text.startswith("data:image/"):
        text = text.split(",", 1)[1]
        return Image.open(io.BytesIO(base64.b64decode(text)))
    if len(text) > 1024 or "/" not in text and "\\" not in text:  # raw base64 (what A1111's save_files takes)
        try:
            return Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
        except (ValueError, OSError):
            pass
    with Image.open(_readable_file(text)) as opened:  # a plain path (Gradio 6 galleries hand back paths)
        opened.load()
        return opened.copy()


def add_paste_fields(tabname: str, init_img, fields, override_settings_component=None) -> None:
    """Record a tab's paste targets (`fields`: `(component, infotext key)` pairs); txt2img's and img2img's are
    also `modules.ui.txt2img_paste_fields` / `img2img_paste_fields`."""
    fields = [f if isinstance(f, PasteField) else PasteField(*f) for f in (fields or [])]
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}
    import modules.ui
    if tabname == "txt2img":
        modules.ui.txt2img_paste_fields = fields
    elif tabname == "img2img":
        modules.ui.img2img_paste_fields = fields


def create_buttons(tabs_list) -> dict:
    """One "Send to <tab>" button per tab name (elem_id `<tab>_tab`, as A1111's)."""
    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict, send_image, send_generate_info) -> None:
    """The old way: each of `create_buttons`' buttons sends `send_image` and the infotext (a component, or the
    name of a tab whose prompts are copied)."""
    for tabname, button in buttons.items():
        text = send_generate_info if isinstance(send_generate_info, gr.components.Component) else None
        source_tab = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(ParamBinding(paste_button=button, tabname=tabname, source_text_component=text,
                                                  source_image_component=send_image, source_tabname=source_tab))


def register_paste_params_button(binding: ParamBinding) -> None:
    """Wire `binding` when the page is built (`connect_paste_params_buttons`)."""
    if not getattr(binding, "extension", None):
        binding.extension = RUNTIME.current_extension()  # named in the Extensions tab if wiring it fails
    registered_param_bindings.append(binding)


def send_image_and_dimensions(x):
    """The picture and, with the `send_size` setting on, its width and height."""
    image = x if isinstance(x, Image.Image) else image_from_url_text(x)
    send_size = True
    if RUNTIME.services is not None:
        from .shared import opts
        send_size = bool(getattr(opts, "send_size", True))
    if send_size and isinstance(image, Image.Image):
        return image, image.width, image.height
    return image, gr.update(), gr.update()


def connect_paste_params_buttons(page=None) -> None:
    """Wire every registered button not wired yet onto the web UI's tabs (`page`: what the web UI passes in,
    `webui.extensions.a1111.paste_bridge.Page`). Called inside the page's Blocks, after its tabs are built."""
    from webui.extensions.a1111 import paste_bridge
    page = page or paste_bridge.current_page()
    if page is None:
        return
    for binding in registered_param_bindings:
        if getattr(binding, "_wired", False):  # a page built before (a rebuilt page wires only the new ones)
            continue
        binding._wired = True
        try:
            paste_bridge.wire(page, binding, image_from_url_text)
        except Exception as exc:  # noqa: BLE001 - one extension's broken button never stops the page
            if RUNTIME.host is not None:
                RUNTIME.host.problems.report(_extension_of(binding), f"Send to {binding.tabname} button", exc)
            else:
                raise


def _extension_of(binding: ParamBinding) -> str:
    return getattr(binding, "extension", "") or RUNTIME.current_extension() or "extension"
