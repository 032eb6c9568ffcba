"""Progress of loading one checkpoint, by stage: a console bar ("Loading NAME:  45%|████ | [00:01, building the
UNet]") and, for whoever shows it elsewhere (the UI's checkpoint picker), a `LoadStatus` after every change.

The stages are weighted by their usual share of the time (reading the file dominates); reading a safetensors file
also advances tensor by tensor. A stage a load does not go through is simply passed over.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..console_progress import console_bar

log = logging.getLogger(__name__)

# (stage, what the user reads, share of the whole) in the order a load goes through them
SINGLE_FILE_STAGES = (
    ("read", "reading the file", 50),
    ("convert", "converting the tensors", 8),
    ("unet", "building the UNet", 10),
    ("vae", "building the VAE", 3),
    ("text_encoders", "building the text encoders", 10),
    ("prediction", "testing for v-prediction", 2),
    ("tokenizers", "loading the tokenizers", 5),
    ("place", "placing the weights", 12),
)
FOLDER_STAGES = (
    ("unet", "reading the UNet", 55),
    ("vae", "reading the VAE", 8),
    ("text_encoders", "reading the text encoders", 20),
    ("tokenizers", "loading the tokenizers", 5),
    ("place", "placing the weights", 12),
)
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]"


@dataclass(frozen=True)
class LoadStatus:
    """Where a load is: the checkpoint's name, 0..1 done, and the stage in words ("done" at the end)."""
    name: str
    fraction: float
    stage: str

    def describe(self) -> str:
        """'Loading NAME … 40% (building the UNet)'."""
        return f"Loading {self.name} … {round(self.fraction * 100)}% ({self.stage})"


Listener = Callable[[LoadStatus], None]


class LoadProgress:
    """Fed by the loader (`begin`, `within`, `done`); drives the console bar and calls `listener`. A listener that
    fails is logged and dropped: showing progress never breaks a load."""

    def __init__(self, name: str, stages=SINGLE_FILE_STAGES, listener: Listener | None = None):
        self.name = name
        self._listener = listener
        total = float(sum(weight for _, _, weight in stages)) or 1.0
        self._stages: dict[str, tuple[str, float, float]] = {}
        start = 0.0
        for key, label, weight in stages:
            self._stages[key] = (label, start / total, weight / total)
            start += weight
        self._current = ("", 0.0, 0.0)
        self.fraction = 0.0
        self.label = "starting"
        self._bar = console_bar(total=100, desc=f"Loading {name}", unit="%", bar_format=BAR_FORMAT)
        self._notify()

    def begin(self, key: str) -> None:
        """Begin stage `key` (one of the stage table's keys)."""
        self._current = self._stages[key]
        self.label = self._current[0]
        self._move(self._current[1])

    def within(self, done: int, total: int) -> None:
        """`done` of `total` parts of the current stage are finished (tensors read)."""
        _, start, share = self._current
        self._move(start + share * (min(done, total) / total if total > 0 else 1.0))

    def done(self) -> None:
        self.label = "done"
        self._move(1.0)
        self.close()

    def close(self) -> None:
        """End the console bar (also after a failed load: it stays where the load stopped)."""
        self._bar.close()

    def __enter__(self) -> "LoadProgress":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _move(self, fraction: float) -> None:
        self.fraction = max(self.fraction, min(1.0, fraction))  # never backwards
        self._bar.set_postfix_str(self.label, refresh=False)
        self._bar.update(self.fraction * 100 - self._bar.n)  # redrawn at most every tqdm.mininterval
        self._notify()

    def _notify(self) -> None:
        if self._listener is None:
            return
        try:
            self._listener(LoadStatus(self.name, self.fraction, self.label))
        except Exception:  # noqa: BLE001 - a broken listener must not fail the load
            log.exception("a load-progress listener failed; it is dropped")
            self._listener = None


__all__ = ["FOLDER_STAGES", "LoadProgress", "LoadStatus", "SINGLE_FILE_STAGES"]
