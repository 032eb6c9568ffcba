"""SD upscale (A1111's `scripts/sd_upscale.py`, img2img): the init image upscaled by the scale factor with an image
upscaler (to whole multiples of 8, as A1111's upscalers; "None" keeps the image's size), cut into overlapping tiles
of the request's width x height (`tiles.py`), each tile img2img'd (batch size tiles at a time; seeds go up by one per
batch, as A1111), and the tiles blended back into one picture. Batch count makes that many pictures, the n-th from
seed + n. The tiles are not saved; each picture is (when images are saved), with the first tile's infotext.

Args (A1111's order): info (the UI's note, ignored), overlap (px), upscaler_index (the index in the upscaler list,
as A1111's radio sends it, or an upscaler's name), scale_factor.
"""
from __future__ import annotations

import dataclasses
import math

from ...core.errors import RequestError
from ...core.request import GenerationRequest
from ...models.upscalers import BUILTIN_UPSCALERS
from ...extensions.hooks import ProcessingRun
from ..saving import save_generated
from ..seeds import fix_seed
from ..sub_run import SubRunControl
from . import BuiltinScript, ScriptContext
from .arg_checks import FIELD, as_int, as_number, one_image_at_a_time
from .collect import Collector
from .image_lists import with_image_lists
from .tiles import combine, split
from .tiles import count as tile_count

TITLE = "SD upscale"
MAX_OVERLAP = 256
MIN_SCALE, MAX_SCALE = 1.0, 4.0


def upscaler_names(upscalers) -> list[str]:
    """The choices in A1111's order: None, Lanczos, Nearest, then the model files."""
    return upscalers.names() if upscalers is not None else list(BUILTIN_UPSCALERS)


def upscaler_name(upscalers, chosen) -> str:
    """The upscaler an arg names: an index into `upscaler_names` (A1111's radio) or a name (any case)."""
    names = upscaler_names(upscalers)
    if isinstance(chosen, (int, float)) and not isinstance(chosen, bool):
        if chosen != int(chosen) or not 0 <= int(chosen) < len(names):
            raise RequestError(FIELD, f"{TITLE}: upscaler_index {chosen!r} is not in the upscaler list (0.."
                               f"{len(names) - 1}: {', '.join(names)})")
        return names[int(chosen)]
    for name in names:
        if str(chosen).strip().lower() == name.lower():
            return name
    raise RequestError(FIELD, f"{TITLE}: unknown upscaler {chosen!r}; available: {', '.join(names)}")


def check(request: GenerationRequest, args: list, context: ScriptContext | None = None) -> list:
    info, overlap, upscaler, scale = args
    if request.mask is not None or (request.outpaint is not None and request.outpaint.active):
        raise RequestError("mask", f"{TITLE} upscales the whole image: it takes no inpainting mask or outpainting "
                           "(use the img2img tab)")
    one_image_at_a_time(TITLE, request)
    overlap = as_int(TITLE, "overlap", overlap, 0, MAX_OVERLAP)
    if overlap >= min(request.width, request.height):
        raise RequestError(FIELD, f"{TITLE}: the tile overlap ({overlap}px) must be smaller than the tile, which is "
                           f"the width x height ({request.width}x{request.height})")
    if isinstance(upscaler, bool) or not isinstance(upscaler, (int, float, str)):
        raise RequestError(FIELD, f"{TITLE}: upscaler_index must be an index in the upscaler list or an upscaler's "
                           f"name, got {upscaler!r}")
    if context is not None:
        upscaler_name(context.upscalers, upscaler)  # an unknown one refused now, not when the job runs
    return [info, overlap, upscaler, as_number(TITLE, "scale_factor", scale, MIN_SCALE, MAX_SCALE)]


def upscaled_size(image, name: str, scale: float) -> tuple[int, int]:
    """The size A1111's upscalers give: scaled, in whole multiples of 8 (None: the image's own)."""
    if name == "None":
        return image.size
    width, height = int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8)
    if width < 8 or height < 8:
        raise RequestError(FIELD, f"{TITLE}: the init image ({image.width}x{image.height}) is too small to upscale "
                           f"by {scale:g}")
    return width, height


def upscale(ctx: ScriptContext, image, name: str, size: tuple[int, int]):
    """The init image upscaled to `size`; None when the job was interrupted while a model upscaled it."""
    image = image.convert("RGB")
    if name == "None":
        return image
    if ctx.upscalers is None:
        raise RequestError(FIELD, f"{TITLE}: no image upscalers on this server")
    ctx.control.report(textinfo=f"{TITLE}: upscaling with {name}")
    return ctx.upscalers.upscale(image, name, *size, control=ctx.control)


def run(ctx: ScriptContext, request: GenerationRequest, args: list):
    _, overlap, chosen, scale = args
    name = upscaler_name(ctx.upscalers, chosen)
    seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
    collector = Collector(ctx.control)
    collector.result.seed, collector.result.subseed = seed, subseed
    # what the extensions' save hooks are handed for the pictures this script saves (A1111 passes the script's p)
    saving = ProcessingRun(request=request, control=ctx.control, options=ctx.options, state=dict(request.context),
                           result=collector.result, all_prompts=[request.prompt] * request.n_iter,
                           all_negative_prompts=[request.negative_prompt] * request.n_iter,
                           all_seeds=[seed + n for n in range(request.n_iter)],
                           all_subseeds=[subseed] * request.n_iter)
    size, count = request.batch_size, request.n_iter
    target = upscaled_size(request.init_images[0], name, scale)
    batches = math.ceil(tile_count(*target, request.width, request.height, overlap) / size)
    ctx.control.report(job_count=count * batches, job_no=0)  # one bar over every tile of every picture
    picture = upscale(ctx, request.init_images[0], name, target)
    if picture is None:
        collector.result.interrupted = True
        return collector.result
    grid = split(picture, request.width, request.height, overlap)
    tiles = grid.tiles()
    params = {"SD upscale overlap": overlap, "SD upscale upscaler": name}
    base = dataclasses.replace(request, n_iter=1, resize_mode=0, save_images=False, do_not_save_grid=True)
    for n in range(count):
        tile_seed, infotext, made, skipped = seed + n, None, [], 0
        for batch in range(batches):
            if ctx.control.interrupted:
                break
            work = tiles[batch * size:(batch + 1) * size]
            inner = dataclasses.replace(base, init_images=[tile.image for tile in work], batch_size=len(work),
                                        seed=tile_seed, subseed=subseed)
            label = f"Picture {n + 1} of {count}, tiles {batch * size + 1}-{batch * size + len(work)} of {len(tiles)}"
            result = ctx.process(with_image_lists(inner, extra_params=params),
                                 SubRunControl(ctx.control, n * batches + batch, count * batches, label))
            images = collector.add(result, keep=False)
            skipped += len(work) - len(images)
            made += images + [tile.image for tile in work[len(images):]]  # a skipped tile keeps the upscaled one
            if infotext is None and result.infotexts:
                infotext = result.infotexts[result.index_of_first_image]
            tile_seed = result.seed + 1
        if ctx.control.interrupted:  # an unfinished picture is left out; the finished ones stay
            collector.result.interrupted = True
            break
        if skipped:
            collector.warn(f"{TITLE}: {skipped} tiles of picture {n + 1} were skipped; they keep the upscaled image")
        for tile, image in zip(tiles, made):
            tile.image = image
        combined = combine(grid)
        collector.append(combined, infotext or "", seed + n, subseed, request.prompt, request.negative_prompt)
        save_generated(combined, seed + n, infotext or "", request=request, options=ctx.options,
                       outputs_dir=ctx.outputs_dir, hooks=ctx.hooks, run=saving, result=collector.result,
                       index=n, all_seeds=saving.all_seeds, shape=(1, count))  # one picture per batch
        grid = split(picture, request.width, request.height, overlap)  # fresh tiles for the next picture
        tiles = grid.tiles()
    collector.warn(*saving.warnings)
    return collector.result


SCRIPT = BuiltinScript(
    title=TITLE, modes=("img2img",), arg_names=("info", "overlap", "upscaler_index", "scale_factor"),
    defaults=(None, 64, 0, 2.0), run=run, check=check)
