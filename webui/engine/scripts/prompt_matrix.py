"""Prompt matrix (A1111's `scripts/prompt_matrix.py`, txt2img and img2img): the prompt split at `|`; the first part
is in every picture, each combination of the other parts makes one picture. All of them are made as one run in
batches of the request's batch size (batch count is computed), then a grid labelled with the parts (active ones in
black, left-out ones greyed and struck) is put first and saved to the grids folder.

Args (A1111's order): put_at_start, different_seeds, prompt_type ("positive" / "negative"), variations_delimiter
("comma" / "space"), margin_size (px between cells).
"""
from __future__ import annotations

import dataclasses
import math

from ...core.errors import RequestError
from ...core.request import GenerationRequest
from ...outputs.grid import draw_prompt_matrix, image_grid
from ..seeds import fix_seed
from ..sub_run import SubRunControl
from . import BuiltinScript, ScriptContext
from .arg_checks import FIELD, as_bool, as_choice, as_int, one_image_at_a_time
from .collect import Collector, save_script_grid
from .image_lists import with_image_lists

TITLE = "Prompt matrix"
PROMPT_TYPES = ("positive", "negative")
DELIMITERS = ("comma", "space")
MAX_MARGIN = 500
MAX_VARIABLE_PARTS = 12  # 4096 pictures; each more part doubles them


def combinations(prompt: str, put_at_start: bool, delimiter: str) -> tuple[list[str], list[str]]:
    """(the prompt's parts, one prompt per combination). Combination n holds part i+1 when bit i of n is set; the
    optional parts are trimmed of spaces and commas, the fixed first part is kept as written (as A1111)."""
    parts = prompt.split("|")
    joiner = ", " if delimiter == "comma" else " "
    prompts = []
    for number in range(1 << (len(parts) - 1)):
        chosen = [text.strip().strip(",") for bit, text in enumerate(parts[1:]) if number & (1 << bit)]
        prompts.append(joiner.join(chosen + [parts[0]] if put_at_start else [parts[0]] + chosen))
    return parts, prompts


def check(request: GenerationRequest, args: list) -> list:
    put_at_start, different_seeds, prompt_type, delimiter, margin = args
    one_image_at_a_time(TITLE, request)
    checked = [as_bool(TITLE, "put_at_start", put_at_start), as_bool(TITLE, "different_seeds", different_seeds),
               as_choice(TITLE, "prompt_type", prompt_type, PROMPT_TYPES),
               as_choice(TITLE, "variations_delimiter", delimiter, DELIMITERS),
               as_int(TITLE, "margin_size", margin, 0, MAX_MARGIN)]
    source = request.prompt if checked[2] == "positive" else request.negative_prompt
    variable = source.count("|")
    if variable > MAX_VARIABLE_PARTS:
        raise RequestError(FIELD, f"{TITLE}: the {checked[2]} prompt has {variable} variable parts (2^{variable} "
                           f"pictures); at most {MAX_VARIABLE_PARTS} are allowed")
    return checked


def run(ctx: ScriptContext, request: GenerationRequest, args: list):
    put_at_start, different_seeds, prompt_type, delimiter, margin = args
    positive = prompt_type == "positive"
    source = request.prompt if positive else request.negative_prompt
    parts, prompts = combinations(source, put_at_start, delimiter)
    seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
    count, size = len(prompts), request.batch_size
    seeds = [seed + (i if different_seeds else 0) for i in range(count)]
    subseeds = [subseed + (i if request.subseed_strength > 0 else 0) for i in range(count)]
    jobs = math.ceil(count / size)
    collector = Collector(ctx.control)
    # Full batches in one run; a last, smaller batch (A1111 runs it short) in a second run of its own.
    chunks = [(0, count // size, size)] + ([(count // size * size, 1, count % size)] if count % size else [])
    for start, n_iter, batch_size in chunks:
        if ctx.control.interrupted:
            break
        stop = start + n_iter * batch_size
        inner = dataclasses.replace(request, seed=seed, subseed=subseed, n_iter=n_iter, batch_size=batch_size,
                                    do_not_save_grid=True)
        inner = with_image_lists(inner, seeds=seeds[start:stop], subseeds=subseeds[start:stop],
                                 **{"prompts" if positive else "negative_prompts": prompts[start:stop]})
        collector.add(ctx.process(inner, SubRunControl(ctx.control, start // size, jobs, TITLE)))
    result = collector.result
    images = result.images
    if images and len(images) == count:  # an interrupted matrix has holes: its pictures come without the grid
        grid = image_grid(images, 1 << ((len(parts) - 1) // 2), options=ctx.options)
        grid = draw_prompt_matrix(grid, images[0].width, images[0].height, parts, margin, ctx.options)
        infotext = result.infotexts[0]
        collector.put_first(grid, infotext)
        save_script_grid(ctx, request, collector, grid, seed=seed, prompt=source, infotext=infotext)
    return result


SCRIPT = BuiltinScript(
    title=TITLE, modes=("txt2img", "img2img"),
    arg_names=("put_at_start", "different_seeds", "prompt_type", "variations_delimiter", "margin_size"),
    defaults=(False, False, "positive", "comma", 0), run=run, check=check)
