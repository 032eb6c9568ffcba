"""The checkpoint dropdown at the top: list, refresh, and switch (queued, so it runs between jobs). While a switch
waits and loads, Gradio's progress on the dropdown says so ("Loading NAME … 40% (building the UNet)")."""
from __future__ import annotations

from typing import Callable

import gradio as gr

from ..jobs.queue import QUEUED
from . import notices

POLL_SECONDS = 0.25  # how often a waiting switch looks at the load's progress
ProgressSink = Callable[..., object]  # gr.Progress, or anything called as sink(fraction, desc=text)


def checkpoint_titles(services) -> list[str]:
    return [c.title for c in services.models.checkpoints()]


def choices_after(services, first: str) -> list[str]:
    """`first` (a choice meaning "none" or "the same one"), then the checkpoints as the model manager lists them now
    (no rescan): the Hires and Refiner checkpoint pickers' lists."""
    models = getattr(services, "models", None)
    return [first, *(info.title for info in (models.checkpoints() if models is not None else []))]


def dropdown_after(services, first: str, current: str | None) -> gr.Dropdown:
    """Such a list as a dropdown update, the choice kept while it is listed (else `first`)."""
    choices = choices_after(services, first)
    return gr.Dropdown(choices=choices, value=current if current in choices else first)


def current_checkpoint(services) -> str | None:
    """The loaded checkpoint's title, else the saved choice (its title now, which may have gained a hash), else
    the first one: the checkpoint the next generation uses."""
    title = services.models.current_title() or services.options.get("sd_model_checkpoint") or None
    if title:
        try:
            return services.models.resolve(title).title
        except Exception:  # noqa: BLE001 - a saved name whose file went away is shown as it is
            return title
    titles = checkpoint_titles(services)
    return titles[0] if titles else None


def _dropdown(services, value: str | None) -> gr.Dropdown:
    return gr.Dropdown(choices=checkpoint_titles(services), value=value, allow_custom_value=True)


def refresh_checkpoints(services) -> gr.Dropdown:
    try:
        services.models.refresh()
    except Exception as exc:  # noqa: BLE001
        notices.report(exc)
    return _dropdown(services, current_checkpoint(services))


def show_current(services) -> gr.Dropdown:
    """On page load: what is loaded now (another browser may have switched it)."""
    return _dropdown(services, current_checkpoint(services))


def load_status(services, job, title: str) -> tuple[float, str]:
    """(fraction, text) of a queued checkpoint switch: waiting behind other jobs, or where its load is."""
    if job.state == QUEUED:
        ahead = services.queue.position(job)
        return 0.0, f"Waiting for {ahead} job{'s' if ahead != 1 else ''} to finish before loading {title}"
    status = services.models.loading
    if status is None:  # about to read, finishing (the cache, listeners), or taken from the cache
        return 0.0, f"Loading {title} …"
    return status.fraction, status.describe()


def change_checkpoint(services, title: str | None, progress: ProgressSink | None = None) -> gr.Dropdown:
    """Load `title` and wait for it, showing its progress (`progress`: default Gradio's, on the dropdown); on
    failure warn and put the dropdown back on the previous checkpoint."""
    previous = current_checkpoint(services)
    if not title or title == services.models.current_title():
        return _dropdown(services, previous)
    try:
        job = services.load_checkpoint(title, source="ui")
    except Exception as exc:  # noqa: BLE001 - unknown names fail here, before anything is queued
        notices.report(exc)
        return _dropdown(services, previous)
    sink = progress if progress is not None else gr.Progress()
    shown = 0.0
    while not job.wait(POLL_SECONDS):
        fraction, text = load_status(services, job, title)
        shown = max(shown, fraction)  # the moments before and after the load itself never move the bar back
        sink(shown, desc=text)
    if not job.finished_ok:
        notices.warn(job.error or f"Loading {title} ended {job.state}")
        return _dropdown(services, previous)
    notices.info(f"Loaded checkpoint {job.result}")
    return _dropdown(services, job.result)
