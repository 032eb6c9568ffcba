"""ControlNet preprocessors (annotators): an input picture in, the conditioning map a ControlNet model expects out.

`CATALOGUE` lists every module with A1111's key, its control type and its sliders (labels, ranges and defaults as
A1111's extension shows them). `PreprocessorRegistry` resolves names (aliases too), fills in slider defaults, and
runs a module; neural annotators are loaded once from `models/annotators` (file names as controlnet-aux expects)
and cached. Running is thread-safe and never happens on the UI's event loop (callers run it on a worker thread).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from .types import TYPE_NAMES


class UnknownPreprocessorError(KeyError):
    """No module has that name; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown ControlNet preprocessor {self.name!r}; known: {', '.join(self.known)}"


class PreprocessorError(RuntimeError):
    """A preprocessor could not run (a missing weight file, a broken one, an unreadable image); the message says
    what to do."""


@dataclass(frozen=True)
class Slider:
    label: str
    value: float
    minimum: float
    maximum: float
    step: float

    def as_api(self) -> dict[str, Any]:
        """A1111's `module_detail` slider shape."""
        return {"name": self.label, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}


RESOLUTION = Slider("Preprocessor Resolution", 512, 64, 2048, 8)


@dataclass(frozen=True)
class Preprocessor:
    name: str  # the key the UI shows and infotext writes
    control_type: str  # one of types.TYPE_NAMES ("All" for modules that fit any)
    resolution: Slider | None = RESOLUTION
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    aliases: tuple[str, ...] = ()  # other names A1111's API accepts (its internal keys)
    weight_files: tuple[str, ...] = ()  # files it needs in models/annotators
    uses_mask: bool = False

    @property
    def model_free(self) -> bool:
        return False

    def sliders(self) -> list[Slider | None]:
        """[resolution, threshold A, threshold B] with trailing empty slots removed (A1111's module_detail)."""
        slots = [self.resolution, self.threshold_a, self.threshold_b]
        while slots and slots[-1] is None:
            slots.pop()
        return slots

    def resolve(self, processor_res: float, threshold_a: float, threshold_b: float) -> tuple[int, float, float]:
        """The values used: -1 (or a slider the module lacks) becomes the module's default. Modules without a
        resolution slider report 512 and those without thresholds 0.5, as A1111's infotext does."""
        res = int(processor_res) if self.resolution is not None and processor_res not in (-1, None) else \
            int(self.resolution.value if self.resolution is not None else 512)
        values = []
        for slider, given in ((self.threshold_a, threshold_a), (self.threshold_b, threshold_b)):
            if slider is None:
                values.append(0.5)
            elif given in (-1, None):
                values.append(float(slider.value))
            else:
                values.append(float(min(max(float(given), slider.minimum), slider.maximum)))
        return res, values[0], values[1]


# A runner gets (image HWC uint8 RGB, resolution, threshold_a, threshold_b, mask HW uint8 or None, annotators)
# and returns the map as HWC uint8 (any size: the engine resizes it to the generation size).
Runner = Callable[[np.ndarray, int, float, float, "np.ndarray | None", "AnnotatorCache"], np.ndarray]


def resize_to_resolution(image: np.ndarray, resolution: int) -> np.ndarray:
    """Scale so the shorter side is `resolution`, with area averaging down and cubic interpolation up."""
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _none(image, res, a, b, mask, annotators):
    return image


def _invert(image, res, a, b, mask, annotators):
    return 255 - resize_to_resolution(image, res)


def _canny(image, res, low, high, mask, annotators):
    edges = cv2.Canny(resize_to_resolution(image, res), int(low), int(high))
    return np.repeat(edges[:, :, None], 3, axis=2)


CATALOGUE: tuple[Preprocessor, ...] = (
    Preprocessor("none", "All", resolution=None),
    Preprocessor("invert", "All", aliases=("invert (from white bg & black line)",)),
    Preprocessor("canny", "Canny", threshold_a=Slider("Canny Low Threshold", 100, 1, 255, 1),
                 threshold_b=Slider("Canny High Threshold", 200, 1, 255, 1)),
)
RUNNERS: dict[str, Runner] = {"none": _none, "invert": _invert, "canny": _canny}


class AnnotatorCache:
    """Loaded neural annotators, by key, each loaded once (under a lock) from `folder`."""

    def __init__(self, folder: Path, device: str = "cpu"):
        self.folder = Path(folder)
        self.device = device
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[Path], Any]) -> Any:
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load(self.folder)
            return self._loaded[key]

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


class PreprocessorRegistry:
    def __init__(self, annotator_dir: Path, device: str = "cpu"):
        self.annotators = AnnotatorCache(annotator_dir, device)
        self._by_name: dict[str, Preprocessor] = {}
        for entry in CATALOGUE:
            assert entry.control_type in TYPE_NAMES, entry
            for name in (entry.name, *entry.aliases):
                self._by_name[name.lower()] = entry
        self._run_lock = threading.Lock()

    def names(self) -> list[str]:
        return [entry.name for entry in CATALOGUE]

    def catalogue(self) -> tuple[Preprocessor, ...]:
        return CATALOGUE

    def get(self, name: str) -> Preprocessor:
        entry = self._by_name.get(str(name or "none").strip().lower())
        if entry is None:
            raise UnknownPreprocessorError(str(name), self.names())
        return entry

    def for_type(self, type_name: str) -> list[str]:
        """Module names under a control type: "none" first, then the type's own (every module for "All")."""
        if type_name == "All":
            return self.names()
        return ["none", *[e.name for e in CATALOGUE if e.control_type == type_name]]

    def run(self, name: str, image: Image.Image, processor_res: float = -1, threshold_a: float = -1,
            threshold_b: float = -1, mask: Image.Image | None = None) -> Image.Image:
        """The map for `image` (RGB; any mode is converted), at about `processor_res` on the shorter side."""
        entry = self.get(name)
        res, a, b = entry.resolve(processor_res, threshold_a, threshold_b)
        pixels = np.asarray(image.convert("RGB"))
        mask_pixels = np.asarray(mask.convert("L")) if mask is not None else None
        with self._run_lock:  # one annotator at a time: they are large and not all thread-safe
            result = RUNNERS[entry.name](pixels, res, a, b, mask_pixels, self.annotators)
        if result.ndim == 2:
            result = np.repeat(result[:, :, None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(result[:, :, :3]).astype(np.uint8), "RGB")
