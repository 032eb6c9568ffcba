"""What the Checkpoint Merger is asked to do: A1111's fields (the tab's and our API's), checked and normalised.

Field names are A1111's `run_modelmerger` parameters; `overwrite` is ours (a merge never replaces a file unless it
is set). `config_source` is A1111's index: 0 "A, B or C", 1 "B", 2 "C", 3 "Don't".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from ..core.errors import RequestError

NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE = "No interpolation", "Weighted sum", "Add difference"
METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")
FORMATS = ("ckpt", "safetensors")
NO_VAE = "None"


@dataclass
class MergeRequest:
    primary_model_name: str = ""
    secondary_model_name: str = ""
    tertiary_model_name: str = ""
    interp_method: str = WEIGHTED_SUM
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    config_source: int = 0
    bake_in_vae: str = NO_VAE
    discard_weights: str = ""
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str = "{}"
    overwrite: bool = False

    @property
    def uses_secondary(self) -> bool:
        return self.interp_method != NO_INTERPOLATION

    @property
    def uses_tertiary(self) -> bool:
        return self.interp_method == ADD_DIFFERENCE

    def validate(self) -> "MergeRequest":
        """Normalise in place; a RequestError (422) names the field that cannot be used."""
        for name in ("primary_model_name", "secondary_model_name", "tertiary_model_name", "custom_name",
                     "discard_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RequestError(name, f"{name} must be text, got {value!r}")
            setattr(self, name, (value or "").strip())
        self.interp_method = _choice("interp_method", self.interp_method, METHODS)
        self.checkpoint_format = _choice("checkpoint_format", str(self.checkpoint_format or "").lstrip("."),
                                         FORMATS)
        self.multiplier = _multiplier(self.multiplier)
        self.config_source = _config_source(self.config_source)
        self.bake_in_vae = str(self.bake_in_vae or NO_VAE).strip() or NO_VAE
        for name in ("save_as_half", "save_metadata", "add_merge_recipe", "copy_metadata_fields", "overwrite"):
            setattr(self, name, bool(getattr(self, name)))
        self.discard_pattern()
        self.user_metadata()
        return self

    def discard_pattern(self) -> re.Pattern | None:
        """"Discard weights with matching name": a regular expression searched in each tensor name."""
        if not self.discard_weights:
            return None
        try:
            return re.compile(self.discard_weights)
        except re.error as exc:
            raise RequestError("discard_weights", f"Discard weights with matching name: {self.discard_weights!r} "
                                                  f"is not a valid regular expression ({exc})") from None

    def user_metadata(self) -> dict[str, str]:
        """"Metadata in JSON format": an object whose values become the file's metadata (text; other JSON values
        are written as JSON)."""
        text = self.metadata_json if isinstance(self.metadata_json, str) else json.dumps(self.metadata_json)
        text = (text or "").strip() or "{}"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RequestError("metadata_json", f"Metadata in JSON format: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError("metadata_json", "Metadata in JSON format: must be a JSON object ({...})")
        self.metadata_json = text
        return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}


def _choice(field: str, value, choices: tuple[str, ...]) -> str:
    lowered = {choice.lower(): choice for choice in choices}
    found = lowered.get(str(value or "").strip().lower())
    if found is None:
        raise RequestError(field, f"{field} must be one of {', '.join(choices)}; got {value!r}")
    return found


def _multiplier(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError("multiplier", f"multiplier must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise RequestError("multiplier", f"multiplier (M) must be between 0 and 1, got {value!r}")
    return number


def _config_source(value) -> int:
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isdigit():
            value = int(stripped)
        else:
            return CONFIG_SOURCES.index(_choice("config_source", stripped, CONFIG_SOURCES))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 0 <= int(value) < len(CONFIG_SOURCES):
        raise RequestError("config_source", "config_source must be 0 (A, B or C), 1 (B), 2 (C) or 3 (Don't); got "
                                            f"{value!r}")
    return int(value)
