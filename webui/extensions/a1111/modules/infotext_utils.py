"""A1111's `modules.infotext_utils` (old name `generation_parameters_copypaste`): reading the "parameters" text
of an image into a dict, and turning infotext entries into settings overrides.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Iterable

from webui.extensions.a1111.runtime import RUNTIME
from webui.outputs.infotext import SETTING_KEYS, parse_infotext

__all__ = ["parse_generation_parameters", "infotext_to_setting_name_mapping", "create_override_settings_dict",
           "quote", "unquote", "MISSING_KEY_DEFAULTS"]

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
