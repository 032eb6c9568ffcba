"""Toasts for the user: every handler reports errors through here instead of raising into Gradio."""
from __future__ import annotations

import html
import logging

import gradio as gr

from ..core.errors import UserError

log = logging.getLogger(__name__)


def warn(message: str) -> None:
    gr.Warning(html.escape(str(message), quote=False))


def info(message: str) -> None:
    gr.Info(html.escape(str(message), quote=False))


def report(exc: BaseException) -> None:
    """Show an exception as a warning: users' errors (the `UserError` family, as the API renders them) as they
    read, anything else with its type (and logged)."""
    if isinstance(exc, UserError):
        warn(str(exc))
    else:
        log.error("UI handler failed", exc_info=exc)
        warn(f"{type(exc).__name__}: {exc}")
