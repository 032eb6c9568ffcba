"""One FIFO queue for every client (browser tabs, API scripts), served by one worker thread, or by a pool.

A job is data: an id, a kind ("generate", "load_checkpoint", "set_options", ...), its payload, a state and, when
done, a result or an error message. Runners for each kind are registered by `webui/services.py`; the queue itself
never generates. With a `JobStore` every job is recorded in the history as it goes (queued, started, each saved
image, finished); an `EventBus` carries the same moments to whoever follows the queue (the `/queue/events` stream).

The worker sits behind `Runner` callables. With a `WorkerPool` (`pool.py`: one worker per GPU, on Ray), the kinds the
pool serves go to its workers, several at a time, as its scheduler assigns them; the other kinds stay on this
queue's thread. `running` is then the oldest running job, `running_jobs()` all of them.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.errors import ConflictError, UnavailableError, UserError
from ..core.run_control import RunControl
from .console import JobConsoleBars
from .events import EventBus
from .records import encode_payload
from .store import JobStore

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


@dataclass
class Job:
    id: str
    kind: str
    payload: Any
    state: str = QUEUED
    result: Any = None
    error: str | None = None
    error_kind: str | None = None
    exception: BaseException | None = None  # what failed the job, for callers that map errors (HTTP statuses)
    source: str = ""  # "ui", "api", "extension", ...: who asked (shown in the history)
    seq: int | None = None  # its row in the JobStore
    outputs: list[str] = field(default_factory=list)  # paths of the images saved so far
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    control: RunControl = field(default_factory=RunControl)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    # --- in a pool (pool.py) ---
    affinity: str | None = None  # the checkpoint it needs (the scheduler's key)
    queued_at: float = field(default_factory=time.monotonic)
    worker: int | None = None  # the pool worker running it
    attempts: int = 0  # times it was lost with its worker
    excluded: set = field(default_factory=set)  # workers that refused it (they lack one of its files)
    refusals: list = field(default_factory=list)  # their reasons
    notes: list = field(default_factory=list)  # what happened to it on the way (moved to another worker)
    batches: list = field(default_factory=list)  # its finished batches' entries (kept if its worker is lost)
    pinned: dict = field(default_factory=dict)  # its checkpoint and seeds, fixed when it first went to a worker

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE


Runner = Callable[[Job], Any]


class QueueError(RuntimeError):
    """A job the queue cannot take; the message says why. (As such a bug of the caller, such as an extension that
    queues from inside a job; the two subclasses below are the user's.)"""


class DuplicateJobError(ConflictError, QueueError, ValueError):
    """A client's task id that names a job still queued or running (HTTP 409)."""

    kind = "DuplicateTaskId"


class QueueClosedError(UnavailableError, QueueError):
    """The server is shutting down (HTTP 503)."""

    kind = "ShuttingDown"


class JobQueue:
    def __init__(self, user_errors: tuple[type[BaseException], ...] = (UserError,), history: int = 200,
                 store: JobStore | None = None, events: EventBus | None = None, pool=None):
        """`user_errors`: exception types whose message is meant for the user (bad input, unknown model...: the
        `webui.core.errors.UserError` family); they fail the job with that message and no traceback in the log.
        `history`: finished jobs kept in memory (the store keeps more)."""
        self._user_errors = user_errors
        self.store = store
        self.events = events or EventBus()
        self._runners: dict[str, Runner] = {}
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._order: deque[str] = deque()
        self._history = history
        self._cond = threading.Condition()
        self._running: list[Job] = []
        self._finished_later: list[Job] = []  # failed under the lock (by the pool): recorded and told after it
        self._stopping = False
        self.pool = pool  # a pool.WorkerPool serving some kinds of job, or None
        if pool is not None:
            pool.attach(self)
        self._thread: threading.Thread | None = None
        self._console = JobConsoleBars()  # each running job's "Total progress" bar in the terminal

    def register(self, kind: str, runner: Runner) -> None:
        self._runners[kind] = runner

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)
            self._thread.start()
            if self.pool is not None:
                self.pool.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Interrupt the running job and cancel the queued ones (so nobody waits forever); refuse new jobs.
        True once the worker has ended (False: it is still finishing its job after `timeout` seconds)."""
        with self._cond:
            self._stopping = True
            for job in self._running:
                job.control.interrupt()
            cancelled = list(self._queue)
            self._queue.clear()
            for job in cancelled:
                self._set_finished(job, CANCELLED, "the server is shutting down")
            self._cond.notify_all()
        for job in cancelled:
            self._after_finish(job)
        pool_ended = self.pool.stop(timeout) if self.pool is not None else True
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive() and pool_ended
        return pool_ended

    def on_worker_thread(self) -> bool:
        current = threading.current_thread()
        return (self._thread is not None and current is self._thread) or current.name.startswith("pool-worker-")

    # --- clients ----------------------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Any, task_id: str | None = None, source: str = "") -> Job:
        if kind not in self._runners:
            raise ValueError(f"no runner for job kind {kind!r}")
        if self.on_worker_thread():
            raise QueueError(f"a running job tried to queue a {kind} job and would wait for itself forever (an "
                             "extension's callback? it should do its work directly)")
        encoded = encode_payload(payload) if self.store is not None else None  # slow (PNGs): before the lock
        pooled = self.pool is not None and self.pool.serves(kind)
        if pooled:  # its checkpoint, fixed now as the settings say (it may hash a file: before the lock)
            probe = Job("", kind, payload, source=source)
            affinity = self.pool.key_of(probe)
        with self._cond:
            if self._stopping:
                raise QueueClosedError("the server is shutting down: no new jobs are accepted")
            job_id = task_id or f"task({uuid.uuid4().hex[:15]})"
            if job_id in self._jobs and self._jobs[job_id].state in (QUEUED, RUNNING):
                raise DuplicateJobError(f"a job with id {job_id!r} is already queued or running")
            job = Job(job_id, kind, payload, source=source)
            job.control.on_event = lambda event, data: self._job_event(job, event, data)
            if pooled:
                job.affinity, job.pinned = affinity, probe.pinned
            if self.store is not None:
                try:
                    job.seq = self.store.add(job_id, kind, payload, source=source, created=job.created,
                                             encoded=encoded)
                except Exception:  # noqa: BLE001 - a failing history never refuses the job
                    log.exception("could not record job %s in the history", job_id)
            if job_id in self._jobs:
                self._order.remove(job_id)  # a reused id: the new job replaces the old one here
            self._jobs[job_id] = job
            self._order.append(job_id)
            self._queue.append(job)
            self._trim()
            self._cond.notify_all()
            if self.pool is not None:
                self.pool.assign()
            # published under the lock, so no follower sees this job start before it was queued
            self.events.publish({"type": "queued", "job": job_id, "kind": kind, "position": len(self._queue)})
        if self.pool is not None:
            self._flush_finished()
        return job

    def run(self, kind: str, payload: Any, task_id: str | None = None, timeout: float | None = None,
            source: str = "") -> Job:
        """Submit and wait until it has finished (in whatever state)."""
        job = self.submit(kind, payload, task_id, source)
        job.wait(timeout)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 = running or finished; n = n jobs run before this one starts."""
        with self._cond:
            if job.state != QUEUED:
                return 0
            return list(self._queue).index(job) + 1

    def pending(self) -> list[Job]:
        with self._cond:
            return list(self._queue)

    def recent(self) -> list[Job]:
        """The jobs held in memory (queued, running and the last finished ones), oldest first."""
        with self._cond:
            return [self._jobs[job_id] for job_id in self._order if job_id in self._jobs]

    @property
    def running(self) -> Job | None:
        """The running job (in a pool: the one that started first)."""
        with self._cond:
            return self._running[0] if self._running else None

    def running_jobs(self) -> list[Job]:
        with self._cond:
            return list(self._running)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job (True), or interrupt it if it is running (True); False if it has finished."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if job.state == RUNNING:
                job.control.interrupt()
                return True
            if job.state != QUEUED:
                return False
            self._queue.remove(job)
            self._set_finished(job, CANCELLED, "cancelled before it started")
        self._after_finish(job)
        return True

    def interrupt(self) -> None:
        """Stop the running job (in a pool: every running job) after its current step (finished images are kept).
        Queued jobs are untouched."""
        for job in self.running_jobs():
            job.control.interrupt()

    def skip(self) -> None:
        for job in self.running_jobs():
            job.control.skip()

    # --- worker -----------------------------------------------------------------------------------------------
    def _take_local(self) -> Job | None:
        """(Under the lock.) The first queued job this thread runs: any, or those the pool does not serve."""
        for job in self._queue:
            if self.pool is None or not self.pool.serves(job.kind):
                return job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (job := self._take_local()) is None:
                    self._cond.wait()
                if self._stopping:
                    return
                self._queue.remove(job)
                job.state, job.started = RUNNING, time.time()
                self._running.append(job)
            self._started(job)
            try:
                result = self._runners[job.kind](job)
            except self._user_errors as exc:
                self._done_with(job, FAILED, error=str(exc), exception=exc)
            except Exception as exc:  # the worker must survive anything a job does
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._done_with(job, FAILED, error=f"{type(exc).__name__}: {exc}", exception=exc)
            else:
                self._done_with(job, DONE, result=result)

    def _started(self, job: Job) -> None:
        """Outside the lock: record and tell that `job` started."""
        self._record(lambda store: store.started(job.seq, job.started), job)
        self.events.publish({"type": "started", "job": job.id, "kind": job.kind,
                             **({"worker": job.worker} if job.worker is not None else {})})

    def _finish(self, job: Job, state: str, result: Any = None, error: str | None = None,
                exception: BaseException | None = None, running: bool = True) -> None:
        """A pool's job ended (its worker's thread, outside the lock)."""
        self._done_with(job, state, result, error, exception)

    def _flush_finished(self) -> None:
        """Record and tell the jobs failed under the lock."""
        with self._cond:
            jobs, self._finished_later = self._finished_later, []
        for job in jobs:
            self._after_finish(job)

    def _done_with(self, job: Job, state: str, result: Any = None, error: str | None = None,
                   exception: BaseException | None = None) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            job.result = result
            job.exception = exception
            job.error_kind = type(exception).__name__ if exception is not None else None
            self._set_finished(job, state, error)
        if job.control is not None:
            job.control.release()  # the history keeps the job, not its latents, previews or model
        self._after_finish(job)

    @staticmethod
    def _set_finished(job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished = state, error, time.time()

    def _after_finish(self, job: Job) -> None:
        """Outside the lock (a database write): record the end, then wake the waiters and tell the followers."""
        self._console.finish(job.id)
        self._record(lambda store: store.finished(job.seq, job.state, job.finished, job.error, job.result), job)
        job._done.set()
        self.events.publish({"type": "finished", "job": job.id, "kind": job.kind, "state": job.state,
                             "error": job.error, "images": list(job.outputs)})

    def _job_event(self, job: Job, event: str, data: dict) -> None:
        """What the running job's control reports: progress to the followers, saved images to the history too."""
        if event == "image":
            job.outputs.append(data["path"])
            self._record(lambda store: store.add_output(job.seq, data["path"], data.get("infotext", "")), job)
            self.events.publish({"type": "image", "job": job.id, "path": data["path"]})
        elif event == "progress":
            self._console.report(job.id, data["progress"])
            self.events.publish({"type": "progress", "job": job.id, **data["progress"].as_dict(),
                                 **({"worker": job.worker} if job.worker is not None else {})})

    def _record(self, write: Callable[[JobStore], None], job: Job) -> None:
        """A history write; a failing database (full disk, locked file) is logged and never fails the job."""
        if self.store is None or job.seq is None:
            return
        try:
            write(self.store)
        except Exception:  # noqa: BLE001
            log.exception("could not record job %s in the history", job.id)

    def _trim(self) -> None:
        while len(self._order) > self._history:
            oldest = self._order[0]
            job = self._jobs.get(oldest)
            if job is not None and job.state in (QUEUED, RUNNING):
                break
            self._order.popleft()
            self._jobs.pop(oldest, None)
