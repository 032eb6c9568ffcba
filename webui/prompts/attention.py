"""Emphasis and BREAK: prompt text to (fragment, weight) pairs, as A1111's parse_prompt_attention does.

`(x)` x1.1, `[x]` x(1/1.1), `(x:w)` xw; brackets nest by multiplying. Escapes `\\( \\) \\[ \\] \\\\` give the
literal character. A `)` or `]` with nothing open is literal; a `(` or `[` never closed weighs everything after it.
`BREAK` (whole word) becomes the marker fragment ("BREAK", -1.0). Neighbouring fragments of equal weight merge.

Two deliberate differences from A1111, both for prompts A1111 mishandles:
- a backslash not followed by one of `()[]\\` stays in the text (A1111 drops it silently);
- the BREAK marker keeps weight -1 inside brackets (A1111 multiplies it, which turns `(a BREAK b)` into the word
  "BREAK" at weight -1.1 instead of a chunk break), and a malformed weight like `(x:1.2.3)` is literal text
  (A1111 raises).
"""
from __future__ import annotations

import math
import re

from ..core.errors import RequestError

BREAK = "BREAK"
BREAK_WEIGHT = -1.0

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1  # multiplied in, as A1111 does, so weights match its floats exactly

# The strongest emphasis accepted, either sign: 72 nested `( )` (1.1^72 = 962) pass, 73 do not. A1111 multiplies on,
# and 3000 of them make 1.1^3000, which no float32 holds: the conditioning and then the image become NaN. Weights
# of a few tens already make noise; this bound keeps ordinary text-encoder outputs times the weight within half
# precision's range too.
MAX_WEIGHT = 1000.0
_ESCAPABLE = "()[]\\"
_WEIGHTED_CLOSE = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


class _Fragment:
    __slots__ = ("text", "weight", "is_break")

    def __init__(self, text: str, weight: float = 1.0, is_break: bool = False):
        self.text = text
        self.weight = weight
        self.is_break = is_break


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split `text` into (fragment, weight) pairs; BREAK markers come out as ("BREAK", -1.0)."""
    fragments: list[_Fragment] = []
    round_opens: list[int] = []
    square_opens: list[int] = []
    pending: list[str] = []  # plain characters not yet turned into fragments

    def flush() -> None:
        if not pending:
            return
        parts = _BREAK_SPLIT.split("".join(pending))
        pending.clear()
        for index, part in enumerate(parts):
            if index:
                fragments.append(_Fragment(BREAK, BREAK_WEIGHT, is_break=True))
            fragments.append(_Fragment(part))

    def weigh_from(start: int, multiplier: float) -> None:
        for fragment in fragments[start:]:
            if not fragment.is_break:
                fragment.weight *= multiplier

    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text) and text[position + 1] in _ESCAPABLE:
            flush()
            fragments.append(_Fragment(text[position + 1]))
            position += 2
            continue
        weighted = _WEIGHTED_CLOSE.match(text, position) if char == ":" and round_opens else None
        if weighted:
            flush()
            weigh_from(round_opens.pop(), float(weighted.group(1)))
            position = weighted.end()
            continue
        if char == "(":
            flush()
            round_opens.append(len(fragments))
        elif char == "[":
            flush()
            square_opens.append(len(fragments))
        elif char == ")" and round_opens:
            flush()
            weigh_from(round_opens.pop(), ROUND_MULTIPLIER)
        elif char == "]" and square_opens:
            flush()
            weigh_from(square_opens.pop(), SQUARE_MULTIPLIER)
        else:
            pending.append(char)
        position += 1
    flush()

    # Unclosed brackets run to the end of the prompt: round ones first, then square, outermost first.
    for start in round_opens:
        weigh_from(start, ROUND_MULTIPLIER)
    for start in square_opens:
        weigh_from(start, SQUARE_MULTIPLIER)

    if not fragments:
        return [("", 1.0)]
    return _merge_equal_weights(fragments)


class EmphasisError(RequestError):
    """A prompt whose emphasis weights are out of range (HTTP 422, naming the prompt field)."""

    kind = "PromptEmphasis"


def check_weights(fragments: list[tuple[str, float]], field_name: str = "prompt") -> None:
    """Refuse (EmphasisError) weights beyond MAX_WEIGHT or not finite; the BREAK markers do not count."""
    for text, weight in fragments:
        if (text, weight) == (BREAK, BREAK_WEIGHT):
            continue
        if not (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
            shown = text.strip()
            shown = shown if len(shown) <= 40 else shown[:40] + "…"
            size = f"{weight:.3g}" if math.isfinite(weight) else "too large for any number"
            raise EmphasisError(field_name, f"{field_name}: the emphasis on {shown!r} is {size}; the limit is "
                                f"±{MAX_WEIGHT:g} (each ( ) multiplies by 1.1, so at most 72 nested brackets)")


def _merge_equal_weights(fragments: list[_Fragment]) -> list[tuple[str, float]]:
    merged: list[_Fragment] = []
    for fragment in fragments:
        previous = merged[-1] if merged else None
        if (previous is not None and not previous.is_break and not fragment.is_break
                and previous.weight == fragment.weight):
            previous.text += fragment.text
        else:
            merged.append(_Fragment(fragment.text, fragment.weight, fragment.is_break))
    return [(fragment.text, fragment.weight) for fragment in merged]
