"""Image upscalers: the built-in resizes (None, Lanczos, Nearest) and model files under `models/ESRGAN`,
`models/RealESRGAN`, `models/SwinIR`, `models/DAT`, `models/HAT`, `models/ScuNET`, read through spandrel (which
recognises ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, SCUNet and more from the weights).

`UpscalerRegistry.upscale(image, name, width, height)` always returns exactly width x height. A model runs at its
own scale, again while the image is still smaller than the target (at most 3 passes, as A1111), tiled by the
`ESRGAN_tile` / `ESRGAN_tile_overlap` options, then a Lanczos resize gives the exact size.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import UserError
from ..core.images import as_rgb
from .folders import walk_folder
from .upscaler_tiles import run_tiled

log = logging.getLogger(__name__)

UPSCALER_EXTENSIONS = (".pth", ".safetensors", ".pt", ".ckpt")
BUILTIN_UPSCALERS = ("None", "Lanczos", "Nearest")
MAX_PASSES = 3
DEFAULT_SCALE = 4.0  # what A1111 reports for an upscaler whose scale it has not read from the file
_SCALE_IN_NAME = re.compile(r"(?<![a-z0-9])(?:([1-8])x|x([1-8])(?![0-9]))", re.IGNORECASE)  # 4x-..., ..._x2plus


class UpscalerLoadError(UserError, RuntimeError):
    """A model file that cannot be used as an image upscaler; the message names the file and why (HTTP 400)."""

    status = 400
    kind = "UpscalerLoadError"

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"Upscaler model {Path(path).name}: {reason}")


class UnknownUpscalerError(UserError, ValueError):
    """No upscaler has that name; the message lists them (HTTP 400)."""

    status = 400
    kind = "UnknownUpscalerError"

    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, list(available)
        super().__init__(f"Upscaler '{name}' not found; available: {', '.join(self.available)}")


@dataclass(frozen=True)
class UpscalerInfo:
    name: str  # shown in the UI and accepted by the API: the built-in's name, or the model file's stem
    model_name: str | None  # the file's stem (None for built-ins)
    path: Path | None
    scale: float  # the model's native scale (read from the file once loaded; guessed from the name before)
    kind: str  # "builtin", or the folder the file was found in ("ESRGAN", "RealESRGAN", ...)


def scale_from_name(stem: str) -> float:
    """`4x-UltraSharp` -> 4, `RealESRGAN_x2plus` -> 2; A1111's default of 4 when the name does not say."""
    match = _SCALE_IN_NAME.search(stem)
    if match:
        return float(match.group(1) or match.group(2))
    return DEFAULT_SCALE


class UpscalerRegistry:
    """The upscalers a user can pick, and running them. Up to `keep` loaded models stay cached on the device."""

    def __init__(self, dirs: dict[str, Path], policy, options, keep: int = 2):
        self.dirs = {kind: Path(folder) for kind, folder in dirs.items()}
        self.policy = policy
        self.options = options
        self.keep = max(1, keep)
        self._lock = threading.RLock()
        self._models: list[UpscalerInfo] = []
        self._scales: dict[Path, float] = {}  # native scales read from loaded files
        self._loaded: OrderedDict[tuple[Path, float], object] = OrderedDict()  # (path, mtime) -> spandrel model

    # ---- listing -------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the model folders (subfolders too)."""
        found: list[UpscalerInfo] = []
        taken = {name.lower() for name in BUILTIN_UPSCALERS}
        for kind, root in self.dirs.items():
            for folder, _, files in walk_folder(root):
                for filename in files:
                    path = folder / filename
                    if path.suffix.lower() not in UPSCALER_EXTENSIONS:
                        continue
                    name = path.stem
                    if name.lower() in taken:  # the same stem in two folders: the later one says where it is
                        name = f"{path.stem} ({kind})"
                    if name.lower() in taken:
                        continue
                    taken.add(name.lower())
                    scale = self._scales.get(path, scale_from_name(path.stem))
                    found.append(UpscalerInfo(name, path.stem, path, scale, kind))
        with self._lock:
            self._models = found

    def list(self) -> list[UpscalerInfo]:
        """Built-ins first, then model files in folder order."""
        with self._lock:
            models = list(self._models)
        builtins = [UpscalerInfo(name, None, None, DEFAULT_SCALE, "builtin") for name in BUILTIN_UPSCALERS]
        return builtins + [self._with_known_scale(info) for info in models]

    def names(self) -> list[str]:
        return [info.name for info in self.list()]

    def find(self, name: str) -> UpscalerInfo:
        """By name (case-insensitive); a model file also by its file name. Unknown: UnknownUpscalerError."""
        wanted = (name or "None").strip().lower()
        infos = self.list()
        for info in infos:
            if info.name.lower() == wanted:
                return info
        for info in infos:
            if info.path is not None and info.path.name.lower() == wanted:
                return info
        raise UnknownUpscalerError(name, [info.name for info in infos])

    def _with_known_scale(self, info: UpscalerInfo) -> UpscalerInfo:
        scale = self._scales.get(info.path)
        if scale is None or scale == info.scale:
            return info
        return UpscalerInfo(info.name, info.model_name, info.path, scale, info.kind)

    # ---- running -------------------------------------------------------------------------------------------------
    def upscale(self, image: Image.Image, name: str, width: int, height: int, control=None) -> Image.Image | None:
        """`image` upscaled with the upscaler `name` to exactly width x height. "None" and "Lanczos" resize with
        Lanczos, "Nearest" with nearest neighbour. A model runs while the image is smaller than the target (a 1x
        model runs once), at most 3 passes, then Lanczos gives the exact size.

        `control` (a RunControl, optional) gets tile progress; when it is interrupted between tiles the upscale
        stops and None is returned (as the engine returns None for an interrupted batch)."""
        width, height = int(width), int(height)
        if width < 1 or height < 1:
            raise ValueError(f"Upscale target size must be positive, got {width}x{height}")
        info = self.find(name)
        image = as_rgb(image)  # what every upscaler gives back: 8-bit RGB (16-bit greyscale scaled, not clipped)
        if info.kind == "builtin":
            resample = Image.NEAREST if info.name == "Nearest" else Image.LANCZOS
            return image.resize((width, height), resample=resample)
        model = self.load(info)
        current = image
        for passes in range(MAX_PASSES):
            covers = current.width >= width and current.height >= height
            if covers and not (passes == 0 and model.scale == 1):
                break
            if passes and (current.width * model.scale > 2 * width or current.height * model.scale > 2 * height):
                break  # another pass would overshoot far past the target (and memory): Lanczos does the rest
            before = current.size
            current = self._run_model(model, current, info.name, control)
            if current is None:
                return None
            if current.size == before:
                break
        if current.size != (width, height):
            current = current.resize((width, height), resample=Image.LANCZOS)
        return current

    def load(self, info: UpscalerInfo):
        """The spandrel model for a listed file, from the cache or read now (on the policy's device; fp16 only when
        the policy runs in fp16 and the architecture supports it). UpscalerLoadError when it cannot be used."""
        path = info.path
        try:
            key = (path, path.stat().st_mtime)
        except OSError as exc:
            raise UpscalerLoadError(path, f"cannot be read ({exc.strerror or exc})") from exc
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        model = self._read(path)
        with self._lock:
            self._scales[path] = float(model.scale)
            for old in [k for k in self._loaded if k[0] == path]:
                del self._loaded[old]
            self._loaded[key] = model
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        return model

    def unload(self) -> None:
        """Drop every loaded model (frees their device memory)."""
        with self._lock:
            self._loaded.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _read(self, path: Path):
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError
        try:
            model = ModelLoader().load_from_file(path)
        except UnsupportedModelError as exc:
            raise UpscalerLoadError(path, "its weights match no architecture spandrel knows (ESRGAN, Real-ESRGAN, "
                                          "SwinIR, HAT, DAT, SCUNet, ...): not an image upscaler") from exc
        except Exception as exc:  # spandrel raises many kinds for unknown or broken files
            raise UpscalerLoadError(path, f"not a model file spandrel can read ({_short(exc)})") from exc
        purpose = getattr(model, "purpose", "?")
        arch = model.architecture.name
        if not isinstance(model, ImageModelDescriptor) or purpose not in ("SR", "Restoration"):
            raise UpscalerLoadError(path, f"a {arch} model for {_PURPOSES.get(purpose, purpose)}, "
                                          "not an image upscaler")
        if model.input_channels != 3 or model.output_channels != 3:
            raise UpscalerLoadError(path, f"a {arch} model for {model.input_channels}-channel images; "
                                          "only RGB upscalers are supported")
        device = self.policy.device
        dtype = torch.float32
        if device.type != "cpu":
            if self.policy.dtype == torch.float16 and model.supports_half:
                dtype = torch.float16
            elif self.policy.dtype == torch.bfloat16 and model.supports_bfloat16:
                dtype = torch.bfloat16
        model.to(device).to(dtype).eval()
        log.info("loaded upscaler %s (%s, %dx) on %s in %s", path.name, arch, model.scale, device, dtype)
        return model

    def _run_model(self, model, image: Image.Image, name: str, control) -> Image.Image | None:
        from spandrel import ModelTiling
        tile = int(self.options.get("ESRGAN_tile")) if self.options is not None else 192
        overlap = int(self.options.get("ESRGAN_tile_overlap")) if self.options is not None else 8
        if model.tiling == ModelTiling.INTERNAL:
            tile = 0
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

        def run(piece: torch.Tensor) -> torch.Tensor:
            return model(piece.to(model.device, model.dtype))

        def on_tile(done: int, total: int) -> bool:
            if control is None:
                return True
            if control.interrupted:
                return False
            control.report(sampling_step=done, sampling_steps=total, textinfo=f"Upscaling with {name}")
            return True

        with torch.inference_mode():
            out = run_tiled(run, pixels, int(model.scale), tile, overlap, on_tile)
        if out is None:
            return None
        if control is not None:
            control.report(sampling_step=control.progress.sampling_steps)
        array = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(array)


_PURPOSES = {"FaceSR": "face restoration", "Inpainting": "inpainting", "SR": "upscaling",
             "Restoration": "restoration"}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
