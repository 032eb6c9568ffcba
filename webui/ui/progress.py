"""The progress panel over the gallery: a bar with percent and ETA while a job runs (and the time it has been running,
ticking each second even while one step takes long), its queue place before; the live preview shown over the
gallery; the job's warnings (or its error) under it."""
from __future__ import annotations

import base64
import html
import io
import time
from typing import Iterator

from ..engine.preview import PreviewWatcher
from ..jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job

POLL_SECONDS = 0.2


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def progress_text(fraction: float, eta_seconds: float) -> str:
    """`42% ETA: 3s` (no ETA before the first step, when nothing is known yet)."""
    percent = f"{int(fraction * 100)}%"
    return f"{percent} ETA: {format_eta(eta_seconds)}" if fraction > 0 else percent


def _bar(fraction: float, text: str) -> str:
    width = f"{max(0.0, min(1.0, fraction)) * 100:.1f}%"
    return (f'<div class="progressbar"><div class="progress" style="width: {width}"></div>'
            f'<span class="progress-text">{html.escape(text)}</span></div>')


def _state(text: str, kind: str) -> str:
    return f'<div class="job-state job-{kind}">{html.escape(text)}</div>'


def progress_html(job: Job, position: int = 0) -> str:
    """The panel for `job`; `position` is its place in the queue (`JobQueue.position`)."""
    if job.state == QUEUED:
        ahead = f"{position - 1} job{'s' if position != 2 else ''} ahead" if position > 1 else "next"
        return _state(f"Waiting in queue ({ahead})", "queued") + _bar(0.0, "0%")
    if job.state == RUNNING:
        progress = job.control.progress
        details = [progress.textinfo] if progress.textinfo else []  # the engine's "Batch 2 of 3", ...
        if progress.job_count > 1 and not progress.textinfo:
            details.append(f"batch {progress.job_no + 1} of {progress.job_count}")
        if progress.sampling_steps:
            details.append(f"step {progress.sampling_step}/{progress.sampling_steps}")
        state = "Running" + (": " + ", ".join(details) if details else "")
        state += f" — {format_eta(time.time() - (job.started or job.created))} elapsed"
        return _state(state, "running") + _bar(progress.fraction, progress_text(progress.fraction,
                                                                                 progress.eta_seconds))
    if job.state == DONE:
        took = (job.finished or 0) - (job.started or job.created)
        return _state(f"Done in {took:.1f}s", "done")
    if job.state == FAILED:
        return _state(f"Failed: {job.error}", "failed")
    if job.state == CANCELLED:
        return _state("Cancelled", "cancelled")
    return _state(job.state, job.state)


def preview_html(image) -> str:
    """The live preview as an <img> shown over the gallery (the gallery keeps the last finished images, so a preview
    is never taken for a result). Small previews travel as PNG, big ones (TAESD, Full at a large size) as JPEG."""
    buffer = io.BytesIO()
    kind = "png" if image.width * image.height <= 512 * 512 else "jpeg"
    (image if kind == "png" else image.convert("RGB")).save(buffer, format=kind, quality=85)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="live-preview-image" alt="Live preview" src="data:image/{kind};base64,{data}">'


def warnings_html(warnings: list[str], error: str | None = None) -> str:
    """What the job wants the user to know, kept under the gallery until the next run ends ("" when nothing): its
    error when it failed, else its warnings (networks not found, an unusable embedding, ...)."""
    lines = [f'<p class="job-error">{html.escape(error, quote=False)}</p>'] if error else []
    lines += [f'<p class="job-warning">{html.escape(str(warning), quote=False)}</p>' for warning in warnings]
    return f'<div class="job-warnings">{"".join(lines)}</div>' if lines else ""


def updates_until_done(queue, job: Job, shown: str, every: int = 0) -> Iterator[tuple[str | None, object]]:
    """(panel, preview) each time either changes, polling until `job` has finished: the progress panel (None when
    it is still `shown`, the one on screen) and a live preview every `every` sampling steps (None in between;
    0: no previews)."""
    watcher = PreviewWatcher(job.control, every) if every > 0 and job.control is not None else None
    while not job.wait(POLL_SECONDS):
        panel = progress_html(job, queue.position(job))
        panel, shown = (panel, panel) if panel != shown else (None, shown)  # unchanged panels are not sent again
        preview = watcher.poll() if watcher is not None and job.state == RUNNING else None
        if panel is not None or preview is not None:
            yield panel, preview


def panels_until_done(queue, job: Job, shown: str) -> Iterator[str]:
    """The progress panel each time it changes (`shown` is the one on screen), polling until `job` has finished."""
    for panel, _ in updates_until_done(queue, job, shown):
        yield panel
