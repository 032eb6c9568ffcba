"""Handlers of the txt2img and img2img tabs: plain functions of the services and the tab's values.

`generate` is a generator Gradio streams: it queues a `GenerationRequest` and yields the tab's outputs
(see `OUTPUTS`) while polling the job, first its queue place, then the progress bar, at last the images.
"""
from __future__ import annotations

import html
from typing import Any, Iterator

import gradio as gr

from ..engine.request import RESIZE_MODES, GenerationRequest, RequestError
from ..jobs.queue import DONE, RUNNING
from . import notices
from .progress import progress_html

POLL_SECONDS = 0.2

# What `generate` yields, in this order.
OUTPUTS = ("state", "progress", "gallery", "infotext", "generate", "interrupt", "skip")


def new_state() -> dict:
    """A tab's memory within one browser session: its job and what the last run made."""
    return {"job_id": None, "seeds": [], "infotexts": [], "selected": 0, "elapsed": 0.0}


def infotext_html(infotext: str, elapsed: float | None = None) -> str:
    if not infotext:
        return ""
    body = "<br>".join(html.escape(line) for line in infotext.split("\n"))
    took = f'<p class="time">Time taken: {elapsed:.2f}s</p>' if elapsed else ""
    return f'<div class="infotext"><p>{body}</p>{took}</div>'


def resize_mode_index(value: Any) -> int:
    if isinstance(value, str):
        if value not in RESIZE_MODES:
            raise RequestError("resize_mode", f"unknown resize mode {value!r} (one of: {', '.join(RESIZE_MODES)})")
        return RESIZE_MODES.index(value)
    return 0 if value is None else value


def build_request(mode: str, prompt, negative_prompt, sampler, scheduler, steps, width, height, batch_count,
                  batch_size, cfg_scale, seed, init_image=None, denoising_strength=0.75,
                  resize_mode="Just resize", *, styles=None) -> GenerationRequest:
    """The request for the tab's values (checked by `validate` when it is queued; the chosen `styles` are
    applied into the prompts then)."""
    request = GenerationRequest(mode=mode, prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler,
                                scheduler=scheduler, steps=steps, width=width, height=height, n_iter=batch_count,
                                batch_size=batch_size, cfg_scale=cfg_scale, seed=seed, styles=list(styles or []))
    if mode == "img2img":
        request.init_images = [init_image] if init_image is not None else []
        request.denoising_strength = denoising_strength
        request.resize_mode = resize_mode_index(resize_mode)
    return request


def _buttons(running: bool) -> tuple:
    return gr.Button(visible=not running), gr.Button(visible=running), gr.Button(visible=running)


def _with_infotext(image, infotext: str):
    """A copy carrying its infotext, so that the PNG the gallery serves holds the parameters too."""
    image = image.copy()
    image.info["parameters"] = infotext
    return image


def generate(services, mode: str, state: dict | None, *values, styles=None) -> Iterator[tuple]:
    """Queue the tab's request and stream (state, progress, gallery, infotext, generate, interrupt, skip)."""
    state = dict(state or new_state())
    skip = gr.skip()
    try:
        job = services.generate(build_request(mode, *values, styles=styles))
    except Exception as exc:  # noqa: BLE001 - bad input is a notice, never a crash
        notices.report(exc)
        yield (state, skip, skip, skip, *_buttons(False))
        return
    state = {**state, "job_id": job.id}  # a new dict per change: Gradio keeps what was yielded
    shown = progress_html(job, services.queue.position(job))
    yield (state, shown, skip, skip, *_buttons(True))
    try:
        while not job.wait(POLL_SECONDS):
            panel = progress_html(job, services.queue.position(job))
            if panel != shown:  # unchanged panels are not sent again
                shown = panel
                yield (state, panel, skip, skip, skip, skip, skip)
        state = {**state, "job_id": None}
        if job.state != DONE:
            notices.warn(job.error or f"The job ended {job.state}")
            yield (state, progress_html(job), skip, skip, *_buttons(False))
            return
        result = job.result
        for warning in result.warnings:
            notices.warn(warning)
        if not result.images:
            yield (state, progress_html(job), skip, skip, *_buttons(False))
            return
        state = {**state, "seeds": list(result.seeds), "infotexts": list(result.infotexts), "selected": 0,
                 "elapsed": result.elapsed}
        gallery = [_with_infotext(image, text) for image, text in zip(result.images, result.infotexts)]
        yield (state, progress_html(job), gallery, infotext_html(result.infotexts[0], result.elapsed),
               *_buttons(False))
    except Exception as exc:  # noqa: BLE001 - whatever happens, the tab must come back usable
        notices.report(exc)
        yield ({**state, "job_id": None}, skip, skip, skip, *_buttons(False))


def _job_of(services, state: dict | None):
    job_id = (state or {}).get("job_id")
    return services.queue.get(job_id) if job_id else None


def interrupt(services, state: dict | None) -> None:
    """Stop this tab's job: a queued one is cancelled, a running one stops after its current step."""
    job = _job_of(services, state)
    if job is not None:
        services.queue.cancel(job.id)
    else:
        services.queue.interrupt()


def skip_batch(services, state: dict | None) -> None:
    """Drop the batch this tab's job is sampling and go on with the next one."""
    job = _job_of(services, state)
    if job is not None and job.state == RUNNING:
        job.control.skip()
    elif job is None:
        services.queue.skip()


def select_image(state: dict | None, index: int | None) -> tuple[dict, str]:
    """Gallery selection: show that image's infotext (and remember it for ♻️)."""
    state = dict(state or new_state())
    texts = state.get("infotexts") or []
    if index is None or not 0 <= index < len(texts):
        return state, gr.skip()
    state["selected"] = index
    return state, infotext_html(texts[index], state.get("elapsed"))


def reuse_seed(state: dict | None):
    """♻️: the seed of the selected (else the first) image this tab made last."""
    seeds = (state or {}).get("seeds") or []
    if not seeds:
        notices.warn("No image generated yet in this tab: there is no seed to reuse")
        return gr.skip()
    index = (state or {}).get("selected") or 0
    return seeds[index] if 0 <= index < len(seeds) else seeds[0]


def random_seed() -> int:
    return -1
