"""Prompts from file or textbox (A1111's `scripts/prompts_from_file.py`, txt2img and img2img): one generation per
non-empty line, each with the job's settings changed by the line's options (syntax: `prompt_lines.py`), its images
after the previous line's; no grid.

Args (A1111's order): checkbox_iterate ("Iterate seed every line": the seed moves on by batch size x batch count
after each line), checkbox_iterate_batch ("Use same random seed for all lines": a -1 seed is drawn once for all),
prompt_position ("start" / "end": where a line's prompt goes relative to the job's prompt), prompt_txt (the lines;
the UI's file upload fills it).
"""
from __future__ import annotations

import dataclasses

from ...core.errors import RequestError
from ...core.request import GenerationRequest
from ..seeds import fix_seed
from ..sub_run import SubRunControl
from . import BuiltinScript, ScriptContext
from .arg_checks import FIELD, as_bool, as_choice, one_image_at_a_time
from .collect import Collector
from .prompt_lines import TITLE, line_request, read_lines, resolve_names

POSITIONS = ("start", "end")


def check(request: GenerationRequest, args: list, context: ScriptContext | None = None) -> list:
    """The args in their types, every line read and its values checked (with the server's listings, when given:
    checkpoints and styles too), before anything is generated."""
    iterate, same_seed, position, text = args
    one_image_at_a_time(TITLE, request)
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise RequestError(FIELD, f"{TITLE}: prompt_txt must be text, got {type(text).__name__}")
    checked = [as_bool(TITLE, "checkbox_iterate", iterate), as_bool(TITLE, "checkbox_iterate_batch", same_seed),
               as_choice(TITLE, "prompt_position", position, POSITIONS), text]
    lines = read_lines(text)
    if not lines:
        raise RequestError(FIELD, f"{TITLE}: the list of prompt inputs is empty (give one prompt, or one line of "
                           "--options, per line)")
    for line in lines:
        inner = line_request(request, line, checked[2])
        if context is not None:
            resolve_names(inner, line, context.models, context.apply_styles)
    return checked


def run(ctx: ScriptContext, request: GenerationRequest, args: list):
    iterate, same_seed, position, text = args
    base = dataclasses.replace(request, do_not_save_grid=True)
    if (iterate or same_seed) and base.seed == -1:
        base.seed, base.subseed = fix_seed(-1), fix_seed(base.subseed)
    lines = read_lines(text)
    inners = [resolve_names(line_request(base, line, position), line, ctx.models, ctx.apply_styles)
              for line in lines]  # names checked for every line before the first is generated
    jobs = sum(inner.n_iter for inner in inners)
    collector = Collector(ctx.control)
    done, seed = 0, base.seed
    for number, (line, inner) in enumerate(zip(lines, inners), start=1):
        if ctx.control.interrupted:
            break
        if "seed" not in line.options:
            inner.seed = seed
        label = f"Line {number} of {len(lines)}"
        collector.add(ctx.process(inner, SubRunControl(ctx.control, done, jobs, label)))
        done += inner.n_iter
        if iterate:
            seed += base.batch_size * base.n_iter
    return collector.result


SCRIPT = BuiltinScript(
    title=TITLE, modes=("txt2img", "img2img"),
    arg_names=("checkbox_iterate", "checkbox_iterate_batch", "prompt_position", "prompt_txt"),
    defaults=(False, False, "start", ""), run=run, check=check)
