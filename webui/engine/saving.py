"""Saving one generated picture to the samples folder, as every generation does: the engine's images and the
pictures a built-in script makes itself (SD upscale's recombined tiles) go through the same settings
(`samples_save`, `outdir_<mode>_samples`, `samples_format`) and the same extension hooks (`before_save`, which may
change the saved image and its infotext, and `saved`: A1111's before_image_saved / image_saved)."""
from __future__ import annotations

from pathlib import Path

from ..core.request import GenerationRequest
from ..extensions.hooks import ProcessingHooks, ProcessingRun, SaveEvent
from ..outputs.save import save_image


def samples_dir(options, outputs_dir: str | Path, mode: str) -> Path:
    """Where `mode`'s pictures are saved: the `outdir_<mode>_samples` setting, else outputs/<mode>-images."""
    folder = options.get(f"outdir_{mode}_samples")
    return Path(folder) if folder else Path(outputs_dir) / f"{mode}-images"


def save_generated(picture, seed: int, infotext: str, *, request: GenerationRequest, options,
                   outputs_dir: str | Path, hooks: ProcessingHooks, run: ProcessingRun, result) -> str | None:
    """Save `picture` when the request saves its images and `samples_save` is on: the path, put in
    `result.saved_paths` and told to the job (`run.control.image_saved`) and the extensions. A picture that cannot be
    written is a warning in `result.warnings` (a full disk must not lose the finished images); None then, or when
    nothing is saved."""
    if not request.save_images or not options.get("samples_save"):
        return None
    folder = samples_dir(options, outputs_dir, request.mode)
    save = SaveEvent(picture, infotext, str(folder))
    hooks.before_save(run, save)
    try:
        path = save_image(save.image, folder, seed, str(save.infotext), extension=options.get("samples_format"))
    except Exception as exc:  # noqa: BLE001 - a full disk (or an extension's odd image) must not lose the images
        result.warnings.append(f"Could not save an image to {folder}: {exc}")
        return None
    result.saved_paths.append(str(path))
    save.path = str(path)
    run.control.image_saved(save.path, str(save.infotext))  # the job's history records it at once
    hooks.saved(run, save)
    return save.path
