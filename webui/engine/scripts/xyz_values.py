"""X/Y/Z plot's value syntax, as A1111 reads an axis's values.

Values are comma-separated with the csv module's rules (a value holding a comma is quoted: `"a, b", c`; spaces
after a comma are skipped; several lines are read one after the other); each value is stripped. Numeric axes also
take ranges:

    1-5          1, 2, 3, 4, 5                   (ints: both ends included)
    1-5 (+2)     1, 3, 5                         (a step, with its sign: 10-1 (-3) is 10, 7, 4, 1)
    1-10 [5]     1, 3, 5, 7, 10                  (a count: evenly spaced, ints truncated)
    1.5-3 (+0.25)  1.5, 1.75, ..., 3.0           (floats: the end included when a step lands on it)
    0.5-1 [3]    0.5, 0.75, 1.0

One difference from A1111: a float range's end is included when a step lands on it within rounding, and never
passed (A1111's `numpy.arange(start, end + step, step)` gives 0-1 (+0.1) a twelfth value, 1.1); values are rounded
to 10 decimals so that 0.1 steps read 0.3, not 0.30000000000000004.
"""
from __future__ import annotations

import csv
import math
import re
from io import StringIO
from itertools import chain

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
RANGE_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]?\s*\d+)\s*\))?\s*")
COUNT_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*({_FLOAT})\s*\))?\s*")
COUNT_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


class ValueSyntaxError(ValueError):
    """A value the axis cannot take; the message says which and why (the caller adds the axis)."""


def split_values(text: str) -> list[str]:
    """The comma-separated values of `text` (csv rules, spaces after commas skipped), each stripped; an empty
    text is no values."""
    if not text or not str(text).strip():
        return []
    try:
        rows = csv.reader(StringIO(str(text)), skipinitialspace=True)
        return [value.strip() for value in chain.from_iterable(rows)]
    except csv.Error as exc:
        raise ValueSyntaxError(f"cannot read {text!r} as comma-separated values ({exc})") from None


def join_values(values: list) -> str:
    """The values as one comma-separated line (quoted where needed): what the text box shows for a list."""
    with StringIO() as out:
        csv.writer(out).writerow([str(value) for value in values])
        return out.getvalue().strip()


def _number(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _check_count(count: int, item: str, limit: int) -> None:
    if count <= 0:
        raise ValueSyntaxError(f"{item!r} gives no values (a range from a larger to a smaller number needs a "
                               "negative step, such as 10-1 (-1))")
    if count > limit:
        raise ValueSyntaxError(f"{item!r} gives {count:,} values; at most {limit:,} are allowed")


def expand_ints(items: list[str], limit: int) -> list[int]:
    """Whole numbers, with `a-b`, `a-b (+s)` and `a-b [n]` expanded. Raises ValueSyntaxError."""
    out: list[int] = []
    for item in items:
        if not item.strip():
            continue  # a trailing comma
        ranged, counted = RANGE_INT.fullmatch(item), COUNT_INT.fullmatch(item)
        if ranged is not None:
            start, end = int(_number(ranged.group(1))), int(_number(ranged.group(2)))
            step = int(_number(ranged.group(3))) if ranged.group(3) is not None else 1
            if step == 0:
                raise ValueSyntaxError(f"{item!r}: the step must not be 0")
            stop = end + (1 if step > 0 else -1)
            _check_count(len(range(start, stop, step)), item, limit)
            out += range(start, stop, step)
        elif counted is not None:
            start, end, count = int(_number(counted.group(1))), int(_number(counted.group(2))), int(counted.group(3))
            _check_count(count, item, limit)
            out += [int(value) for value in _linspace(start, end, count)]
        else:
            try:
                out.append(int(item))
            except ValueError:
                raise ValueSyntaxError(f"{item!r} is not a whole number") from None
        if len(out) > limit:
            raise ValueSyntaxError(f"more than {limit:,} values")
    return out


def expand_floats(items: list[str], limit: int) -> list[float]:
    """Numbers, with `a-b`, `a-b (+s)` and `a-b [n]` expanded. Raises ValueSyntaxError."""
    out: list[float] = []
    for item in items:
        if not item.strip():
            continue
        ranged, counted = RANGE_FLOAT.fullmatch(item), COUNT_FLOAT.fullmatch(item)
        if ranged is not None:
            start, end = float(_number(ranged.group(1))), float(_number(ranged.group(2)))
            step = float(_number(ranged.group(3))) if ranged.group(3) is not None else 1.0
            if step == 0:
                raise ValueSyntaxError(f"{item!r}: the step must not be 0")
            count = math.floor((end - start) / step + 1e-9) + 1
            _check_count(count, item, limit)
            out += [_tidy(start + i * step) for i in range(count)]
        elif counted is not None:
            start, end, count = float(_number(counted.group(1))), float(_number(counted.group(2))), \
                int(counted.group(3))
            _check_count(count, item, limit)
            out += [_tidy(value) for value in _linspace(start, end, count)]
        else:
            try:
                value = float(item)
            except ValueError:
                raise ValueSyntaxError(f"{item!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueSyntaxError(f"{item!r} is not a finite number")
            out.append(value)
        if len(out) > limit:
            raise ValueSyntaxError(f"more than {limit:,} values")
    return out


def _linspace(start: float, end: float, count: int) -> list[float]:
    """`count` evenly spaced numbers from `start` to `end`, both included (numpy.linspace's)."""
    if count == 1:
        return [float(start)]
    step = (end - start) / (count - 1)
    return [start + i * step if i < count - 1 else float(end) for i in range(count)]


def _tidy(value: float) -> float:
    return round(value, 10) + 0.0  # + 0.0: no -0.0
