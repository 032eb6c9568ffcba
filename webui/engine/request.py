"""The one request record every entry point (UI, HTTP API, extensions) builds and the engine runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from . import samplers

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")


class RequestError(ValueError):
    """Bad input, with the field it concerns; shown to the user as is."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass
class GenerationRequest:
    mode: str = "txt2img"  # "txt2img" | "img2img"
    prompt: str = ""
    negative_prompt: str = ""
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int | None = None  # None: the "Clip skip" setting
    checkpoint: str | None = None  # None: the selected checkpoint
    init_images: list[Image.Image] = field(default_factory=list)
    denoising_strength: float = 0.75
    resize_mode: int = 0
    save_images: bool = True
    styles: list[str] = field(default_factory=list)  # applied into the prompts when the job is queued
    extra: dict[str, Any] = field(default_factory=dict)  # what later features add (kept in the API echo)

    def validate(self) -> "GenerationRequest":
        """Normalise in place (A1111 rounds sizes down to a multiple of 8) and reject what cannot run."""
        if self.mode not in ("txt2img", "img2img"):
            raise RequestError("mode", f"unknown mode {self.mode!r}")
        self.prompt = "" if self.prompt is None else str(self.prompt)
        self.negative_prompt = "" if self.negative_prompt is None else str(self.negative_prompt)
        self._int_range("steps", 1, 150)
        self._float_range("cfg_scale", 1.0, 30.0)
        self._int_range("batch_size", 1, 64)
        self._int_range("n_iter", 1, 100)
        for name in ("width", "height"):
            self._int_range(name, 64, 4096)
            setattr(self, name, getattr(self, name) // 8 * 8)
        self._float_range("subseed_strength", 0.0, 1.0)
        self._float_range("denoising_strength", 0.0, 1.0)
        if self.clip_skip is not None:
            self._int_range("clip_skip", 1, 12)
        for name in ("seed", "subseed", "seed_resize_from_w", "seed_resize_from_h"):
            self._int_range(name, -1, 2 ** 32)
        try:
            sampler, schedule = samplers.resolve(self.sampler_name, self.scheduler)
        except samplers.SamplerError as exc:
            raise RequestError("sampler_name", str(exc)) from None
        self.sampler_name, self.scheduler = sampler.name, schedule
        if self.mode == "img2img":
            if not self.init_images:
                raise RequestError("init_images", "img2img needs an init image: none was given")
            if self.resize_mode not in range(len(RESIZE_MODES)):
                raise RequestError("resize_mode", f"resize_mode must be 0..{len(RESIZE_MODES) - 1} "
                                   f"({', '.join(RESIZE_MODES)})")
        return self

    def _number(self, name: str, kind):
        value = getattr(self, name)
        try:
            if isinstance(value, bool):
                raise TypeError
            number = kind(value)
            if kind is int and number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise RequestError(name, f"{name} must be a number, got {value!r}") from None
        setattr(self, name, number)
        return number

    def _int_range(self, name: str, low: int, high: int) -> None:
        value = self._number(name, int)
        if not low <= value <= high:
            raise RequestError(name, f"{name} must be between {low} and {high}, got {value}")

    def _float_range(self, name: str, low: float, high: float) -> None:
        value = self._number(name, float)
        if not low <= value <= high:
            raise RequestError(name, f"{name} must be between {low:g} and {high:g}, got {value:g}")
