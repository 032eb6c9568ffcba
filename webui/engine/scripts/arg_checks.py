"""Reading a built-in script's positional args as API clients send them (JSON numbers, booleans, strings; a Gradio
slider's float for an integer): each check returns the value in its proper type or raises a RequestError on
`script_args` naming the arg and what it accepts."""
from __future__ import annotations

import math

from ...core.errors import RequestError

FIELD = "script_args"


def _fail(title: str, name: str, message: str) -> RequestError:
    return RequestError(FIELD, f"{title}: {name} {message}")


def as_bool(title: str, name: str, value) -> bool:
    """true / false (JSON booleans, or the strings "true" / "false", any case; None as false)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _fail(title, name, f"must be true or false, got {value!r}")


def as_number(title: str, name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or value is None:
        raise _fail(title, name, f"must be a number from {low:g} to {high:g}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(title, name, f"must be a number from {low:g} to {high:g}, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise _fail(title, name, f"must be from {low:g} to {high:g}, got {value!r}")
    return number


def as_int(title: str, name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high] (a slider's 4.0 is 4; 4.5 is refused)."""
    number = as_number(title, name, value, low, high)
    if number != int(number):
        raise _fail(title, name, f"must be a whole number, got {value!r}")
    return int(number)


def as_choice(title: str, name: str, value, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive); returned as the choice is spelt."""
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    raise _fail(title, name, f"must be one of {', '.join(choices)}; got {value!r}")


def one_image_at_a_time(title: str, request) -> None:
    """A1111's img2img Batch tab runs a script once per file; here a script runs on the tab's own image(s), so a
    folder batch with a script is refused rather than half done."""
    if getattr(request, "folder_batch", None) is not None:
        raise RequestError("script_name", f"{title} cannot run over a folder batch (img2img's Batch tab): choose "
                           "the script with one image, or run the batch without a script")
