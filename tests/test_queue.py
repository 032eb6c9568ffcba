"""The job queue: one FIFO worker for every client. Most tests register simple runners (no models); the last ones
run real generations through the services to check Skip and Interrupt of a batch-count job."""
from __future__ import annotations

import threading
import time

import pytest

from webui.core.request import GenerationRequest
from webui.jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobQueue

TIMEOUT = 30


@pytest.fixture
def queue():
    queues = []

    def factory(**kwargs) -> JobQueue:
        q = JobQueue(**kwargs)
        queues.append(q)
        return q

    yield factory
    for q in queues:
        q.stop()


class Gate:
    """A runner that blocks the worker until released, so jobs can be observed while queued."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, job):
        self.entered.set()
        assert self.release.wait(TIMEOUT), "gate never released"
        return "gate"


def blocked_queue(factory, **kwargs) -> tuple[JobQueue, Gate, object]:
    """A started queue whose worker is held inside a running "gate" job."""
    q = factory(**kwargs)
    gate = Gate()
    q.register("gate", gate)
    q.start()
    gate_job = q.submit("gate", None)
    assert gate.entered.wait(TIMEOUT)
    return q, gate, gate_job


def wait_all(jobs) -> None:
    for job in jobs:
        assert job.wait(TIMEOUT), f"job {job.id} did not finish"


# --- order and positions -------------------------------------------------------------------------------------------
def test_fifo_with_concurrent_submissions(queue):
    q, gate, gate_job = blocked_queue(queue)
    started: list = []
    q.register("record", lambda job: started.append(job.payload) or job.payload)

    threads_count, per_thread = 8, 6
    barrier = threading.Barrier(threads_count)
    submitted: dict[int, list] = {}
    errors: list = []

    def client(n: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            submitted[n] = [q.submit("record", (n, i)) for i in range(per_thread)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors
    jobs = [job for n in range(threads_count) for job in submitted[n]]
    assert len(jobs) == threads_count * per_thread

    queued_order = [job.payload for job in q.pending()]
    assert len(queued_order) == len(jobs)
    assert [q.position(job) for job in q.pending()] == list(range(1, len(jobs) + 1))
    assert all(job.state == QUEUED for job in jobs)

    gate.release.set()
    wait_all(jobs)
    assert gate_job.state == DONE
    assert all(job.state == DONE for job in jobs)
    assert [job.result for job in jobs] == [job.payload for job in jobs]
    assert len({job.id for job in jobs} | {gate_job.id}) == len(jobs) + 1  # ids unique
    assert started == queued_order  # run in the order they were queued, none lost, none twice
    for n in range(threads_count):  # and each client's jobs in the order it submitted them
        mine = [payload for payload in started if payload[0] == n]
        assert mine == [(n, i) for i in range(per_thread)]
    assert q.pending() == [] and q.running is None


def runs_until_interrupted(entered: threading.Event):
    """A runner that signals `entered`, then waits until its job is interrupted (True) or times out (False)."""
    def runner(job):
        entered.set()
        deadline = time.monotonic() + TIMEOUT
        while not job.control.interrupted and time.monotonic() < deadline:
            time.sleep(0.005)
        return job.control.interrupted
    return runner


def test_positions_while_queued(queue):
    q, gate, gate_job = blocked_queue(queue)
    q.register("noop", lambda job: job.payload)
    a, b, c = (q.submit("noop", name) for name in "abc")
    assert q.running is gate_job and gate_job.state == RUNNING
    assert q.position(gate_job) == 0
    assert [q.position(job) for job in (a, b, c)] == [1, 2, 3]
    assert q.pending() == [a, b, c]
    assert q.get(b.id) is b
    gate.release.set()
    wait_all([a, b, c])
    assert [q.position(job) for job in (gate_job, a, b, c)] == [0, 0, 0, 0]
    assert [job.result for job in (a, b, c)] == ["a", "b", "c"]


def test_run_submits_and_waits(queue):
    q = queue()
    q.register("double", lambda job: job.payload * 2)
    q.start()
    job = q.run("double", 21, timeout=TIMEOUT)
    assert job.state == DONE and job.finished_ok and job.result == 42
    assert job.started is not None and job.finished >= job.started >= job.created


def test_submit_of_unknown_kind_is_refused(queue):
    q = queue()
    q.start()
    with pytest.raises(ValueError, match="no runner"):
        q.submit("nothing-registered", None)


# --- cancel --------------------------------------------------------------------------------------------------------
def test_cancel_queued_job(queue):
    q, gate, _ = blocked_queue(queue)
    calls: list = []
    q.register("record", lambda job: calls.append(job.payload))
    first, second, third = (q.submit("record", name) for name in ("first", "second", "third"))
    assert q.cancel(second.id) is True
    assert second.state == CANCELLED
    assert second.wait(0)  # waiters are released at once
    assert second.error
    assert q.position(third) == 2 and q.pending() == [first, third]

    gate.release.set()
    wait_all([first, third])
    assert calls == ["first", "third"]  # the cancelled job's runner was never called
    assert second.state == CANCELLED


def test_cancel_of_finished_or_unknown_job_returns_false(queue):
    q = queue()
    q.register("noop", lambda job: "ok")
    q.start()
    job = q.run("noop", None, timeout=TIMEOUT)
    assert job.state == DONE
    assert q.cancel(job.id) is False
    assert job.state == DONE and job.result == "ok"
    assert q.cancel("task(never-submitted)") is False


def test_cancel_of_running_job_interrupts_it(queue):
    q = queue()
    entered = threading.Event()
    q.register("long", runs_until_interrupted(entered))
    q.start()
    job = q.submit("long", None)
    assert entered.wait(TIMEOUT)
    assert q.cancel(job.id) is True
    assert job.wait(TIMEOUT)
    assert job.state == DONE and job.result is True


# --- failures ------------------------------------------------------------------------------------------------------
def test_user_error_fails_job_with_its_message(queue):
    q = queue(user_errors=(ValueError,))

    def bad_input(job):
        raise ValueError("width must be between 64 and 4096, got 3")

    q.register("bad", bad_input)
    q.start()
    job = q.run("bad", None, timeout=TIMEOUT)
    assert job.state == FAILED and not job.finished_ok
    assert job.error == "width must be between 64 and 4096, got 3"
    assert job.error_kind == "ValueError"
    assert job.result is None


def test_unexpected_exception_fails_job_and_worker_survives(queue):
    q = queue(user_errors=(ValueError,))

    def broken(job):
        raise ZeroDivisionError("division by zero")

    q.register("broken", broken)
    q.register("noop", lambda job: job.payload)
    q.start()
    failed = q.submit("broken", None)
    later = q.submit("noop", "still served")
    wait_all([failed, later])
    assert failed.state == FAILED
    assert "ZeroDivisionError" in failed.error and "division by zero" in failed.error
    assert failed.error_kind == "ZeroDivisionError"
    assert later.state == DONE and later.result == "still served"
    assert q.run("noop", "and again", timeout=TIMEOUT).result == "and again"


# --- interrupt / skip ----------------------------------------------------------------------------------------------
def test_interrupt_affects_only_the_running_job(queue):
    q = queue()
    entered = threading.Event()
    q.register("long", runs_until_interrupted(entered))
    q.register("status", lambda job: (job.control.interrupted, job.control.skip_requested))
    q.start()
    running = q.submit("long", None)
    waiting = q.submit("status", None)
    assert entered.wait(TIMEOUT)
    q.interrupt()
    wait_all([running, waiting])
    assert running.state == DONE and running.result is True
    assert not waiting.control.interrupted
    assert waiting.state == DONE and waiting.result == (False, False)


def test_interrupt_and_skip_with_nothing_running_are_harmless(queue):
    q = queue()
    q.register("status", lambda job: (job.control.interrupted, job.control.skip_requested))
    q.start()
    q.interrupt()
    q.skip()
    assert q.run("status", None, timeout=TIMEOUT).result == (False, False)


def test_skip_reaches_the_running_job(queue):
    q, gate, gate_job = blocked_queue(queue)
    q.register("noop", lambda job: None)
    queued = q.submit("noop", None)
    q.skip()
    assert gate_job.control.skip_requested and not queued.control.skip_requested
    assert gate_job.control.take_skip() is True and gate_job.control.take_skip() is False  # once per press
    gate.release.set()
    wait_all([gate_job, queued])


# --- task ids ------------------------------------------------------------------------------------------------------
def test_forced_task_id_duplicate_while_queued_or_running(queue):
    q, gate, gate_job = blocked_queue(queue)
    q.register("noop", lambda job: job.payload)
    job = q.submit("noop", "first", task_id="task(mine)")
    assert job.id == "task(mine)" and q.get("task(mine)") is job
    with pytest.raises(ValueError):
        q.submit("noop", "second", task_id="task(mine)")
    with pytest.raises(ValueError):
        q.submit("noop", "third", task_id=gate_job.id)  # running
    assert q.pending() == [job]
    gate.release.set()
    wait_all([job])
    again = q.submit("noop", "again", task_id="task(mine)")  # free once finished
    wait_all([again])
    assert again.result == "again"


# --- stop ----------------------------------------------------------------------------------------------------------
def test_stop_finishes_queued_jobs(queue):
    q, gate, gate_job = blocked_queue(queue)
    q.register("noop", lambda job: None)
    queued = q.submit("noop", None)
    stopper = threading.Thread(target=q.stop, kwargs={"timeout": TIMEOUT})
    stopper.start()
    gate.release.set()
    stopper.join(TIMEOUT)
    assert gate_job.wait(TIMEOUT) and gate_job.control.interrupted
    assert queued.wait(1), "a job queued at stop() is never finished"
    assert queued.state == CANCELLED


# --- with real services: Skip and Interrupt of batches -------------------------------------------------------------
def _batch_request(seed: int) -> GenerationRequest:
    return GenerationRequest(prompt="batches", sampler_name="Euler", steps=20, width=64, height=64, n_iter=3,
                             seed=seed, save_images=False, do_not_save_grid=True)  # batch grids: test_grids.py


def _wait_for(job, condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition(job.control.progress):
        assert job.state in (QUEUED, RUNNING), f"job ended ({job.state}: {job.error}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_skip_ends_only_the_current_batch_early(make_services):
    services = make_services("sd1")
    job = services.generate(_batch_request(seed=100))
    # right after the first progress report of batch 2
    _wait_for(job, lambda p: p.job_no == 1 and p.sampling_step >= 1, "batch 2 to start sampling")
    job.control.skip()
    assert job.wait(120)
    assert job.state == DONE, job.error
    result = job.result
    assert result.skipped_batches == 1
    assert not result.interrupted
    # as A1111: the skipped batch is decoded where it got to and kept, then batch 3 runs
    assert len(result.images) == 3 and len(result.infotexts) == 3
    assert result.seeds == [100, 101, 102]
    assert "Seed: 100," in result.infotexts[0] and "Seed: 102," in result.infotexts[2]


def test_interrupt_keeps_the_batch_it_stopped_and_starts_no_other(make_services):
    services = make_services("sd1")
    job = services.generate(_batch_request(seed=200))
    _wait_for(job, lambda p: p.job_no == 1 and p.sampling_step >= 1, "batch 2 to start sampling")
    services.queue.interrupt()
    assert job.wait(120)
    assert job.state == DONE, job.error
    result = job.result
    assert result.interrupted
    assert result.images and len(result.images) < 3
    assert result.seeds == [200 + i for i in range(len(result.images))]  # in order
    assert len(result.images) == 2  # batch 1, and batch 2 as far as it got (as A1111); batch 3 never started
    assert any("Interrupted" in warning for warning in result.warnings)
    # the next job is not affected
    follow = services.generate(GenerationRequest(steps=2, width=64, height=64, n_iter=2, save_images=False,
                                                 do_not_save_grid=True))
    assert follow.wait(120)
    assert follow.state == DONE and len(follow.result.images) == 2 and not follow.result.interrupted
