"""Gathering the inner generations of a built-in script into the one result of its job: their images, seeds,
prompts and infotexts in order (an inner run's own grids left out), saved paths, warnings (each once) and whether
the job was interrupted; the first run's seed, model and timestamp stand for the job's."""
from __future__ import annotations

from ...outputs.grid import save_grid
from ..engine import GenerationResult


class Collector:
    def __init__(self, control=None):
        """`control`: the job's; an inner run that ended because Skip ended it (its SubRunControl reads as
        interrupted) does not make the job interrupted."""
        self.result = GenerationResult()
        self.runs = 0
        self.control = control

    def add(self, inner: GenerationResult, keep: bool = True) -> list:
        """Take in one inner run's result; returns its images (without grids). `keep` False: its images and their
        lists are not the job's (SD upscale's tiles), only its warnings, time and state are."""
        result, skip = self.result, inner.index_of_first_image
        if self.runs == 0:
            result.seed, result.subseed = inner.seed, inner.subseed
            result.model_name, result.model_hash = inner.model_name, inner.model_hash
            result.job_timestamp, result.extra_params = inner.job_timestamp, dict(inner.extra_params)
        self.runs += 1
        images = list(inner.images[skip:])
        skipped = inner.interrupted and self.control is not None and not self.control.interrupted
        self.warn(*(w for w in inner.warnings if not (skipped and w.startswith("Interrupted: "))))
        result.interrupted = result.interrupted or (inner.interrupted and not skipped)
        result.skipped_batches += inner.skipped_batches
        result.elapsed += inner.elapsed
        if not keep:
            return images
        result.images += images
        result.infotexts += list(inner.infotexts[skip:])
        result.seeds += list(inner.seeds)
        result.subseeds += list(inner.subseeds)
        result.prompts += list(inner.prompts)
        result.negative_prompts += list(inner.negative_prompts)
        result.saved_paths += list(inner.saved_paths)
        return images

    def warn(self, *messages: str) -> None:
        for message in messages:
            if message not in self.result.warnings:
                self.result.warnings.append(message)

    def append(self, image, infotext: str, seed: int, subseed: int, prompt: str, negative_prompt: str) -> None:
        """An image the script made itself (SD upscale's recombined tiles)."""
        result = self.result
        result.images.append(image)
        result.infotexts.append(infotext)
        result.seeds.append(seed)
        result.subseeds.append(subseed)
        result.prompts.append(prompt)
        result.negative_prompts.append(negative_prompt)

    def put_first(self, image, infotext: str) -> None:
        """A grid of the job's images, shown first (A1111's index_of_first_image counts it)."""
        self.result.images.insert(0, image)
        self.result.infotexts.insert(0, infotext)
        self.result.index_of_first_image += 1


def save_script_grid(ctx, request, collector: Collector, grid, *, seed: int, prompt: str,
                     infotext: str) -> str | None:
    """Save a script's grid to the mode's grids folder when the `grid_save` option is on and the request saves its
    images (the API's save_images, the UI always): its path, else None (not saved; a grid that cannot be written
    is a warning)."""
    if not ctx.options.get("grid_save") or not request.save_images or request.do_not_save_grid:
        return None
    folder = ctx.grids_dir(request.mode)
    try:
        return str(save_grid(grid, folder, seed=seed, prompt=prompt, infotext=infotext, options=ctx.options))
    except Exception as exc:  # noqa: BLE001 - a full disk must not lose the finished images
        collector.warn(f"Could not save the grid to {folder}: {exc}")
        return None
