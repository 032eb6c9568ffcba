"""Loopback (A1111's `scripts/loopback.py`, img2img): img2img again and again, each loop starting from the picture
the last one made, with the denoising strength moving from the request's to the final one along a curve. Each batch
(of batch count; batch size is 1, as A1111) starts again from the init image; seeds go up by one each loop.

What is shown: with batch count 1 every loop's picture, with more only each batch's last; when there are two or
more, a grid of them in one row first (with the `return_grid` option) and saved (`grid_save`).

Args (A1111's order): loops, final_denoising_strength, denoising_curve ("Aggressive" / "Linear" / "Lazy"),
append_interrogation. A1111 can append a CLIP or DeepBooru interrogation of each loop's input to the prompt; this
server has no interrogator models, so only "None" is offered and the others are refused.
"""
from __future__ import annotations

import dataclasses
import math

from ...core.errors import RequestError
from ...core.request import GenerationRequest
from ...outputs.grid import image_grid
from ..seeds import fix_seed
from ..sub_run import SubRunControl
from . import BuiltinScript, ScriptContext
from .arg_checks import FIELD, as_choice, as_int, as_number, one_image_at_a_time
from .collect import Collector, save_script_grid
from .image_lists import with_image_lists

TITLE = "Loopback"
CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = ("None",)  # A1111 also has "CLIP" and "DeepBooru"
UNAVAILABLE_INTERROGATORS = ("CLIP", "DeepBooru")
MAX_LOOPS = 32
ORIGINAL = 1  # inpainting_fill "original": what every loop after the first uses, as A1111


def denoising_strength(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of loop `loop` (0-based): the initial one, moved towards `final` by the curve's share of the
    progress loop / (loops - 1): sin (Aggressive), 1 - cos (Lazy) of progress x 90 degrees, or linear."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        share = math.sin(progress * math.pi / 2)
    elif curve == "Lazy":
        share = 1 - math.cos(progress * math.pi / 2)
    else:
        share = progress
    return initial + (final - initial) * share


def check(request: GenerationRequest, args: list) -> list:
    loops, final, curve, interrogation = args
    one_image_at_a_time(TITLE, request)
    if isinstance(interrogation, str) and interrogation.strip().lower() in (n.lower() for n in
                                                                              UNAVAILABLE_INTERROGATORS):
        raise RequestError(FIELD, f"{TITLE}: append_interrogation {interrogation!r} needs an interrogator model "
                           "(CLIP / DeepBooru), which this server does not have; use \"None\"")
    return [as_int(TITLE, "loops", loops, 1, MAX_LOOPS),
            as_number(TITLE, "final_denoising_strength", final, 0.0, 1.0),
            as_choice(TITLE, "denoising_curve", curve, CURVES),
            as_choice(TITLE, "append_interrogation", interrogation, INTERROGATORS)]


def run(ctx: ScriptContext, request: GenerationRequest, args: list):
    loops, final, curve, _ = args
    seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
    batch_count, initial = request.n_iter, request.denoising_strength
    params = {"Final denoising strength": final, "Denoising curve": curve}
    collector = Collector(ctx.control)
    shown, first_infotext = [], None
    jobs = loops * batch_count
    for batch in range(batch_count):
        picture, fill, strength = None, request.inpainting_fill, initial
        stopped = False
        for loop in range(loops):
            if ctx.control.interrupted:
                stopped = True
                break
            init = request.init_images if picture is None else [picture]
            inner = dataclasses.replace(request, init_images=list(init), seed=seed, subseed=subseed, n_iter=1,
                                        batch_size=1, denoising_strength=strength, inpainting_fill=fill,
                                        do_not_save_grid=True)
            control = SubRunControl(ctx.control, batch * loops + loop, jobs,
                                    f"Iteration {loop + 1}/{loops}, batch {batch + 1}/{batch_count}")
            result = ctx.process(with_image_lists(inner, extra_params=params), control)
            if ctx.control.interrupted or control.skipped or not result.images:
                # A1111 keeps nothing of an interrupted or skipped loop; a skip ends this batch's loops
                collector.warn(*result.warnings)
                stopped = True
                break
            collector.add(result)
            if first_infotext is None:
                first_infotext = result.infotexts[0]
            seed = result.seeds[0] + 1
            strength = denoising_strength(loop + 1, loops, initial, final, curve)
            picture, fill = result.images[result.index_of_first_image], ORIGINAL
            if batch_count == 1:
                shown.append(picture)
        if batch_count > 1 and not stopped:
            shown.append(picture)
        if ctx.control.interrupted:
            break
    result = _keep_only(collector, shown)
    if len(shown) > 1:
        grid = image_grid(shown, 1, options=ctx.options)
        save_script_grid(ctx, request, collector, grid, seed=result.seed, prompt=request.prompt,
                         infotext=first_infotext)
        if ctx.options.get("return_grid"):
            collector.put_first(grid, first_infotext)
    if ctx.control.interrupted:
        result.interrupted = True
    return result


def _keep_only(collector: Collector, shown: list):
    """The job's result with only the pictures A1111 shows (with batch count > 1, each batch's last loop)."""
    result = collector.result
    keep = [i for i, image in enumerate(result.images) if any(image is s for s in shown)]
    for name in ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts"):
        values = getattr(result, name)
        setattr(result, name, [values[i] for i in keep if i < len(values)])
    return result


SCRIPT = BuiltinScript(
    title=TITLE, modes=("img2img",),
    arg_names=("loops", "final_denoising_strength", "denoising_curve", "append_interrogation"),
    defaults=(4, 0.5, "Linear", "None"), run=run, check=check)
