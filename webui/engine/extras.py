"""The Extras operation (A1111's "Extras" tab and `/sdapi/v1/extra-*` routes): upscale finished images and restore
their faces, as data in and data out.

Semantics as A1111's postprocessing upscale: "Scale by" multiplies the size; "Scale to" scales by the larger of the
two ratios (the aspect ratio is kept, so the image covers the box) and, with "Crop to fit", centre-crops to exactly
the box. Upscaler 2 runs on the source too and is blended over upscaler 1's result with its visibility. Upscaler 1
"None" leaves the image as it is. Then, as A1111 1.10 orders its postprocessing (upscale, GFPGAN, CodeFormer; the
API's `upscale_first` changes nothing there either), GFPGAN and CodeFormer restore the faces of the upscaled image,
each blended over it with its visibility (webui/engine/face_restoration.py). The source image's infotext is kept
and the `Postprocess ...`, `GFPGAN visibility`, `CodeFormer visibility` and `CodeFormer weight` keys are appended.
"""
from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..core.errors import RequestError
from ..core.images import as_rgb, normalise_mode
from ..core.request import IMAGE_SUFFIXES
from ..outputs.infotext import build_infotext, parse_infotext
from ..outputs.save import read_infotext, save_image, save_image_as

log = logging.getLogger(__name__)

SCALE_BY, SCALE_TO = 0, 1
MAX_OUTPUT_SIDE = 16384  # a bigger result would not fit in memory as a PIL image on most machines


@dataclass
class ExtrasRequest:
    """A1111's extras fields (API names). `images`: (image, name) pairs; the name is the file name it came from."""
    images: list[tuple[Image.Image, str]] = field(default_factory=list)
    resize_mode: int = SCALE_BY  # 0 scale by, 1 scale to
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False  # accepted and ignored, as in A1111 1.10 (upscaling always comes first)
    gfpgan_visibility: float = 0.0  # 0: no GFPGAN; else the restored image's weight over the upscaled one
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0  # CodeFormer's fidelity: 0 = maximum effect, 1 = minimum effect
    save: bool = False
    output_dir: str = ""  # set: save there under the source file names (Batch from Directory); else extras-images

    def validate(self, upscaler_names: list[str], face_restorers=None) -> "ExtrasRequest":
        """Normalise in place and reject what cannot run (RequestError naming the field): a face restoration asked
        for without its model or the face detector in `face_restorers` (webui.models.face_restorers) too."""
        if not self.images:
            raise RequestError("image", "No image given")
        for index, item in enumerate(self.images):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Image.Image)):
                raise RequestError("images", f"Image {index + 1} is not an image")
        self.images = [(normalise_mode(image), name) for image, name in self.images]  # CMYK, 16-bit, palette...
        self.resize_mode = _as_int("resize_mode", self.resize_mode)
        if self.resize_mode not in (SCALE_BY, SCALE_TO):
            raise RequestError("resize_mode", f"resize_mode must be 0 (scale by) or 1 (scale to), got "
                                              f"{self.resize_mode}")
        self.upscaling_resize = _in_range("upscaling_resize", float(_as_number("upscaling_resize",
                                                                               self.upscaling_resize)), 1.0, 8.0)
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            setattr(self, name, int(_in_range(name, _as_int(name, getattr(self, name)), 64, 8192)))
        self.extras_upscaler_2_visibility = _in_range(
            "extras_upscaler_2_visibility", float(_as_number("extras_upscaler_2_visibility",
                                                             self.extras_upscaler_2_visibility)), 0.0, 1.0)
        for name in ("gfpgan_visibility", "codeformer_visibility", "codeformer_weight"):
            setattr(self, name, _in_range(name, float(_as_number(name, getattr(self, name))), 0.0, 1.0))
        self.upscaling_crop, self.upscale_first, self.save = bool(self.upscaling_crop), bool(self.upscale_first), \
            bool(self.save)
        lowered = {name.lower(): name for name in upscaler_names}
        for name in ("upscaler_1", "upscaler_2"):
            value = str(getattr(self, name) or "None").strip()
            if value.lower() not in lowered:
                raise RequestError(name, f"Upscaler '{value}' not found; available: {', '.join(upscaler_names)}",
                                   status=400, kind="UnknownUpscalerError")  # an unknown name, as everywhere
            setattr(self, name, lowered[value.lower()])
        for field_name, restorer in (("gfpgan_visibility", "GFPGAN"), ("codeformer_visibility", "CodeFormer")):
            if getattr(self, field_name) > 0:
                _check_restorer(face_restorers, field_name, restorer)
        for image, name in self.images:
            width, height = self.target_size(image.size)
            if max(width, height) > MAX_OUTPUT_SIDE:
                raise RequestError("upscaling_resize", f"{name or 'The image'} would become {width}x{height}; the "
                                                       f"largest side allowed is {MAX_OUTPUT_SIDE} px")
        return self

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The size upscaler 1 produces for a source of `size` (before a crop)."""
        width, height = size
        if self.resize_mode == SCALE_TO:
            ratio = max(self.upscaling_resize_w / width, self.upscaling_resize_h / height)
            # ceil: the scaled image covers the box even where the ratio's rounding would fall a pixel short
            return max(1, math.ceil(width * ratio - 1e-6)), max(1, math.ceil(height * ratio - 1e-6))
        return max(1, int(width * self.upscaling_resize)), max(1, int(height * self.upscaling_resize))


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the source names, in order
    infotexts: list[str] = field(default_factory=list)  # what each image carries: source infotext + Postprocess keys
    infos: list[str] = field(default_factory=list)  # the Postprocess keys alone (A1111's html_info text)
    saved_paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def html_info(self) -> str:
        """A1111's `html_info`: the last image's postprocessing text as an HTML paragraph."""
        return text_html(self.infos[-1] if self.infos else "")


def text_html(text: str) -> str:
    """Plain text as one HTML paragraph, lines kept (as A1111 shows infotext)."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def run_extras(request: ExtrasRequest, upscalers, options, outputs_dir: Path, control=None,
               face_restorers=None) -> ExtrasResult:
    """Upscale every image of a validated request with `upscalers` (a webui.models.upscalers.UpscalerRegistry) and
    restore its faces with `face_restorers` (webui.models.face_restorers.FaceRestorers) when asked, saving when
    `request.save`. An interrupt (via `control`) stops between images or tiles: the images done so far are returned
    with `interrupted` set."""
    result = ExtrasResult()
    restoring = request.gfpgan_visibility > 0 or request.codeformer_visibility > 0
    if request.upscaler_1 == "None" and not restoring:
        result.warnings.append("Upscaler 1 is None: the images were not upscaled.")
    total = len(request.images)
    for number, (source, name) in enumerate(request.images):
        if control is not None:
            if control.interrupted:
                result.interrupted = True
                break
            control.report(job_no=number, job_count=total, sampling_step=0, sampling_steps=0,
                           textinfo=f"Extras: image {number + 1} of {total}")
        image, info = _postprocess(request, source, upscalers, control)
        if image is None:
            result.interrupted = True
            break
        if restoring:
            image, info = _restore_faces(request, image, info, face_restorers, options, control)
        infotext = _combine_infotext(read_infotext(source) or "", info)
        result.images.append(image)
        result.names.append(name)
        result.infos.append(info)
        result.infotexts.append(infotext)
        if request.save:
            path = _save(image, infotext, name, _source_seed(source), request, options, outputs_dir)
            result.saved_paths.append(path)
            if control is not None:
                control.image_saved(str(path), infotext)  # the job history records it at once
    if result.interrupted:
        result.warnings.append(f"Interrupted: {len(result.images)} of {total} images were upscaled.")
    return result


def load_folder_images(input_dir: str) -> list[tuple[Image.Image, str]]:
    """Every image file directly in `input_dir` (A1111's Batch from Directory), in name order."""
    folder = Path(str(input_dir or "")).expanduser()
    if not str(input_dir or "").strip() or not folder.is_dir():
        raise RequestError("extras_batch_input_dir", f"Input directory not found: {input_dir!r}")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as opened:
                opened.load()
                images.append((normalise_mode(opened.copy()), path.name))
        except (OSError, ValueError) as exc:
            log.warning("extras: skipping %s: %s", path, exc)
    if not images:
        raise RequestError("extras_batch_input_dir", f"No readable images in {folder}")
    return images


def _postprocess(request: ExtrasRequest, source: Image.Image, upscalers, control) -> tuple[Image.Image | None, str]:
    """(upscaled image or None when interrupted, the Postprocess infotext keys)."""
    image = as_rgb(source)
    if request.upscaler_1 == "None":
        return image, ""
    info: dict[str, object] = {}
    if request.resize_mode == SCALE_TO:
        info["Postprocess upscale to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = _number(request.upscaling_resize)
    width, height = request.target_size(image.size)
    upscaled = upscalers.upscale(image, request.upscaler_1, width, height, control=control)
    if upscaled is None:
        return None, ""
    visibility = request.extras_upscaler_2_visibility
    if request.upscaler_2 != "None" and visibility > 0:
        second = upscalers.upscale(image, request.upscaler_2, width, height, control=control)
        if second is None:
            return None, ""
        upscaled = Image.blend(upscaled.convert("RGB"), second.convert("RGB"), visibility)
    if request.resize_mode == SCALE_TO and request.upscaling_crop:
        upscaled = _centre_crop(upscaled, request.upscaling_resize_w, request.upscaling_resize_h)
        info["Postprocess crop to"] = f"{upscaled.width}x{upscaled.height}"
    info["Postprocess upscaler"] = request.upscaler_1
    if request.upscaler_2 != "None" and visibility > 0:
        info["Postprocess upscaler 2"] = request.upscaler_2
    return upscaled, build_infotext("", "", info).lstrip("\n")


def _restore_faces(request: ExtrasRequest, image: Image.Image, info: str, restorers, options,
                   control) -> tuple[Image.Image, str]:
    """GFPGAN, then CodeFormer (A1111's postprocessing order), each blended over the image with its visibility;
    their keys appended to the Postprocess ones."""
    from .face_restoration import blend, restore_faces
    keys: dict[str, object] = {}
    steps = (("GFPGAN", request.gfpgan_visibility, {}),
             ("CodeFormer", request.codeformer_visibility, {"codeformer_weight": request.codeformer_weight}))
    for name, visibility, extra in steps:
        if visibility <= 0:
            continue
        if control is not None:
            control.report(textinfo=f"Restoring faces ({name})")
        try:
            restored, _ = restore_faces(image, restorers, name, **extra)
        finally:
            if options is not None and options.get("face_restoration_unload"):
                restorers.offload()
        image = blend(image, restored, visibility)
        keys[f"{name} visibility"] = str(round(float(visibility), 3))  # as A1111 writes them: 1.0, 0.5
        if name == "CodeFormer":
            keys["CodeFormer weight"] = str(round(float(request.codeformer_weight), 3))
    text = build_infotext("", "", keys).lstrip("\n")
    return image, f"{info}, {text}" if info else text


def _check_restorer(restorers, field_name: str, name: str) -> None:
    if restorers is None:
        raise RequestError(field_name, f"{field_name}: face restoration is not available on this server")
    from ..models.face_restorers import FaceRestorationError
    try:
        restorers.check_ready(name)
    except FaceRestorationError as exc:
        raise RequestError(field_name, f"{field_name}: {exc}") from None


def _centre_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _combine_infotext(source: str, info: str) -> str:
    """The source's infotext with the Postprocess keys added to its parameter line (a new line when it has none),
    so PNG Info and "Send to txt2img" still read the original generation parameters."""
    source = source.rstrip()
    if not info:
        return source
    if not source:
        return info
    if parse_infotext(source.split("\n")[-1])["Prompt"] == "":  # the last line is a parameter line
        return f"{source}, {info}"
    return f"{source}\n{info}"


def _save(image: Image.Image, infotext: str, name: str, seed: int, request: ExtrasRequest, options,
          outputs_dir: Path) -> Path:
    extension = str(options.get("samples_format") or "png")
    if request.output_dir:  # under the source's name; never over an existing file (the sources themselves, say)
        stem, folder = (Path(name).stem if name else "image"), Path(request.output_dir).expanduser()
        path, number = folder / f"{stem}.{extension}", 0
        while path.exists():
            number += 1
            path = folder / f"{stem}_{number}.{extension}"
        return save_image_as(image, path, infotext)
    folder = options.get("outdir_extras_samples") or Path(outputs_dir) / "extras-images"
    return save_image(image, folder, seed, infotext, extension=extension)


def _source_seed(image: Image.Image) -> int:
    """The seed in the source's infotext (A1111 names extras files after it too), else 0."""
    seed = parse_infotext(read_infotext(image) or "").get("Seed")
    try:
        return max(0, int(str(seed)))
    except ValueError:
        return 0


def _number(value: float) -> str:
    """2.0 -> "2", 2.5 -> "2.5" (as A1111 writes the scale)."""
    return f"{value:g}"


def _as_number(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(name, f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise RequestError(name, f"{name} must be a finite number, got {value!r}")
    return number


def _as_int(name: str, value) -> int:
    number = _as_number(name, value)
    if number != int(number):
        raise RequestError(name, f"{name} must be a whole number, got {value!r}")
    return int(number)


def _in_range(name: str, value: float, low: float, high: float) -> float:
    if not (low <= value <= high):
        raise RequestError(name, f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value
