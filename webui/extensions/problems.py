"""What went wrong in an extension: recorded (with its name and traceback), logged, shown in the UI; never fatal."""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field

log = logging.getLogger("webui.extensions")


@dataclass(frozen=True)
class ExtensionProblem:
    extension: str  # the extension's folder name ("" when not known)
    where: str  # what it was doing: "loading scripts/foo.py", "process hook of 'Wildcards'", "install.py", ...
    message: str  # the exception's one-line summary
    traceback: str = ""
    when: float = field(default_factory=time.time)


class ProblemLog:
    """The problems of this run of the server, newest last (bounded)."""

    def __init__(self, limit: int = 200):
        self._items: list[ExtensionProblem] = []
        self._limit = limit
        self._lock = threading.Lock()

    def report(self, extension: str, where: str, exc: BaseException) -> ExtensionProblem:
        summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        problem = ExtensionProblem(extension, where, summary, text)
        log.error("extension %s failed in %s: %s\n%s", extension or "?", where, summary, text)
        with self._lock:
            self._items.append(problem)
            del self._items[:-self._limit]
        return problem

    def all(self) -> list[ExtensionProblem]:
        with self._lock:
            return list(self._items)

    def for_extension(self, name: str) -> list[ExtensionProblem]:
        return [p for p in self.all() if p.extension == name]
