"""img2img over every image of a folder (A1111's Batch tab): one engine run per file, progress over the whole
folder, masks matched by file name, results saved under the input's name.

Masks: the file in the mask folder with the same stem (any image suffix); when the mask folder holds exactly one
image, that one for every file (as A1111); else the request's own mask. Unreadable files are skipped with a warning
naming them. Interrupt stops after the current file and keeps what was saved; Skip drops the current file.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps

from ..core.errors import RequestError
from ..core.images import normalise_mode
from ..core.request import IMAGE_SUFFIXES, GenerationRequest
from ..outputs.save import save_image_as
from .engine import GenerationResult
from .sub_run import SubRunControl

log = logging.getLogger(__name__)

MAX_IMAGES_KEPT = 64  # images held in memory (and sent back); every saved file is listed in saved_paths


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> Image.Image:
    """The picture in `path`, upright (EXIF orientation applied) and fully read, so the file is closed."""
    with Image.open(path) as opened:
        opened.load()
        return normalise_mode(ImageOps.exif_transpose(opened))  # CMYK, 16-bit, palette, ...


def run_folder_batch(engine, request: GenerationRequest, control) -> GenerationResult:
    """Run `request` (validated, with `folder_batch` set) once per image file of its input folder."""
    batch = request.folder_batch
    files = image_files(Path(batch.input_dir).expanduser())
    masks = _MaskFolder(batch.mask_dir)
    output_dir = Path(batch.output_dir).expanduser() if str(batch.output_dir or "").strip() else None
    extension = str(engine.options.get("samples_format") or "png")
    several = request.batch_size * request.n_iter > 1
    total_jobs = len(files) * request.n_iter
    started = time.perf_counter()
    result = GenerationResult(job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"))
    collected = _Collector(result, control)
    control.report(job_count=total_jobs, job_no=0, sampling_step=0, started=time.monotonic(),
                   textinfo=f"Batch of {len(files)} files from {batch.input_dir}")
    done = 0
    for index, path in enumerate(files):
        if control.interrupted:
            result.interrupted = True
            break
        try:
            image = _read_input(path)
            mask = masks.mask_for(path, request.mask, result.warnings)
        except _UnreadableFile as exc:
            result.warnings.append(str(exc))
            continue
        sub_request = dataclasses.replace(request, init_images=[image], mask=mask, folder_batch=None,
                                          save_images=request.save_images and output_dir is None,
                                          do_not_save_grid=True)  # A1111: no grid per file of a folder batch
        file_control = SubRunControl(control, index * request.n_iter, total_jobs,
                                    f"{path.name} ({index + 1} of {len(files)})")
        try:
            sub_result = engine.run(sub_request, file_control)
        except RequestError as exc:  # this file's input (an empty mask, say), not the batch, is at fault
            result.warnings.append(f"Skipped {path.name}: {exc}")
            continue
        stopped = file_control.skipped or sub_result.interrupted
        collected.add(sub_result, drop_interrupt_notes=stopped)
        if output_dir is not None:
            for number, (picture, infotext) in enumerate(zip(sub_result.images, sub_result.infotexts), 1):
                collected.save(picture, infotext, output_dir, f"{path.stem}-{number}" if several else path.stem,
                               extension)
        if file_control.skipped and not control.interrupted:
            result.warnings.append(f"{path.name}: Skip was pressed; its picture stops where sampling had got")
            continue
        if sub_result.interrupted:
            result.interrupted = True
            break
        done += 1
    if result.interrupted:
        result.warnings.append(f"Interrupted: {done} of {len(files)} files were processed; what was made so far "
                               "is kept")
    collected.finish()
    result.elapsed = time.perf_counter() - started
    return result


class _UnreadableFile(Exception):
    """An input or mask file that Pillow cannot read; the message names it."""


def _read_input(path: Path, owner: Path | None = None) -> Image.Image:
    """`path` read as an image; `owner` is the input image when `path` is its mask."""
    try:
        return read_image(path)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        subject = f"{owner.name}: its mask {path}" if owner is not None else f"{path.name}: it"
        raise _UnreadableFile(f"Skipped {subject} cannot be read as an image ({exc})") from None


class _MaskFolder:
    """The masks of a batch: by stem, or the folder's only image for every file."""

    def __init__(self, folder: str):
        self.folder = Path(folder).expanduser() if str(folder or "").strip() else None
        self.files = image_files(self.folder) if self.folder is not None else []
        self.by_stem: dict[str, Path] = {}
        for path in self.files:
            self.by_stem.setdefault(path.stem, path)

    def mask_for(self, image_path: Path, fallback, warnings: list[str]):
        """The mask image for `image_path`, or `fallback` (the request's mask, maybe None) when the folder has
        none for it. An unreadable mask file raises _UnreadableFile: the image is skipped rather than regenerated
        whole."""
        if self.folder is None:
            return fallback
        path = self.files[0] if len(self.files) == 1 else self.by_stem.get(image_path.stem)
        if path is None:
            used = "the request's mask" if fallback is not None else "no mask (plain img2img)"
            warnings.append(f"No mask named {image_path.stem}.* in {self.folder}: {image_path.name} was processed "
                            f"with {used}")
            return fallback
        return _read_input(path, owner=image_path)


class _Collector:
    """Gathers the per-file results into the batch's: every seed, infotext and saved path, the first
    MAX_IMAGES_KEPT images, warnings once each."""

    def __init__(self, result: GenerationResult, control):
        self.result, self.control = result, control
        self.images_made = 0
        self.first = True

    def add(self, sub: GenerationResult, drop_interrupt_notes: bool) -> None:
        result = self.result
        if self.first and (sub.images or sub.seeds):
            self.first = False
            result.seed, result.subseed = sub.seed, sub.subseed
            result.model_name, result.model_hash = sub.model_name, sub.model_hash
            result.extra_params = dict(sub.extra_params)
        self.images_made += len(sub.images)
        room = max(0, MAX_IMAGES_KEPT - len(result.images))
        result.images.extend(sub.images[:room])
        result.seeds.extend(sub.seeds)
        result.subseeds.extend(sub.subseeds)
        result.prompts.extend(sub.prompts)
        result.negative_prompts.extend(sub.negative_prompts)
        result.infotexts.extend(sub.infotexts)
        result.saved_paths.extend(sub.saved_paths)
        result.skipped_batches += sub.skipped_batches
        for warning in sub.warnings:
            if drop_interrupt_notes and warning.startswith("Interrupted:"):
                continue  # the batch says what was stopped, per folder
            if warning not in result.warnings:
                result.warnings.append(warning)

    def save(self, picture: Image.Image, infotext: str, folder: Path, base: str, extension: str) -> None:
        """Save under `base` in `folder`, never over an existing file (`base_1`, `base_2`, ... instead)."""
        path, number = folder / f"{base}.{extension}", 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            while path.exists():
                number += 1
                path = folder / f"{base}_{number}.{extension}"
            saved = str(save_image_as(picture, path, infotext))
            self.result.saved_paths.append(saved)
            self.control.image_saved(saved, infotext)
        except (OSError, ValueError) as exc:  # a full disk or bad folder must not lose the images in memory
            self.result.warnings.append(f"Could not save {path.name} to {folder}: {exc}")

    def finish(self) -> None:
        result = self.result
        if self.images_made > len(result.images):
            saved = (f"all {len(result.saved_paths)} saved files are listed in saved_paths" if result.saved_paths
                     else "the others were not saved (give an output folder or turn saving on)")
            result.warnings.append(f"The batch made {self.images_made} images; only the first {len(result.images)} "
                                   f"are kept in memory and shown: {saved}")
