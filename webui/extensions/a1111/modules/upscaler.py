"""A1111's `modules.upscaler`: `UpscalerData` (the entries of `shared.sd_upscalers`) and `Upscaler`, over our
upscaler registry (webui/models/upscalers.py): the built-ins (None, Lanczos, Nearest) and the model files of
models/ESRGAN and the other upscaler folders. `entry.scaler.upscale(image, scale, entry.data_path)` runs ours."""
from __future__ import annotations

from PIL import Image

from webui.extensions.a1111.runtime import RUNTIME


class Upscaler:
    """Runs one of our upscalers by name (A1111 has one Upscaler object per kind holding several models)."""

    name = None
    scale = 4
    model_path = None
    user_path = None
    enable = True

    def __init__(self, create_dirs=False):
        self.scalers: list[UpscalerData] = []

    def upscale(self, img: Image.Image, scale: float, selected_model=None) -> Image.Image:
        """`img` enlarged `scale` times with the upscaler `selected_model` (its name, or its `data_path`)."""
        width, height = int(img.width * scale), int(img.height * scale)
        if scale <= 1 or (width, height) == img.size:
            return img
        registry = RUNTIME.require().upscalers
        info = _find(registry, selected_model) if selected_model else None
        name = info.name if info is not None else (self.name or "Lanczos")
        result = registry.upscale(img, name, width, height)
        return img if result is None else result

    def do_upscale(self, img: Image.Image, selected_model=None) -> Image.Image:
        return self.upscale(img, self.scale, selected_model)


class UpscalerData:
    """One entry of `shared.sd_upscalers`: `name`, `data_path` (the model file, or None), `scale`, `scaler`."""

    def __init__(self, name: str, path, upscaler: Upscaler = None, scale: float = 4, model=None):
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model
        self.args = None

    def __repr__(self) -> str:
        return f"<UpscalerData {self.name}>"


def _find(registry, name_or_path):
    wanted = str(name_or_path)
    for info in registry.list():
        if info.name == wanted or (info.path is not None and str(info.path) == wanted):
            return info
    return None


def sd_upscalers() -> list[UpscalerData]:
    """`shared.sd_upscalers` as A1111 lists them: None, Lanczos, Nearest, then the model files."""
    services = RUNTIME.services
    registry = getattr(services, "upscalers", None) if services is not None else None
    if registry is None:
        return []
    entries = []
    for info in registry.list():
        scaler = Upscaler()
        scaler.name = info.name
        scaler.scale = info.scale
        entry = UpscalerData(info.name, str(info.path) if info.path is not None else None, scaler, info.scale)
        scaler.scalers = [entry]
        entries.append(entry)
    return entries
