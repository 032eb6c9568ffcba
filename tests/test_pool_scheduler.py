"""The pool's scheduler (webui/jobs/scheduler.py): which queued job starts on which idle worker. Pure decisions:
each test builds the views a dispatcher would pass and checks the (job, worker) pairs."""
from __future__ import annotations

import time

import pytest

from webui.jobs.scheduler import AffinityScheduler, FifoScheduler, JobView, WorkerView

NOW = 1000.0


def idle(worker_id: str, *loaded: str) -> WorkerView:
    return WorkerView(worker_id, True, tuple(loaded))


def busy(worker_id: str, running: str, ends_in: float | None, *cached: str) -> WorkerView:
    return WorkerView(worker_id, False, (running, *cached), running=running,
                      busy_until=None if ends_in is None else NOW + ends_in)


def job(job_id: str, checkpoint: str, age: float = 1.0, **kwargs) -> JobView:
    return JobView(job_id, checkpoint, NOW - age, **kwargs)


def queue(*specs: str) -> list[JobView]:
    """'A1' -> a job needing checkpoint 'A', older first."""
    return [job(spec, spec[0], age=len(specs) - i) for i, spec in enumerate(specs)]


# --- affinity -------------------------------------------------------------------------------------------------------

def test_idle_holder_is_preferred_over_the_first_idle_worker():
    workers = [idle("w1", "B"), idle("w2", "C"), idle("w3", "A")]
    assert AffinityScheduler().assign(queue("A1"), workers, NOW) == [("A1", "w3")]
    # The baseline takes the first idle worker, whatever it holds.
    assert FifoScheduler().assign(queue("A1"), workers, NOW) == [("A1", "w1")]


def test_ram_cached_worker_is_preferred_over_a_cold_one():
    for workers, expected in (([idle("w1", "X"), idle("w2", "Y", "A")], "w2"),
                              ([idle("w1", "Y", "A"), idle("w2", "X")], "w1")):
        assert AffinityScheduler().assign(queue("A1"), workers, NOW) == [("A1", expected)]


def test_each_job_goes_to_its_holder_when_several_are_idle():
    workers = [idle("w1", "A"), idle("w2", "B"), idle("w3", "C")]
    pairs = AffinityScheduler().assign(queue("C1", "A1", "B1"), workers, NOW)
    assert sorted(pairs) == [("A1", "w1"), ("B1", "w2"), ("C1", "w3")]


def run_pool(scheduler, checkpoints: list[str], run_seconds: dict[str, float], load_seconds: float = 5.0):
    """A tiny discrete-event pool of two workers: all jobs queued at t=0; each start on a worker whose device holds
    another checkpoint costs `load_seconds`. Returns the (job, worker) starts in order and the switches: (the
    checkpoint unloaded, the checkpoints of the jobs still queued then)."""
    jobs = [JobView(f"j{i}", c, 0.0) for i, c in enumerate(checkpoints)]
    state = {"w1": {"loaded": None, "job": None, "end": 0.0}, "w2": {"loaded": None, "job": None, "end": 0.0}}
    now, starts, switches = 0.0, [], []
    while jobs or any(s["job"] for s in state.values()):
        views = [WorkerView(w, s["job"] is None, (s["loaded"],) if s["loaded"] else (),
                            running=s["job"].checkpoint if s["job"] else None,
                            busy_until=s["end"] if s["job"] else None) for w, s in state.items()]
        pairs = scheduler.assign(jobs, views, now)
        by_id = {j.id: j for j in jobs}
        taken = {job_id for job_id, _ in pairs}
        for job_id, worker_id in pairs:
            s, started = state[worker_id], by_id[job_id]
            assert s["job"] is None, "a busy worker was given a job"
            load = 0.0 if s["loaded"] == started.checkpoint else load_seconds
            if s["loaded"] is not None and load:
                switches.append((s["loaded"], {j.checkpoint for j in jobs if j.id not in taken}))
            s.update(loaded=started.checkpoint, job=started, end=now + load + run_seconds[started.checkpoint])
            starts.append((job_id, worker_id))
        jobs = [j for j in jobs if j.id not in taken]
        running = [(s["end"], w) for w, s in state.items() if s["job"] is not None]
        if not running:
            assert not jobs, "jobs left with every worker idle"
            break
        now, worker_id = min(running)
        scheduler.observe_run(state[worker_id]["job"].checkpoint, run_seconds[state[worker_id]["job"].checkpoint])
        state[worker_id]["job"] = None
    return starts, switches


def test_two_checkpoints_alternating_on_two_workers_never_switch_after_warm_up():
    checkpoints = ["A", "B"] * 10
    run_seconds = {"A": 1.0, "B": 1.3}
    scheduler = AffinityScheduler(load_estimate=5.0, run_estimate=1.0)
    starts, switches = run_pool(scheduler, checkpoints, run_seconds, 5.0)
    assert len(starts) == 20 and len({j for j, _ in starts}) == 20
    assert switches == []
    # Every A ran on the worker that took the first A, every B on the other one.
    first = {checkpoints[int(j[1:])]: w for j, w in starts[:2]}
    assert first["A"] != first["B"]
    assert all(w == first[checkpoints[int(j[1:])]] for j, w in starts)
    # The same queue under plain FIFO does thrash (so the test can tell the two apart).
    _, fifo_switches = run_pool(FifoScheduler(), checkpoints, run_seconds, 5.0)
    assert any(unloaded in still_queued for unloaded, still_queued in fifo_switches)


def test_cheap_loads_may_switch_but_never_unload_what_queued_jobs_still_need():
    # A load as cheap as a run: once the slower B jobs lag behind, a B job may take the A worker, but only when no
    # A job is left to need it back (no thrash).
    checkpoints = ["A", "B"] * 10
    starts, switches = run_pool(AffinityScheduler(load_estimate=1.0, run_estimate=1.0), checkpoints,
                                {"A": 1.0, "B": 1.3}, 1.0)
    assert len(starts) == 20
    assert all(unloaded not in still_queued for unloaded, still_queued in switches), switches
    _, fifo_switches = run_pool(FifoScheduler(), checkpoints, {"A": 1.0, "B": 1.3}, 1.0)
    assert any(unloaded in still_queued for unloaded, still_queued in fifo_switches)


# --- waiting for a busy holder ---------------------------------------------------------------------------------------

def test_job_waits_for_a_holder_about_to_finish_and_a_later_job_takes_the_idle_worker():
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=1.0)]
    scheduler = AffinityScheduler(load_estimate=5.0, run_estimate=1.0)
    assert scheduler.assign(queue("B1", "A1"), workers, NOW) == [("A1", "w1")]
    # Nothing else to take: the idle worker keeps its checkpoint; B1 still waits, and B2 behind it (1 + 1 s < 5 s).
    assert scheduler.assign(queue("B1", "B2"), workers, NOW) == []
    assert scheduler.next_wakeup is not None and NOW < scheduler.next_wakeup
    # Its holder idle again: B1 goes there.
    workers = [idle("w1", "A"), idle("w2", "B")]
    assert scheduler.assign(queue("B1", "B2"), workers, NOW + 1.0) == [("B1", "w2")]


def test_job_does_not_wait_for_a_holder_that_ends_later_than_a_load():
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=20.0)]
    assert AffinityScheduler(load_estimate=5.0).assign(queue("B1", "A1"), workers, NOW) == [("B1", "w1")]


def test_job_does_not_wait_for_a_holder_long_overdue():
    # Its estimated end passed 20 s ago (stuck, or slower than thought): not worth waiting for.
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=-20.0)]
    assert AffinityScheduler(load_estimate=5.0).assign(queue("B1", "A1"), workers, NOW) == [("B1", "w1")]
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=-1.0)]  # just overdue: about to end
    assert AffinityScheduler(load_estimate=5.0).assign(queue("B1", "A1"), workers, NOW) == [("A1", "w1")]


def test_learned_load_time_decides_whether_to_wait():
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=3.0)]
    scheduler = AffinityScheduler(load_estimate=5.0)
    assert scheduler.assign(queue("B1", "A1"), workers, NOW) == [("A1", "w1")]
    scheduler.observe_load("B", 1.0)  # loads turned out fast: waiting 3 s is not worth it
    assert scheduler.assign(queue("B1", "A1"), workers, NOW) == [("B1", "w1")]


def test_a_second_job_of_the_same_checkpoint_does_not_queue_behind_the_same_holder():
    # B1 reserves w2's next slot (free in 1 s); B2 would wait 1 + 4 s of B1's run: longer than a load, so it switches.
    workers = [idle("w1", "A"), idle("w3", "C"), busy("w2", "B", ends_in=1.0)]
    scheduler = AffinityScheduler(load_estimate=3.0, run_estimate=4.0)
    assert scheduler.assign(queue("B1", "B2"), workers, NOW) == [("B2", "w1")]


# --- fairness -------------------------------------------------------------------------------------------------------

def test_job_held_back_too_long_takes_the_next_idle_worker_regardless_of_affinity():
    b1 = job("B1", "B", age=100.0)
    for kwargs, expect_forced in ((dict(), True), (dict(max_wait=60.0), False), (dict(load_estimate=20.0), False)):
        scheduler = AffinityScheduler(**{"load_estimate": 5.0, "run_estimate": 1.0, **kwargs})
        # Old from queueing alone (a backlog) is not held back: B1 waits for its holder like any job.
        first = scheduler.assign([b1, job("A1", "A")], [idle("w1", "A"), busy("w2", "B", ends_in=1.0)], NOW)
        assert first == [("A1", "w1")]
        # 31 s later its holder is still "about to finish": past the bound (default max(2 x 5 s, 30 s); with a load
        # estimate of 20 s it is 40 s) B1 takes the idle worker.
        workers = [idle("w1", "A"), busy("w2", "B", ends_in=32.0)]
        pairs = scheduler.assign([b1, job("A2", "A")], workers, NOW + 31.0)
        assert pairs == ([("B1", "w1")] if expect_forced else [("A2", "w1")])


def test_job_passed_over_too_often_takes_the_next_idle_worker():
    scheduler = AffinityScheduler(load_estimate=5.0, run_estimate=1.0, max_skips=2)
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=1.0)]
    b1 = job("B1", "B", age=5.0)
    assert scheduler.assign([b1, job("A1", "A", 4.0)], workers, NOW) == [("A1", "w1")]
    assert scheduler.assign([b1, job("A2", "A", 3.0)], workers, NOW) == [("A2", "w1")]
    assert scheduler.assign([b1, job("A3", "A", 2.0)], workers, NOW) == [("B1", "w1")]


def test_look_ahead_window_is_bounded():
    # 100 jobs waiting for a busy B holder, then an A job: with a window of 64 the A job is not seen.
    workers = [idle("w1", "A"), busy("w2", "B", ends_in=0.5)]
    jobs = [job(f"B{i}", "B", age=20 - i * 0.1) for i in range(100)] + [job("A1", "A", age=1.0)]
    scheduler = AffinityScheduler(load_estimate=5.0, run_estimate=0.01, window=64)
    assert scheduler.assign(jobs, workers, NOW) == []
    assert AffinityScheduler(load_estimate=5.0, run_estimate=0.01, window=128).assign(jobs, workers, NOW) == [
        ("A1", "w1")]


def test_idle_worker_nobody_needs_takes_a_job_that_would_wait_long():
    # B1 and B2 wait for w2 (free in 3 s, then 1 s per job: 3 and 4 s, both under a 5 s load). w1 holds C, which no
    # queued job wants, and would idle: it takes B2, the longer wait (4 s >= half a load), and B1 keeps waiting.
    scheduler = AffinityScheduler(load_estimate=5.0, run_estimate=1.0)
    workers = [idle("w1", "C"), busy("w2", "B", ends_in=3.0)]
    assert scheduler.assign(queue("B1", "B2"), workers, NOW) == [("B2", "w1")]
    # A lone waiting job is not moved: a 3 s wait beats a 5 s load, and w1 keeps C for the next C job.
    assert scheduler.assign(queue("B1"), workers, NOW) == []
    # Nor are waits shorter than half a load: 0.5 and 1.5 s.
    workers = [idle("w1", "C"), busy("w2", "B", ends_in=0.5)]
    assert scheduler.assign(queue("B1", "B2"), workers, NOW) == []


# --- hard constraints -----------------------------------------------------------------------------------------------

def test_excluded_worker_is_never_used_even_when_it_holds_the_checkpoint():
    workers = [idle("w1", "A"), idle("w2", "B")]
    jobs = [job("A1", "A", excluded=frozenset({"w1"}))]
    assert AffinityScheduler().assign(jobs, workers, NOW) == [("A1", "w2")]
    assert FifoScheduler().assign(jobs, workers, NOW) == [("A1", "w2")]
    only_refused = [job("A1", "A", excluded=frozenset({"w1", "w2"})), job("B1", "B")]
    assert AffinityScheduler().assign(only_refused, workers, NOW) == [("B1", "w2")]
    assert FifoScheduler().assign(only_refused, workers, NOW) == [("B1", "w1")]


def test_only_restricts_the_workers_and_the_holders_waited_for():
    workers = [idle("w1", "A"), idle("w2", "B"), idle("w3", "C")]
    jobs = [job("A1", "A", only=frozenset({"w3"}))]
    assert AffinityScheduler().assign(jobs, workers, NOW) == [("A1", "w3")]
    assert FifoScheduler().assign(jobs, workers, NOW) == [("A1", "w3")]
    # A busy holder the job may not run on is not waited for.
    workers = [idle("w1", "C"), busy("w2", "A", ends_in=0.5)]
    jobs = [job("A1", "A", only=frozenset({"w1"})), job("C1", "C")]
    assert AffinityScheduler().assign(jobs, workers, NOW) == [("A1", "w1")]
    # A job no idle worker may run waits without a pair.
    assert AffinityScheduler().assign([job("A1", "A", only=frozenset({"w9"}))], workers, NOW) == []


# --- eviction -------------------------------------------------------------------------------------------------------

def test_switch_evicts_the_least_demanded_checkpoint():
    workers = [idle("w1", "A"), idle("w2", "B")]
    # D must load somewhere: two queued jobs want A, one wants B, so w2 (B) switches and A1 takes w1.
    assert AffinityScheduler().assign(queue("D1", "A1", "A2", "B1"), workers, NOW) == [("D1", "w2"), ("A1", "w1")]
    assert AffinityScheduler().assign(queue("D1", "B1", "B2", "A1"), workers, NOW) == [("D1", "w1"), ("B1", "w2")]


def test_demand_is_weighed_per_holder():
    # A: one job over two holders; B: two jobs over one holder -> an A worker switches (the first, w1).
    workers = [idle("w1", "A"), idle("w2", "A"), idle("w3", "B")]
    pairs = AffinityScheduler().assign(queue("D1", "A1", "B1", "B2"), workers, NOW)
    assert pairs == [("D1", "w1"), ("A1", "w2"), ("B1", "w3")]


def test_empty_or_unwanted_worker_switches_before_one_that_is_wanted():
    workers = [idle("w1", "A"), idle("w2"), idle("w3", "C")]
    assert AffinityScheduler().assign(queue("D1", "A1", "C1"), workers, NOW)[0] == ("D1", "w2")
    # An unwanted checkpoint goes before a RAM copy on a wanted worker.
    workers = [idle("w1", "A", "D"), idle("w2", "B")]
    assert AffinityScheduler().assign(queue("D1", "A1"), workers, NOW) == [("D1", "w2"), ("A1", "w1")]


# --- the baseline and the contract ----------------------------------------------------------------------------------

def test_fifo_baseline_is_plain_fifo():
    workers = [idle("w1", "C"), busy("w2", "A", ends_in=1.0), idle("w3", "A"), idle("w4", "B")]
    pairs = FifoScheduler().assign(queue("A1", "B1", "A2", "C1"), workers, NOW)
    assert pairs == [("A1", "w1"), ("B1", "w3"), ("A2", "w4")]
    assert FifoScheduler().assign(queue("A1"), [busy("w1", "A", 1.0)], NOW) == []


@pytest.mark.parametrize("scheduler_type", [AffinityScheduler, FifoScheduler])
def test_pairs_are_valid_and_deterministic(scheduler_type):
    import random

    rng = random.Random(7)
    for _ in range(50):
        workers = [idle(f"w{i}", *rng.sample("ABCDEFGH", rng.randint(0, 3))) if rng.random() < 0.5
                   else busy(f"w{i}", rng.choice("ABCDEFGH"), rng.uniform(-2, 10)) for i in range(16)]
        jobs = [job(f"j{i}", rng.choice("ABCDEFGH"), age=rng.uniform(0, 40),
                    excluded=frozenset(rng.sample([w.id for w in workers], rng.randint(0, 3)))) for i in range(80)]
        jobs.sort(key=lambda j: j.queued_at)
        pairs = scheduler_type().assign(jobs, workers, NOW)
        assert pairs == scheduler_type().assign(jobs, workers, NOW)
        by_id = {w.id: w for w in workers}
        job_by_id = {j.id: j for j in jobs}
        assert len({j for j, _ in pairs}) == len(pairs) == len({w for _, w in pairs})
        assert all(by_id[w].idle and w not in job_by_id[j].excluded for j, w in pairs)
        # No idle worker is left unused while a job of the window could have run on it and the baseline (which
        # never waits) fills every worker it can.
        if scheduler_type is FifoScheduler:
            left = [w for w in workers if w.idle and w.id not in {w2 for _, w2 in pairs}]
            taken = {j for j, _ in pairs}
            assert not any(w.id not in j.excluded for w in left for j in jobs[:64] if j.id not in taken)


def test_a_call_is_cheap_with_a_long_queue():
    import random

    rng = random.Random(3)
    jobs = [job(f"j{i}", rng.choice("ABCDEFGH"), age=2000 - i * 0.01) for i in range(2000)]
    workers = [busy(f"w{i}", "ABCDEFGH"[i % 8], 1.0 + i * 0.01) for i in range(63)] + [idle("w63", "A")]
    scheduler = AffinityScheduler()
    started = time.perf_counter()
    for _ in range(200):
        assert len(scheduler.assign(jobs, workers, NOW)) == 1
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 0.005, f"{per_call * 1000:.2f} ms per call"
