"""One FIFO queue for every client (browser tabs, API scripts), served by one worker thread per device.

A job is data: an id, a kind ("generate", "load_checkpoint", ...), its payload, a state and, when done, a result or
an error message. Runners for each kind are registered by `app.py`; the queue itself never generates.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine.control import RunControl

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
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    control: RunControl = field(default_factory=RunControl)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE


Runner = Callable[[Job], Any]


class JobQueue:
    def __init__(self, user_errors: tuple[type[BaseException], ...] = (), history: int = 200):
        """`user_errors`: exception types whose message is meant for the user (bad input, unknown model...);
        they fail the job with that message and no traceback in the log."""
        self._user_errors = user_errors
        self._runners: dict[str, Runner] = {}
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._order: deque[str] = deque()
        self._history = history
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def register(self, kind: str, runner: Runner) -> None:
        self._runners[kind] = runner

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt the running job and cancel the queued ones (so nobody waits forever); refuse new jobs."""
        with self._cond:
            self._stopping = True
            if self._running is not None:
                self._running.control.interrupt()
            while self._queue:
                self._finish(self._queue.popleft(), CANCELLED, error="the server is shutting down")
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- clients ----------------------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Any, task_id: str | None = None) -> Job:
        if kind not in self._runners:
            raise ValueError(f"no runner for job kind {kind!r}")
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down: no new jobs are accepted")
            job_id = task_id or f"task({uuid.uuid4().hex[:15]})"
            if job_id in self._jobs and self._jobs[job_id].state in (QUEUED, RUNNING):
                raise ValueError(f"a job with id {job_id!r} is already queued or running")
            job = Job(job_id, kind, payload)
            self._jobs[job_id] = job
            self._order.append(job_id)
            self._queue.append(job)
            self._trim()
            self._cond.notify_all()
        return job

    def run(self, kind: str, payload: Any, task_id: str | None = None, timeout: float | None = None) -> Job:
        """Submit and wait until it has finished (in whatever state)."""
        job = self.submit(kind, payload, task_id)
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

    @property
    def running(self) -> Job | None:
        with self._cond:
            return self._running

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job (True), or interrupt it if it is running (True); False if it has finished."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if job.state == QUEUED:
                self._queue.remove(job)
                self._finish(job, CANCELLED, error="cancelled before it started")
                return True
            if job.state == RUNNING:
                job.control.interrupt()
                return True
            return False

    def interrupt(self) -> None:
        """Stop the running job after its current step (finished images are kept). Queued jobs are untouched."""
        with self._cond:
            if self._running is not None:
                self._running.control.interrupt()

    def skip(self) -> None:
        with self._cond:
            if self._running is not None:
                self._running.control.skip()

    # --- worker -----------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.started = RUNNING, time.time()
                self._running = job
            try:
                result = self._runners[job.kind](job)
            except self._user_errors as exc:
                self._done_with(job, FAILED, error=str(exc), exception=exc)
            except Exception as exc:  # the worker must survive anything a job does
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._done_with(job, FAILED, error=f"{type(exc).__name__}: {exc}", exception=exc)
            else:
                self._done_with(job, DONE, result=result)

    def _done_with(self, job: Job, state: str, result: Any = None, error: str | None = None,
                   exception: BaseException | None = None) -> None:
        with self._cond:
            self._running = None
            job.result = result
            job.exception = exception
            job.error_kind = type(exception).__name__ if exception is not None else None
            self._finish(job, state, error)

    @staticmethod
    def _finish(job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job._done.set()

    def _trim(self) -> None:
        while len(self._order) > self._history:
            oldest = self._order[0]
            job = self._jobs.get(oldest)
            if job is not None and job.state in (QUEUED, RUNNING):
                break
            self._order.popleft()
            self._jobs.pop(oldest, None)
