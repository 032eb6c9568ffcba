"""Build and parse A1111-style "infotext" (the PNG ``parameters`` text).

Format::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512, ...

The negative-prompt line is omitted when the negative prompt is empty and the
parameter line is omitted when there are no parameters.
"""

from __future__ import annotations

import json
import re
from typing import Mapping

__all__ = ["build_infotext", "parse_infotext", "KNOWN_KEY_ORDER", "PARSE_DEFAULTS"]

NEGATIVE_PREFIX = "Negative prompt:"

#: Keys written first, in this order, when present.
KNOWN_KEY_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Distilled CFG Scale", "Image CFG scale", "Seed",
    "Face restoration", "Size", "Model hash", "Model", "VAE hash", "VAE",
    "Variation seed", "Variation seed strength", "Seed resize from",
    "Denoising strength", "Conditional mask weight", "Clip skip", "ENSD",
    "Token merging ratio", "Init image hash", "RNG", "Tiling",
)
#: Keys written last, in this order.
TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

#: Values assumed by A1111 when a key is missing from parsed infotext.
PARSE_DEFAULTS: dict[str, str] = {
    "Clip skip": "1",
    "Schedule type": "Automatic",
    "RNG": "GPU",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": "32",
    "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint",
}

_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(-?\d+)x(-?\d+)$")
_RE_KEY_RUN = re.compile(r"[\w \-/]+")
_RE_WORD = re.compile(r"\w")


def _quote(text: str) -> str:
    """JSON-quote ``text`` when it would not survive the parameter-line parser.

    A1111 quotes values containing ``,``, ``:`` or a newline; we additionally
    quote values with surrounding whitespace or a leading ``"`` (the parser
    would strip or unquote them), which A1111 still reads back correctly.
    """
    if (
        any(c in text for c in ",:\n")
        or text != text.strip()
        or text.startswith('"')
    ):
        return json.dumps(text, ensure_ascii=False)
    return text


def _ordered_keys(params: Mapping[str, object]) -> list[str]:
    """Known keys first, then other keys in insertion order, then Version/User."""
    head = [k for k in KNOWN_KEY_ORDER if k in params]
    special = set(KNOWN_KEY_ORDER) | set(TRAILING_KEYS)
    middle = [k for k in params if k not in special]
    tail = [k for k in TRAILING_KEYS if k in params]
    return head + middle + tail


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Render prompt, negative prompt and generation params as A1111 infotext.

    ``None`` values are skipped; a value whose ``str()`` equals its key is
    written as the bare key (e.g. ``Tiling``); other values are ``str()``-ed
    and quoted when needed.
    """
    pairs = []
    for key in _ordered_keys(params):
        value = params[key]
        if value is None:
            continue
        text = str(value)
        pairs.append(key if text == key else f"{key}: {_quote(text)}")

    lines = [prompt or ""]
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    if pairs:
        lines.append(", ".join(pairs))
    return "\n".join(lines)


def _unquote(text: str) -> str:
    """Undo JSON quoting of a value; return the raw text if it is not valid JSON."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def _find_params(line: str) -> list[tuple[str, str]]:
    """Return what ``_RE_PARAM.findall(line)`` returns, in linear time.

    A plain ``findall`` retries the key pattern at every position of a long run
    of key characters that is not followed by ``:`` (quadratic: minutes for a
    100 kB line). A key can only match at the first word character of a
    maximal key-character run that ends in ``:``, so only those positions are
    tried, with the very same regex.
    """
    found: list[tuple[str, str]] = []
    pos = 0
    for run in _RE_KEY_RUN.finditer(line):
        start, end = max(run.start(), pos), run.end()
        if end <= pos or end >= len(line) or line[end] != ":":
            continue
        word = _RE_WORD.search(line, start, end)
        if word is None or end - word.start() < 2:
            continue
        match = _RE_PARAM.match(line, word.start())
        if match is not None:  # always true given the checks above
            found.append((match.group(1), match.group(2)))
            pos = match.end()
    return found


def parse_infotext(text: str) -> dict[str, object]:
    """Parse A1111 infotext into ``{"Prompt", "Negative prompt", <params>...}``.

    The last line is the parameter line only if it holds at least three
    ``Key: value`` pairs. ``WxH`` values also produce ``Key-1``/``Key-2``.
    Missing keys get :data:`PARSE_DEFAULTS`. Never raises for string input.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)

    *lines, last = text.rstrip().split("\n")
    found = _find_params(last)
    if len(found) < 3:
        lines.append(last)
        found = []

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if not negative_lines and line.startswith(NEGATIVE_PREFIX):
            rest = line[len(NEGATIVE_PREFIX):]
            negative_lines.append(rest[1:] if rest.startswith(" ") else rest)
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)

    result: dict[str, object] = {
        "Prompt": "\n".join(prompt_lines),
        "Negative prompt": "\n".join(negative_lines),
    }
    for key, value in found:
        value = _unquote(value)
        result[key] = value
        size = _RE_IMAGESIZE.match(value)
        if size is not None:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)

    for key, value in PARSE_DEFAULTS.items():
        result.setdefault(key, value)
    return result


# Infotext keys that are settings (infotext key, option key), as A1111 maps them when an infotext is pasted or sent
# with a request: these become override settings rather than fields.
SETTING_KEYS: tuple[tuple[str, str], ...] = (
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("Model hash", "sd_model_checkpoint"),
    ("VAE", "sd_vae"),
    ("RNG", "randn_source"),
    ("ENSD", "eta_noise_seed_delta"),
    ("Conditional mask weight", "inpainting_mask_weight"),
    ("Emphasis", "emphasis"),
    ("Eta", "eta_ancestral"),
    ("Eta DDIM", "eta_ddim"),
    ("Sigma churn", "s_churn"),
    ("Sigma tmin", "s_tmin"),
    ("Sigma tmax", "s_tmax"),
    ("Sigma noise", "s_noise"),
    ("Schedule min sigma", "sigma_min"),
    ("Schedule max sigma", "sigma_max"),
    ("Schedule rho", "rho"),
    ("Beta schedule alpha", "beta_dist_alpha"),
    ("Beta schedule beta", "beta_dist_beta"),
    ("Discard penultimate sigma", "always_discard_next_to_last_sigma"),
    ("SGM noise multiplier", "sgm_noise_multiplier"),
    ("Extra noise", "img2img_extra_noise"),
    ("UniPC variant", "uni_pc_variant"),
    ("UniPC skip type", "uni_pc_skip_type"),
    ("UniPC order", "uni_pc_order"),
    ("UniPC lower order final", "uni_pc_lower_order_final"),
    ("Hires refiner", "hires_fix_refiner_pass"),
    ("Refiner switch by sampling steps", "refiner_switch_by_sample_steps"),
)
