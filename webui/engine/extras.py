"""The Extras operation (A1111's "Extras" tab and `/sdapi/v1/extra-*` routes): upscale finished images and restore
their faces, as data in and data out.

Semantics as A1111's postprocessing upscale: "Scale by" multiplies the size; "Scale to" scales by the larger of the
two ratios (the aspect ratio is kept, so the image covers the box) and, with "Crop to fit", centre-crops to exactly
the box. Upscaler 2 runs on the source too and is blended over upscaler 1's result with its visibility. Upscaler 1
"None" leaves the image as it is. Then, as A1111 1.10 orders its postprocessing (upscale, GFPGAN, CodeFormer; the
API's `upscale_first` changes nothing there either), GFPGAN and CodeFormer restore the faces of the upscaled image,
each blended over it with its visibility (webui/engine/face_restoration.py). The source image's infotext is kept
and the `Postprocess ...`, `GFPGAN visibility`, `CodeFormer visibility` and `CodeFormer weight` keys are appended.

Extensions' postprocessing operations (A1111's `ScriptPostprocessing`, given as `ExtrasOperation`s) run among the
built-in ones (Upscale 1000, GFPGAN 2000, CodeFormer 3000) by A1111's rule: first the names listed in the option
`postprocessing_operation_order`, then by `order`, then by name. Each works on an `ExtrasItem` (A1111's
`PostprocessedImage`): it may replace `.image`, add `.info` keys (written after the built-in ones, in order) and
`.extra_images` (each returned and saved too, its name suffixed with its `nametags`).
"""
from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..core.errors import RequestError
from ..core.images import as_rgb, normalise_mode
from ..core.request import IMAGE_SUFFIXES
from ..outputs.infotext import _quote, parse_infotext
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
    script_args: dict = field(default_factory=dict)  # extensions' operations: name -> {control name: value}

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


class ExtrasSharedInfo:
    """What the operations on one source image share (A1111's PostprocessedImageSharedInfo)."""
    target_width: int | None = None
    target_height: int | None = None


class ExtrasItem:
    """One image on its way through the Extras operations; A1111's `PostprocessedImage` (the compat package's
    `scripts_postprocessing.PostprocessedImage` is this class), with its fields and helpers."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.info: dict = {}  # infotext keys the operations add, in order
        self.shared = ExtrasSharedInfo()
        self.extra_images: list = []  # more results (images or ExtrasItems), processed by the later operations
        self.nametags: list[str] = []  # suffixes of the saved file's name
        self.disable_processing = False  # True: later operations leave this one alone
        self.caption: str | None = None  # written beside the saved file as a .txt (A1111's captions)

    def get_suffix(self, used_suffixes: dict | None = None) -> str:
        """"-tag1-tag2" from the name tags, made unique among `used_suffixes` (which it records)."""
        used = {} if used_suffixes is None else used_suffixes
        suffix = "-".join(self.nametags)
        suffix = "-" + suffix if suffix else ""
        candidate, number = suffix, 0
        while candidate in used and number < 100:
            number += 1
            candidate = f"{suffix}-{number}"
        used[candidate] = 1
        return candidate

    def create_copy(self, new_image: Image.Image, *, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> "ExtrasItem":
        copy = type(self)(new_image)
        copy.shared, copy.nametags, copy.info = self.shared, list(self.nametags) + list(nametags or []), \
            dict(self.info)
        copy.disable_processing = disable_processing
        return copy


@dataclass
class ExtrasOperation:
    """A postprocessing step: `process(item)` changes the item in place; `first_pass(item)` (optional) runs for
    every operation before any `process` (A1111's process_firstpass). An extension's operation catches and reports
    its own errors."""
    name: str
    order: float
    process: Callable[[ExtrasItem], None]
    first_pass: Callable[[ExtrasItem], None] | None = None


BUILTIN_ORDER = {"Upscale": 1000, "GFPGAN": 2000, "CodeFormer": 3000}  # A1111's scripts/postprocessing_*.py


class _Interrupted(Exception):
    """An upscale stopped by Interrupt (the image is dropped)."""


def preferred_order(operations: list[ExtrasOperation], options) -> list[ExtrasOperation]:
    """A1111's order: the names in `postprocessing_operation_order` first (in that order), then by `order`,
    then by name, then as given."""
    wanted = [str(name) for name in (_option(options, "postprocessing_operation_order") or [])]

    def key(pair):
        index, operation = pair
        rank = wanted.index(operation.name) if operation.name in wanted else len(operations)
        return rank, operation.order, operation.name, index

    return [operation for _, operation in sorted(enumerate(operations), key=key)]


def order_of(value) -> float:
    """An operation's `order` as a number (an extension's odd value: the default 1000)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1000.0


def operation_names(extension_names: list[str]) -> list[str]:
    """Every operation's name (the built-in ones first): the choices of the operation order option."""
    return [*BUILTIN_ORDER, *[name for name in extension_names if name not in BUILTIN_ORDER]]


def info_text(info: dict) -> str:
    """A1111's postprocessing infotext: `key: value` pairs in the order added, None skipped, a value equal to its
    key written bare."""
    pairs = [key if str(value) == key else f"{key}: {_quote(str(value))}" for key, value in info.items()
             if value is not None]
    return ", ".join(pairs)


def _option(options, key: str, default=None):
    try:
        return options.get(key) if options is not None else default
    except KeyError:
        return default


def text_html(text: str) -> str:
    """Plain text as one HTML paragraph, lines kept (as A1111 shows infotext)."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def run_extras(request: ExtrasRequest, upscalers, options, outputs_dir: Path, control=None,
               face_restorers=None, postprocessing=None) -> ExtrasResult:
    """Upscale every image of a validated request with `upscalers` (a webui.models.upscalers.UpscalerRegistry) and
    restore its faces with `face_restorers` (webui.models.face_restorers.FaceRestorers) when asked, with the
    extensions' operations (`postprocessing.operations(request.script_args, warnings)` -> ExtrasOperations) in
    between by A1111's order, saving when `request.save`. An interrupt (via `control`) stops between images or
    tiles: the images done so far are returned with `interrupted` set."""
    result = ExtrasResult()
    restoring = request.gfpgan_visibility > 0 or request.codeformer_visibility > 0
    extension_operations = postprocessing.operations(request.script_args, result.warnings) \
        if postprocessing is not None else []
    operations = preferred_order(_builtin_operations(request, upscalers, face_restorers, options, control)
                                 + list(extension_operations), options)
    total = len(request.images)
    for number, (source, name) in enumerate(request.images):
        if control is not None:
            if control.interrupted:
                result.interrupted = True
                break
            control.report(job_no=number, job_count=total, sampling_step=0, sampling_steps=0,
                           textinfo=f"Extras: image {number + 1} of {total}")
        try:
            items = _process_image(as_rgb(source), operations)
        except _Interrupted:
            result.interrupted = True
            break
        used_suffixes: dict = {}
        for item in items:
            suffix = item.get_suffix(used_suffixes)
            info = info_text(item.info)
            infotext = _combine_infotext(read_infotext(source) or "", info)
            result.images.append(item.image)
            result.names.append(_suffixed(name, suffix))
            result.infos.append(info)
            result.infotexts.append(infotext)
            if request.save:
                path = _save(item.image, infotext, _suffixed(name, suffix), _source_seed(source), request, options,
                             outputs_dir)
                result.saved_paths.append(path)
                if item.caption:
                    _write_caption(path, str(item.caption), options)
                if control is not None:
                    control.image_saved(str(path), infotext)  # the job history records it at once
    if request.upscaler_1 == "None" and not restoring and not any(result.infos):
        result.warnings.append("Upscaler 1 is None: the images were not upscaled.")
    if result.interrupted:
        result.warnings.append(f"Interrupted: {len(result.images)} of {total} images were upscaled.")
    return result


def _process_image(image: Image.Image, operations: list[ExtrasOperation]) -> list[ExtrasItem]:
    """Every operation's first pass, then each operation on the image and on the extra images the earlier ones
    made (A1111's ScriptPostprocessingRunner.run); the results, the image itself first."""
    item = ExtrasItem(image)
    for operation in operations:
        if operation.first_pass is not None:
            operation.first_pass(item)
    items = [item]
    for operation in operations:
        for single in list(items):
            if not single.disable_processing:
                operation.process(single)
            for extra in single.extra_images:
                items.append(extra if isinstance(extra, ExtrasItem) else single.create_copy(extra))
            single.extra_images.clear()
    for single in items:
        if not isinstance(single.image, Image.Image):
            raise TypeError(f"an Extras operation left {type(single.image).__name__} where an image belongs")
    return items


def _builtin_operations(request: ExtrasRequest, upscalers, restorers, options, control) -> list[ExtrasOperation]:
    """Upscale, GFPGAN and CodeFormer as operations (only the ones the request asks for)."""
    operations = []
    if request.upscaler_1 != "None":
        operations.append(ExtrasOperation("Upscale", BUILTIN_ORDER["Upscale"],
                                          lambda item: _upscale(request, item, upscalers, control)))
    for name, visibility in (("GFPGAN", request.gfpgan_visibility), ("CodeFormer", request.codeformer_visibility)):
        if visibility > 0:
            operations.append(ExtrasOperation(
                name, BUILTIN_ORDER[name],
                lambda item, name=name: _restore_faces(request, name, item, restorers, options, control)))
    return operations


def _suffixed(name: str, suffix: str) -> str:
    if not suffix:
        return name
    path = Path(name or "image")
    return f"{path.stem}{suffix}{path.suffix}"


def _write_caption(image_path: Path, caption: str, options) -> None:
    """An operation's caption beside the saved image as a .txt; an existing one is handled as the option
    `postprocessing_existing_caption_action` says (Ignore: replaced, Keep, Prepend, Append), as A1111."""
    target = Path(image_path).with_suffix(".txt")
    existing = target.read_text(encoding="utf-8").strip() if target.is_file() else ""
    action = _option(options, "postprocessing_existing_caption_action", "Ignore")
    if existing and action == "Prepend":
        caption = f"{existing} {caption}"
    elif existing and action == "Append":
        caption = f"{caption} {existing}"
    elif existing and action == "Keep":
        caption = existing
    caption = caption.strip()
    if caption:
        target.write_text(caption, encoding="utf-8")


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


def _upscale(request: ExtrasRequest, item: ExtrasItem, upscalers, control) -> None:
    """Upscaler 1 (upscaler 2 blended over it), then the crop; the Postprocess infotext keys."""
    image = item.image
    info = item.info
    if request.resize_mode == SCALE_TO:
        info["Postprocess upscale to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = _number(request.upscaling_resize)
    width, height = request.target_size(image.size)
    upscaled = upscalers.upscale(image, request.upscaler_1, width, height, control=control)
    if upscaled is None:
        raise _Interrupted
    visibility = request.extras_upscaler_2_visibility
    if request.upscaler_2 != "None" and visibility > 0:
        second = upscalers.upscale(image, request.upscaler_2, width, height, control=control)
        if second is None:
            raise _Interrupted
        upscaled = Image.blend(upscaled.convert("RGB"), second.convert("RGB"), visibility)
    if request.resize_mode == SCALE_TO and request.upscaling_crop:
        upscaled = _centre_crop(upscaled, request.upscaling_resize_w, request.upscaling_resize_h)
        info["Postprocess crop to"] = f"{upscaled.width}x{upscaled.height}"
    info["Postprocess upscaler"] = request.upscaler_1
    if request.upscaler_2 != "None" and visibility > 0:
        info["Postprocess upscaler 2"] = request.upscaler_2
    item.image = upscaled


def _restore_faces(request: ExtrasRequest, name: str, item: ExtrasItem, restorers, options, control) -> None:
    """GFPGAN or CodeFormer, blended over the image with its visibility; its keys in the item's info."""
    from .face_restoration import blend, restore_faces
    visibility = request.gfpgan_visibility if name == "GFPGAN" else request.codeformer_visibility
    extra = {"codeformer_weight": request.codeformer_weight} if name == "CodeFormer" else {}
    if control is not None:
        control.report(textinfo=f"Restoring faces ({name})")
    try:
        restored, _ = restore_faces(as_rgb(item.image), restorers, name, **extra)
    finally:
        if options is not None and options.get("face_restoration_unload"):
            restorers.offload()
    item.image = blend(as_rgb(item.image), restored, visibility)
    item.info[f"{name} visibility"] = str(round(float(visibility), 3))  # as A1111 writes them: 1.0, 0.5
    if name == "CodeFormer":
        item.info["CodeFormer weight"] = str(round(float(request.codeformer_weight), 3))


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
    folder = options.get("outdir_samples") or options.get("outdir_extras_samples") or \
        Path(outputs_dir) / "extras-images"
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
