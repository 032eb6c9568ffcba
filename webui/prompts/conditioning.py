"""Per-step conditioning for a whole request: prompt editing, alternation and AND (composable diffusion).

The prompt is split on AND into weighted sub-prompts; each sub-prompt (and the negative prompt) becomes a
schedule of texts, each text encoded once. At sampling step i the engine asks for the conditioning in force
(A1111's rule: the first schedule entry whose end step is >= i) with every tensor padded to the same number of
chunks, so cond and uncond run through the UNet in one batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from .attention import EmphasisError, check_weights, parse_attention
from .encoder import Conditioning, PromptEncoder
from .schedule import prompt_schedule, split_and


@dataclass
class ScheduledConditioning:
    entries: list[tuple[int, Conditioning]]  # (end_at_step, conditioning), end steps ascending

    def at(self, step: int) -> tuple[int, Conditioning]:
        """(entry index, conditioning) in force at 0-based step `step`."""
        for index, (end, cond) in enumerate(self.entries):
            if step <= end:
                return index, cond
        return len(self.entries) - 1, self.entries[-1][1]


@dataclass
class PromptConditioning:
    parts: list[tuple[float, ScheduledConditioning]]  # AND sub-prompts and their weights
    negative: ScheduledConditioning
    empty: Conditioning

    @property
    def composable(self) -> bool:
        """True when the plain cond/uncond formula is not enough (several sub-prompts or a sub-prompt weight)."""
        return len(self.parts) > 1 or self.parts[0][0] != 1.0

    @property
    def weights(self) -> list[float]:
        return [weight for weight, _ in self.parts]

    def key(self, step: int) -> tuple[int, ...]:
        """Identifies the combination of schedule entries in force at `step` (the tensors change only with it)."""
        return (self.negative.at(step)[0], *[schedule.at(step)[0] for _, schedule in self.parts])

    def at_step(self, step: int) -> tuple[Conditioning, list[Conditioning]]:
        """(uncond, [cond for each sub-prompt]) at `step`, all padded to the same number of chunks."""
        uncond = self.negative.at(step)[1]
        conds = [schedule.at(step)[1] for _, schedule in self.parts]
        count = max(c.chunks for c in [uncond, *conds])
        return uncond.padded(count, self.empty), [c.padded(count, self.empty) for c in conds]


def encode_schedule(encoder: PromptEncoder, text: str, steps: int, clip_skip: int,
                    hires_base: int | None = None) -> ScheduledConditioning:
    schedule = prompt_schedule(text, steps, hires_base)
    encoded = encoder.encode_batch([entry.text for entry in schedule], clip_skip)
    return ScheduledConditioning([(entry.end_at_step, cond) for entry, cond in zip(schedule, encoded)])


def build_conditioning(encoder: PromptEncoder, prompt: str, negative: str, steps: int,
                       clip_skip: int, hires_base: int | None = None) -> PromptConditioning:
    """Encode a request's prompt (tags already removed) and negative prompt for a run of `steps` evaluations
    (`hires_base`: the first pass's, when this is a hires fix second pass). The negative prompt is scheduled too,
    but AND in it is plain text (as in A1111)."""
    parts = [(weight, encode_schedule(encoder, text, steps, clip_skip, hires_base))
             for text, weight in split_and(prompt)]
    try:
        uncond = encode_schedule(encoder, negative, steps, clip_skip, hires_base)
    except EmphasisError as exc:
        raise EmphasisError("negative_prompt", "negative " + str(exc)) from None
    return PromptConditioning(parts, uncond, encoder.empty(clip_skip))


def check_emphasis(text: str, field_name: str, steps: int, negative: bool = False) -> None:
    """Refuse (EmphasisError, a 422 naming `field_name`) a prompt whose emphasis goes out of range at any step,
    before any model runs. Expects comments and extra-network tags removed; AND splits only a positive prompt."""
    parts = [text] if negative else [part for part, _ in split_and(text)]
    for part in parts:
        for entry in prompt_schedule(part, steps):
            check_weights(parse_attention(entry.text), field_name)


def count_tokens(encoder: PromptEncoder, text: str, steps: int) -> tuple[int, int]:
    """(tokens, limit) for a prompt box's counter: the longest text any AND part's schedule produces, and the
    75-token chunks it fills (as A1111 shows `12/75`, `80/150`). Expects extra-network tags removed."""
    texts = [entry.text for part, _ in split_and(text) for entry in prompt_schedule(part, steps)]
    count = max(encoder.count_tokens(t) for t in texts) if texts else 0
    fixed_limit = getattr(encoder, "token_limit", None)  # FLUX.1's T5: one fixed-length sequence, no chunks
    if fixed_limit is not None:
        return count, fixed_limit
    return count, max(1, -(-count // 75)) * 75


class BatchConditioning:
    """The conditionings of a batch's images, one per image (images with the same prompts share one), laid out as
    the UNet batch wants them: the uncond rows, then each AND sub-prompt's rows, every row padded to the same
    number of chunks. An image with fewer sub-prompts than another fills the missing ones with its uncond at
    weight 0, so it is guided only by its own."""

    def __init__(self, items: list[PromptConditioning]):
        self.items = items
        self._distinct = list({id(c): c for c in items}.values())
        self.part_count = max(len(c.parts) for c in items)

    @property
    def composable(self) -> bool:
        return any(c.composable for c in self._distinct) or any(len(c.parts) != self.part_count
                                                               for c in self._distinct)

    def weights(self) -> list[list[float]]:
        """[sub-prompt][image] guidance weights."""
        return [[c.parts[k][0] if k < len(c.parts) else 0.0 for c in self.items] for k in range(self.part_count)]

    def key(self, step: int) -> tuple:
        return tuple(c.key(step) for c in self._distinct)

    def at_step(self, step: int) -> tuple[list[Conditioning], list[list[Conditioning]]]:
        """([uncond per image], [[cond per image] per sub-prompt]) at `step`, all padded to the same chunks."""
        per_item = {id(c): c.at_step(step) for c in self._distinct}
        count = max(x.chunks for uncond, conds in per_item.values() for x in [uncond, *conds])
        empty = self.items[0].empty
        unconds = [per_item[id(c)][0].padded(count, empty) for c in self.items]
        parts = []
        for k in range(self.part_count):
            row = []
            for item, c in enumerate(self.items):
                conds = per_item[id(c)][1]
                row.append((conds[k] if k < len(conds) else per_item[id(c)][0]).padded(count, empty))
            parts.append(row)
        return unconds, parts
