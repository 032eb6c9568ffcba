"""X/Y/Z plot (A1111 1.10's `scripts/xyz_grid.py`, txt2img and img2img): one generation per combination of the X,
Y and Z axes' values, laid out as a labelled grid (one sub grid of X columns and Y rows per Z value, side by side).

Cells run in A1111's order: the costliest axis to change (checkpoint, then VAE; `Axis.cost`) outermost, so each
checkpoint is loaded once. Each cell is a plain generation of the request with its values applied (its own infotext;
saved when the request saves images); one progress bar covers all cells. Interrupt stops after the cell being made
and the grid is built from the finished cells (the others left black, as A1111); Skip skips the current cell.

The result (A1111's): the grid first, then the sub grids (Include Sub Grids, with a Z axis), then each cell's picture
(Include Sub Images; a cell of several images shows their grid); `index_of_first_image` counts the grids. The seeds,
subseeds and prompts lists hold every finished cell's, in grid order, with Include Sub Images or without (A1111's
`all_seeds` and `all_prompts` list every cell too; they have no entries for the grids, as every result's): ♻️ on a
grid reuses its first cell's seed, and API clients get the cells' seeds. The grids' infotexts are their first
cell's with `Script`, `X Type`, `X Values` (`Fixed X Values` for seeds), and so on; they are saved to the grids
folder (the `grid_save` option).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import Image

from ...core.errors import UserError
from ...core.request import GenerationRequest
from ...outputs.grid import GridAnnotation, draw_grid_annotations, grid_rows, image_grid
from ...outputs.infotext import build_infotext
from ..seeds import fix_seed
from ..sub_run import SubRunControl
from . import BuiltinScript, ScriptContext
from .collect import Collector, save_script_grid
from .xyz_axes import AxisError
from .xyz_plan import ARG_NAMES, DEFAULTS, TITLE, Plan, clone, fail, make_plan

log = logging.getLogger(__name__)
SEED_AXES = ("Seed", "Var. seed")


def check(request: GenerationRequest, args: list, ctx: ScriptContext | None = None) -> list:
    """At queue time: every axis, value and flag checked (RequestError), the args returned normalised."""
    return make_plan(ctx, request, list(args)).args()


def cell_order(plan: Plan) -> list[tuple[int, int, int]]:
    """(ix, iy, iz) of every cell in A1111's order: the costliest axis outermost, then the next (z, y, x when
    costs tie)."""
    cost = {"x": plan.x.axis.cost, "y": plan.y.axis.cost, "z": plan.z.axis.cost}
    first, second = "z", "y"
    if cost["x"] > cost["y"] and cost["x"] > cost["z"]:
        first, second = "x", "y" if cost["y"] > cost["z"] else "z"
    elif cost["y"] > cost["x"] and cost["y"] > cost["z"]:
        first, second = "y", "x" if cost["x"] > cost["z"] else "z"
    elif cost["z"] > cost["x"] and cost["z"] > cost["y"]:
        first, second = "z", "x" if cost["x"] > cost["y"] else "y"
    third = next(letter for letter in "xyz" if letter not in (first, second))
    size = {"x": len(plan.x.values), "y": len(plan.y.values), "z": len(plan.z.values)}
    order = []
    for a in range(size[first]):
        for b in range(size[second]):
            for c in range(size[third]):
                at = {first: a, second: b, third: c}
                order.append((at["x"], at["y"], at["z"]))
    return order


@dataclass
class _Cell:
    at: tuple[int, int, int]
    request: GenerationRequest
    picture: Image.Image | None = None
    inner: object = None  # its GenerationResult


def _fixed_seeds(plan: Plan) -> dict[str, str]:
    """-1 values of the Seed axes made real seeds (unless Keep -1 for seeds); their infotext entries."""
    fixed = {}
    for axis_plan in plan.axes:
        if axis_plan.axis.label in SEED_AXES and not plan.no_fixed_seeds:
            axis_plan.values = [fix_seed(value) for value in axis_plan.values]
            fixed[axis_plan.letter] = ", ".join(str(value) for value in axis_plan.values)
    return fixed


def _build_cells(ctx: ScriptContext, plan: Plan, base: GenerationRequest) -> list[_Cell]:
    nx, ny = len(plan.x.values), len(plan.y.values)
    vary_x, vary_y, vary_z = plan.vary_seeds
    xdim, ydim = (nx if vary_x else 1), (ny if vary_y else 1)
    cells = []
    for at in cell_order(plan):
        request = clone(base)
        for axis_plan, index in zip(plan.axes, at):
            try:
                axis_plan.axis.applied(ctx, request, axis_plan.values[index], axis_plan.values)
            except (AxisError, UserError) as exc:
                raise fail(f"{axis_plan.letter} value {axis_plan.axis.label_for(axis_plan.values[index])!r}: "
                           f"{exc}") from None
        if request.seed != -1:  # Vary seeds for X / Y / Z: each cell along the axis a seed of its own
            ix, iy, iz = at
            request.seed += (ix if vary_x else 0) + (iy * xdim if vary_y else 0) + (iz * xdim * ydim if vary_z else 0)
        for axis_plan in plan.axes:  # the request is final: an extension axis's p takes it all
            axis_plan.axis.cell_ready(ctx, request)
        cells.append(_Cell(at, request))
    return cells


def _jobs(request: GenerationRequest) -> int:
    """A cell's share of the progress bar: its batches, hires fix passes counted apart (as the engine's)."""
    return request.n_iter * (2 if request.enable_hr else 1)


def _picture(inner, request: GenerationRequest, options) -> Image.Image | None:
    """A cell's picture: its image, or the grid of its images when it made several (A1111 shows the batch grid)."""
    images = list(inner.images[inner.index_of_first_image:])
    if not images:
        return None
    if len(images) == 1:
        return images[0]
    return image_grid(images, grid_rows(len(images), request.batch_size, options), options=options)


def with_params(infotext: str, params: dict) -> str:
    """`infotext` with `params` added to its parameters line (before Version, as A1111's extra parameters)."""
    extra = build_infotext("", "", params).lstrip("\n")
    if not extra:
        return infotext
    head, newline, last = infotext.rpartition("\n")
    if not newline:
        return f"{infotext}\n{extra}"
    marker = ", Version: "
    if marker in last:
        at = last.rindex(marker)
        last = f"{last[:at]}, {extra}{last[at:]}"
    elif last.startswith("Version: "):
        last = f"{extra}, {last}"
    else:
        last = f"{last}, {extra}" if last else extra
    return f"{head}\n{last}"


def _grid_params(plan: Plan, fixed: dict[str, str], letters: str) -> dict:
    params = {"Script": TITLE}
    for axis_plan in plan.axes:
        if axis_plan.letter in letters and axis_plan.axis.label != "Nothing":
            params[f"{axis_plan.letter} Type"] = axis_plan.axis.label
            params[f"{axis_plan.letter} Values"] = axis_plan.text
            if axis_plan.letter in fixed:
                params[f"Fixed {axis_plan.letter} Values"] = fixed[axis_plan.letter]
    return params


def _annotations(labels: list[str]) -> list[list[GridAnnotation]]:
    return [[GridAnnotation(label)] for label in labels]


def _grids(plan: Plan, pictures: list[Image.Image], labels: list[list[str]], options) \
        -> tuple[Image.Image, list[Image.Image]]:
    """(the whole grid, one sub grid per Z value), labelled when the plan draws a legend."""
    nx, ny, nz = (len(axis_plan.values) for axis_plan in plan.axes)
    width, height = max(p.width for p in pictures), max(p.height for p in pictures)
    sub_grids = []
    for iz in range(nz):
        grid = image_grid(pictures[iz * nx * ny:(iz + 1) * nx * ny], ny, options=options)
        if plan.draw_legend:
            grid = draw_grid_annotations(grid, width, height, _annotations(labels[0]), _annotations(labels[1]),
                                         plan.margin_size, options)
        sub_grids.append(grid)
    whole = image_grid(sub_grids, 1, options=options)
    if plan.draw_legend:
        whole = draw_grid_annotations(whole, max(g.width for g in sub_grids), max(g.height for g in sub_grids),
                                      _annotations(labels[2]), [[GridAnnotation()]], 0, options)
    return whole, sub_grids


def _run_cells(ctx: ScriptContext, cells: list[_Cell], collector: Collector) -> list[BaseException]:
    total_jobs = sum(_jobs(cell.request) for cell in cells)
    done, errors = 0, []
    for number, cell in enumerate(cells):
        if ctx.control.interrupted:
            break
        control = SubRunControl(ctx.control, done, total_jobs, f"{number + 1} out of {len(cells)}")
        done += _jobs(cell.request)
        try:
            cell.inner = ctx.process(cell.request, control)
        except Exception as exc:  # noqa: BLE001 - as A1111: one failed cell leaves a hole, the plot goes on
            if not isinstance(exc, UserError):
                log.exception("X/Y/Z plot: cell %d failed", number + 1)
            errors.append(exc)
            collector.warn(f"{TITLE}: cell {number + 1} failed: {exc}")
            continue
        cell.picture = _picture(cell.inner, cell.request, ctx.options)
        cell.inner.images, cell.inner.control_maps = [], []  # only the cell's picture is kept (memory)
    return errors


def run(ctx: ScriptContext, request: GenerationRequest, args: list):
    plan = make_plan(ctx, request, list(args), probe=False)
    base = clone(request)
    base.do_not_save_grid = True  # a cell of several images shows their grid in the plot, not as a file
    if not ctx.options.get("return_grid"):
        base.batch_size = 1  # as A1111: without grids, a cell is its first image
    if not plan.no_fixed_seeds:
        base.seed, base.subseed = fix_seed(base.seed), fix_seed(base.subseed)
    fixed = _fixed_seeds(plan)
    labels = [[axis_plan.axis.label_for(value) for value in axis_plan.values] for axis_plan in plan.axes]
    cells = _build_cells(ctx, plan, base)
    collector = Collector()
    errors = _run_cells(ctx, cells, collector)
    result = collector.result
    result.interrupted = bool(ctx.control.interrupted)
    finished = sorted((cell for cell in cells if cell.picture is not None), key=lambda c: (c.at[2], c.at[1], c.at[0]))
    for cell in cells:
        if cell.inner is not None:
            result.saved_paths += list(cell.inner.saved_paths)
            result.elapsed += cell.inner.elapsed
            result.skipped_batches += cell.inner.skipped_batches
            collector.warn(*[w for w in cell.inner.warnings if not w.startswith("Interrupted: ")])
    if not finished:
        if errors and not result.interrupted:
            raise errors[0]
        return result
    if len(finished) < len(cells):
        collector.warn(f"{'Interrupted' if result.interrupted else TITLE}: {len(finished)} of {len(cells)} cells "
                       "were finished")
    _assemble(ctx, request, plan, cells, finished, labels, fixed, collector)
    return result


def _assemble(ctx, request, plan: Plan, cells: list[_Cell], finished: list[_Cell], labels, fixed, collector) -> None:
    """The grids (and sub images) of the finished cells (`finished`: in grid order) into the collector's result,
    the grids saved."""
    result, options = collector.result, ctx.options
    nx, ny = len(plan.x.values), len(plan.y.values)
    by_index = {cell.at[0] + cell.at[1] * nx + cell.at[2] * nx * ny: cell for cell in finished}
    size = finished[0].picture.size
    pictures = [by_index[i].picture if i in by_index else Image.new("RGB", size) for i in range(len(cells))]
    whole, sub_grids = _grids(plan, pictures, labels, options)
    first = finished[0].inner
    result.seed, result.subseed = first.seed, first.subseed
    result.model_name, result.model_hash, result.job_timestamp = first.model_name, first.model_hash, \
        first.job_timestamp
    result.extra_params = dict(first.extra_params)

    def infotext_of(cell: _Cell) -> str:
        inner = cell.inner
        return inner.infotexts[inner.index_of_first_image] if len(inner.infotexts) > inner.index_of_first_image \
            else ""

    def leading(iz: int) -> _Cell:
        """A grid's first cell: its Z slice's top left one, else the slice's (else the plot's) first finished one."""
        slice_cells = [c for c in finished if c.at[2] == iz] or finished
        return next((c for c in slice_cells if c.at[:2] == (0, 0)), slice_cells[0])

    main_text = with_params(infotext_of(leading(0)), _grid_params(plan, fixed, "XYZ"))
    result.images, result.infotexts = [whole], [main_text]
    grids = [(whole, main_text)]
    if plan.include_sub_grids and plan.z.axis.label != "Nothing":
        for iz, grid in enumerate(sub_grids):
            text = with_params(infotext_of(leading(iz)), _grid_params(plan, fixed, "XY"))
            result.images.append(grid)
            result.infotexts.append(text)
            grids.append((grid, text))
    result.index_of_first_image = len(result.images)
    for cell in finished:  # in grid order; every cell's seed and prompts, shown on its own or not (A1111's)
        inner = cell.inner
        if plan.include_lone_images:
            result.images.append(cell.picture)
            result.infotexts.append(infotext_of(cell))
        result.seeds.append(inner.seeds[0] if inner.seeds else cell.request.seed)
        result.subseeds.append(inner.subseeds[0] if inner.subseeds else cell.request.subseed)
        result.prompts.append(inner.prompts[0] if inner.prompts else cell.request.prompt)
        result.negative_prompts.append(inner.negative_prompts[0] if inner.negative_prompts
                                       else cell.request.negative_prompt)
    prompt = first.prompts[0] if first.prompts else request.prompt
    saved = [save_script_grid(ctx, request, collector, grid, seed=first.seed, prompt=prompt, infotext=text)
             for grid, text in grids]
    result.saved_paths[:0] = [path for path in saved if path]  # the grids' files first, as their images


SCRIPT = BuiltinScript(title=TITLE, modes=("txt2img", "img2img"), arg_names=ARG_NAMES, defaults=DEFAULTS, run=run,
                       check=check)
