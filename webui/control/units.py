"""A ControlNet unit: one conditioning image, its preprocessor and model, and how strongly and when it applies.

Field names and values are those of A1111's ControlNet extension (its API and infotext), so clients and pasted
infotext keep working. `ControlUnit.validate` checks what can be checked without the model folders; the engine
resolves the module and model names (`webui/control/runner.py`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

from ..core.errors import RequestError
from ..core.images import normalise_mode

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
CONTROL_RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
NO_MODEL = "None"
NO_MODULE = "none"
MAX_PROCESSOR_RES = 4096  # the largest preprocessor resolution (A1111's slider goes to 2048)
# "My prompt is more important": residual i (of 13, the middle block last) is scaled by SOFT_BASE ** (12 - i).
SOFT_BASE = 0.825


@dataclass
class ControlUnit:
    enabled: bool = False
    module: str = NO_MODULE  # preprocessor key, as A1111 ("canny", "depth_midas", "openpose_full", "none", ...)
    model: str = NO_MODEL  # "name [hash]", a unique part of a name, or "None"
    weight: float = 1.0
    image: Image.Image | None = None  # None in img2img: the init image
    mask: Image.Image | None = None  # white = inpaint (the "inpaint" modules); None: the request's mask
    resize_mode: str = "Crop and Resize"  # CONTROL_RESIZE_MODES
    low_vram: bool = False
    processor_res: int = -1  # -1: the module's default
    threshold_a: float = -1.0  # -1: the module's default
    threshold_b: float = -1.0
    guidance_start: float = 0.0  # fraction of the sampling steps where the unit starts applying
    guidance_end: float = 1.0
    control_mode: str = "Balanced"  # CONTROL_MODES
    pixel_perfect: bool = False
    save_detected_map: bool = True  # the API returns the preprocessed map after the images

    def validate(self, index: int) -> "ControlUnit":
        """Normalise in place (legacy integers for the modes, strings for numbers) and reject what cannot run.
        Errors name the unit: "ControlNet unit 1: ..."."""
        where = f"controlnet_units[{index}]"

        def fail(message: str):
            raise RequestError(where, f"ControlNet unit {index}: {message}")

        self.enabled = _as_bool(self.enabled)
        self.low_vram = _as_bool(self.low_vram)
        self.pixel_perfect = _as_bool(self.pixel_perfect)
        self.save_detected_map = _as_bool(self.save_detected_map)
        self.module = str(self.module or NO_MODULE).strip()
        self.model = str(self.model or NO_MODEL).strip() or NO_MODEL
        self.control_mode = _choice(self.control_mode, CONTROL_MODES, "control_mode", fail)
        self.resize_mode = _choice(self.resize_mode, CONTROL_RESIZE_MODES, "resize_mode", fail)
        for name, low, high in (("weight", 0.0, 2.0), ("guidance_start", 0.0, 1.0), ("guidance_end", 0.0, 1.0)):
            value = _as_float(getattr(self, name), name, fail)
            if not low <= value <= high:
                fail(f"{name} must be between {low:g} and {high:g}, got {value:g}")
            setattr(self, name, value)
        if self.guidance_start > self.guidance_end:
            fail(f"guidance_start ({self.guidance_start:g}) is after guidance_end ({self.guidance_end:g})")
        self.processor_res, self.threshold_a, self.threshold_b = processor_values(
            self.processor_res, self.threshold_a, self.threshold_b, lambda name, message: fail(message))
        for name in ("image", "mask"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Image.Image):
                fail(f"{name} must be an image")
            if getattr(self, name) is not None:
                setattr(self, name, normalise_mode(getattr(self, name)))  # CMYK, 16-bit, palette, ...
        return self


def processor_values(processor_res: Any, threshold_a: Any, threshold_b: Any, fail, prefix: str = "") \
        -> tuple[int, float, float]:
    """A preprocessor's resolution (-1, the module's default, or 64..4096 pixels) and thresholds (-1, the default,
    or any finite number: the module's slider range bounds it), checked; `fail(name, message)` raises for the
    caller (a unit's RequestError, /controlnet/detect's). `prefix` goes before the names (`controlnet_`)."""
    res_name = prefix + "processor_res"
    number = _as_float(processor_res, res_name, lambda message: fail(res_name, message))
    if not math.isfinite(number) or (int(number) != -1 and not 64 <= int(number) <= MAX_PROCESSOR_RES):
        fail(res_name, f"{res_name} must be -1 (the module's default) or 64..{MAX_PROCESSOR_RES}, got {number:g}")
    thresholds = []
    for name, value in ((prefix + "threshold_a", threshold_a), (prefix + "threshold_b", threshold_b)):
        given = _as_float(value, name, lambda message, name=name: fail(name, message))
        if not math.isfinite(given):
            fail(name, f"{name} must be a finite number (-1: the module's default), got {given:g}")
        thresholds.append(given)
    return int(number), thresholds[0], thresholds[1]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _as_float(value: Any, name: str, fail) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):
        fail(f"{name} must be a number, got {value!r}")


def _choice(value: Any, choices: tuple[str, ...], name: str, fail) -> str:
    """A choice by its text (case-insensitive) or, as A1111's legacy API, by its index."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) < len(choices):
            return choices[int(text)]
        for choice in choices:
            if choice.lower() == text.lower():
                return choice
        legacy = {"inner fit (scale to fit)": "Crop and Resize", "outer fit (shrink to fit)": "Resize and Fill",
                  "envelope (outer fit)": "Resize and Fill", "scale to fit (inner fit)": "Crop and Resize"}
        if text.lower() in legacy and legacy[text.lower()] in choices:
            return legacy[text.lower()]
    fail(f"{name} must be one of {', '.join(repr(c) for c in choices)} (or 0..{len(choices) - 1}), got {value!r}")


# --- infotext --------------------------------------------------------------------------------------------------

# Key in the infotext entry -> ControlUnit field, in A1111's order.
_INFOTEXT_KEYS = (
    ("Module", "module"), ("Model", "model"), ("Weight", "weight"), ("Resize Mode", "resize_mode"),
    ("Processor Res", "processor_res"), ("Threshold A", "threshold_a"), ("Threshold B", "threshold_b"),
    ("Guidance Start", "guidance_start"), ("Guidance End", "guidance_end"), ("Pixel Perfect", "pixel_perfect"),
    ("Control Mode", "control_mode"),
)
INFOTEXT_KEY = re.compile(r"^ControlNet (\d+)$")


def unit_infotext(unit: ControlUnit, model_title: str, processor_res: int, threshold_a: float,
                  threshold_b: float) -> str:
    """The value of a `ControlNet N` infotext key (the caller quotes it), with the resolved model title and the
    slider values actually used."""
    values = {"module": unit.module, "model": model_title, "weight": float(unit.weight),
              "resize_mode": unit.resize_mode, "processor_res": int(processor_res),
              "threshold_a": float(threshold_a), "threshold_b": float(threshold_b),
              "guidance_start": float(unit.guidance_start), "guidance_end": float(unit.guidance_end),
              "pixel_perfect": bool(unit.pixel_perfect), "control_mode": unit.control_mode}
    return ", ".join(f"{key}: {values[name]}" for key, name in _INFOTEXT_KEYS)


def parse_unit_infotext(text: str) -> dict[str, Any]:
    """`ControlUnit` field values from a `ControlNet N` infotext value (quoted or not); unknown keys are ignored
    and the unit comes back enabled. Values keep their types (float, int, bool, str)."""
    text = text.strip()
    if text.startswith('"'):
        try:
            text = json.loads(text)
        except ValueError:
            text = text.strip('"')
    names = dict(_INFOTEXT_KEYS)
    known = {f.name: f.type for f in fields(ControlUnit)}
    parsed: dict[str, Any] = {"enabled": True}
    # A model title may hold ", " only inside its [hash]; split on ", Key: " boundaries.
    for part in re.split(r",\s*(?=[A-Z][A-Za-z ]*:\s)", text):
        key, _, value = part.partition(":")
        field_name = names.get(key.strip())
        if field_name is None or field_name not in known:
            continue
        value = value.strip()
        if field_name in ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
            try:
                parsed[field_name] = float(value)
            except ValueError:
                continue
        elif field_name == "processor_res":
            try:
                parsed[field_name] = int(float(value))
            except ValueError:
                continue
        elif field_name == "pixel_perfect":
            parsed[field_name] = value.lower() == "true"
        else:
            parsed[field_name] = value
    return parsed
