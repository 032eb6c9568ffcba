"""The txt2img / img2img tabs' "Override settings" (A1111's): the settings an infotext sent to the tab carries (Clip
skip, RNG, ENSD, Eta, ... see `outputs.infotext.SETTING_KEYS`) where they differ from this server's, as "Key: value"
entries of a multiselect dropdown, hidden while it has none. Generate runs the job with the selected entries as its
override settings (`request.extra["override_settings"]`), as the API's `infotext` field does; removing an entry
leaves that setting as the server has it."""
from __future__ import annotations

import gradio as gr

from ..core.errors import RequestError, UserError
from ..outputs.infotext import SETTING_KEYS, parse_infotext
from . import checkpoints, notices

LABEL = "Override settings"
_OPTION_OF = dict(SETTING_KEYS)  # infotext key -> option key
_KEY_OF_LOWER = {key.lower(): key for key, _ in SETTING_KEYS}


def build(mode: str) -> gr.Dropdown:
    """The dropdown (elem_id `{mode}_override_settings`), empty and hidden until an infotext is sent to the tab.
    Custom values are allowed so that a client of the `/txt2img` / `/img2img` endpoints can pass entries too."""
    return gr.Dropdown([], value=[], multiselect=True, label=LABEL, elem_id=f"{mode}_override_settings",
                       visible=False, allow_custom_value=True, interactive=True)


def _current(services, option: str):
    """The value a generation uses now for `option` (the checkpoint: the one loaded, else the selected one)."""
    if option == "sd_model_checkpoint":
        return checkpoints.current_checkpoint(services)
    return services.options.get(option)


def entries(services, params: dict) -> list[str]:
    """The "Key: value" entries for parsed infotext: each setting key it has (its parse defaults included, as the
    API takes them: an infotext without `RNG` was made with GPU noise) whose value differs from the server's current
    one. A value this server cannot use (an unknown checkpoint, a bad number) is left out with a notice."""
    found, unusable = [], []
    for key, option in SETTING_KEYS:
        if key not in params or params[key] is None or option not in services.options.specs:
            continue
        text = str(params[key]).strip()
        try:
            value = services.infotext_setting(option, text)
        except (UserError, ValueError, KeyError) as exc:
            unusable.append(f"{key}: {text} ({_reason(exc)})")
            continue
        if value != _current(services, option):
            found.append(f"{key}: {text}")
    if unusable:
        notices.warn("Not in Override settings, this server cannot use them: " + "; ".join(unusable))
    return found


def _reason(exc: BaseException) -> str:
    plain_key_error = isinstance(exc, KeyError) and not isinstance(exc, UserError)  # its str() is a repr
    return str(exc.args[0]) if plain_key_error and exc.args else str(exc)


def dropdown(values: list[str]) -> gr.Dropdown:
    return gr.Dropdown(choices=list(values), value=list(values), visible=bool(values), multiselect=True)


def pasted(services, text: str):
    """The dropdown for infotext sent to the tab (PNG Info's, History's and the galleries' Send buttons): its
    differing settings, all selected; empty and hidden when there are none. Nothing changes when there is no text
    (the Send handler says why)."""
    if not (text or "").strip():
        return gr.skip()
    return dropdown(entries(services, parse_infotext(text)))


def to_overrides(services, selected) -> dict:
    """The selected entries as override settings {option: value}, checked as the job will take them. Raises a
    RequestError naming the entry this server cannot use (an unknown key, a bad value): the user removes it."""
    overrides = {}
    for entry in selected or []:
        key, colon, text = str(entry).partition(":")
        key = _KEY_OF_LOWER.get(key.strip().lower())
        if not colon or key is None:
            raise RequestError("override_settings", f"{LABEL}: {entry!r} is not a setting (entries read "
                               f"\"Key: value\", the key one of {', '.join(k for k, _ in SETTING_KEYS)}): "
                               "remove it")
        try:
            overrides[_OPTION_OF[key]] = services.infotext_setting(_OPTION_OF[key], text.strip())
        except (UserError, ValueError, KeyError) as exc:
            raise RequestError("override_settings", f"{LABEL}: {entry!r} cannot be used ({_reason(exc)}): remove "
                               "it to generate with the server's setting") from None
    return overrides
