"""Named callback lists that extensions add to (our API and A1111's `script_callbacks` both land here).

Every callback remembers which extension added it, so a failure is reported under that extension's name and
skipped: the other callbacks, and the generation, go on.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from .problems import ProblemLog

# The events, by A1111's callback names where A1111 has them.
EVENTS = (
    "app_started",  # (demo, app): add FastAPI routes
    "model_loaded",  # (sd_model)
    "ui_tabs",  # () -> [(blocks, title, elem_id)]
    "ui_settings",  # (): add options
    "before_component",  # (component, **kwargs)
    "after_component",  # (component, **kwargs)
    "before_image_saved",  # (ImageSaveParams)
    "image_saved",  # (ImageSaveParams)
    "infotext_pasted",  # (infotext, params)
    "script_unloaded",  # ()
    "cfg_denoiser",  # (CFGDenoiserParams)
    "cfg_denoised",  # (CFGDenoisedParams)
    "before_ui",  # ()
)


@dataclass(frozen=True)
class Callback:
    extension: str
    event: str
    function: Callable


class CallbackRegistry:
    def __init__(self, problems: ProblemLog):
        self.problems = problems
        self._lists: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        self._lock = threading.Lock()

    def add(self, event: str, function: Callable, extension: str = "") -> None:
        if event not in self._lists:
            raise ValueError(f"unknown callback event {event!r}")
        if not callable(function):
            raise TypeError(f"a {event} callback must be callable, got {function!r}")
        with self._lock:
            self._lists[event].append(Callback(extension, event, function))

    def has(self, event: str) -> bool:
        return bool(self._lists.get(event))

    def callbacks(self, event: str) -> list[Callback]:
        with self._lock:
            return list(self._lists[event])

    def call(self, event: str, *args, **kwargs) -> list[Any]:
        """Call every `event` callback; a failing one is reported and skipped. Returns the results in order."""
        results = []
        for callback in self.callbacks(event):
            try:
                results.append(callback.function(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - an extension's bug is reported, never fatal
                self.problems.report(callback.extension, f"{event} callback {_name(callback.function)}", exc)
        return results

    def remove_extension(self, extension: str) -> None:
        with self._lock:
            for event, items in self._lists.items():
                self._lists[event] = [c for c in items if c.extension != extension]

    def remove_function(self, function: Callable) -> int:
        """Drop every registration of `function` (A1111's `remove_callbacks_for_function`); returns how many."""
        with self._lock:
            removed = 0
            for event, items in self._lists.items():
                kept = [c for c in items if c.function != function]
                removed += len(items) - len(kept)
                self._lists[event] = kept
        return removed

    def clear(self) -> None:
        with self._lock:
            for items in self._lists.values():
                items.clear()


def _name(function: Callable) -> str:
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
