"""Which queued job starts on which idle worker: FIFO fairness with checkpoint affinity.

Pure decisions, no threads and no Ray: the pool's dispatcher (`pool.py`) calls `assign` under the queue lock each
time a worker becomes idle, a job is queued or a worker's state changes, and starts the pairs it returns. A call
looks at the oldest `window` jobs only, so it costs O(window x idle workers) however long the queue is.

Why affinity: a checkpoint load costs seconds (disk or RAM to the device) while a step costs tens of milliseconds,
so a pool that hands the oldest job to any idle worker spends much of its time loading. The ideas are those of
model multiplexing (route a request to a replica that already holds its model, evict the least wanted one when a
replica must load) and of load-pressure scoring (weigh how many waiting jobs want each model against how many
workers hold it); the code is our own.
"""
from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Protocol, Sequence


@dataclass(frozen=True)
class WorkerView:
    id: str
    idle: bool  # free to take a job now
    loaded: tuple[str, ...]  # checkpoint keys held: the one on the device first, then RAM-cached ones (MRU)
    running: str | None = None  # checkpoint key of the job it runs now (None when idle)
    busy_until: float | None = None  # estimated time its running job ends (None: unknown)


@dataclass(frozen=True)
class JobView:
    id: str
    checkpoint: str  # the checkpoint key (sha256) the job needs
    queued_at: float  # monotonic seconds
    excluded: frozenset[str] = frozenset()  # worker ids that refused it (lack the file / different file): never these
    only: frozenset[str] | None = None  # worker ids that have its files (None: any)


class Scheduler(Protocol):
    def assign(self, jobs: Sequence[JobView], workers: Sequence[WorkerView], now: float) -> list[tuple[str, str]]:
        """(job id, worker id) pairs to start now; each job and each worker at most once; only idle workers;
        jobs is the queue in FIFO order (oldest first). Jobs left out wait for a later call."""

    def observe_run(self, checkpoint: str, seconds: float) -> None:
        """A job's run time (learns per checkpoint)."""

    def observe_load(self, checkpoint: str, seconds: float) -> None:
        """A checkpoint load's time on a worker."""

    def run_time(self, checkpoint: str) -> float:
        """The expected seconds of a job on that checkpoint once loaded (a busy worker's end, for the views)."""

    def load_time(self, checkpoint: str, cached: bool = False) -> float:
        """The expected seconds of loading it (from a worker's RAM cache when `cached`)."""


def allowed(job: JobView, worker_id: str) -> bool:
    """Whether the job may run on that worker (its hard constraints)."""
    return worker_id not in job.excluded and (job.only is None or worker_id in job.only)


class FifoScheduler:
    """The baseline: the oldest job goes to the first idle worker it may run on, whatever that worker holds.

    A job no idle worker may run (its `only` / `excluded`) does not hold up the jobs behind it."""

    def __init__(self, window: int = 128):
        self.window = max(1, int(window))

    def assign(self, jobs: Sequence[JobView], workers: Sequence[WorkerView], now: float) -> list[tuple[str, str]]:
        idle = [w.id for w in workers if w.idle]
        pairs: list[tuple[str, str]] = []
        if not idle:
            return pairs
        for job in islice(jobs, self.window):
            for i, worker_id in enumerate(idle):
                if allowed(job, worker_id):
                    pairs.append((job.id, worker_id))
                    del idle[i]
                    break
            if not idle:
                break
        return pairs

    def observe_run(self, checkpoint: str, seconds: float) -> None:
        pass

    def observe_load(self, checkpoint: str, seconds: float) -> None:
        pass

    def run_time(self, checkpoint: str) -> float:
        return 5.0  # (unused: FIFO does not look at when a worker will be free)

    def load_time(self, checkpoint: str, cached: bool = False) -> float:
        return 5.0


class _Estimate:
    """Seconds per checkpoint, smoothed over what was observed; an unseen checkpoint gets the average of the seen
    ones (a load time is mostly the file's size, and most checkpoints of a pool are alike), else the default."""

    def __init__(self, default: float, smoothing: float):
        self.default = float(default)
        self.smoothing = smoothing
        self.per_key: dict[str, float] = {}
        self.overall: float | None = None

    def observe(self, key: str, seconds: float) -> None:
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            return
        old = self.per_key.get(key)
        self.per_key[key] = seconds if old is None else old + self.smoothing * (seconds - old)
        self.overall = seconds if self.overall is None else self.overall + self.smoothing * (seconds - self.overall)

    def get(self, key: str) -> float:
        value = self.per_key.get(key)
        if value is not None:
            return value
        return self.overall if self.overall is not None else self.default


class AffinityScheduler:
    """FIFO fairness with checkpoint affinity (the pool's default). Jobs are considered oldest first; for each:

    1. an idle worker with the job's checkpoint on its device takes it;
    2. else, if a busy worker that holds (or is loading) that checkpoint should be free sooner than a load would
       take (two loads when the switch would unload the only copy of a checkpoint later jobs of the window want:
       the switch back), the job waits for it (its slot is reserved: a second such job waits behind the first)
       and the idle workers go on to later jobs of the window;
    3. else an idle worker switches: one that has the checkpoint cached in RAM (a cheap load) before a cold one,
       and the one whose current checkpoint the queued jobs need least (demand per holder), never one that holds a
       checkpoint later jobs want while one nobody wants can go.
    Then, if workers are still idle (nothing in the window holds their checkpoint) while jobs wait for busy holders,
    they take the jobs with the longest expected wait, when that wait is at least `idle_switch_fraction` of a disk
    load and at least two jobs wait for holders of that checkpoint: an idle GPU costs throughput, and a popular
    checkpoint gains a worker, but a lone short wait is cheaper than a load (and than the switch back).
    Fairness: a job held back for a busy holder for `max_wait` seconds (default: max(2 x its load estimate, 30 s);
    counted from the first call that held it back, not from its queueing, so a long backlog does not turn every job
    into an exception) or passed over by `max_skips` later jobs never waits for a holder again: the next idle worker
    it may run on takes it. Waiting in FIFO order for a worker, as every job does in a backlog, is not held back.

    `window`: the queued jobs looked at per call (oldest first). 128 rather than 64: in the scale simulation
    (`bench/pool_scale.py`, 64 workers, 8 checkpoints) it let idle workers find a job they hold often enough to raise
    the steady throughput from about 54 to 59 jobs/s of 64, for about 100 instead of 70 us per call.

    Load and run times are learned from `observe_load` / `observe_run` (defaults until then). Deterministic: the
    same calls in the same order give the same pairs (ties go to the first worker in `workers`).
    `next_wakeup` (after a call): the time at which calling again could start a job that this call left waiting
    although a worker was idle (its age bound, or its holder overdue); None when only a worker or job event can.
    """

    def __init__(self, *, window: int = 128, load_estimate: float = 5.0, run_estimate: float = 5.0,
                 ram_load_fraction: float = 0.25, max_wait: float | None = None, max_skips: int = 200,
                 idle_switch_fraction: float = 0.5, smoothing: float = 0.3):
        self.window = max(1, int(window))
        self.loads = _Estimate(load_estimate, smoothing)
        self.runs = _Estimate(run_estimate, smoothing)
        self.ram_load_fraction = ram_load_fraction  # a load from the RAM cache vs from disk
        self.max_wait = max_wait
        self.max_skips = max_skips
        self.idle_switch_fraction = idle_switch_fraction  # see the second pass of `assign`
        self.next_wakeup: float | None = None
        self._skips: dict[str, int] = {}  # job id -> later jobs started before it (jobs of the last window only)
        self._held: dict[str, float] = {}  # job id -> when it was first held back for a busy holder (same)

    # --- learning --------------------------------------------------------------------------------------------
    def observe_run(self, checkpoint: str, seconds: float) -> None:
        self.runs.observe(checkpoint, seconds)

    def observe_load(self, checkpoint: str, seconds: float) -> None:
        """The seconds a load from disk took, the load alone (not the job's run after it). A load from a worker's
        RAM cache is best not reported: its estimate is `ram_load_fraction` of this one."""
        self.loads.observe(checkpoint, seconds)

    def run_time(self, checkpoint: str) -> float:
        """The expected seconds of a job on that checkpoint once loaded (what a dispatcher can add to a job's start,
        plus `load_time` when the worker must switch, for a worker's `busy_until`)."""
        return self.runs.get(checkpoint)

    def load_time(self, checkpoint: str, cached: bool = False) -> float:
        full = self.loads.get(checkpoint)
        return full * self.ram_load_fraction if cached else full

    def wait_bound(self, checkpoint: str) -> float:
        if self.max_wait is not None:
            return self.max_wait
        return max(2.0 * self.load_time(checkpoint), 30.0)

    # --- deciding --------------------------------------------------------------------------------------------
    def assign(self, jobs: Sequence[JobView], workers: Sequence[WorkerView], now: float) -> list[tuple[str, str]]:
        window = list(islice(jobs, self.window))
        skips = {job.id: self._skips.get(job.id, 0) for job in window}  # forget jobs that left the window
        self._skips = skips
        held = {job.id: self._held[job.id] for job in window if job.id in self._held}
        self._held = held
        self.next_wakeup = None
        if not window or not any(w.idle for w in workers):
            return []
        pool = _Pool(self, workers, now)
        demand = Counter(job.checkpoint for job in window)  # jobs of the window not decided yet, per checkpoint
        started = [False] * len(window)
        waiting: list[tuple[float, int, float]] = []  # (expected wait, position, when to look again)

        for position, job in enumerate(window):
            if not pool.free:
                break
            checkpoint = job.checkpoint
            demand[checkpoint] -= 1
            holder = _first_allowed(pool.idle_on.get(checkpoint, ()), job)
            if holder is not None:
                pool.start(job, holder, 0.0)
                started[position] = True
                continue
            switch = pool.best_switch(job, demand)
            if switch is None:
                continue  # no idle worker it may run on: it waits for one
            cost = self.load_time(checkpoint, cached=checkpoint in switch.loaded[1:])
            age_bound = held.get(job.id, now) + self.wait_bound(checkpoint)
            if now < age_bound and skips[job.id] < self.max_skips:
                slot = pool.earliest_holder(job)
                # Unloading the only copy of a checkpoint later jobs want costs their load too (the switch back).
                unloads = switch.loaded[0] if switch.loaded else None
                worth = cost + (self.load_time(unloads) if unloads is not None and demand[unloads] > 0
                                and pool.holders[unloads] <= 1 else 0.0)
                if slot is not None and -cost < slot[0] - now < worth:
                    # The holder should be free before the load(s) would end (an estimate overdue by more than a
                    # load: a stuck worker, or a load it is still doing): wait for it, and reserve its next slot.
                    waiting.append((max(0.0, slot[0] - now), position, min(age_bound, slot[0] + cost)))
                    held.setdefault(job.id, now)
                    pool.reserve(job, slot, max(slot[0], now) + self.runs.get(checkpoint))
                    continue
            pool.start(job, switch, cost)
            started[position] = True

        if waiting and pool.free:
            # Workers still idle hold nothing a job of the window can run on: rather than idle, they take the jobs
            # that would wait longest for their holder (at least `idle_switch_fraction` of a load), of checkpoints
            # with a line of jobs waiting for their holders (a lone job would only trade a short wait for a load,
            # and the next job of the unloaded checkpoint would switch back).
            lines = Counter(window[position].checkpoint for _, position, _ in waiting)
            for expected, position, _ in sorted(waiting, key=lambda entry: (-entry[0], entry[1])):
                if not pool.free:
                    break
                job = window[position]
                if lines[job.checkpoint] < 2 or expected < self.idle_switch_fraction * self.load_time(job.checkpoint):
                    continue
                switch = pool.best_switch(job, demand)
                if switch is not None:
                    pool.start(job, switch, self.load_time(job.checkpoint, cached=job.checkpoint in switch.loaded[1:]))
                    started[position] = True

        later = 0  # jobs of this call's window started after each waiting one: they passed it over
        for position in range(len(window) - 1, -1, -1):
            if started[position]:
                later += 1
            elif later:
                skips[window[position].id] += later
        if pool.free:
            wakeups = [wake for _, position, wake in waiting if not started[position]]
            self.next_wakeup = min(wakeups) if wakeups else None
        return pool.pairs


class _Pool:
    """One `assign` call's picture of the workers: the idle ones by device checkpoint, who holds (or will hold,
    once its running job ends) each checkpoint, and when the busy ones should be free; updated as jobs start."""

    def __init__(self, scheduler: AffinityScheduler, workers: Sequence[WorkerView], now: float):
        self.scheduler = scheduler
        self.now = now
        self.pairs: list[tuple[str, str]] = []
        self.holders: Counter[str] = Counter()
        self.free_at: dict[str, list[list]] = {}  # checkpoint -> [[expected free time, worker id], ...]
        self.idle_on: dict[str | None, list[WorkerView]] = {}  # device checkpoint -> idle workers, in given order
        self.cached_on: dict[str, list[WorkerView]] = {}  # RAM-cached checkpoint -> idle workers
        self.order: dict[str, int] = {}
        for index, w in enumerate(workers):
            if w.idle:
                key = w.loaded[0] if w.loaded else None
                self.idle_on.setdefault(key, []).append(w)
                for cached in w.loaded[1:]:
                    self.cached_on.setdefault(cached, []).append(w)
                self.order[w.id] = index
            else:
                key = w.running if w.running is not None else (w.loaded[0] if w.loaded else None)
                if key is not None:
                    end = w.busy_until if w.busy_until is not None else now + scheduler.runs.get(key)
                    self.free_at.setdefault(key, []).append([end, w.id])
            if key is not None:
                self.holders[key] += 1
        self.free = set(self.order)  # idle workers not given a job yet
        for slots in self.free_at.values():
            heapq.heapify(slots)
        self.version = 0  # bumped by each start: what `best_switch` remembers is then stale
        self._switches: dict[str, tuple[int, WorkerView | None]] = {}

    def start(self, job: JobView, worker: WorkerView, load_seconds: float) -> None:
        self.pairs.append((job.id, worker.id))
        self.free.discard(worker.id)
        self.idle_on[worker.loaded[0] if worker.loaded else None].remove(worker)
        if worker.loaded and worker.loaded[0] != job.checkpoint:
            self.holders[worker.loaded[0]] -= 1
            self.holders[job.checkpoint] += 1
        elif not worker.loaded:
            self.holders[job.checkpoint] += 1
        end = self.now + load_seconds + self.scheduler.runs.get(job.checkpoint)
        heapq.heappush(self.free_at.setdefault(job.checkpoint, []), [end, worker.id])
        self.version += 1

    def earliest_holder(self, job: JobView) -> list | None:
        """[expected free time, worker id] of the busy worker holding the job's checkpoint that it may run on and
        that should be free first (reservations included)."""
        slots = self.free_at.get(job.checkpoint)
        if not slots:
            return None
        if not job.excluded and job.only is None:
            return slots[0]
        return _earliest_allowed(slots, job)

    def reserve(self, job: JobView, slot: list, until: float) -> None:
        """The job waits for that holder: the next job of its checkpoint would wait until `until`."""
        slot[0] = until
        heapq.heapify(self.free_at[job.checkpoint])

    def best_switch(self, job: JobView, demand: Counter[str]) -> WorkerView | None:
        """The idle worker that should load the job's checkpoint: one whose checkpoint no job still to decide wants
        (or an empty one) first, then one with the job's checkpoint in RAM, then the least demand per holder of
        what it would unload, then the first in the workers' order. O(checkpoints held + RAM copies of this one)
        for a job without constraints."""
        constrained = bool(job.excluded) or job.only is not None
        remembered = None if constrained else self._switches.get(job.checkpoint)
        if remembered is not None and remembered[0] == self.version:
            return remembered[1]  # another job of this checkpoint, no start since: the same answer
        best, best_key = None, None

        def consider(w: WorkerView, need: float) -> None:
            nonlocal best, best_key
            key = (need > 0, job.checkpoint not in w.loaded[1:], need, self.order[w.id])
            if best_key is None or key < best_key:
                best, best_key = w, key

        for current, group in self.idle_on.items():
            if current == job.checkpoint or not group:
                continue  # (idle holders left are ones this job may not run on)
            need = self._need(current, demand)
            w = _first_allowed(group, job) if constrained else group[0]
            if w is not None:
                consider(w, need)
        for w in self.cached_on.get(job.checkpoint, ()):
            if w.id in self.free and w.loaded[0] != job.checkpoint and (not constrained or allowed(job, w.id)):
                consider(w, self._need(w.loaded[0], demand))
        if not constrained:
            self._switches[job.checkpoint] = (self.version, best)
        return best

    def _need(self, checkpoint: str | None, demand: Counter[str]) -> float:
        if checkpoint is None:
            return -1.0
        return demand[checkpoint] / max(1, self.holders[checkpoint])


def _first_allowed(workers: Iterable[WorkerView], job: JobView) -> WorkerView | None:
    for w in workers:
        if allowed(job, w.id):
            return w
    return None


def _earliest_allowed(slots: Iterable[list], job: JobView) -> list | None:
    best = None
    for slot in slots:
        if allowed(job, slot[1]) and (best is None or slot[0] < best[0]):
            best = slot
    return best
