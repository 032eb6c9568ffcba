"""The console's "Total progress" bar of each running job, as A1111's terminal shows it: the sampling steps of all
its batches (hires fix passes included), fed from the job's progress reports and closed when the job ends.

The engine reports (batch number, batches, step, steps of this pass); the steps of passes of different lengths
(a hires fix pass) are counted as they happen, and the total is re-estimated from what is left, so the bar never
runs backwards nor stops short of its end.
"""
from __future__ import annotations

import threading

from ..console_progress import console_bar


class TotalProgressBar:
    """One job's bar; created on the first report that has steps (an Extras job counts upscaler tiles)."""

    def __init__(self):
        self._bar = None
        self._done = 0  # steps finished in the passes before this one, plus this one's so far
        self._pass: int | None = None  # the job_no of the pass being counted
        self._step = 0

    def update(self, step: int, steps: int, job_no: int, job_count: int) -> None:
        if steps <= 0:
            return
        if job_no != self._pass or step < self._step:  # a new pass (next batch, or its hires fix) starts at 0
            self._pass, self._step = job_no, 0
        step = min(step, steps)
        gained = max(0, step - self._step)
        self._done += gained
        self._step = step
        remaining = (steps - step) + max(0, job_count - job_no - 1) * steps
        total = self._done + remaining
        if self._bar is None:
            self._bar = console_bar(total=total, desc="Total progress")
        elif self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()
        self._bar.update(gained)

    @property
    def counts(self) -> tuple[int, int]:
        """(steps done, steps in all) as the bar shows them; (0, 0) before the first step report."""
        return (self._done, int(self._bar.total)) if self._bar is not None else (0, 0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class JobConsoleBars:
    """The bars of the jobs running now, by job id (the queue feeds it; a finished job's bar is closed)."""

    def __init__(self):
        self._bars: dict[str, TotalProgressBar] = {}
        self._lock = threading.Lock()

    def report(self, job_id: str, progress) -> None:
        """`progress`: the engine's Progress (job_no, job_count, sampling_step, sampling_steps). A console that
        cannot be written to (a closed stderr) only loses the bar: tqdm disables a bar whose writes fail."""
        with self._lock:  # one lock for the bars and their counts: Interrupt/Skip report from the caller's thread
            bar = self._bars.setdefault(job_id, TotalProgressBar())
            bar.update(int(progress.sampling_step), int(progress.sampling_steps), int(progress.job_no),
                       int(progress.job_count))

    def finish(self, job_id: str) -> None:
        with self._lock:
            bar = self._bars.pop(job_id, None)
        if bar is not None:
            bar.close()


__all__ = ["JobConsoleBars", "TotalProgressBar"]
