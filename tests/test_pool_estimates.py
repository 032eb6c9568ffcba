"""What the pool tells its scheduler about a busy worker: when it should be free (a switching job's load included)
and what it will hold, whatever the worker's `holds()` says while the job runs (a Ray worker tells it when a job
ends; another worker may as soon as it starts loading). Without Ray: the real JobQueue and WorkerPool."""
from __future__ import annotations

import threading
import time

import pytest

from webui.jobs.pool import WorkerPool
from webui.jobs.queue import JobQueue
from webui.jobs.scheduler import AffinityScheduler

LOAD, RUN, RAM_FRACTION = 4.0, 1.0, 0.25  # the scheduler's estimates before it has seen anything


class EagerWorker:
    """Holds `initial`; tells the job's checkpoint as held as soon as a job starts (before its load would end)."""

    def __init__(self, initial: tuple):
        self.id, self.checkpoints = "0", []
        self._holds = initial
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, job, sink):
        self._holds = (job.affinity, *(key for key in self._holds if key != job.affinity))
        self.started.set()
        assert self.release.wait(10)
        return {}

    def holds(self):
        return self._holds

    def command(self, job_id, command):
        pass

    def describe(self):
        return {"node": "here", "device": "fake"}

    def unload(self):
        self._holds = ()

    def kill(self):
        pass


@pytest.mark.parametrize("held, checkpoint, expected", [
    (("a",), "a", RUN),  # on its device: the run only
    (("a", "b"), "b", RUN + RAM_FRACTION * LOAD),  # in its RAM cache: a cheap load, then the run
    (("a",), "c", RUN + LOAD),  # a load from disk, then the run
])
def test_a_busy_worker_view_counts_the_load_it_does_and_shows_the_job_checkpoint(held, checkpoint, expected):
    worker = EagerWorker(held)
    scheduler = AffinityScheduler(load_estimate=LOAD, run_estimate=RUN, ram_load_fraction=RAM_FRACTION)
    pool = WorkerPool(lambda index: worker, runner=lambda job, w: w.run(job, None), size=1,
                      key_of=lambda job: job.payload["checkpoint"], scheduler=scheduler)
    queue = JobQueue(pool=pool)
    queue.register("generate", lambda job: None)
    queue.start()
    try:
        job = queue.submit("generate", {"checkpoint": checkpoint})
        assert worker.started.wait(10)
        assert worker.holds()[0] == checkpoint  # the worker already says so, load or not
        slot = pool.slots[0]
        view = slot.view(time.monotonic(), pool._estimate)
        assert not view.idle and view.running == checkpoint
        assert view.busy_until == pytest.approx(slot.busy_since + expected)
        assert view.loaded[0] == checkpoint and set(view.loaded) == set(held) | {checkpoint}
        worker.release.set()
        assert job.wait(10) and job.state == "done"
        assert pool.slots[0].loads == (0 if held[0] == checkpoint else 1)
    finally:
        worker.release.set()
        queue.stop()
