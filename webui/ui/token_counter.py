"""The token counters on the prompt boxes: `tokens/limit` as A1111 shows them (`12/75`, `80/150`).

A prompt longer than 75 tokens is not an error: it takes another 75-token chunk, so the limit grows.
"""
from __future__ import annotations

import gradio as gr

from . import notices

DEFAULT_STEPS = 20


def counter_html(count: int, limit: int) -> str:
    return f'<span class="token-count">{count}/{limit}</span>'


EMPTY = counter_html(0, 75)


def token_counter(services, text: str | None, steps=DEFAULT_STEPS) -> str:
    """The counter for a prompt box's text (steps matter for prompt editing: `[a:b:10]`)."""
    try:
        steps = int(steps) if steps else DEFAULT_STEPS
    except (TypeError, ValueError):
        steps = DEFAULT_STEPS
    try:
        count, limit = services.token_count(text or "", max(1, steps))
    except Exception as exc:  # noqa: BLE001 - a counter never breaks typing
        notices.report(exc)
        return gr.skip()
    return counter_html(count, limit)
