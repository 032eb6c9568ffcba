"""ControlNet preprocessors (annotators): an input picture in, the conditioning map a ControlNet model expects out.

`CATALOGUE` lists every module with A1111's key, its control type and its sliders (labels, ranges and defaults as
A1111's extension shows them). `PreprocessorRegistry` resolves names (aliases too), fills in slider defaults, and
runs a module; neural annotators are loaded once from `models/annotators` (file names as controlnet-aux expects)
and cached. Running is thread-safe and never happens on the UI's event loop (callers run it on a worker thread).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from ..core.errors import UserError
from . import annotators
from .annotators import AnnotatorCache, AnnotatorError
from .types import TYPE_NAMES

log = logging.getLogger(__name__)


class UnknownPreprocessorError(UserError, KeyError):
    """No module has that name; the message lists the known ones (HTTP 422)."""

    status = 422
    kind = "UnknownPreprocessor"

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown ControlNet preprocessor {self.name!r}; known: {', '.join(self.known)}"


class PreprocessorError(UserError, RuntimeError):
    """A preprocessor could not run (a missing weight file, a broken one, a missing mask, an unreadable image); the
    message says what to do (HTTP 422)."""

    status = 422
    kind = "PreprocessorError"


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
Runner = Callable[[np.ndarray, int, float, float, "np.ndarray | None", AnnotatorCache], np.ndarray]


def resize_to_resolution(image: np.ndarray, resolution: int) -> np.ndarray:
    """Scale so the shorter side is `resolution`, with area averaging down and cubic interpolation up."""
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _none(image, res, a, b, mask, cache):
    return image


def _invert(image, res, a, b, mask, cache):
    return 255 - resize_to_resolution(image, res)


def _canny(image, res, low, high, mask, cache):
    edges = cv2.Canny(resize_to_resolution(image, res), int(low), int(high))
    return cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB)


def _scribble_xdog(image, res, threshold, b, mask, cache):
    """Difference of a fine (sigma 0.5) and a coarse (sigma 5) blur; pixels whose darkest channel difference
    exceeds the XDoG threshold become white lines on black."""
    pixels = resize_to_resolution(image, res).astype(np.float32)
    fine = cv2.GaussianBlur(pixels, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(pixels, (0, 0), 5.0)
    darkening = np.clip(np.min(coarse - fine, axis=2), 0, 255)  # how much a pixel is darker than its surroundings
    lines = np.where(2.0 * darkening > threshold, 255, 0).astype(np.uint8)
    return np.repeat(lines[:, :, None], 3, axis=2)


def _tile_resample(image, res, rate, b, mask, cache):
    """The picture made smaller by the down sampling rate (rates under 1.1 keep it as it is)."""
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _shuffle(image, res, a, b, mask, cache):
    return annotators.content_shuffle(image, res)


def _lineart_standard(image, res, a, b, mask, cache):
    return annotators.lineart_standard(resize_to_resolution(image, res))


def _inpaint_only(image, res, a, b, mask, cache):
    """RGBA: the picture, with alpha 0 where the mask is white (to repaint) and 255 elsewhere."""
    height, width = image.shape[:2]
    if mask.shape[:2] != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = np.where(mask > 127, 0, 255).astype(np.uint8)
    return np.dstack([image, alpha])


RESAMPLE = Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)
REMOVE_NEAR = Slider("Remove Near %", 0, 0, 100, 0.1)
REMOVE_BACKGROUND = Slider("Remove Background %", 0, 0, 100, 0.1)


def _neural(name: str, control_type: str, **fields) -> Preprocessor:
    return Preprocessor(name, control_type, weight_files=annotators.module_files(name), **fields)


CATALOGUE: tuple[Preprocessor, ...] = (
    Preprocessor("none", "All", resolution=None),
    Preprocessor("invert", "All", aliases=("invert (from white bg & black line)",)),
    Preprocessor("canny", "Canny", threshold_a=Slider("Canny Low Threshold", 100, 1, 255, 1),
                 threshold_b=Slider("Canny High Threshold", 200, 1, 255, 1)),
    _neural("depth_midas", "Depth", aliases=("depth",)),
    _neural("depth_leres", "Depth", threshold_a=REMOVE_NEAR, threshold_b=REMOVE_BACKGROUND),
    _neural("depth_leres++", "Depth", threshold_a=REMOVE_NEAR, threshold_b=REMOVE_BACKGROUND),
    _neural("depth_zoe", "Depth"),
    _neural("normal_bae", "NormalMap"),
    _neural("openpose", "OpenPose"),
    _neural("openpose_hand", "OpenPose"),
    _neural("openpose_face", "OpenPose"),
    _neural("openpose_faceonly", "OpenPose"),
    _neural("openpose_full", "OpenPose"),
    _neural("mlsd", "MLSD", threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
            threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    Preprocessor("lineart_standard", "Lineart", aliases=("lineart_standard (from white bg & black line)",)),
    _neural("lineart_realistic", "Lineart", aliases=("lineart",)),
    _neural("lineart_coarse", "Lineart"),
    _neural("lineart_anime", "Lineart"),
    _neural("softedge_hed", "SoftEdge", aliases=("hed",)),
    _neural("softedge_hedsafe", "SoftEdge", aliases=("hed_safe",)),
    _neural("softedge_pidinet", "SoftEdge", aliases=("pidinet",)),
    _neural("softedge_pidisafe", "SoftEdge", aliases=("pidinet_safe",)),
    _neural("scribble_hed", "Scribble"),
    _neural("scribble_pidinet", "Scribble", aliases=("pidinet_scribble",)),
    Preprocessor("scribble_xdog", "Scribble", threshold_a=Slider("XDoG Threshold", 32, 1, 64, 1)),
    Preprocessor("shuffle", "Shuffle"),
    Preprocessor("tile_resample", "Tile", resolution=None, threshold_a=RESAMPLE),
    Preprocessor("inpaint_only", "Inpaint", resolution=None, aliases=("inpaint",), uses_mask=True),
)
RUNNERS: dict[str, Runner] = {
    "none": _none, "invert": _invert, "canny": _canny, "scribble_xdog": _scribble_xdog,
    "tile_resample": _tile_resample, "shuffle": _shuffle, "lineart_standard": _lineart_standard,
    "inpaint_only": _inpaint_only, **annotators.NEURAL_RUNNERS,
}
# A1111 offers "invert" under these types too (line pictures drawn black on white)
INVERT_TYPES = ("Canny", "Lineart", "Scribble", "MLSD")


class PreprocessorRegistry:
    """Names, sliders and running of every preprocessor; neural annotators load from `annotator_dir` on first use.

    `run` is thread-safe: model-free modules run side by side, neural ones one at a time (they are large and some
    keep per-call state), and each network is loaded once.
    """

    def __init__(self, annotator_dir: Path, device: str = "cpu"):
        self.annotators = AnnotatorCache(annotator_dir, device)
        self._by_name: dict[str, Preprocessor] = {}
        for entry in CATALOGUE:
            assert entry.control_type in TYPE_NAMES, entry
            assert entry.name in RUNNERS, entry
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
        extra = ["invert"] if type_name in INVERT_TYPES else []
        return ["none", *[e.name for e in CATALOGUE if e.control_type == type_name], *extra]

    def missing_files(self, name: str) -> list[str]:
        """Weight files module `name` needs that are not in the annotator folder."""
        return annotators.missing_files(self.get(name).name, self.annotators.folder)

    def run(self, name: str, image: Image.Image, processor_res: float = -1, threshold_a: float = -1,
            threshold_b: float = -1, mask: Image.Image | None = None) -> Image.Image:
        """The map for `image` (RGB; any mode is converted), at about `processor_res` on the shorter side.

        Modules that use a mask (inpaint_only) return RGBA and raise PreprocessorError without one."""
        entry = self.get(name)
        res, a, b = entry.resolve(processor_res, threshold_a, threshold_b)
        if entry.uses_mask and mask is None:
            raise PreprocessorError(f"ControlNet preprocessor {entry.name!r} needs a mask: paint one on the unit's "
                                    f"image or send the unit's `mask`")
        try:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
            mask_pixels = np.asarray(mask.convert("L")) if mask is not None else None
        except Exception as error:  # noqa: BLE001 - a broken upload is the caller's input, not our crash
            raise PreprocessorError(f"ControlNet preprocessor {entry.name!r} could not read its image: {error}") \
                from error
        if min(pixels.shape[:2]) < 1:
            raise PreprocessorError(f"ControlNet preprocessor {entry.name!r} got an empty image")
        runner = RUNNERS[entry.name]
        try:
            if entry.weight_files:
                with self._run_lock:  # one annotator at a time: they are large and not all thread-safe
                    result = runner(pixels, res, a, b, mask_pixels, self.annotators)
            else:
                result = runner(pixels, res, a, b, mask_pixels, self.annotators)
        except AnnotatorError as error:
            raise PreprocessorError(str(error)) from error
        except PreprocessorError:
            raise
        except Exception as error:  # noqa: BLE001 - reported to the user; the traceback goes to the log
            log.exception("ControlNet preprocessor %s failed", entry.name)
            raise PreprocessorError(f"ControlNet preprocessor {entry.name!r} failed on this image "
                                    f"({type(error).__name__}: {str(error)[:200]})") from error
        return _as_image(result, keep_alpha=entry.uses_mask)


def _as_image(result: np.ndarray, keep_alpha: bool) -> Image.Image:
    if result.ndim == 2:
        result = np.repeat(result[:, :, None], 3, axis=2)
    if keep_alpha and result.shape[2] == 4:
        return Image.fromarray(np.ascontiguousarray(result).astype(np.uint8, copy=False), "RGBA")
    return Image.fromarray(np.ascontiguousarray(result[:, :, :3]).astype(np.uint8, copy=False), "RGB")
