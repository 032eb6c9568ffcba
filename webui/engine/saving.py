"""Saving one generated picture to the samples folder, as every generation does: the engine's images and the
pictures a built-in script makes itself (SD upscale's recombined tiles) go through the same settings
(`samples_save`, `outdir_<mode>_samples`, `samples_format`, the file and folder name patterns, `jpeg_quality`,
`webp_lossless`, `export_for_4chan`) and the same extension hooks (`before_save`, which may
change the saved image and its infotext, and `saved`: A1111's before_image_saved / image_saved)."""
from __future__ import annotations

from pathlib import Path

from ..core.request import GenerationRequest
from ..extensions.hooks import ProcessingHooks, ProcessingRun, SaveEvent
from ..outputs.filename_pattern import context_from_infotext
from ..outputs.save import save_image, save_jpeg_copy


def samples_dir(options, outputs_dir: str | Path, mode: str) -> Path:
    """Where `mode`'s pictures are saved: the `outdir_samples` setting (A1111's: every tab's pictures), else
    `outdir_<mode>_samples`, else outputs/<mode>-images."""
    folder = options.get("outdir_samples") or options.get(f"outdir_{mode}_samples")
    return Path(folder) if folder else Path(outputs_dir) / f"{mode}-images"


def save_generated(picture, seed: int, infotext: str, *, request: GenerationRequest, options,
                   outputs_dir: str | Path, hooks: ProcessingHooks, run: ProcessingRun, result, index: int,
                   all_seeds: list[int], shape: tuple[int, int] | None = None) -> str | None:
    """Save `picture` when the request saves its images and `samples_save` is on: the path, put in
    `result.saved_paths` and told to the job (`run.control.image_saved`) and the extensions. A picture that cannot be
    written is a warning in `result.warnings` (a full disk must not lose the finished images); None then, or when
    nothing is saved. `index` is the picture's place in the run and `all_seeds` the run's planned seeds (the name
    pattern's `[seed_first]` / `[seed_last]` read them, as A1111's p.all_seeds); `shape` is the run's (batch size,
    batch count) when it is not the request's (a script's own pictures)."""
    if not request.save_images or not options.get("samples_save"):
        return None
    folder = samples_dir(options, outputs_dir, request.mode)
    save = SaveEvent(picture, infotext, str(folder))
    hooks.before_save(run, save)
    try:
        path = save_image(save.image, folder, seed, str(save.infotext), extension=options.get("samples_format"),
                          options=options, context=name_context(request, str(save.infotext), index=index,
                                                               all_seeds=all_seeds, shape=shape))
    except Exception as exc:  # noqa: BLE001 - a full disk (or an extension's odd image) must not lose the images
        result.warnings.append(f"Could not save an image to {folder}: {exc}")
        return None
    try:
        save_jpeg_copy(save.image, path, str(save.infotext), options)
    except Exception as exc:  # noqa: BLE001 - the image itself is saved
        result.warnings.append(f"Could not save a JPEG copy of {path.name}: {exc}")
    result.saved_paths.append(str(path))
    save.path = str(path)
    run.control.image_saved(save.path, str(save.infotext))  # the job's history records it at once
    hooks.saved(run, save)
    return save.path


def name_context(request: GenerationRequest, infotext: str, *, index: int, all_seeds: list[int],
                 shape: tuple[int, int] | None = None):
    """What the name pattern's tags read for the image being saved: its infotext (prompt, model, sampler, ...), the
    request's styles, the run's batch shape (`shape`, else the request's) and planned seeds, the image's place in
    the run (`index`: batch number and position in its batch) and the job's start (`[job_timestamp]`)."""
    from datetime import datetime

    size, count = shape if shape is not None else (request.batch_size, request.n_iter)
    size, index = max(int(size or 1), 1), max(int(index), 0)
    stamp = request.context.setdefault("job_timestamp", datetime.now().strftime("%Y%m%d%H%M%S"))
    return context_from_infotext(
        infotext, styles=list(request.styles or []), style_prompts=list(request.context.get("style_prompts") or []),
        batch_size=size, n_iter=max(int(count or 1), 1), batch_index=index % size, iteration=index // size,
        all_seeds=[int(s) for s in all_seeds or []] or None, job_timestamp=stamp,
        user=str(request.context.get("user") or "") or None)
