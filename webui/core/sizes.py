"""The one size limit of generated images, shared by the request's validation (API and UI alike), the tabs' Width /
Height sliders and what a pasted infotext may set: a side is MIN_SIDE..MAX_SIDE pixels and, as in A1111, a
multiple of SIDE_STEP (the latent is an eighth of the image)."""
from __future__ import annotations

MIN_SIDE = 64
MAX_SIDE = 4096
SIDE_STEP = 8


def rounding_note(label: str, value: int) -> str | None:
    """What the user is told when `value` (already within the limits) is not a multiple of SIDE_STEP: the request
    rounds it down, as A1111 does, and says so (None when nothing changes)."""
    rounded = value // SIDE_STEP * SIDE_STEP
    if rounded == value:
        return None
    return f"{label} {value} was rounded down to {rounded} (image sides are multiples of {SIDE_STEP})"
