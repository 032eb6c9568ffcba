"""Prompts that change while sampling, A1111's way: editing `[from:to:when]`, alternation `[a|b]`, AND, `#` comments.

A schedule is a list of ScheduledText(end_at_step, text). Change points are every editing `when` that is >= 1 after
conversion (below 1: `int(when * steps)`, else `int(when)`, both capped at `steps`), plus `steps`, plus every step
1..steps when the prompt alternates. At change point `s` an edit shows `from` while `s <= when`, else `to`, and an
alternation shows option `(s - 1) % n`.

The sampler at 0-based step index `i` uses the first entry with `i <= end_at_step` (`text_at_step`). Because a
0-based index is compared with 1-based change points, `[a:b:10]` at 20 steps shows `a` for indices 0..10 (eleven
steps) and `[a|b]` shows a, a, b, a, b, ...: this off-by-one is A1111's real behaviour and is kept on purpose.

Anything that is not editing or alternation (emphasis brackets, escapes, `<lora:...>` tags, brackets that do not
form a valid construct) passes through as text. As in A1111, a `|` that is not inside a valid alternation, or a
backslash that ends the prompt or a line, makes the whole prompt plain text with no schedule. Where a construct is
directly followed by a stray `]`, `)`, `:` or `[` (`[a:b:3]]`), A1111's parser is ambiguous and its answer changes
with Python's hash seed from run to run; here the construct always wins.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from webui.prompts.attention import parse_attention
from webui.prompts.extra_networks import ExtraNetworkCall, extract_extra_networks


@dataclass(frozen=True)
class ScheduledText:
    end_at_step: int
    text: str


# ---- parsing: text -> tree of str / _Edit / _Alternation ----------------------------------------------------------

@dataclass(frozen=True)
class _Edit:
    before: tuple | None   # None for `[to:when]`
    after: tuple
    when: float
    decimal: bool = False  # `when` was written with a point: in a hires pass A1111 reads it as a fraction


@dataclass(frozen=True)
class _Alternation:
    options: tuple[tuple, ...]


_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_MAX_DEPTH = 100  # nesting deeper than this makes the prompt plain text instead of exhausting the stack


class _TooDeep(Exception):
    pass


class _Parser:
    """Recursive descent over A1111's grammar. Inside a construct only well-formed pieces are allowed (text,
    escapes, whitespace, emphasis, nested constructs); at the top level a bracket or colon that does not start a
    valid construct is literal text. Where both readings exist, the construct wins."""

    def __init__(self, text: str):
        self.text = text
        self._brackets: dict[int, tuple[object, int] | None] = {}

    def parse(self) -> tuple | None:
        text, nodes, plain = self.text, [], []
        position = 0
        while position < len(text):
            char = text[position]
            if char == "[":
                parsed = self._bracket(position, depth=1)
                if parsed is not None:
                    _flush(plain, nodes)
                    node, position = parsed
                    _add(nodes, node)
                    continue
            elif char == "|":
                return None
            elif char == "\\":
                if not self._escapable(position):
                    return None
                plain.append(text[position:position + 2])
                position += 2
                continue
            plain.append(char)
            position += 1
        _flush(plain, nodes)
        return tuple(nodes)

    def _escapable(self, position: int) -> bool:
        return position + 1 < len(self.text) and self.text[position + 1] != "\n"

    def _segments(self, start: int, closer: str, depth: int):
        """Read well-formed pieces from `start` up to `closer`, split on top-level `:` and `|`.
        Returns (segments, separators, raw segment texts, end after the closer) or None."""
        if depth > _MAX_DEPTH:
            raise _TooDeep
        text = self.text
        segments: list[list] = [[]]
        separators: list[str] = []
        raw_starts = [start]
        plain: list[str] = []
        position = start
        while position < len(text):
            char = text[position]
            if char == closer:
                _flush(plain, segments[-1])
                raws = [text[a:b - 1] for a, b in zip(raw_starts, raw_starts[1:] + [position + 1])]
                return segments, separators, raws, position + 1
            if char in ":|":
                _flush(plain, segments[-1])
                separators.append(char)
                segments.append([])
                raw_starts.append(position + 1)
                position += 1
            elif char in "[(":
                parsed = self._bracket(position, depth + 1) if char == "[" else self._paren(position, depth + 1)
                if parsed is None:
                    return None
                _flush(plain, segments[-1])
                node, position = parsed
                _add(segments[-1], node)
            elif char in ")]":
                return None
            elif char == "\\":
                if not self._escapable(position):
                    return None
                plain.append(text[position:position + 2])
                position += 2
            else:
                plain.append(char)
                position += 1
        return None

    def _paren(self, start: int, depth: int):
        """`(prompt)` or `(prompt:prompt)`: kept as text, but its inside must be well-formed."""
        read = self._segments(start + 1, ")", depth)
        if read is None:
            return None
        segments, separators, _, end = read
        if "|" in separators or len(separators) > 1:
            return None
        nodes: list = ["("]
        for index, segment in enumerate(segments):
            if index:
                nodes.append(":")
            nodes.extend(segment)
        nodes.append(")")
        return _joined(nodes), end

    def _bracket(self, start: int, depth: int):
        if start in self._brackets:
            return self._brackets[start]
        result = self._classify_bracket(start, depth)
        self._brackets[start] = result
        return result

    def _classify_bracket(self, start: int, depth: int):
        read = self._segments(start + 1, "]", depth)
        if read is None:
            return None
        segments, separators, raws, end = read
        if not separators:  # `[x]`: emphasis, left for parse_attention
            return _joined(["[", *segments[0], "]"]), end
        if all(separator == "|" for separator in separators):
            return _Alternation(tuple(tuple(segment) for segment in segments)), end
        if all(separator == ":" for separator in separators) and len(separators) <= 2:
            number = _NUMBER.fullmatch(raws[-1])
            if number is None:
                return None
            before = tuple(segments[0]) if len(separators) == 2 else None
            return _Edit(before, tuple(segments[-2]), float(number.group(1)), "." in number.group(1)), end
        return None


def _add(nodes: list, node) -> None:
    """Append a parsed bracket: a construct node, or a tuple of pieces kept as text."""
    if isinstance(node, tuple):
        nodes.extend(node)
    else:
        nodes.append(node)


def _flush(plain: list[str], nodes: list) -> None:
    if plain:
        nodes.append("".join(plain))
        plain.clear()


def _joined(nodes: list) -> tuple:
    """Merge neighbouring strings so a kept-as-text bracket is one piece where it can be."""
    out: list = []
    for node in nodes:
        if isinstance(node, str) and out and isinstance(out[-1], str):
            out[-1] += node
        else:
            out.append(node)
    return tuple(out)


def _parse(text: str) -> tuple | None:
    try:
        return _Parser(text).parse()
    except _TooDeep:
        return None


# ---- resolving: tree -> text at a step ----------------------------------------------------------------------------

def _edit_step(edit: _Edit, steps: int, hires_base: int | None = None) -> int:
    """A1111's conversion of an editing `when`: a fraction of `steps` below 1, else a step number; capped. In a
    hires pass (`hires_base`: the first pass's steps) a whole number still counts from the start of the first pass
    and a number with a point is a fraction offset by 1, so `[a:b:0.5]` stays `b` and `[a:b:1.5]` switches half-way
    through the hires pass."""
    when = edit.when
    if hires_base is None:
        value = when * steps if when < 1 else when
    else:
        value = (when - 1.0) * steps if edit.decimal else when - hires_base
    if value >= steps:
        return steps
    if value == -math.inf:  # `[a:b:-1e999]`: never reached, like any negative step
        return -1
    return int(value)


def _change_points(nodes: tuple, steps: int, found: set[int], hires_base: int | None) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            step = _edit_step(node, steps, hires_base)
            if step >= 1:
                found.add(step)
            _change_points(node.before or (), steps, found, hires_base)
            _change_points(node.after, steps, found, hires_base)
        elif isinstance(node, _Alternation):
            found.update(range(1, steps + 1))
            for option in node.options:
                _change_points(option, steps, found, hires_base)


def _text_at(nodes: tuple, step: int, steps: int, out: list[str], hires_base: int | None) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            chosen = (node.before or ()) if step <= _edit_step(node, steps, hires_base) else node.after
            _text_at(chosen, step, steps, out, hires_base)
        else:
            _text_at(node.options[(step - 1) % len(node.options)], step, steps, out, hires_base)


def prompt_schedule(text: str, steps: int, hires_base: int | None = None) -> list[ScheduledText]:
    """The prompt's texts over `steps` sampling steps, one entry per change point (see the module docstring).
    `hires_base`: for a hires fix second pass, the first pass's steps (editing `when`s count from its start)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    tree = _parse(text)
    if tree is None:
        return [ScheduledText(steps, text)]
    points = {steps}
    _change_points(tree, steps, points, hires_base)
    schedule = []
    for step in sorted(points):
        pieces: list[str] = []
        _text_at(tree, step, steps, pieces, hires_base)
        schedule.append(ScheduledText(step, "".join(pieces)))
    return schedule


def text_at_step(schedule: list[ScheduledText], step_index: int) -> str:
    """The text the sampler uses at 0-based `step_index`: the first entry with step_index <= end_at_step.
    Past the last entry A1111 falls back to the first entry; so does this."""
    if not schedule:
        raise ValueError("empty prompt schedule")
    for entry in schedule:
        if step_index <= entry.end_at_step:
            return entry.text
    return schedule[0].text


# ---- comments and AND ---------------------------------------------------------------------------------------------

def strip_comments(text: str) -> str:
    """A1111's prompt comments: drop from `#` to the end of its line; a line left empty by that is removed."""
    kept = []
    for line in text.split("\n"):
        cut = line.find("#")
        if cut < 0:
            kept.append(line)
        elif line[:cut].strip():
            kept.append(line[:cut])
    return "\n".join(kept)


_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"\s*:\s*([+-]?(?:\d+\.?|\d*\.\d+))\s*\Z")


def split_and(text: str) -> list[tuple[str, float]]:
    """Composable-diffusion sub-prompts: split on the word AND; a part may end in `:weight` (default 1.0)."""
    parts = []
    for part in _AND.split(text):
        weight = _TRAILING_WEIGHT.search(part)
        if weight is not None:
            parts.append((part[:weight.start()].strip(), float(weight.group(1))))
        else:
            parts.append((part.strip(), 1.0))
    return parts


# ---- the whole chain ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScheduledFragments:
    end_at_step: int
    text: str
    fragments: list[tuple[str, float]]   # parse_attention(text)


@dataclass(frozen=True)
class PromptPart:
    text: str                            # the AND part, comments and extra-network tags already removed
    weight: float
    schedule: list[ScheduledFragments]


@dataclass(frozen=True)
class ParsedPrompt:
    extra_networks: list[ExtraNetworkCall]
    parts: list[PromptPart]


def parse_full(text: str, steps: int) -> ParsedPrompt:
    """strip_comments -> extra-network tags out -> split_and -> prompt_schedule per part -> parse_attention."""
    text, calls = extract_extra_networks(strip_comments(text))
    parts = []
    for part_text, weight in split_and(text):
        schedule = [ScheduledFragments(entry.end_at_step, entry.text, parse_attention(entry.text))
                    for entry in prompt_schedule(part_text, steps)]
        parts.append(PromptPart(part_text, weight, schedule))
    return ParsedPrompt(calls, parts)
