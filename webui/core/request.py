"""The one request record every entry point (UI, HTTP API, extensions) builds and the engine runs, with the
validation of its fields (`RequestError`, an HTTP 422 naming the field; an unknown sampler is a `SamplerError`, 400).

It lives in `webui/core` so that every room can build or read one without importing the engine."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import RequestError
from .hires import validate_fields as validate_hires_fields
from .images import normalise_mode
from .samplers import resolve_name
from .sizes import MAX_SIDE, MIN_SIDE, rounding_note

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
# A1111's inpaint choices; the request holds their indexes (its API's integers).
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_FILLS = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")
OUTPAINT_FILLS = ("edge", "noise")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# The longest prompt (and negative prompt, hires prompts) accepted, in characters. Far beyond what CLIP can use (75
# tokens a chunk, and prompts past a few hundred tokens dilute to nothing): 20,000 characters are some 5,000-9,000
# tokens, 70-120 chunks. It bounds what a prompt costs the one worker (a 1 MB prompt held it for minutes, 50 MB
# made the tokenizer ask for gigabytes).
MAX_PROMPT_CHARS = 20_000
# The sampler parameters a request may set, and their largest values (s_tmax 0 means no limit, as in A1111).
SAMPLER_VALUE_LIMITS = {"eta": 10.0, "s_churn": 100.0, "s_tmin": 1000.0, "s_tmax": 1000.0, "s_noise": 10.0}
PROMPT_FIELDS = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_prompt_text(name: str, text: str) -> None:
    """Refuse (RequestError naming `name`) a prompt that is too long or holds a lone UTF-16 surrogate (JSON's
    "\\ud800" without its pair: not a character, and no tokenizer can take it)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(name, f"{name} is too long: {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise RequestError(name, f"{name} holds an invalid character at position {bad.start()}: a lone UTF-16 "
                           f"surrogate (U+{ord(bad.group()):04X}), which is not text; remove it")


@dataclass
class Outpaint:
    """Extend the (fitted) init image by these many pixels on each side and inpaint the new area, with the mask
    reaching `overlap` pixels into the original so the seam is regenerated too."""
    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0
    fill: str = "edge"  # OUTPAINT_FILLS: stretch the edge colours outwards, or seeded pixel noise
    overlap: int = 8

    @property
    def active(self) -> bool:
        return any((self.left, self.right, self.up, self.down))


@dataclass
class FolderBatch:
    """img2img over every image of a folder (A1111's Batch tab); masks matched by file stem in `mask_dir`."""
    input_dir: str
    output_dir: str = ""  # empty: the usual img2img output folder
    mask_dir: str = ""


@dataclass
class GenerationRequest:
    mode: str = "txt2img"  # "txt2img" | "img2img"
    prompt: str = ""
    negative_prompt: str = ""
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    distilled_cfg_scale: float = 3.5  # Forge's: FLUX.1 dev's guidance embedding (ignored by other families)
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
    # inpainting (img2img with a mask); meanings and integer codes as A1111's API
    mask: Image.Image | None = None  # white = inpaint; any mode and size (the engine normalises it)
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 1  # INPAINT_FILLS index
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0  # MASK_MODES index
    initial_noise_multiplier: float = 1.0
    outpaint: Outpaint | None = None
    folder_batch: FolderBatch | None = None
    controlnet_units: list = field(default_factory=list)  # webui.control.units.ControlUnit, in unit order
    # A1111's sampler parameters; None: the setting (eta_ancestral / eta_ddim, s_churn, s_tmin, s_tmax, s_noise)
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    tiling: bool = False  # A1111's "Tiling": seamless textures (every convolution wraps around the edges)
    restore_faces: bool | None = None  # A1111's "Restore faces"; None: the setting `face_restoration`
    # hires fix (txt2img; webui/engine/hires.py): A1111's fields and meanings, checked only when enable_hr is on
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None  # a LATENT_UPSCALE_MODES name or an image upscaler's; None: "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    hr_resize_x: int = 0  # "Resize width/height to" (0: by hr_scale); both given: cover, then cut to that size
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None  # None / "Use same checkpoint"
    hr_sampler_name: str | None = None  # None / "Use same sampler"
    hr_scheduler: str | None = None  # None / "Use same scheduler"
    hr_prompt: str = ""  # "": the first pass's prompt
    hr_negative_prompt: str = ""
    # refiner (A1111 1.6+; webui/engine/refiner.py): another checkpoint takes over sampling once `refiner_switch_at`
    # of the denoising is done; None (or "", "None"): no refiner. An unknown name is refused when the job runs.
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8  # (0, 1]; 1: never switches
    save_images: bool = True
    # A1111's do_not_save_grid: no batch grid at all (neither shown nor saved). The API sets it unless save_images;
    # scripts set it on their inner generations, folder batches on each file's run.
    do_not_save_grid: bool = False
    styles: list[str] = field(default_factory=list)  # applied into the prompts when the job is queued
    extra: dict[str, Any] = field(default_factory=dict)  # what later features add (kept in the API echo)
    # extensions: the values of always-on scripts' and sections' controls, by lower-cased title (UI or API
    # alwayson_scripts); a selectable extension script to run instead of a plain generation, and its values
    script_args: dict[str, list] = field(default_factory=dict)
    script_name: str = ""
    script_run_args: list = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # opaque: for extension hooks
    # what validate() changed in the user's values (a side rounded to a multiple of 8), told with the job's warnings
    corrections: list[str] = field(default_factory=list, repr=False, compare=False)

    def validate(self) -> "GenerationRequest":
        """Normalise in place (A1111 rounds sizes down to a multiple of 8) and reject what cannot run."""
        if self.mode not in ("txt2img", "img2img"):
            raise RequestError("mode", f"unknown mode {self.mode!r}")
        self.check_prompts()
        self._int_range("steps", 1, 150)
        self._float_range("cfg_scale", 1.0, 30.0)
        self._float_range("distilled_cfg_scale", 0.0, 30.0)
        self._int_range("batch_size", 1, 64)
        self._int_range("n_iter", 1, 100)
        for name in ("width", "height"):
            self._int_range(name, MIN_SIDE, MAX_SIDE)
            note = rounding_note(name.capitalize(), getattr(self, name))
            if note is not None:  # rounded down as A1111 does, and said so (the job's warnings, the API's info)
                setattr(self, name, getattr(self, name) // 8 * 8)
                self.corrections = [*self.corrections, note]  # a new list: copies made by replace() keep theirs
        self._float_range("subseed_strength", 0.0, 1.0)
        self._float_range("denoising_strength", 0.0, 1.0)
        if self.clip_skip is not None:
            self._int_range("clip_skip", 1, 12)
        for name in ("seed", "subseed", "seed_resize_from_w", "seed_resize_from_h"):
            self._int_range(name, -1, 2 ** 32)
        for name, high in SAMPLER_VALUE_LIMITS.items():
            if getattr(self, name) is not None:
                self._float_range(name, 0.0, high)
        sampler, schedule = resolve_name(self.sampler_name, self.scheduler)  # SamplerError (400) when unknown
        self.sampler_name, self.scheduler = sampler.name, schedule
        if not isinstance(self.controlnet_units, (list, tuple)):
            raise RequestError("controlnet_units", "controlnet_units must be a list of units")
        for index, unit in enumerate(self.controlnet_units):
            try:
                unit.validate(index)  # sets `enabled` (a bool) before checking anything else
            except RequestError:
                if unit.enabled:
                    raise  # a disabled unit's settings do not matter, as in A1111
            if unit.enabled and unit.image is None and self.mode != "img2img":
                raise RequestError(f"controlnet_units[{index}]", f"ControlNet unit {index} is enabled but has no "
                                   "image (upload one, or disable the unit)")
        self._validate_refiner()
        if self.restore_faces is not None:
            self.restore_faces = bool(self.restore_faces)
        self.enable_hr = bool(self.enable_hr)
        if self.enable_hr:
            validate_hires_fields(self)
        if self.mode == "img2img":
            self._validate_img2img()
        else:
            for name in ("mask", "outpaint", "folder_batch"):
                if getattr(self, name) is not None:
                    raise RequestError(name, f"{name} needs img2img (this is a {self.mode} request)")
        return self

    def check_prompts(self) -> None:
        """The prompts as text, each within MAX_PROMPT_CHARS and free of lone surrogates (also run again once styles
        have been applied)."""
        for name in PROMPT_FIELDS:
            value = getattr(self, name)
            text = "" if value is None else str(value)
            check_prompt_text(name, text)
            setattr(self, name, text)

    def _validate_refiner(self) -> None:
        """A1111 takes None, "", "None" and "none" as no refiner; the switch point is a fraction of the denoising,
        checked even without a refiner (the X/Y/Z plot sets it on its own)."""
        if isinstance(self.refiner_checkpoint, str):
            self.refiner_checkpoint = self.refiner_checkpoint.strip()
        if self.refiner_checkpoint in (None, "", "None", "none"):
            self.refiner_checkpoint = None
        elif not isinstance(self.refiner_checkpoint, str):
            raise RequestError("refiner_checkpoint", f"refiner_checkpoint must be a checkpoint's name, got "
                               f"{self.refiner_checkpoint!r}")
        value = self._number("refiner_switch_at", float)
        if not 0.0 < value <= 1.0:
            raise RequestError("refiner_switch_at", f"refiner_switch_at must be more than 0 and at most 1 (the "
                               f"fraction of the denoising done before the refiner takes over), got {value:g}")

    def _validate_img2img(self) -> None:
        if not self.init_images and self.folder_batch is None:
            raise RequestError("init_images", "img2img needs an init image: none was given")
        if not all(isinstance(image, Image.Image) for image in self.init_images):
            raise RequestError("init_images", "init_images must be images")
        if self.mask is not None and not isinstance(self.mask, Image.Image):
            raise RequestError("mask", "mask must be an image")
        self.init_images = [normalise_mode(image) for image in self.init_images]  # CMYK, 16-bit, palette, ...
        self.mask = normalise_mode(self.mask) if self.mask is not None else None
        if self._number("resize_mode", int) not in range(len(RESIZE_MODES)):
            raise RequestError("resize_mode", f"resize_mode must be 0..{len(RESIZE_MODES) - 1} "
                               f"({', '.join(RESIZE_MODES)})")
        self._int_range("mask_blur_x", 0, 64)
        self._int_range("mask_blur_y", 0, 64)
        if self._number("inpainting_fill", int) not in range(len(INPAINT_FILLS)):
            raise RequestError("inpainting_fill", "inpainting_fill must be 0..3 (" +
                               ", ".join(f"{i} {name}" for i, name in enumerate(INPAINT_FILLS)) + ")")
        self.inpaint_full_res = bool(self.inpaint_full_res)
        self._int_range("inpaint_full_res_padding", 0, 1024)
        self.inpainting_mask_invert = int(bool(self.inpainting_mask_invert))
        self._float_range("initial_noise_multiplier", 0.0, 2.0)
        if self.outpaint is not None:
            self._validate_outpaint(self.outpaint)
        if self.folder_batch is not None:
            self._validate_folder_batch(self.folder_batch)

    def _validate_outpaint(self, outpaint: Outpaint) -> None:
        for side in ("left", "right", "up", "down", "overlap"):
            value = getattr(outpaint, side)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
                    or not 0 <= value <= 2048:
                raise RequestError("outpaint", f"outpaint {side} must be a whole number of pixels from 0 to 2048, "
                                   f"got {value!r}")
            setattr(outpaint, side, int(value))
            if side != "overlap" and value % 8:
                raise RequestError("outpaint", f"outpaint {side} must be a multiple of 8 pixels, got {value}")
        if outpaint.fill not in OUTPAINT_FILLS:
            raise RequestError("outpaint", f"outpaint fill must be one of {', '.join(OUTPAINT_FILLS)}, "
                               f"got {outpaint.fill!r}")
        if self.width + outpaint.left + outpaint.right > MAX_SIDE or \
                self.height + outpaint.up + outpaint.down > MAX_SIDE:
            raise RequestError("outpaint", f"the outpainted image would be larger than {MAX_SIDE} pixels on a side")

    @staticmethod
    def _validate_folder_batch(batch: FolderBatch) -> None:
        source = Path(str(batch.input_dir or "")).expanduser()
        if not str(batch.input_dir or "").strip() or not source.is_dir():
            raise RequestError("img2img_batch_input_dir", f"the batch input folder {batch.input_dir!r} does not exist")
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.iterdir() if p.is_file()):
            raise RequestError("img2img_batch_input_dir", f"the batch input folder {source} holds no images")
        if batch.mask_dir and not Path(batch.mask_dir).expanduser().is_dir():
            raise RequestError("img2img_batch_inpaint_mask_dir", f"the batch mask folder {batch.mask_dir!r} "
                               "does not exist")

    def _number(self, name: str, kind):
        value = getattr(self, name)
        try:
            if isinstance(value, bool):
                raise TypeError
            number = kind(value)
            if kind is int and number != float(value):
                raise ValueError
        except (TypeError, ValueError, OverflowError):  # 10**400 has no float
            raise RequestError(name, f"{name} must be a number, got {value!r}") from None
        setattr(self, name, number)
        return number

    def _int_range(self, name: str, low: int, high: int) -> None:
        value = self._number(name, int)
        if not low <= value <= high:
            raise RequestError(name, f"{name} must be between {low} and {high}, got {value}")

    def sampler_values(self) -> dict:
        """The sampler parameters the request sets (eta is read separately: its default depends on the sampler)."""
        return {name: getattr(self, name) for name in ("s_churn", "s_tmin", "s_tmax", "s_noise")
                if getattr(self, name) is not None}

    def _float_range(self, name: str, low: float, high: float) -> None:
        value = self._number(name, float)
        if not low <= value <= high:
            raise RequestError(name, f"{name} must be between {low:g} and {high:g}, got {value:g}")
