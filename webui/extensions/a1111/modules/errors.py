"""A1111's `modules.errors`: how an extension reports a failure. Messages go to the log and, while the server
runs, to the Extensions tab's problem list under the extension's name."""
from __future__ import annotations

import logging
import sys

from webui.extensions.a1111.runtime import RUNTIME

log = logging.getLogger("webui.extensions")


class ExtensionReport(Exception):
    """A problem an extension reported with a message and no exception of its own."""


def _record(where: str, exc: BaseException) -> bool:
    """Add to the server's problem list (which also logs it); False when no server is bound."""
    host = RUNTIME.host
    if host is None:
        return False
    host.problems.report(RUNTIME.current_extension(), where, exc)
    return True


def report(message: str, *, exc_info: bool = False) -> None:
    """Report `message`; with `exc_info`, the exception being handled (and its traceback) with it."""
    exc = sys.exc_info()[1] if exc_info else None
    if not _record(message, exc if exc is not None else ExtensionReport(message)):
        log.error("%s", message, exc_info=exc if exc is not None else None)


def display(e: BaseException, task: str, *, full_traceback: bool = False) -> None:
    """Report the exception `e`, raised while doing `task`."""
    if not _record(str(task), e):
        log.error("error while %s: %s: %s", task, type(e).__name__, e, exc_info=e)


_already_displayed: set[str] = set()


def display_once(e: BaseException, task: str) -> None:
    """`display`, once per task (for errors that would otherwise repeat at every step)."""
    if task in _already_displayed:
        return
    _already_displayed.add(task)
    display(e, task)


def print_error_explanation(message: str) -> None:
    """Report a longer explanation of an error, as its own lines."""
    text = "\n".join(line.strip() for line in str(message).strip().splitlines())
    if not _record("explanation", ExtensionReport(text)):
        log.error("%s", text)


def run(code, task: str) -> None:
    """Call `code()`; an exception is reported under `task` instead of raised."""
    try:
        code()
    except Exception as e:  # noqa: BLE001 - this is the point of the function
        display(e, task)
