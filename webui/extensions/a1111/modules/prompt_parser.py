"""A1111's `modules.prompt_parser`: its text functions, answered by our prompt parser (webui/prompts) so an
extension sees the same reading of a prompt as our engine: `parse_prompt_attention` (emphasis weights, BREAK),
`get_learned_conditioning_prompt_schedules` (prompt editing and alternation over the steps),
`get_multicond_prompt_list` (AND), `SdConditioning`. Encoding prompts into tensors needs A1111's model objects:
those functions are reported as internals this web UI doesn't have.
"""
from __future__ import annotations

from collections import namedtuple

from webui.extensions.problems import ModelInternalsError
from webui.prompts.attention import _BREAK_SPLIT, parse_attention
from webui.prompts.schedule import _AND, prompt_schedule, split_and

# The word splitters extensions read from here (ours: the same that our parser uses).
re_break = _BREAK_SPLIT
re_AND = _AND

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
ComposableScheduledPromptConditioning = namedtuple("ComposableScheduledPromptConditioning", ["schedules", "weight"])

A1111_INTERNALS = {name: "conditioning internals (encoding needs A1111's model objects)" for name in (
    "get_learned_conditioning", "get_multicond_learned_conditioning", "reconstruct_cond_batch",
    "reconstruct_multicond_batch", "DictWithShape", "MulticondLearnedConditioning")}


class SdConditioning(list):
    """A list of prompts with what the model needs to know about them (negative or not, picture size)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def parse_prompt_attention(text: str) -> list[list]:
    """[[text, weight], ...]: `(a)` x1.1, `[a]` /1.1, `(a:1.5)`, escapes `\\(`; BREAK as ["BREAK", -1]."""
    return [[fragment, weight] for fragment, weight in parse_attention(text)]


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """For each prompt, [[end_at_step, text], ...]: the texts prompt editing `[a:b:when]` and alternation
    `[a|b]` give over the steps (with `hires_steps`, the hires fix pass's schedule)."""
    if hires_steps is None or use_old_scheduling:
        steps, base = base_steps, None
    else:
        steps, base = hires_steps, base_steps
    return [[[entry.end_at_step, entry.text] for entry in prompt_schedule(prompt, steps, base)]
            for prompt in prompts]


def get_multicond_prompt_list(prompts):
    """(indexes, flat list of distinct sub-prompts, {sub-prompt: index}) for prompts split on AND, each part
    with its `:weight` (1.0 when not given)."""
    res_indexes = []
    prompt_indexes: dict[str, int] = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        indexes = []
        for text, weight in split_and(prompt):
            index = prompt_indexes.get(text)
            if index is None:
                index = prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


def __getattr__(name: str):
    if name in A1111_INTERNALS:
        raise ModelInternalsError(f"modules.prompt_parser.{name}", A1111_INTERNALS[name])
    raise AttributeError(f"module 'modules.prompt_parser' has no attribute {name!r}")
