"""A1111's batch grid: a run that made more than one image shows a grid of them first in the gallery (and the API's
images) and saves it to the grids folder, as A1111's `process_images` does at its end.

Options (A1111's): `return_grid` (the grid leads the result, `index_of_first_image` = 1, with the run's main
infotext), `grid_save` (saved as `grid-NNNN` to `outdir_<mode>_grids`, else `outdir_grids`, else
outputs/<mode>-grids), `grid_only_if_multiple` (no grid of a single image), and the layout ones `grid.py` reads
(`n_rows`, `grid_prevent_empty_spots`, `grid_background_color`, `grid_format`, `grid_extended_filename`). A request
with `do_not_save_grid` gets no grid at all: the API sets it unless `save_images`, scripts on their inner runs.
"""
from __future__ import annotations

from pathlib import Path

from ..core.request import GenerationRequest
from ..outputs.grid import grid_rows, image_grid, save_grid
from ..outputs.infotext import build_infotext


def grids_dir(options, outputs_dir: str | Path, mode: str) -> Path:
    """Where `mode`'s grids are saved: `outdir_<mode>_grids`, else `outdir_grids`, else outputs/<mode>-grids."""
    folder = _get(options, f"outdir_{mode}_grids") or _get(options, "outdir_grids")
    return Path(folder) if folder else Path(outputs_dir) / f"{mode}-grids"


def _get(options, key: str):
    try:
        return options.get(key)
    except KeyError:
        return None


def main_infotext(result, request: GenerationRequest) -> str:
    """The run's infotext with its main prompts (A1111's `use_main_prompt`): the first image's parameters under the
    request's prompt and negative prompt (they differ when an extension or script varied the prompts per image)."""
    first = result.index_of_first_image
    text = result.infotexts[first] if first < len(result.infotexts) else ""
    prompt, negative = request.prompt, request.negative_prompt
    if not text or (result.prompts[:1] == [prompt] and result.negative_prompts[:1] == [negative]):
        return text
    return build_infotext(prompt, negative, {}) + "\n" + text.split("\n")[-1]


def add_batch_grid(result, request: GenerationRequest, options, outputs_dir: str | Path,
                   batch_size: int | None = None, infotext: str | None = None) -> None:
    """Make the batch grid of `result`'s images as A1111 does, in place: put it first (`return_grid`) and save it
    (`grid_save`). `batch_size`: the rows when `n_rows` is 0 (default the request's); `infotext`: the grid's (default
    `main_infotext`). A result that already leads with a grid, or a request with `do_not_save_grid`, is left alone;
    a grid that cannot be saved is a warning."""
    images = result.images[result.index_of_first_image:]
    if request.do_not_save_grid or result.index_of_first_image or not images:
        return
    shown, saved = bool(options.get("return_grid")), bool(options.get("grid_save"))
    if not (shown or saved) or (len(images) < 2 and options.get("grid_only_if_multiple")):
        return
    rows = grid_rows(len(images), request.batch_size if batch_size is None else batch_size, options)
    grid = image_grid(images, rows, options=options)
    text = main_infotext(result, request) if infotext is None else infotext
    if shown:
        result.images.insert(0, grid)
        result.infotexts.insert(0, text)
        result.index_of_first_image = 1
    if saved:
        folder = grids_dir(options, outputs_dir, request.mode)
        seed = result.seeds[0] if result.seeds else result.seed
        prompt = result.prompts[0] if result.prompts else request.prompt
        try:
            save_grid(grid, folder, seed=seed, prompt=prompt, infotext=text, options=options)
        except Exception as exc:  # noqa: BLE001 - a full disk must not lose the finished images
            result.warnings.append(f"Could not save the grid to {folder}: {exc}")
