"""A1111's "Settings in UI": the settings named in `extra_options_txt2img` / `extra_options_img2img` shown in the
tab (A1111 1.10 puts "Restore faces" there: Settings > Settings in UI > add `face_restoration`), in
`extra_options_cols` columns, in an "Options" accordion when `extra_options_accordion` is set. A generation of the
tab runs with their values as override settings, under any the Override settings dropdown holds (as A1111's
section, which sets only the settings the job does not already override). Sending an infotext to the tab sets
each shown setting the infotext carries. Changes to these four options take effect when the page is rebuilt
(Reload UI), as in A1111.

Server folders (restricted options) are never shown; unknown keys (an extension's option that is gone) are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr

from ..core.errors import UserError
from ..outputs.infotext import SETTING_KEYS, parse_infotext
from .settings_tab import SettingField, _build_field, _decode

_INFOTEXT_KEY = {option: key for key, option in SETTING_KEYS}
# Settings an infotext records by a key whose value is not the setting's: the key's presence turns them on.
_PRESENT_MEANS_ON = {"face_restoration": "Face restoration"}


@dataclass
class MainUiOptions:
    fields: list[SettingField]
    components: list

    def decode(self, services, values) -> dict:
        """The components' values as settings {key: value}, checked (an OptionError names a bad one)."""
        raw = {field.key: _decode(field, services.options.specs[field.key], value)
               for field, value in zip(self.fields, values) if value is not None}  # None: an API caller left it out
        return services.options.validate(raw)

    def pasted(self, services, text: str) -> list:
        """For a Send of `text`: each shown setting the infotext carries, as its component's new value (the
        others unchanged)."""
        if not (text or "").strip():
            return [gr.skip()] * len(self.fields)
        params = parse_infotext(text)
        return [_pasted_value(services, field.key, params) for field in self.fields]


def _pasted_value(services, key: str, params: dict):
    if key in _PRESENT_MEANS_ON:
        return _PRESENT_MEANS_ON[key] in params
    infotext_key = _INFOTEXT_KEY.get(key)
    if infotext_key is None or params.get(infotext_key) is None:
        return gr.skip()
    try:
        return services.infotext_setting(key, str(params[infotext_key]).strip())
    except (UserError, ValueError, KeyError):
        return gr.skip()  # the Override settings paste says why this server cannot use it


def shown_keys(services, mode: str) -> list[str]:
    """The settings `extra_options_<mode>` names that this server has and may show in the page."""
    wanted = services.options.get(f"extra_options_{mode}") or []
    keys = []
    for key in wanted:
        if key in services.options.specs and not services.options.is_restricted(key) and key not in keys:
            keys.append(key)
    return keys


def build(mode: str, services) -> MainUiOptions | None:
    """Lay out the tab's added settings (inside the current layout); None when the tab has none."""
    if services is None:
        return None
    keys = shown_keys(services, mode)
    if not keys:
        return None
    columns = max(1, int(services.options.get("extra_options_cols") or 1))
    accordion = bool(services.options.get("extra_options_accordion"))
    container = (gr.Accordion("Options", open=False, elem_id=f"extra_options_{mode}") if accordion
                 else gr.Group(elem_id=f"extra_options_{mode}"))
    fields, components, warnings = [], [], []
    with container:
        for row in range(math.ceil(len(keys) / columns)):
            with gr.Row():
                for key in keys[row * columns:(row + 1) * columns]:
                    with gr.Column(min_width=160):
                        component, field = _build_field(key, services.options.specs[key], services.options.get(key),
                                                        "", warnings, elem_id=f"{mode}_setting_{key}")
                    components.append(component)
                    fields.append(field)
    return MainUiOptions(fields, components)
