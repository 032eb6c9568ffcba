"""The queue for clients that want more than polling `/sdapi/v1/progress` (our routes, not A1111's):

- `GET /queue`: the running job and the queued ones with their positions, and the last finished ones;
- `GET /queue/events[?job=ID][&previews=true]`: a server-sent-events stream of queued / started / progress /
  preview / image / finished events (one JSON object per `data:` line, its type also as the SSE `event:`);
- `GET /queue/jobs/{id}`, `DELETE /queue/jobs/{id}` (cancel a queued job, interrupt a running one);
- `GET /queue/history?limit=&offset=&kind=`: past jobs from the SQLite history, newest first (`limit` is held to
  1..HISTORY_PAGE_MAX; `offset` must be 0..SQLite's largest integer, a 422 otherwise);
  `POST /queue/history/{seq}/rerun` queues one again.

Records render as JSON can carry them (`JobRecord.as_dict`: a stored NaN reads as null).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import StreamingResponse

from ..engine.preview import preview_every, shared_preview
from ..jobs.queue import QUEUED, RUNNING, Job
from ..jobs.store import SQLITE_MAX_INT, json_safe
from ..outputs.save import encode_png_base64
from ..core.errors import NotFoundError
from .errors import ApiError, classify

HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream
HISTORY_PAGE_MAX = 500  # the most jobs one /queue/history page lists (a larger limit is held to it)


def job_view(job: Job, position: int = 0) -> dict:
    view = {"id": job.id, "kind": job.kind, "source": job.source, "state": job.state, "position": position,
            "created": job.created, "started": job.started, "finished": job.finished, "error": job.error,
            "images": list(job.outputs)}
    if job.state == RUNNING:
        view["progress"] = job.control.progress.as_dict()
    if job.worker is not None:
        view["worker"] = job.worker
    if job.refusals or job.notes:  # in a pool: workers that could not run it, and moves after a lost worker
        view["refusals"], view["notes"] = list(job.refusals), list(job.notes)
    summary = getattr(job.payload, "prompt", None)
    if isinstance(summary, str):
        view["prompt"] = summary
    return json_safe(view)


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def install_queue_routes(app: FastAPI, services, auth: list) -> None:
    router = APIRouter(prefix="/queue", dependencies=auth, tags=["queue"])
    queue = services.queue

    @router.get("")
    def list_queue():
        running = queue.running
        pending = queue.pending()
        recent = [job for job in queue.recent() if job.state not in (QUEUED, RUNNING)][-20:]
        view = {"running": job_view(running) if running is not None else None,
                "queued": [job_view(job, index + 1) for index, job in enumerate(pending)],
                "finished": [job_view(job) for job in reversed(recent)]}
        if queue.pool is not None:  # --workers / --ray-address: every running job, and each worker's state
            view["running_jobs"] = [job_view(job) for job in queue.running_jobs()]
            view["workers"] = queue.pool.status()
        return view

    @router.get("/jobs/{job_id}")
    def get_job(job_id: str):
        job = queue.get(job_id)
        if job is not None:
            return job_view(job, queue.position(job))
        record = queue.store.get(job_id) if queue.store is not None else None
        if record is None:
            raise NotFoundError(f"No job {job_id!r} in the queue or the history", kind="UnknownJob")
        return record.as_dict()

    @router.delete("/jobs/{job_id}")
    def cancel_job(job_id: str):
        job = queue.get(job_id)
        if job is None:
            raise NotFoundError(f"No job {job_id!r} is queued or running", kind="UnknownJob")
        if not queue.cancel(job_id):
            raise ApiError(409, "JobFinished", f"Job {job_id!r} has already finished ({job.state})")
        return {"id": job_id, "state": job.state}

    @router.get("/history")
    def history(limit: int = 50, offset: Annotated[int, Query(ge=0, le=SQLITE_MAX_INT)] = 0,
                kind: str | None = None):
        if queue.store is None:
            return {"total": 0, "jobs": []}
        kinds = (kind,) if kind else None
        limit = max(1, min(int(limit), HISTORY_PAGE_MAX))
        return {"total": queue.store.count(kinds),
                "jobs": [record.as_dict() for record in queue.store.list(limit, offset, kinds)]}

    @router.post("/history/{seq}/rerun")
    def rerun(seq: int):
        if queue.store is None or queue.store.get_seq(seq) is None:
            raise NotFoundError(f"No job #{seq} in the history", kind="UnknownJob")
        try:
            job = services.rerun(seq, source="api")
        except Exception as exc:  # noqa: BLE001 - refusals (and a closed queue) get their status
            raise classify(exc) from None
        return {"id": job.id, "position": queue.position(job)}

    @router.get("/events")
    async def events(job: str | None = None, previews: bool = False):
        accept = (lambda event: event.get("job") == job) if job else None
        subscription = queue.events.subscribe(accept)
        every = preview_every(services.options)
        wanted = previews and every > 0

        async def stream():
            last_preview_step = -1
            try:
                yield ": connected\n\n"
                if job:  # the job may be past some moments already: say where it stands now
                    current = queue.get(job)
                    if current is not None:
                        yield _sse({"type": "state", **job_view(current, queue.position(current)), "job": job})
                        if current.state not in (QUEUED, RUNNING):
                            return
                    else:  # long finished: the history's record, and the stream ends; not there yet: wait for it
                        record = queue.store.get(job) if queue.store is not None else None
                        if record is not None and record.state not in (QUEUED, RUNNING):
                            yield _sse({"type": "state", **record.as_dict(), "job": job})
                            return
                last_beat = time.monotonic()
                while True:
                    event = await asyncio.to_thread(subscription.get, 1.0)
                    if event is None:
                        if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                            last_beat = time.monotonic()
                            yield ": keep-alive\n\n"
                        continue
                    yield _sse(event)
                    if wanted and event["type"] == "progress" and event["step"] // every != last_preview_step:
                        running = queue.get(event["job"])
                        image = (await asyncio.to_thread(shared_preview, running.control, every)
                                 if running is not None else (None, None))[1]  # a render must not block the loop
                        if image is not None:
                            last_preview_step = event["step"] // every
                            yield _sse({"type": "preview", "job": event["job"], "step": event["step"],
                                        "image": await asyncio.to_thread(encode_png_base64, image, None)})
                    if job and event["type"] == "finished":
                        return
            finally:
                subscription.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.include_router(router)
