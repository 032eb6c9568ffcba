"""Console progress bars (tqdm, on stderr) for long operations: loading a checkpoint, hashing a big file, a
download, a job's sampling steps ("Total progress", as A1111's terminal shows it).

Bars show when stderr is a terminal and stay hidden otherwise (tqdm's `disable=None`), so CI logs and files that
stderr is redirected to are not filled with bar redraws. `WEBUI_CONSOLE_PROGRESS=1` forces them on (a log viewer
that understands carriage returns), `WEBUI_CONSOLE_PROGRESS=0` forces them off. Every bar of the app is made here.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

ENV_VAR = "WEBUI_CONSOLE_PROGRESS"
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def bars_disabled() -> bool | None:
    """tqdm's `disable` for our bars: False (forced on), True (forced off) or None (shown only on a terminal)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _ON:
        return False
    if value in _OFF:
        return True
    return None


def console_bar(total: float | None = None, desc: str = "", unit: str = "it", **options) -> tqdm:
    """A tqdm bar on stderr (read when the bar is made, so a redirected or captured stderr is honoured) following
    the policy above. `options` go to tqdm (unit_scale, bar_format, leave, ...)."""
    options.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=bars_disabled(), **options)


def byte_bar(total: int | None, desc: str) -> tqdm:
    """A bar counting bytes (hashing, downloads): shown as KiB / MiB / GiB with a rate."""
    return console_bar(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)


__all__ = ["ENV_VAR", "bars_disabled", "byte_bar", "console_bar"]


class DownloadBars:
    """A console bar per file, in bytes (shown on a terminal, or with WEBUI_CONSOLE_PROGRESS=1); called as a
    download's progress(name, done, total). `close()` ends the bars a failed download left open."""

    def __init__(self):
        self._bars = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = byte_bar(total, f"Downloading {name}")
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()  # a closed bar ignores a second close
