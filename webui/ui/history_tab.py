"""The History tab: the live queue (running job with its progress, queued jobs with their places, cancel) and the
past jobs from the SQLite history, newest first, 20 a page. Selecting a job shows its saved images, infotexts and
error; it can be queued again ("Re-run", with the seeds it got) or sent to txt2img / img2img as PNG Info does.

Handlers are plain functions of `services` and plain values; `build_history_tab` lays the tab out and
`wire_history_tab` connects its own events (blocks.py wires the Send buttons, which fill the generation tabs).
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from ..jobs.queue import RUNNING, Job
from ..jobs.store import JobRecord
from . import notices, pnginfo, tab_events
from .generation import infotext_html
from .progress import progress_text

HISTORY_TITLE, HISTORY_ID = "History", "history"  # the tab's label and id (blocks.py)
PAGE_SIZE = 20
REFRESH_SECONDS = 3.0  # the queue panel's refresh while the tab is open
KIND_FILTERS = {"Generations": ("generate",), "All": None}
COLUMNS = ("#", "Time", "State", "Source", "Mode", "Prompt", "Size", "Steps", "Seed", "Images", "Error")
_DATATYPES = ["number", "str", "str", "str", "str", "str", "str", "str", "str", "number", "str"]
_PROMPT_CHARS = 60
_ERROR_CHARS = 90


def new_state() -> dict:
    """The tab's memory in one browser session: the page shown, the selected job and its gallery."""
    return {"page": 0, "kind": "Generations", "seqs": [], "queue": None,
            "seq": None, "paths": [], "infotexts": [], "selected": 0}


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _short(text, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _store(services):
    return getattr(services.queue, "store", None)


# --- the live queue -----------------------------------------------------------------------------------------------
def _job_prompt(job: Job) -> str:
    prompt = getattr(job.payload, "prompt", None)
    if isinstance(prompt, str):
        return prompt
    if isinstance(job.payload, dict):
        return ", ".join(f"{key}={value}" for key, value in job.payload.items())
    return "" if job.payload is None else str(job.payload)


def _job_label(job: Job) -> str:
    prompt = _short(_job_prompt(job), _PROMPT_CHARS)
    return f"{job.kind}" + (f": {prompt}" if prompt else "")


def queue_html(services) -> str:
    """The running job (what it makes, its progress) and the queued ones with their places."""
    running, pending = services.queue.running_jobs(), services.queue.pending()
    parts = []
    for job in running:
        progress = job.control.progress
        text = progress_text(progress.fraction, progress.eta_seconds)
        width = f"{max(0.0, min(1.0, progress.fraction)) * 100:.1f}%"
        where = f" on worker {job.worker}" if job.worker is not None else ""
        parts.append(f'<div class="job-state job-running">Running {_esc(job.id)} ({_esc(job.source or "?")})'
                     f'{where} · {_esc(_job_label(job))}</div>'
                     f'<div class="progressbar"><div class="progress" style="width: {width}"></div>'
                     f'<span class="progress-text">{_esc(text)}</span></div>')
    if not running:
        parts.append('<div class="job-state job-idle">Nothing is running.</div>')
    if pending:
        items = "".join(f"<li>{position}. {_esc(job.id)} ({_esc(job.source or '?')}) · {_esc(_job_label(job))}</li>"
                        for position, job in enumerate(pending, 1))
        parts.append(f'<div class="job-state job-queued">Queued ({len(pending)}):</div>'
                     f'<ul class="history-queued">{items}</ul>')
    else:
        parts.append('<div class="job-state job-queued">No job is waiting.</div>')
    pool = services.queue.pool
    if pool is not None:  # --workers / --ray-address: each worker, where it runs and what it holds
        rows = "".join(
            f"<li>worker {w['worker']} · {_esc(w['state'])}"
            + (f" · {_esc(str(w.get('device') or ''))} on {_esc(str(w.get('node') or ''))}" if w.get("node") else "")
            + (f" · {_esc(w['checkpoint'])}" if w.get("checkpoint") else "")
            + (f" · {_esc(w['error'])}" if w.get("error") else "") + "</li>"
            for w in pool.status())
        parts.append(f'<div class="job-state job-workers">Workers ({pool.ready()} of {pool.size} ready):</div>'
                     f'<ul class="history-workers">{rows}</ul>')
    return f'<div class="history-queue">{"".join(parts)}</div>'


def cancel_choices(services) -> list[tuple[str, str]]:
    """(label, job id) for each queued job, in queue order."""
    return [(f"{position}. {job.id} · {_job_label(job)}", job.id)
            for position, job in enumerate(services.queue.pending(), 1)]


def _cancel_dropdown(services, selected=None) -> gr.Dropdown:
    choices = cancel_choices(services)
    keep = selected if selected in {job_id for _, job_id in choices} else None
    return gr.Dropdown(choices=choices, value=keep)


def _queue_signature(services) -> list:
    """What changes when a job is queued, starts or ends: then the table and the cancel list are refreshed. The
    history's job count too: a quick job can start and end between two looks."""
    store = _store(services)
    pool = services.queue.pool
    return [[job.id for job in services.queue.running_jobs()], [job.id for job in services.queue.pending()],
            store.count() if store is not None else 0,
            [(w["state"], w["checkpoint"]) for w in pool.status()] if pool is not None else None]


# --- past jobs ----------------------------------------------------------------------------------------------------
def _kinds(kind: str | None):
    return KIND_FILTERS.get(kind or "Generations", ("generate",))


def _seed(record: JobRecord):
    seeds = record.result.get("seeds") or []
    if seeds:
        return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}…{seeds[-1]}"
    seed = record.summary.get("seed")
    return "" if seed is None else str(seed)


def _describe(record: JobRecord) -> str:
    """A generation's prompt; for other jobs what they were given (a checkpoint, changed settings)."""
    summary = record.summary
    if "prompt" in summary:
        return str(summary["prompt"])
    if "value" in summary:
        return "" if summary["value"] is None else str(summary["value"])
    return ", ".join(f"{key}={value}" for key, value in summary.items())


def _image_count(record: JobRecord) -> int:
    return max(len(record.outputs), int(record.result.get("images") or 0))


def table_row(record: JobRecord) -> list:
    """One row of the table, in COLUMNS' order."""
    summary = record.summary
    generation = record.kind == "generate"
    size = f"{summary['width']}x{summary['height']}" if generation and "width" in summary else ""
    return [record.seq, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)), record.state,
            record.source, str(summary.get("mode") or "") if generation else record.kind,
            _short(_describe(record), _PROMPT_CHARS), size,
            str(summary.get("steps", "")) if generation else "", _seed(record) if generation else "",
            _image_count(record), _short(record.error, _ERROR_CHARS)]


def history_table(services, state: dict | None, page: int | None = None,
                  kind: str | None = None) -> tuple[dict, pd.DataFrame, str]:
    """(state, the table's rows, "Page 1 of 3 · 45 jobs") for `page` (0-based, clamped) of the jobs of `kind`
    ("Generations" or "All"); None keeps the state's."""
    state = dict(state or new_state())
    kind = kind if kind in KIND_FILTERS else state.get("kind") or "Generations"
    page = state.get("page", 0) if page is None else page
    store = _store(services)
    if store is None:
        return {**state, "seqs": []}, pd.DataFrame([], columns=COLUMNS), "The job history is off"
    total = store.count(_kinds(kind))
    pages = max(1, -(-total // PAGE_SIZE))
    page = max(0, min(int(page), pages - 1))
    records = store.list(PAGE_SIZE, page * PAGE_SIZE, _kinds(kind))
    table = pd.DataFrame([table_row(record) for record in records], columns=COLUMNS)
    noun = "generation" if kind == "Generations" else "job"
    label = f"Page {page + 1} of {pages} · {total} {noun}{'s' if total != 1 else ''}"
    return {**state, "page": page, "kind": kind, "seqs": [r.seq for r in records]}, table, label


def refresh(services, state: dict | None, selected=None) -> tuple:
    """Refresh / tab opened: (state, queue panel, cancel list, table, page label)."""
    state, table, label = history_table(services, state)
    state["queue"] = _queue_signature(services)
    return state, queue_html(services), _cancel_dropdown(services, selected), table, label


def tick(services, state: dict | None, selected=None) -> tuple:
    """The timer: the queue panel always (the progress moves); the cancel list and the table only when a job was
    queued, started or finished since the last look (so an idle tab costs one small query)."""
    state = dict(state or new_state())
    if state.get("queue") == _queue_signature(services):
        return state, queue_html(services), gr.skip(), gr.skip(), gr.skip()
    return refresh(services, state, selected)


def change_page(services, state: dict | None, step: int) -> tuple[dict, pd.DataFrame, str]:
    """Prev (-1) / Next (+1)."""
    state = dict(state or new_state())
    return history_table(services, state, state.get("page", 0) + step)


def change_kind(services, state: dict | None, kind: str) -> tuple[dict, pd.DataFrame, str]:
    return history_table(services, state, 0, kind)


def cancel_job(services, job_id, state: dict | None = None) -> tuple:
    """Cancel a queued job (a running one is interrupted after its current step); then `refresh`'s outputs."""
    job_id = str(job_id or "").strip()
    job = services.queue.get(job_id) if job_id else None
    if not job_id:
        notices.warn("Choose a queued job to cancel")
    elif job is None:
        notices.warn(f"No job {job_id} is queued or running")
    else:
        running = job.state == RUNNING
        if services.queue.cancel(job_id):
            notices.info(f"Job {job_id} is running: it stops after the current step" if running
                         else f"Cancelled job {job_id}")
        else:
            notices.warn(f"Job {job_id} has already finished ({job.state})")
    return refresh(services, state)


# --- the selected job ---------------------------------------------------------------------------------------------
def _open_image(path: str, infotext: str) -> Image.Image:
    with Image.open(path) as opened:
        opened.load()
        image = opened.copy()
    image.info["parameters"] = infotext  # the PNG the gallery serves carries the parameters too
    return image


def _times(record: JobRecord) -> str:
    parts = [f"queued {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.created))}"]
    if record.started and record.finished:
        parts.append(f"ran {record.finished - record.started:.1f}s")
    elif record.started:
        parts.append("running")
    return ", ".join(parts)


def details_html(record: JobRecord, missing: list[str], unreadable: list[str]) -> str:
    """The job's id, state, timings, error, warnings and the files that could not be shown."""
    state_class = "job-failed" if record.state == "failed" else f"job-{record.state}"
    parts = [f'<div class="job-state {state_class}">Job #{record.seq} {_esc(record.id)} · {_esc(record.kind)} · '
             f'{_esc(record.state)} · from {_esc(record.source or "?")} · {_esc(_times(record))}</div>']
    if record.error:
        parts.append(f'<div class="job-state job-failed">Error: {_esc(record.error)}</div>')
    if record.result.get("interrupted"):
        parts.append('<div class="job-state">Interrupted: the images finished before that were kept</div>')
    for warning in record.result.get("warnings") or []:
        parts.append(f'<div class="job-state job-warning">Warning: {_esc(warning)}</div>')
    if missing:
        items = "".join(f"<li>{_esc(path)}</li>" for path in missing)
        parts.append(f'<div class="job-state">Missing (moved or deleted since):<ul>{items}</ul></div>')
    if unreadable:
        items = "".join(f"<li>{_esc(problem)}</li>" for problem in unreadable)
        parts.append(f'<div class="job-state job-failed">Not readable:<ul>{items}</ul></div>')
    if not record.payload_complete and record.kind == "generate":
        parts.append('<div class="job-state">Part of this request (an extension\'s value) was not stored: it '
                     'cannot be re-run</div>')
    return f'<div class="history-details">{"".join(parts)}</div>'


def select_job(services, state: dict | None, seq) -> tuple[dict, list, str, str]:
    """A row was selected: (state, the job's images for the gallery, the first image's infotext, details).
    Files that no longer exist are listed as missing; a job that saved nothing shows its infotexts."""
    state = dict(state or new_state())
    store = _store(services)
    record = store.get_seq(int(seq)) if store is not None and seq is not None else None
    if record is None:
        if seq is not None:
            notices.warn(f"Job #{seq} is no longer in the history")
        return {**state, "seq": None, "paths": [], "infotexts": [], "selected": 0}, [], "", ""
    images, paths, texts, missing, unreadable = [], [], [], [], []
    for output in record.outputs:
        path = output["path"]
        if not Path(path).is_file():
            missing.append(path)
            continue
        try:
            images.append(_open_image(path, output["infotext"]))
        except Exception as exc:  # noqa: BLE001 - a damaged file is listed, never an error for the tab
            unreadable.append(f"{path}: {exc}")
            continue
        paths.append(path)
        texts.append(output["infotext"])
    if not record.outputs:  # nothing saved (save_images off, or not a generation): the infotexts it returned
        texts = [str(text) for text in record.result.get("infotexts") or []]
    state = {**state, "seq": record.seq, "paths": paths, "infotexts": texts, "selected": 0}
    shown = infotext_html(texts[0]) if texts else ""
    return state, images, shown, details_html(record, missing, unreadable)


def select_image(state: dict | None, index: int | None) -> tuple[dict, str]:
    """Gallery selection: that image's infotext (and it is the one Send uses)."""
    state = dict(state or new_state())
    texts = state.get("infotexts") or []
    if index is None or not 0 <= index < len(texts):
        return state, gr.skip()
    state["selected"] = index
    return state, infotext_html(texts[index])


def selected_infotext(state: dict | None) -> str:
    """The selected image's infotext ("" when no job with parameters is selected)."""
    state = state or {}
    texts, index = state.get("infotexts") or [], state.get("selected") or 0
    return texts[index] if 0 <= index < len(texts) else ""


def rerun(services, state: dict | None, selected=None) -> tuple:
    """Queue the selected job again (`services.rerun`: same request, the seeds it got); then `refresh`'s outputs."""
    state = dict(state or new_state())
    seq = state.get("seq")
    if seq is None:
        notices.warn("Select a job in the table first")
    else:
        try:
            job = services.rerun(seq, source="ui")
        except Exception as exc:  # noqa: BLE001 - a job that cannot be re-run is a notice
            notices.report(exc)
        else:
            position = services.queue.position(job)
            notices.info(f"Queued again as {job.id}: " + (f"position {position} in the queue" if position
                                                           else "running now"))
    return refresh(services, state, selected)


def send_to(services, mode: str, state: dict | None, sampler=None, scheduler=None, send=None) -> tuple | None:
    """"Send to txt2img" / "Send to img2img": the selected image's infotext into that tab exactly as PNG Info's
    buttons do (`send`: `pnginfo.send_to`'s signature less the mode; blocks.py passes one that also runs the
    extensions' infotext_pasted callbacks). img2img also gets the picture. None (after a notice) when the
    selected job has no parameters to send."""
    state = state or {}
    text = selected_infotext(state)
    if state.get("seq") is None:
        notices.warn("Select a job in the table first")
        return None
    if not text.strip():
        notices.warn("This job has no generation parameters to send (it saved no image with an infotext)")
        return None
    image = None
    paths, index = state.get("paths") or [], state.get("selected") or 0
    if mode == "img2img" and 0 <= index < len(paths):
        try:
            image = _open_image(paths[index], text)
        except Exception as exc:  # noqa: BLE001 - deleted since: the parameters still go
            notices.warn(f"{paths[index]} could not be read ({exc}): only its parameters were sent")
    send = send or (lambda *values, **named: pnginfo.send_to(mode, *values, **named))
    if mode == "img2img":
        return send(text, sampler, scheduler, image)
    return send(text, sampler, scheduler)


# --- layout and wiring --------------------------------------------------------------------------------------------
@dataclass
class HistoryTab:
    queue: gr.HTML
    cancel_choice: gr.Dropdown
    cancel: gr.Button
    refresh: gr.Button
    timer: gr.Timer
    kind: gr.Radio
    prev: gr.Button
    next: gr.Button
    page: gr.HTML
    table: gr.Dataframe
    gallery: gr.Gallery
    infotext: gr.HTML
    details: gr.HTML
    rerun: gr.Button
    send_txt2img: gr.Button
    send_img2img: gr.Button
    state: gr.State

    def refresh_outputs(self) -> list:
        return [self.state, self.queue, self.cancel_choice, self.table, self.page]


def build_history_tab() -> HistoryTab:
    """The tab's content; call inside `with gr.Tab("History", id="history", elem_id="tab_history")`."""
    c = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c["queue"] = gr.HTML(elem_id="history_queue")
        with gr.Column(scale=2, min_width=280):
            c["cancel_choice"] = gr.Dropdown([], value=None, label="Queued job", allow_custom_value=True,
                                             elem_id="history_cancel_job")
            with gr.Row():
                c["cancel"] = gr.Button("Cancel job", variant="stop", elem_id="history_cancel")
                c["refresh"] = gr.Button("🔄 Refresh", elem_id="history_refresh")
    c["timer"] = gr.Timer(REFRESH_SECONDS, active=False)
    with gr.Row(equal_height=True):
        c["kind"] = gr.Radio(list(KIND_FILTERS), value="Generations", show_label=False, elem_id="history_kind",
                             scale=2)
        c["prev"] = gr.Button("◀ Prev", elem_id="history_prev", scale=0, min_width=90)
        c["page"] = gr.HTML(elem_id="history_page")
        c["next"] = gr.Button("Next ▶", elem_id="history_next", scale=0, min_width=90)
    c["table"] = gr.Dataframe(pd.DataFrame([], columns=COLUMNS), headers=list(COLUMNS), datatype=_DATATYPES,
                              interactive=False, wrap=True, max_height=640, label="Past jobs (select one)",
                              elem_id="history_table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c["gallery"] = gr.Gallery(label="Images", elem_id="history_gallery", format="png", columns=4,
                                      object_fit="contain", interactive=False, height=420, type="pil",
                                      buttons=["download", "download_all", "fullscreen"])
            with gr.Row():
                c["rerun"] = gr.Button("Re-run", variant="primary", elem_id="history_rerun")
                c["send_txt2img"] = gr.Button("Send to txt2img", elem_id="history_send_txt2img")
                c["send_img2img"] = gr.Button("Send to img2img", elem_id="history_send_img2img")
        with gr.Column(scale=2):
            c["details"] = gr.HTML(elem_id="history_details")
            c["infotext"] = gr.HTML(elem_id="html_info_history")
    c["state"] = gr.State(new_state())
    return HistoryTab(**c)


def wire_history_tab(tab: HistoryTab, services, history: gr.Tab, tabs: gr.Tabs) -> None:
    """The tab's own events. The timer ticks only while the History tab is open: the page presses the hidden
    `tab_shown_history` / `tab_left_history` buttons (`tab_events`) once a switch has been drawn, so opening the tab
    shows it at once and its table follows. `history` and `tabs` are the tab and the top Tabs (unused now)."""
    refreshed = tab.refresh_outputs()
    table_outputs = [tab.state, tab.table, tab.page]
    quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}

    def opened(state, selected):
        return (*refresh(services, state, selected), gr.Timer(active=True))

    def select_row(state, event: gr.SelectData):
        row = event.row_value or []
        try:
            seq = int(row[0]) if row else None
        except (TypeError, ValueError):
            seq = None
        if seq is None:
            seqs, index = (state or {}).get("seqs") or [], (event.index or [None])[0]
            seq = seqs[index] if isinstance(index, int) and 0 <= index < len(seqs) else None
        return select_job(services, state, seq)

    def select_picture(state, event: gr.SelectData):
        return select_image(state, event.index)

    # Not history.select / tabs.select: those run inside the tab click and held every switch up (tab_events)
    tab_events.on_shown(HISTORY_ID).click(opened, inputs=[tab.state, tab.cancel_choice],
                                          outputs=[*refreshed, tab.timer], concurrency_limit=None, **quiet)
    tab_events.on_left(HISTORY_ID).click(lambda: gr.Timer(active=False), outputs=[tab.timer],
                                         concurrency_limit=None, **quiet)
    tab.refresh.click(lambda state, selected: refresh(services, state, selected),
                      inputs=[tab.state, tab.cancel_choice], outputs=refreshed, **quiet)
    tab.timer.tick(lambda state, selected: tick(services, state, selected), inputs=[tab.state, tab.cancel_choice],
                   outputs=refreshed, concurrency_limit=None, **quiet)  # reads only: every open tab at once
    tab.cancel.click(lambda job_id, state: cancel_job(services, job_id, state), inputs=[tab.cancel_choice, tab.state],
                     outputs=refreshed, **quiet)
    tab.kind.change(lambda state, kind: change_kind(services, state, kind), inputs=[tab.state, tab.kind],
                    outputs=table_outputs, **quiet)
    tab.prev.click(lambda state: change_page(services, state, -1), inputs=[tab.state], outputs=table_outputs,
                   **quiet)
    tab.next.click(lambda state: change_page(services, state, +1), inputs=[tab.state], outputs=table_outputs,
                   **quiet)
    tab.table.select(select_row, inputs=[tab.state], outputs=[tab.state, tab.gallery, tab.infotext, tab.details],
                     **quiet)
    tab.gallery.select(select_picture, inputs=[tab.state], outputs=[tab.state, tab.infotext], **quiet)
    tab.rerun.click(lambda state, selected: rerun(services, state, selected), inputs=[tab.state, tab.cancel_choice],
                    outputs=refreshed, **quiet)
