"""A pool of generation workers behind the one queue: dispatch, model affinity, faults. No Ray here.

The queue (`queue.py`) holds every job in one FIFO list. Without a pool its one thread runs them all in this process.
With a pool, the kinds the pool serves ("generate") go to the pool's workers: one thread per worker waits for a job
the scheduler (`scheduler.py`) gives it, runs it there through `runner(job, worker)` (which hands the request over,
relays progress, previews, saved images and Interrupt / Skip, and returns the result), and takes the next. The
other kinds (settings, extras, merges) stay on the queue's own thread in this process.

Faults: a worker that dies or stops answering (`WorkerLost`) is dropped and replaced, and its job goes back to the
front of the queue once (its finished batches travel with it, so they are not made again); a second loss fails the
job. A worker that refuses a job because it lacks one of its files, or has a different file under that name
(`WorkerRefused`), is never asked again for that job; when every worker has refused, the job fails with their
reasons.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..core.errors import UnavailableError, UserError
from .scheduler import AffinityScheduler, JobView, WorkerView

log = logging.getLogger(__name__)


class WorkerLost(RuntimeError):
    """The worker died or stopped answering while it had the job (its process, its machine, the network)."""


class WorkerRefused(UserError):
    """A worker cannot run the job as asked: a model file it lacks, or a different file under the same name. The
    job never runs on a substitute; the head tries another worker."""

    status = 409
    kind = "ModelNotOnWorker"


class PoolUnavailableError(UnavailableError):
    """No worker can run the job (all refused it, or the pool has none left)."""

    kind = "NoWorker"


class Worker(Protocol):
    """The head's handle of one worker (a Ray actor in `ray_pool.py`; fakes in tests and benchmarks)."""

    id: str

    def run(self, item: Any, sink: Any) -> Any:
        """Run one job (blocking). Raises WorkerLost, WorkerRefused, or the job's own error (a UserError...)."""

    def command(self, job_id: str, command: str) -> None:
        """"interrupt" or "skip" the job it runs (soon after: the engine checks at every model evaluation)."""

    def holds(self) -> tuple[str, ...]:
        """The checkpoints it holds (affinity keys), the one on its device first, as of its last finished job (the
        pool reads it between jobs, and keeps what it read when it gave the worker a job)."""

    def describe(self) -> dict:
        """Where it runs (node, device), for /queue and /progress."""

    def unload(self) -> None:
        """Free its loaded models (between jobs)."""

    def kill(self) -> None:
        """Stop it for good (a hung worker; shutting down)."""


@dataclass
class Slot:
    """One place in the pool: the worker there now (replaced when it dies) and what it does."""

    index: int
    worker: Worker | None = None
    state: str = "starting"  # starting, idle, busy, lost, failed, stopped
    job: Any = None  # the Job assigned or running
    error: str = ""  # why it failed to start, or why its last worker was lost
    started_jobs: int = 0
    loads: int = 0  # checkpoint switches it made
    busy_since: float | None = None
    held_at_start: tuple[str, ...] = ()  # what the worker held when it was given its job (before any load)
    unload_pending: bool = False
    restarts: list[float] = field(default_factory=list)

    def view(self, now: float, estimate: Callable[[str, tuple], float]) -> WorkerView:
        running = getattr(self.job, "affinity", None) if self.job is not None else None
        if running is None:
            worker = self.worker
            holds = tuple(worker.holds()) if worker is not None else ()
            return WorkerView(id=str(self.index), idle=self.state == "idle" and self.job is None, loaded=holds)
        # A busy worker: its end and what it holds come from what it held when given the job, not from `holds()`
        # now (a Ray worker tells it only when a job ends, another worker may as soon as a load starts): a switching
        # job takes its load too, and the job's checkpoint is the one on the device from the start.
        before = self.held_at_start
        until = self.busy_since + estimate(running, before) if self.busy_since is not None else None
        return WorkerView(id=str(self.index), idle=False, loaded=(running, *(key for key in before if key != running)),
                          running=running, busy_until=until)


class WorkerPool:
    """`factory(index)` builds worker `index` (blocking: a Ray actor that loads its services); `runner(job, worker)`
    runs a job there; `key_of(job)` is the job's affinity key (its checkpoint; it may also fix what the job runs
    on, in `job.pinned`: called once, when the job is queued, outside the queue's lock). `size` workers are kept."""

    def __init__(self, factory: Callable[[int], Worker], runner: Callable[[Any, Worker], Any], size: int,
                 key_of: Callable[[Any], str], scheduler=None, kinds: tuple[str, ...] = ("generate",),
                 attempts: int = 2, window: int = 256, max_restarts: int = 3):
        self.factory, self.runner, self.size, self.key_of = factory, runner, int(size), key_of
        self.scheduler = scheduler or AffinityScheduler()
        self.kinds = frozenset(kinds)
        self.attempts = attempts  # a job lost with its worker is run once more, then failed
        self.window = window  # queued jobs the scheduler looks at per decision
        self.max_restarts = max_restarts  # replacements of one slot's worker per 10 minutes
        self.retry_after = 300.0  # then: seconds before it is tried again
        self.slots = [Slot(i) for i in range(self.size)]
        self.queue = None  # the JobQueue, once attached
        self._threads: list[threading.Thread] = []
        self._wakeup: float | None = None  # when the scheduler wants to be asked again (a job's wait may end)
        self.cluster = None  # where the workers run (ray_pool.Cluster), for /queue
        self.on_stop: Callable[[], None] | None = None  # after the workers are stopped (Ray's shutdown)

    # --- wiring -----------------------------------------------------------------------------------------------
    def attach(self, queue) -> None:
        self.queue = queue

    def start(self) -> None:
        for slot in self.slots:
            thread = threading.Thread(target=self._serve, args=(slot,), name=f"pool-worker-{slot.index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> bool:
        """(The queue is stopping: its jobs are cancelled and its running jobs interrupted.) Let the running jobs
        end (their finished images are saved), then kill the workers."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:  # (a worker being built gives up within a second: `stopping()`)
            thread.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.worker is not None:
                try:
                    slot.worker.kill()
                except Exception:  # noqa: BLE001 - shutting down
                    log.debug("could not stop worker %d", slot.index, exc_info=True)
                slot.worker, slot.state = None, "stopped"
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:  # noqa: BLE001 - shutting down
                log.debug("pool shutdown", exc_info=True)
        return not any(thread.is_alive() for thread in self._threads)

    def stopping(self) -> bool:
        """Whether the pool is shutting down (a factory building a worker checks it while it waits)."""
        return self.queue is not None and self.queue._stopping

    def serves(self, kind: str) -> bool:
        return kind in self.kinds

    def ready(self) -> int:
        return sum(1 for slot in self.slots if slot.worker is not None and slot.state in ("idle", "busy"))

    # --- what clients see -------------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        with self.queue._cond:
            rows = []
            for slot in self.slots:
                described = {}
                worker, job = slot.worker, slot.job
                if worker is not None:
                    try:
                        described = dict(worker.describe())
                    except Exception:  # noqa: BLE001
                        described = {}
                holds = list(worker.holds()) if worker is not None else []
                rows.append({"worker": slot.index, "state": slot.state, "job": job.id if job is not None else None,
                             "checkpoint": job.affinity if job is not None and job.affinity else
                             (holds[0] if holds else None),
                             "loaded": holds,
                             "jobs": slot.started_jobs, "checkpoint_loads": slot.loads,
                             "progress": (job.control.progress.as_dict() if job is not None and job.control
                                          else None),
                             "error": slot.error or None, **described})
            return rows

    def refresh(self) -> None:
        """Each live worker lists its model folders again (what /sdapi/v1/sd-models offers)."""
        for slot in list(self.slots):
            worker = slot.worker
            if worker is not None and hasattr(worker, "refresh"):
                try:
                    worker.refresh()
                except Exception:  # noqa: BLE001 - a lost worker is handled by its thread
                    log.warning("worker %d could not list its models", slot.index, exc_info=True)

    def request_unload(self) -> None:
        """Each worker frees its models before its next job (idle ones now)."""
        with self.queue._cond:
            for slot in self.slots:
                slot.unload_pending = True
            self.queue._cond.notify_all()

    # --- dispatch (called with the queue's lock held) ---------------------------------------------------------
    def assign(self) -> None:
        """Give queued jobs to idle workers, as the scheduler says. Jobs no live worker may run fail."""
        queue = self.queue
        now = time.monotonic()
        pending = [job for job in queue._queue if job.kind in self.kinds]
        if not pending:
            return
        live = {str(slot.index) for slot in self.slots
                if slot.state in ("idle", "busy", "starting", "lost", "unloading")}
        catalogs = {str(slot.index): set(getattr(slot.worker, "checkpoints", None) or ())
                    for slot in self.slots if slot.worker is not None}
        only: dict[str, frozenset | None] = {}

        def allowed(job) -> frozenset | None:
            if job.id not in only:
                only[job.id] = self._holders(job, catalogs)
            return only[job.id]

        doomed = [job for job in (pending if not live else pending[:self.window])
                  if not ((allowed(job) if allowed(job) is not None else live) & live) - job.excluded]
        for job in doomed:
            queue._queue.remove(job)
            reasons = "; ".join(job.refusals) or ("no worker has its checkpoint" if live else "no worker is left")
            queue._set_finished(job, "failed", f"No worker of the pool can run this job: {reasons}")
            job.exception = PoolUnavailableError(job.error)
            job.error_kind = type(job.exception).__name__
            queue._finished_later.append(job)
        if not any(slot.state == "idle" and slot.job is None for slot in self.slots):
            return
        pending = [job for job in pending if job not in doomed][:self.window]
        jobs = [JobView(id=job.id, checkpoint=job.affinity or "", queued_at=job.queued_at,
                        excluded=frozenset(job.excluded), only=allowed(job)) for job in pending]
        views = [slot.view(now, self._estimate) for slot in self.slots]
        by_id = {job.id: job for job in pending}
        started = False
        for job_id, worker_id in self.scheduler.assign(jobs, views, now):
            slot, job = self.slots[int(worker_id)], by_id[job_id]
            if slot.job is not None or slot.state != "idle":
                continue
            queue._queue.remove(job)
            job.state, job.started, job.worker = "running", time.time(), slot.index
            slot.job, slot.state, slot.busy_since = job, "busy", time.monotonic()
            slot.held_at_start = views[int(worker_id)].loaded
            queue._running.append(job)
            started = True
        self._wakeup = getattr(self.scheduler, "next_wakeup", None)
        if started or doomed:  # only then: idle threads woken for nothing would each ask again (a storm)
            queue._cond.notify_all()

    @staticmethod
    def _holders(job, catalogs: dict[str, set]) -> frozenset[str] | None:
        """The workers whose model folder lists the job's checkpoint (None: any; a worker that lists nothing, or a
        job without a known checkpoint, is not ruled out here: the worker's own check decides)."""
        if not job.affinity or not catalogs or not any(catalogs.values()):
            return None
        holders = frozenset(worker for worker, names in catalogs.items() if job.affinity in names or not names)
        return holders or None

    def _estimate(self, checkpoint: str | None, holds: tuple) -> float:
        """Seconds a job on `checkpoint` runs, with its load when the worker did not hold it (its busy_until)."""
        key = checkpoint or ""
        run = self._learned("run_time", key)
        if holds[:1] == (key,):
            return run
        return run + self._learned("load_time", key, cached=key in holds[1:])

    def _learned(self, name: str, key: str, **kwargs) -> float:
        """The scheduler's estimate (`run_time` / `load_time`: part of the Scheduler protocol)."""
        return float(getattr(self.scheduler, name)(key, **kwargs))

    # --- one worker's thread ----------------------------------------------------------------------------------
    def _serve(self, slot: Slot) -> None:
        queue = self.queue
        while not queue._stopping:
            if slot.worker is None and not self._start_worker(slot):
                return
            with queue._cond:
                if slot.state not in ("busy",):
                    slot.state = "idle"
                self.assign()
                while slot.job is None and not queue._stopping and not slot.unload_pending \
                        and not queue._finished_later:
                    # woken when a job starts or ends, or when the scheduler said a wait may end (at most 1 s)
                    wait = 1.0 if self._wakeup is None else min(1.0, max(0.01, self._wakeup - time.monotonic()))
                    if not queue._cond.wait(wait) or (self._wakeup is not None and
                                                     time.monotonic() >= self._wakeup):
                        self.assign()  # timed out: the scheduler's waits are re-examined
                job = slot.job
            queue._flush_finished()
            if queue._stopping:
                if job is not None:  # assigned as the queue stopped: cancelled like the other queued jobs
                    queue._finish(job, "cancelled", error="the server is shutting down", running=True)
                return
            if job is None:
                if slot.unload_pending:  # an unload request
                    slot.unload_pending = False
                    with queue._cond:
                        slot.state = "unloading"  # (no job is given to it meanwhile)
                    self._call(slot, lambda worker: worker.unload())
                continue
            self._run(slot, job)

    def _start_worker(self, slot: Slot) -> bool:
        """Build this slot's worker (again, after a loss), with a limit on restarts; False: give up (stopping)."""
        while not self.queue._stopping:
            now = time.monotonic()
            slot.restarts = [t for t in slot.restarts if now - t < 600]
            if len(slot.restarts) > self.max_restarts:
                with self.queue._cond:
                    slot.state = "failed"
                    slot.error = (f"{slot.error} (restarted {self.max_restarts} times in 10 minutes: tried again "
                                  f"in {self.retry_after:.0f} s)").strip()
                    self.assign()  # jobs only it could have run now fail
                log.error("pool worker %d: %s", slot.index, slot.error)
                self.queue._flush_finished()
                with self.queue._cond:
                    self.queue._cond.wait_for(lambda: self.queue._stopping, self.retry_after)
                slot.restarts.clear()
                continue
            slot.restarts.append(now)
            slot.state = "starting"
            try:
                worker = self.factory(slot.index)
            except Exception as exc:  # noqa: BLE001 - shown in /queue; the others keep serving
                slot.error = f"could not start: {type(exc).__name__}: {exc}"
                log.error("pool worker %d %s", slot.index, slot.error)
                with self.queue._cond:
                    self.queue._cond.wait_for(lambda: self.queue._stopping, min(5.0, 0.5 * len(slot.restarts)))
                continue
            if self.queue._stopping:
                try:
                    worker.kill()
                except Exception:  # noqa: BLE001
                    pass
                return False
            slot.worker, slot.error = worker, ""
            log.info("pool worker %d ready: %s", slot.index, worker.describe())
            return True
        return False

    def _call(self, slot: Slot, action: Callable[[Worker], Any]) -> None:
        try:
            action(slot.worker)
        except WorkerLost as exc:
            self._lose(slot, exc)
        except Exception:  # noqa: BLE001 - an unload that failed is not worth a worker
            log.exception("pool worker %d", slot.index)

    def _lose(self, slot: Slot, exc: BaseException) -> None:
        log.error("pool worker %d lost: %s", slot.index, exc)
        with self.queue._cond:
            slot.error = f"lost: {exc}"
            worker, slot.worker, slot.state = slot.worker, None, "lost"
        try:
            worker.kill()
        except Exception:  # noqa: BLE001 - it is gone already
            pass

    def _run(self, slot: Slot, job) -> None:
        queue = self.queue
        queue._started(job)
        holds = slot.held_at_start  # (as the worker told it before the job; `holds()` may change as it loads)
        started = time.monotonic()
        job.control.forward = lambda command, worker=slot.worker, job_id=job.id: _forward(worker, job_id, command)
        if job.control.interrupted:  # pressed between its assignment and now: the worker hears it too
            job.control.forward("interrupt")
        if job.control.skip_requested:
            job.control.forward("skip")
        slot.started_jobs += 1
        try:
            result = self.runner(job, slot.worker)
        except WorkerRefused as exc:
            self._requeue(slot, job, refused=f"worker {slot.index}: {exc}")
        except WorkerLost as exc:
            self._lose(slot, exc)
            job.attempts += 1
            if job.attempts < self.attempts and not job.control.interrupted:
                self._requeue(slot, job, note=f"Worker {slot.index} was lost ({exc}): the job was moved to another "
                                              "worker")
            else:
                self._end(slot, job, "failed", error=f"The worker running this job was lost ({exc})",
                          exception=PoolUnavailableError(f"The worker running this job was lost ({exc})"))
        except queue._user_errors as exc:
            self._end(slot, job, "failed", error=str(exc), exception=exc)
        except Exception as exc:  # noqa: BLE001 - the pool must survive anything a job does
            log.error("job %s failed on worker %d: %s: %s", job.id, slot.index, type(exc).__name__, exc)
            if slot.worker is not None:  # (the head's side failed: the worker must not go on with it)
                _forward(slot.worker, job.id, "interrupt")
            self._end(slot, job, "failed", error=f"{type(exc).__name__}: {exc}", exception=exc)
        else:
            elapsed = time.monotonic() - started
            key = job.affinity or ""
            if slot.worker is not None and holds[:1] != slot.worker.holds()[:1]:
                slot.loads += 1
                if key not in holds:  # a load from disk (not the worker's RAM cache): the job's time less a run
                    self.scheduler.observe_load(key, max(0.0, elapsed - self._learned("run_time", key)))
            else:
                self.scheduler.observe_run(key, elapsed)
            self._end(slot, job, "done", result=result)

    def _requeue(self, slot: Slot, job, refused: str = "", note: str = "") -> None:
        queue = self.queue
        job.control.forward = None
        if queue._stopping:  # no worker will take it any more
            self._end(slot, job, "cancelled", error="the server is shutting down")
            return
        with queue._cond:
            if refused:
                job.excluded.add(str(slot.index))
                job.refusals.append(refused)
            if note:
                job.notes.append(note)
            slot.job, slot.busy_since = None, None
            if slot.worker is not None:
                slot.state = "idle"
            if job in queue._running:
                queue._running.remove(job)
            job.state, job.worker = "queued", None
            queue._queue.appendleft(job)  # it was the oldest: it stays first
            self.assign()
        queue._flush_finished()
        queue.events.publish({"type": "requeued", "job": job.id, "reason": refused or note})

    def _end(self, slot: Slot, job, state: str, result: Any = None, error: str | None = None,
             exception: BaseException | None = None) -> None:
        job.control.forward = None
        with self.queue._cond:
            slot.job, slot.busy_since = None, None
            if slot.worker is not None:
                slot.state = "idle"
        self.queue._finish(job, state, result=result, error=error, exception=exception, running=True)


def _forward(worker: Worker, job_id: str, command: str) -> None:
    try:
        worker.command(job_id, command)
    except Exception:  # noqa: BLE001 - a lost worker's job is handled by its thread
        log.warning("could not send %s to the worker running %s", command, job_id, exc_info=True)
