"""A simulation of the worker pool at scale: the real scheduler (`webui/jobs/scheduler.py`) against simulated workers.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/pool_scale.py [--arrivals closed|poisson|burst] [...]

A discrete-event simulation on a virtual clock (nothing sleeps, a run takes seconds): 64 workers, 2,000 jobs over
8 checkpoints from 20 clients, run once with `AffinityScheduler` (the pool's default) and once with `FifoScheduler`
(the oldest job to the first idle worker, no affinity). For each it prints the jobs/s the pool completes, p50/p95
queue wait (queued -> started on a worker, load included in the run, not in the wait), checkpoint loads per job,
and the head's own cost: wall time spent in `scheduler.assign` per dispatched job. A second part measures the
scheduler alone: 2,000 queued jobs x 64 workers, one worker freed at a time, assigning repeatedly, so the note can
say how many jobs/s the scheduler could dispatch before it, rather than the GPUs, sets the pace.

Assumptions (each one a flag):
- Workers: `--workers 64`, each with one checkpoint on its device and `--ram-cache 2` more in RAM (MRU; A1111's
  `sd_checkpoints_limit` = 3). Start empty. A load from disk takes `--load 4` s, from the RAM cache `--ram-load 1` s.
- Jobs: `--jobs 2000`, each `--steps 20` x `--step-time 0.05` s (1 s: a 512x512 SD1.5 image on a fast GPU), times a
  uniform jitter of +-`--jitter 0.2`. A job's checkpoint is drawn from `--checkpoints 8` with Zipf popularity
  (`--zipf 1.0`: P(k) ~ 1/k^s, the first is about 3x the fourth); with `--stickiness p` a client re-uses its
  previous job's checkpoint with probability p (default 0: every job draws anew, the harder case for affinity).
- Clients: `--clients 20`. `--arrivals closed` (default): each client keeps `--inflight 8` jobs queued or running
  and submits its next job when one finishes (a script working through a batch): 160 jobs in the system against
  64 workers, so a queue always exists. `--arrivals poisson`: jobs arrive as a Poisson process of `--rate` jobs/s
  (default 80% of the pool's no-load capacity), clients taking turns. `--arrivals burst`: all jobs queued at t=0.
- The dispatcher calls `assign` on every event (a job queued, a worker finished, the scheduler's `next_wakeup`),
  as `webui/jobs/pool.py` does; it tells the scheduler each job's run time and each disk load's time (RAM-cache
  loads are not reported: the scheduler scales its disk estimate for those). A busy worker's `busy_until` is its
  true end times a noise of +-`--eta-noise` (default 0: the ETA the head derives from step progress).
- Not simulated: the network, Ray's task submission, saving images on the head.

`--real-head` also runs the same workload through the real head: `JobQueue` + `WorkerPool` (`webui/jobs/pool.py`,
its dispatch threads, locks and SQLite history) with 64 `FakeWorker`s in this process that hold checkpoints like
the simulated ones and `time.sleep` a job's load and run time times `--scale` (0.25: four times as fast, so the head
must dispatch four times as many jobs per second). Its figures are converted back to the workload's seconds, except
the wall times of `pool.assign` (the dispatcher: views, filtering, the scheduler) and `scheduler.assign`.

The simulation core (`Workload`, `SimWorker`, `Metrics`, `simulate`, `scheduler_capacity`) is importable.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import say, table  # noqa: E402
from webui.jobs.scheduler import AffinityScheduler, FifoScheduler, JobView, WorkerView  # noqa: E402


# --- the workload -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobSpec:
    id: str
    client: int
    checkpoint: str
    run_seconds: float


@dataclass
class Config:
    workers: int = 64
    jobs: int = 2000
    checkpoints: int = 8
    clients: int = 20
    zipf: float = 1.0
    stickiness: float = 0.0
    steps: int = 20
    step_time: float = 0.05
    jitter: float = 0.2
    load: float = 4.0
    ram_load: float = 1.0
    ram_cache: int = 2
    arrivals: str = "closed"
    inflight: int = 8
    rate: float | None = None
    eta_noise: float = 0.0
    window: int = 128
    seed: int = 0

    @property
    def run_time(self) -> float:
        return self.steps * self.step_time

    @property
    def arrival_rate(self) -> float:
        return self.rate if self.rate else 0.8 * self.workers / self.run_time


class Workload:
    """The jobs each client submits, in order (deterministic for a seed), and when they arrive."""

    def __init__(self, cfg: Config):
        rng = random.Random(cfg.seed)
        names = [f"ckpt{k}" for k in range(cfg.checkpoints)]
        weights = [1.0 / (k + 1) ** cfg.zipf for k in range(cfg.checkpoints)]
        self.cfg = cfg
        self.per_client: list[list[JobSpec]] = [[] for _ in range(cfg.clients)]
        previous: list[str | None] = [None] * cfg.clients
        for n in range(cfg.jobs):
            client = n % cfg.clients
            if previous[client] is not None and rng.random() < cfg.stickiness:
                checkpoint = previous[client]
            else:
                checkpoint = rng.choices(names, weights)[0]
            previous[client] = checkpoint
            run = cfg.run_time * (1 + rng.uniform(-cfg.jitter, cfg.jitter))
            self.per_client[client].append(JobSpec(f"job{n}", client, checkpoint, run))
        self._next = [0] * cfg.clients
        self.arrival_rng = random.Random(cfg.seed + 1)

    def take(self, client: int) -> JobSpec | None:
        """The client's next job, or None when it has submitted them all."""
        jobs = self.per_client[client]
        if self._next[client] >= len(jobs):
            return None
        self._next[client] += 1
        return jobs[self._next[client] - 1]

    def initial(self) -> list[tuple[float, JobSpec]]:
        """(arrival time, job) of the jobs known at the start: all of them but closed-loop follow-ups."""
        cfg, out = self.cfg, []
        if cfg.arrivals == "closed":
            for _ in range(cfg.inflight):
                for client in range(cfg.clients):
                    spec = self.take(client)
                    if spec is not None:
                        out.append((0.0, spec))
        elif cfg.arrivals in ("poisson", "burst"):
            t, client, left = 0.0, 0, cfg.jobs
            while left:
                spec = self.take(client)
                client = (client + 1) % cfg.clients
                if spec is None:
                    continue
                left -= 1
                if cfg.arrivals == "poisson":
                    t += self.arrival_rng.expovariate(cfg.arrival_rate)
                out.append((t, spec))
        else:
            raise ValueError(f"unknown arrivals {cfg.arrivals!r}")
        return out

    def after_finish(self, spec: JobSpec) -> JobSpec | None:
        """Closed loop: the job the client submits when one of its jobs ends."""
        return self.take(spec.client) if self.cfg.arrivals == "closed" else None


# --- a simulated worker ------------------------------------------------------------------------------------------

@dataclass
class SimWorker:
    id: str
    ram_cache: int
    device: str | None = None
    ram: list[str] = field(default_factory=list)  # MRU first
    job: JobSpec | None = None
    end: float = 0.0
    eta: float = 0.0
    last_load: float = 0.0
    last_load_cold: bool = False

    def view(self) -> WorkerView:
        loaded = ((self.device,) if self.device else ()) + tuple(self.ram)
        if self.job is None:
            return WorkerView(self.id, True, loaded)
        return WorkerView(self.id, False, loaded, running=self.job.checkpoint, busy_until=self.eta)

    def start(self, spec: JobSpec, now: float, cfg: Config, rng: random.Random) -> float:
        """Begin a job (loading its checkpoint first if needed); returns when it ends."""
        load, cold = 0.0, False
        if self.device != spec.checkpoint:
            if spec.checkpoint in self.ram:
                load = cfg.ram_load
                self.ram.remove(spec.checkpoint)
            else:
                load, cold = cfg.load, True
            if self.device is not None:
                self.ram.insert(0, self.device)
                del self.ram[self.ram_cache:]
            self.device = spec.checkpoint
        self.job, self.last_load, self.last_load_cold = spec, load, cold
        self.end = now + load + spec.run_seconds
        noise = rng.uniform(-cfg.eta_noise, cfg.eta_noise) if cfg.eta_noise else 0.0
        self.eta = now + (load + spec.run_seconds) * (1 + noise)
        return self.end


# --- metrics ---------------------------------------------------------------------------------------------------

@dataclass
class Metrics:
    jobs: int = 0
    waits: list[float] = field(default_factory=list)
    finishes: list[float] = field(default_factory=list)  # virtual time of each job's end, in order
    cold_loads: int = 0
    ram_loads: int = 0
    makespan: float = 0.0
    busy_seconds: float = 0.0
    load_seconds: float = 0.0
    assign_calls: int = 0
    assign_seconds: float = 0.0  # wall time inside scheduler.assign
    assign_max: float = 0.0
    sim_seconds: float = 0.0  # wall time of the whole run

    def row(self, name: str, workers: int) -> list:
        waits = sorted(self.waits)
        p = (lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]) if waits else (lambda q: float("nan"))
        per_job_us = self.assign_seconds / max(1, self.jobs) * 1e6
        return [name, f"{self.jobs / self.makespan:.1f}", f"{self.steady_rate():.1f}", f"{p(0.5):.2f}",
                f"{p(0.95):.2f}",
                f"{(self.cold_loads + self.ram_loads) / max(1, self.jobs):.3f}",
                f"{self.cold_loads}/{self.ram_loads}",
                f"{self.load_seconds / max(1e-9, self.busy_seconds) * 100:.1f}%",
                f"{self.busy_seconds / (workers * self.makespan) * 100:.0f}%",
                f"{per_job_us:.0f}", f"{self.assign_max * 1e6:.0f}", f"{self.sim_seconds:.1f}"]


    def steady_rate(self) -> float:
        """Jobs/s between the 10th and the 90th percentile of completions: without the warm-up (every worker's
        first load) and the drain at the end."""
        if len(self.finishes) < 10:
            return float("nan")
        lo, hi = len(self.finishes) // 10, len(self.finishes) * 9 // 10
        return (hi - lo) / max(1e-9, self.finishes[hi] - self.finishes[lo])


HEADERS = ["scheduler", "jobs/s", "steady jobs/s", "wait p50 s", "wait p95 s", "loads/job", "disk/RAM", "load time",
           "busy", "assign us/job", "max call us", "wall s"]


# --- the simulation --------------------------------------------------------------------------------------------

ARRIVE, FINISH, WAKE = 0, 1, 2
CALL_TARGET_US = 1000  # "well under a millisecond" per scheduling decision


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def simulate(scheduler, cfg: Config) -> Metrics:
    """Run the workload through the scheduler on simulated workers; every figure on the virtual clock except the
    assign times (wall clock)."""
    workload = Workload(cfg)
    rng = random.Random(cfg.seed + 2)
    workers = [SimWorker(f"w{i}", cfg.ram_cache) for i in range(cfg.workers)]
    index = {w.id: i for i, w in enumerate(workers)}
    views = [w.view() for w in workers]
    queue: list[JobView] = []
    specs: dict[str, JobSpec] = {}
    metrics = Metrics()
    events: list[tuple[float, int, int, object]] = []
    seq = 0

    def push(t: float, kind: int, data: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, data))

    for t, spec in workload.initial():
        push(t, ARRIVE, spec)

    wake_pending: float | None = None
    window = max(getattr(scheduler, "window", 64), 1)
    started_wall = time.perf_counter()
    now = 0.0
    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == ARRIVE:
            spec = data
            specs[spec.id] = spec
            queue.append(JobView(spec.id, spec.checkpoint, now))
        elif kind == FINISH:
            w = workers[data]
            spec = w.job
            scheduler.observe_run(spec.checkpoint, spec.run_seconds)
            if w.last_load_cold:
                scheduler.observe_load(spec.checkpoint, w.last_load)
            metrics.jobs += 1
            metrics.makespan = now
            metrics.finishes.append(now)
            w.job = None
            views[data] = w.view()
            follow = workload.after_finish(spec)
            if follow is not None:
                specs[follow.id] = follow
                queue.append(JobView(follow.id, follow.checkpoint, now))
        else:
            wake_pending = None
        if not queue:
            continue
        t0 = time.perf_counter()
        pairs = scheduler.assign(queue, views, now)
        spent = time.perf_counter() - t0
        metrics.assign_calls += 1
        metrics.assign_seconds += spent
        metrics.assign_max = max(metrics.assign_max, spent)
        if pairs:
            queued_at = {j.id: j.queued_at for j in queue[:window]}
            for job_id, worker_id in pairs:
                i = index[worker_id]
                w = workers[i]
                assert w.job is None, f"{worker_id} given {job_id} while busy"
                spec = specs.pop(job_id)
                end = w.start(spec, now, cfg, rng)
                metrics.waits.append(now - queued_at[job_id])
                metrics.busy_seconds += end - now
                if w.last_load:
                    metrics.load_seconds += w.last_load
                    if w.last_load_cold:
                        metrics.cold_loads += 1
                    else:
                        metrics.ram_loads += 1
                views[i] = w.view()
                push(end, FINISH, i)
            taken = {job_id for job_id, _ in pairs}
            queue[:window] = [j for j in queue[:window] if j.id not in taken]
        wake = getattr(scheduler, "next_wakeup", None)
        if wake is not None and wake > now and (wake_pending is None or wake < wake_pending):
            wake_pending = wake
            push(wake, WAKE, None)
    metrics.sim_seconds = time.perf_counter() - started_wall
    if metrics.jobs != cfg.jobs or queue:
        raise RuntimeError(f"simulation ended with {metrics.jobs} of {cfg.jobs} jobs done, {len(queue)} queued")
    return metrics


# --- the scheduler alone: how many dispatches per second it can decide ----------------------------------------------

def scheduler_capacity(make, cfg: Config, queued: int, dispatches: int) -> dict:
    """`queued` jobs waiting (Zipf checkpoints, all younger than the fairness bound), `cfg.workers` workers holding
    Zipf-drawn checkpoints, all busy; each round one worker (in turn) becomes idle and `assign` is called, as when a
    job finishes under load. The dispatched job leaves the queue and a new one joins its tail, so the queue stays
    `queued` long. Also one call with every worker idle (a pool starting on a full queue)."""
    rng = random.Random(cfg.seed + 3)
    names = [f"ckpt{k}" for k in range(cfg.checkpoints)]
    weights = [1.0 / (k + 1) ** cfg.zipf for k in range(cfg.checkpoints)]
    now = 1000.0
    counter = 0

    def new_job() -> JobView:
        nonlocal counter
        counter += 1
        return JobView(f"j{counter}", rng.choices(names, weights)[0], now - 10.0 + counter * 1e-6)

    queue = [new_job() for _ in range(queued)]
    holds = [rng.choices(names, weights)[0] for _ in range(cfg.workers)]
    views = [WorkerView(f"w{i}", False, (c,), running=c, busy_until=now + rng.uniform(0.1, 1.0))
             for i, c in enumerate(holds)]
    scheduler = make()
    window = max(getattr(scheduler, "window", 64), 1)

    all_idle = [WorkerView(v.id, True, v.loaded) for v in views]
    t0 = time.perf_counter()
    first = scheduler.assign(queue, all_idle, now)
    cold_call = time.perf_counter() - t0

    spent, done, calls, times = 0.0, 0, 0, []
    for r in range(dispatches):
        i = r % cfg.workers
        v = views[i]
        views[i] = WorkerView(v.id, True, v.loaded)
        t0 = time.perf_counter()
        pairs = scheduler.assign(queue, views, now)
        dt = time.perf_counter() - t0
        spent += dt
        times.append(dt)
        calls += 1
        for job_id, worker_id in pairs:
            j = next(j for j in queue[:window] if j.id == job_id)
            views[i] = WorkerView(worker_id, False, (j.checkpoint,), running=j.checkpoint,
                                  busy_until=now + rng.uniform(0.5, 1.5))
            done += 1
        if pairs:
            taken = {job_id for job_id, _ in pairs}
            queue[:window] = [j for j in queue[:window] if j.id not in taken]
            queue.extend(new_job() for _ in pairs)
        else:
            views[i] = WorkerView(v.id, False, v.loaded, running=v.running, busy_until=v.busy_until)
        now += 0.001
    times.sort()
    return {"calls": calls, "dispatched": done, "per_call_us": spent / calls * 1e6,
            "p99_call_us": times[int(0.99 * len(times))] * 1e6, "per_job_us": spent / max(1, done) * 1e6,
            "jobs_per_s": done / spent if spent else float("inf"), "cold_call_ms": cold_call * 1e3,
            "cold_pairs": len(first)}


# --- the real head: JobQueue + WorkerPool dispatching to fake in-process workers ---------------------------------

class FakeWorker:
    """A pool worker (`webui.jobs.pool.Worker`) that holds checkpoints like `SimWorker` and sleeps for a job's load
    and run time, times `scale` (so a run takes real seconds while the head does its real work). Like the Ray
    worker's handle (`ray_pool.RayWorker`), `holds()` tells what it held when its last job ended (not the load it
    is doing now)."""

    def __init__(self, index: int, cfg: Config, scale: float, counts: dict):
        import threading

        self.id = str(index)
        self.sim = SimWorker(f"w{index}", cfg.ram_cache)
        self.cfg, self.scale, self.counts = cfg, scale, counts
        self._lock = threading.Lock()
        self._rng = random.Random(cfg.seed + 10 + index)
        self._holds: tuple[str, ...] = ()

    def run(self, item, sink=None):
        spec = item["spec"]
        with self._lock:
            self.sim.start(spec, 0.0, self.cfg, self._rng)
            load, cold = self.sim.last_load, self.sim.last_load_cold
        if load:
            self.counts["cold" if cold else "ram"] += 1
            self.counts["load_seconds"] += load
        self.counts["busy_seconds"] += load + spec.run_seconds
        time.sleep((load + spec.run_seconds) * self.scale)
        with self._lock:
            self.sim.job = None
            self._holds = ((self.sim.device,) if self.sim.device else ()) + tuple(self.sim.ram)
        return {"images": [], "load": load}

    def holds(self) -> tuple[str, ...]:
        with self._lock:
            return self._holds

    def command(self, job_id: str, command: str) -> None:
        pass

    def describe(self) -> dict:
        return {"node": "fake", "device": f"fake:{self.id}"}

    def unload(self) -> None:
        pass

    def kill(self) -> None:
        pass


class TimedScheduler:
    """Wraps a scheduler to time its `assign` calls (wall clock)."""

    def __init__(self, inner):
        self.inner = inner
        self.window = getattr(inner, "window", 64)
        self.calls = 0
        self.seconds = 0.0
        self.max = 0.0

    def assign(self, jobs, workers, now):
        t0 = time.perf_counter()
        pairs = self.inner.assign(jobs, workers, now)
        spent = time.perf_counter() - t0
        self.calls += 1
        self.seconds += spent
        self.max = max(self.max, spent)
        return pairs

    def observe_run(self, checkpoint, seconds):
        self.inner.observe_run(checkpoint, seconds)

    def observe_load(self, checkpoint, seconds):
        self.inner.observe_load(checkpoint, seconds)

    @property
    def next_wakeup(self):
        return getattr(self.inner, "next_wakeup", None)

    def __getattr__(self, name):
        # The rest of the scheduler's surface (`run_time`, `load_time`: the pool's busy_until estimates) is the
        # inner one's: a wrapper that hid them would make the pool fall back to its 5 s defaults.
        return getattr(self.inner, name)


def run_real_head(make, cfg: Config, scale: float, use_store: bool) -> tuple[Metrics, dict]:
    """The same workload through the real `JobQueue` with a `WorkerPool` of `FakeWorker`s (threads, real time
    scaled by `scale`). Figures are converted back to the workload's seconds, except the head's wall times."""
    import tempfile
    import threading

    from webui.jobs.pool import WorkerPool
    from webui.jobs.queue import JobQueue
    from webui.jobs.store import JobStore

    counts = {"cold": 0, "ram": 0, "load_seconds": 0.0, "busy_seconds": 0.0}
    scheduler = TimedScheduler(make(scale))
    pool = WorkerPool(lambda index: FakeWorker(index, cfg, scale, counts),
                      runner=lambda job, worker: worker.run(job.payload),
                      size=cfg.workers, key_of=lambda job: job.payload["spec"].checkpoint, scheduler=scheduler)
    dispatch = {"calls": 0, "seconds": 0.0}
    inner_assign = pool.assign

    def timed_assign():
        t0 = time.perf_counter()
        inner_assign()
        dispatch["calls"] += 1
        dispatch["seconds"] += time.perf_counter() - t0

    pool.assign = timed_assign
    tmp = tempfile.TemporaryDirectory(prefix="pool-scale-")
    store = JobStore(Path(tmp.name) / "jobs.sqlite3", keep=cfg.jobs * 2) if use_store else None
    queue = JobQueue(store=store, pool=pool)
    queue.register("generate", lambda job: None)  # never called: the pool serves "generate"
    queue.start()
    deadline = time.monotonic() + 120
    while pool.ready() < cfg.workers and time.monotonic() < deadline:
        time.sleep(0.01)

    workload = Workload(cfg)
    jobs, lock = [], threading.Lock()

    def submit(spec: JobSpec):
        job = queue.submit("generate", {"spec": spec, "id": spec.id}, task_id=spec.id)
        with lock:
            jobs.append(job)
        return job

    started = time.perf_counter()
    threads = []
    if cfg.arrivals == "closed":
        first: dict[int, list[JobSpec]] = {}
        for _, spec in workload.initial():
            first.setdefault(spec.client, []).append(spec)

        def client(specs: list[JobSpec]) -> None:
            # As in the simulation, a client submits its next job as soon as any of its jobs ends (not its oldest:
            # one job waiting long would hold its client's other submissions back and shorten the queue).
            mine = {spec.id: spec for spec in workload.per_client[specs[0].client]}
            with queue.events.subscribe(lambda event: event.get("type") == "finished" and event.get("job") in mine) \
                    as ended:
                inflight = len([submit(spec) for spec in specs])
                while inflight:
                    event = ended.get(60.0)
                    if event is None:
                        raise RuntimeError(f"client {specs[0].client}: no job of its ended for 60 s")
                    inflight -= 1
                    follow = workload.after_finish(mine[event["job"]])
                    if follow is not None:
                        submit(follow)
                        inflight += 1

        threads = [threading.Thread(target=client, args=(specs,), daemon=True) for specs in first.values()]
    else:
        arrivals = workload.initial()

        def submitter() -> None:
            for t, spec in arrivals:
                delay = started + t * scale - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                submit(spec)

        threads = [threading.Thread(target=submitter, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while True:
        with lock:
            pending = [job for job in jobs if not job._done.is_set()]
        if len(jobs) >= cfg.jobs and not pending:
            break
        pending[0].wait(1.0) if pending else time.sleep(0.01)
    wall = time.perf_counter() - started
    queue.stop()
    tmp.cleanup()

    metrics = Metrics()
    metrics.jobs = len(jobs)
    failed = [job for job in jobs if job.state != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not finish: {failed[0].state} {failed[0].error}")
    origin = min(job.created for job in jobs)
    metrics.waits = [(job.started - job.created) / scale for job in jobs]
    metrics.finishes = sorted((job.finished - origin) / scale for job in jobs)
    metrics.makespan = metrics.finishes[-1]
    metrics.cold_loads, metrics.ram_loads = counts["cold"], counts["ram"]
    metrics.busy_seconds, metrics.load_seconds = counts["busy_seconds"], counts["load_seconds"]
    metrics.assign_calls, metrics.assign_seconds, metrics.assign_max = scheduler.calls, scheduler.seconds, \
        scheduler.max
    metrics.sim_seconds = wall
    return metrics, {"real_jobs_per_s": len(jobs) / wall, "dispatch_calls": dispatch["calls"],
                     "dispatch_seconds": dispatch["seconds"]}


# --- main ------------------------------------------------------------------------------------------------------

def parse(argv=None) -> tuple[Config, argparse.Namespace]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--jobs", type=int, default=d.jobs)
    p.add_argument("--checkpoints", type=int, default=d.checkpoints)
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--zipf", type=float, default=d.zipf, help="popularity exponent s: P(k) ~ 1/k^s (0: uniform)")
    p.add_argument("--stickiness", type=float, default=d.stickiness,
                   help="probability a client's job re-uses its previous checkpoint")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--step-time", type=float, default=d.step_time, help="seconds per sampling step")
    p.add_argument("--jitter", type=float, default=d.jitter, help="run time varies uniformly by +- this fraction")
    p.add_argument("--load", type=float, default=d.load, help="seconds to load a checkpoint from disk")
    p.add_argument("--ram-load", type=float, default=d.ram_load, help="seconds to move a RAM-cached one to the GPU")
    p.add_argument("--ram-cache", type=int, default=d.ram_cache, help="checkpoints each worker keeps in RAM")
    p.add_argument("--arrivals", choices=["closed", "poisson", "burst"], default=d.arrivals)
    p.add_argument("--inflight", type=int, default=d.inflight, help="closed loop: jobs each client keeps queued")
    p.add_argument("--rate", type=float, default=None, help="poisson: jobs/s (default 80%% of no-load capacity)")
    p.add_argument("--eta-noise", type=float, default=d.eta_noise, help="busy_until error, +- this fraction")
    p.add_argument("--window", type=int, default=d.window, help="the scheduler's look-ahead window")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--capacity-rounds", type=int, default=20000,
                   help="dispatches in the scheduler-alone measurement (0: skip it)")
    p.add_argument("--capacity-queue", type=int, default=2000, help="queued jobs in that measurement")
    p.add_argument("--real-head", action="store_true",
                   help="also run the workload through the real JobQueue + WorkerPool with fake workers that sleep")
    p.add_argument("--scale", type=float, default=0.25,
                   help="real head: real seconds per simulated second (0.25: the head dispatches 4x as fast)")
    p.add_argument("--no-store", action="store_true", help="real head: without the SQLite history")
    args = p.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in Config.__dataclass_fields__})
    return cfg, args


def main(argv=None) -> None:
    cfg, args = parse(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f} at start")
    say(f"{cfg.workers} workers, {cfg.jobs} jobs, {cfg.checkpoints} checkpoints (zipf {cfg.zipf}, stickiness "
        f"{cfg.stickiness}), {cfg.clients} clients, arrivals {cfg.arrivals}"
        + (f" ({cfg.inflight} in flight each)" if cfg.arrivals == "closed" else "")
        + (f" ({cfg.arrival_rate:.1f} jobs/s)" if cfg.arrivals == "poisson" else ""))
    say(f"job {cfg.steps} x {cfg.step_time} s = {cfg.run_time:.2f} s (+-{cfg.jitter:.0%}), load {cfg.load} s from "
        f"disk / {cfg.ram_load} s from RAM, {cfg.ram_cache} in RAM per worker; no-load capacity "
        f"{cfg.workers / cfg.run_time:.1f} jobs/s")
    say()

    def affinity(scale: float = 1.0):
        # Its defaults are the workload's (a deployment would start from 5 s / 5 s and learn); with the real head
        # the clock runs `scale` times as fast, and so must its seconds.
        return AffinityScheduler(window=cfg.window, load_estimate=cfg.load * scale, run_estimate=cfg.run_time * scale,
                                 ram_load_fraction=cfg.ram_load / cfg.load if cfg.load else 0.25,
                                 max_wait=None if scale == 1.0 else max(2 * cfg.load, 30.0) * scale)

    def fifo(scale: float = 1.0):
        return FifoScheduler(window=cfg.window)

    rows, results = [], {}
    for name, make in (("affinity", affinity), ("fifo", fifo)):
        metrics = simulate(make(), cfg)
        results[name] = metrics
        rows.append(metrics.row(name, cfg.workers))
    table(HEADERS, rows)
    a, f = results["affinity"], results["fifo"]
    say()
    say(f"affinity vs fifo: {a.jobs / a.makespan / (f.jobs / f.makespan):.2f}x jobs/s, "
        f"{(f.cold_loads + f.ram_loads) / max(1, a.cold_loads + a.ram_loads):.1f}x fewer loads")
    say(f"assign calls: affinity {a.assign_calls} ({a.assign_calls / a.jobs:.2f} per job), "
        f"fifo {f.assign_calls} ({f.assign_calls / f.jobs:.2f} per job)")
    a_loads, f_loads = a.cold_loads + a.ram_loads, f.cold_loads + f.ram_loads
    say(f"target: affinity more jobs/s and fewer loads than fifo: "
        f"{verdict(a.jobs / a.makespan > f.jobs / f.makespan and a_loads < f_loads)}")

    if args.capacity_rounds:
        say()
        say(f"scheduler alone: {args.capacity_queue} queued x {cfg.workers} workers, one freed per call, "
            f"{args.capacity_rounds} calls")
        rows, capacity_ok = [], True
        for name, make in (("affinity", affinity), ("fifo", fifo)):
            c = scheduler_capacity(make, cfg, args.capacity_queue, args.capacity_rounds)
            capacity_ok &= c["per_call_us"] < CALL_TARGET_US and c["cold_call_ms"] < 10 * CALL_TARGET_US / 1000
            rows.append([name, f"{c['per_call_us']:.1f}", f"{c['p99_call_us']:.1f}", f"{c['per_job_us']:.1f}",
                         f"{c['jobs_per_s']:,.0f}", f"{c['cold_call_ms']:.2f} ({c['cold_pairs']} pairs)"])
        table(["scheduler", "us/call", "p99 us/call", "us/dispatch", "dispatches/s", "all idle: ms/call"], rows)
        say(f"target: a call under {CALL_TARGET_US / 1000:.0f} ms on average with {args.capacity_queue} queued x "
            f"{cfg.workers} workers, and under {10 * CALL_TARGET_US / 1000:.0f} ms with every worker idle: "
            f"{verdict(capacity_ok)}")

    if args.real_head:
        say()
        say(f"real head (JobQueue + WorkerPool, {cfg.workers} fake workers as threads, time x{args.scale}, "
            f"{'no history' if args.no_store else 'SQLite history'}); figures in workload seconds except wall "
            "times")
        rows, extra = [], []
        for name, make in (("affinity", affinity), ("fifo", fifo)):
            metrics, info = run_real_head(make, cfg, args.scale, not args.no_store)
            rows.append(metrics.row(name, cfg.workers))
            extra.append([name, f"{info['real_jobs_per_s']:.1f}", f"{cfg.workers / cfg.run_time / args.scale:.0f}",
                          f"{info['dispatch_calls']}",
                          f"{info['dispatch_seconds'] / metrics.jobs * 1e6:.0f}",
                          f"{metrics.assign_seconds / metrics.jobs * 1e6:.0f}"])
        table(HEADERS, rows)
        say()
        table(["scheduler", "real jobs/s", "no-load cap. real/s", "pool.assign calls", "pool.assign us/job",
               "scheduler us/job"], extra)


if __name__ == "__main__":
    main()
