"""The pool's dispatch without Ray: the real JobQueue and WorkerPool with in-process fake workers. What a client sees
of refusals, lost workers, cancelling, Interrupt and unloading (the Ray transport is tests/test_pool_ray.py)."""
from __future__ import annotations

import threading
import time

from webui.jobs.pool import WorkerLost, WorkerPool, WorkerRefused
from webui.jobs.queue import JobQueue


class FakeWorker:
    """Runs a job by waiting until the test releases it (or it is interrupted); `behaviour` may refuse or die."""

    def __init__(self, index: int, checkpoints=("a", "b"), behaviour=None):
        self.id, self.checkpoints, self.behaviour = str(index), list(checkpoints), behaviour
        self.ran: list[str] = []
        self.commands: list[tuple[str, str]] = []
        self.unloads = 0
        self.killed = False
        self._holds: tuple = ()
        self.release = threading.Event()
        self.started = threading.Event()
        self._stop = threading.Event()

    def run(self, item, sink):
        job = item
        self.ran.append(job.id)
        self.started.set()
        if self.behaviour is not None:
            self.behaviour(self, job)
        while not (self.release.is_set() or self._stop.is_set()):
            time.sleep(0.005)
        self._holds = (job.affinity,)
        return {"worker": self.id, "interrupted": self._stop.is_set()}

    def command(self, job_id, command):
        self.commands.append((job_id, command))
        if command == "interrupt":
            self._stop.set()

    def holds(self):
        return self._holds

    def describe(self):
        return {"node": "here", "device": "fake"}

    def unload(self):
        self.unloads += 1
        self._holds = ()

    def kill(self):
        self.killed = True


def _pool(workers: list[FakeWorker], attempts: int = 2):
    made: dict[int, int] = {}

    def factory(index: int):
        made[index] = made.get(index, 0) + 1
        if made[index] == 1:
            return workers[index]
        replacement = FakeWorker(index)  # a replacement after a loss: finishes at once
        replacement.release.set()
        workers.append(replacement)
        return replacement

    pool = WorkerPool(factory, runner=lambda job, worker: worker.run(job, None), size=2,
                      key_of=lambda job: job.payload["checkpoint"], attempts=attempts)
    queue = JobQueue(pool=pool)
    queue.register("generate", lambda job: None)  # (never called: the pool runs generations)
    queue.start()
    deadline = time.monotonic() + 10
    while pool.ready() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return queue, pool


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_job_every_worker_refuses_fails_with_their_reasons():
    def refuse(worker, job):
        raise WorkerRefused(f"worker {worker.id} has no checkpoint 'c'")

    workers = [FakeWorker(0, behaviour=refuse), FakeWorker(1, behaviour=refuse)]
    queue, pool = _pool(workers)
    try:
        job = queue.submit("generate", {"checkpoint": "c"})
        assert job.wait(10)
        assert job.state == "failed" and job.exception.status == 503
        assert "No worker of the pool can run this job" in job.error
        assert "worker 0 has no checkpoint 'c'" in job.error and "worker 1 has no checkpoint 'c'" in job.error
        assert sorted(w.ran.count(job.id) for w in workers) == [1, 1]  # each asked once, never again
    finally:
        queue.stop()


def test_a_job_goes_to_the_worker_whose_folder_lists_its_checkpoint():
    workers = [FakeWorker(0, checkpoints=["a"]), FakeWorker(1, checkpoints=["b"])]
    queue, pool = _pool(workers)
    try:
        only_b = queue.submit("generate", {"checkpoint": "b"})
        _wait(lambda: workers[1].started.is_set())
        workers[1].release.set()
        assert only_b.wait(10) and only_b.state == "done" and only_b.worker == 1 and not workers[0].ran
    finally:
        queue.stop()


def test_a_job_lost_twice_fails_and_the_lost_workers_are_replaced():
    def die(worker, job):
        raise WorkerLost(f"worker {worker.id} died")

    workers = [FakeWorker(0, behaviour=die), FakeWorker(1, behaviour=die)]
    queue, pool = _pool(workers)
    try:
        job = queue.submit("generate", {"checkpoint": "a"})
        assert job.wait(10) and job.state == "failed"
        assert "The worker running this job was lost" in job.error and job.exception.status == 503
        assert any("was lost" in note and "moved to another worker" in note for note in job.notes)
        assert workers[0].killed and workers[1].killed
        _wait(lambda: pool.ready() == 2)  # both replaced
        after = queue.submit("generate", {"checkpoint": "a"})
        assert after.wait(10) and after.state == "done"
    finally:
        queue.stop()


def test_cancelling_a_queued_job_never_reaches_a_worker_and_interrupt_reaches_the_right_one():
    workers = [FakeWorker(0), FakeWorker(1)]
    queue, pool = _pool(workers)
    try:
        first = queue.submit("generate", {"checkpoint": "a"})
        second = queue.submit("generate", {"checkpoint": "b"})
        _wait(lambda: first.state == "running" and second.state == "running")
        waiting = queue.submit("generate", {"checkpoint": "a"})
        assert waiting.state == "queued" and queue.cancel(waiting.id)
        assert waiting.state == "cancelled" and all(waiting.id not in w.ran for w in workers)
        assert queue.cancel(first.id)  # a running job: its Interrupt goes to its worker only
        first.wait(10)
        runner_of_first = workers[first.worker]
        other = workers[1 - first.worker]
        assert runner_of_first.commands == [(first.id, "interrupt")] and other.commands == []
        assert first.result["interrupted"] is True and second.state == "running"
        other.release.set()
        assert second.wait(10) and second.result["interrupted"] is False
    finally:
        queue.stop()


def test_settings_jobs_stay_on_the_head_and_unload_reaches_every_worker():
    workers = [FakeWorker(0), FakeWorker(1)]
    for worker in workers:
        worker.release.set()
    queue, pool = _pool(workers)
    ran_here = []
    queue.register("set_options", lambda job: ran_here.append(job.payload) or "ok")
    try:
        change = queue.submit("set_options", {"eta": 0.5})
        assert change.wait(10) and change.result == "ok" and ran_here == [{"eta": 0.5}]
        assert not any(change.id in w.ran for w in workers)
        done = [queue.submit("generate", {"checkpoint": name}) for name in ("a", "b")]
        assert all(job.wait(10) and job.state == "done" for job in done)
        pool.request_unload()
        _wait(lambda: all(w.unloads == 1 for w in workers))
        assert all(w.holds() == () for w in workers)
        rows = pool.status()
        assert [row["state"] for row in rows] == ["idle", "idle"] and rows[0]["device"] == "fake"
    finally:
        queue.stop()


def test_without_pool_flags_ray_is_not_even_imported(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from webui.settings.flags import parse_flags; from webui.services import build_services; "
            f"s = build_services(parse_flags(['--data-dir', {str(tmp_path)!r}])); "
            "print(s.queue.pool is None, 'ray' in sys.modules); s.stop()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.split()[-2:] == ["True", "False"], out.stderr[-2000:]


def test_an_unreachable_ray_address_is_a_clear_error_naming_it(tmp_path):
    import pytest

    pytest.importorskip("ray")
    from live_server import free_port
    from webui.jobs.ray_pool import PoolStartError
    from webui.services import build_services
    from webui.settings.flags import parse_flags

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(PoolStartError, match=rf"Could not reach the Ray cluster at {address}: .*refused"):
        build_services(parse_flags(["--data-dir", str(tmp_path), "--ray-address", address]))
    with pytest.raises(PoolStartError, match=r"give host:port"):
        build_services(parse_flags(["--data-dir", str(tmp_path), "--ray-address", "nowhere"]))


def test_when_no_worker_can_start_queued_jobs_fail_and_their_callers_are_told():
    def factory(index):
        raise RuntimeError("no GPU left on the cluster")

    pool = WorkerPool(factory, runner=lambda job, worker: None, size=2, key_of=lambda job: "a", max_restarts=0)
    pool.retry_after = 60.0
    queue = JobQueue(pool=pool)
    queue.register("generate", lambda job: None)
    queue.start()
    try:
        jobs = [queue.submit("generate", {"checkpoint": "a"}) for _ in range(3)]
        assert all(job.wait(15) for job in jobs)  # nobody waits forever
        assert {job.state for job in jobs} == {"failed"}
        assert all("No worker of the pool can run this job: no worker is left" in job.error for job in jobs)
        rows = pool.status()
        assert {row["state"] for row in rows} == {"failed"}
        assert all("no GPU left on the cluster" in row["error"] and "tried again in 60 s" in row["error"]
                   for row in rows)
    finally:
        queue.stop()


def test_the_head_writes_a_workers_image_only_inside_its_output_folders(tmp_path):
    from types import SimpleNamespace

    from webui.outputs.save import name_template
    from webui.pool_head import HeadSink

    outputs = tmp_path / "outputs"
    services = SimpleNamespace(paths=SimpleNamespace(outputs=outputs),
                               options=SimpleNamespace(as_dict=lambda: {"outdir_grids": ""}))
    job = SimpleNamespace(payload=SimpleNamespace(folder_batch=None), control=None, batches=[])
    sink = HeadSink.__new__(HeadSink)
    sink.services, sink.job = services, job
    numbered = {"mode": "numbered", "data": b"\x89PNG fake", "folder": str(outputs / "txt2img-images"),
                "ext": "png", "numbering": "image", "template": name_template(lambda n: f"{n:05d}-42")}
    assert sink.save(numbered) == (True, str(outputs / "txt2img-images" / "00000-42.png"))
    assert sink.save(numbered) == (True, str(outputs / "txt2img-images" / "00001-42.png"))  # numbered on the head
    refusals = [
        {**numbered, "folder": str(tmp_path / "elsewhere")},
        {**numbered, "template": "../../escaped\x0005d\x00"},
        {**numbered, "ext": "py"},
        {"mode": "at", "data": b"x", "path": str(outputs / ".." / "outside.png")},
        {"mode": "at", "data": b"x", "path": str(outputs / "script.py")},
    ]
    for spec in refusals:
        ok, why = sink.save(spec)
        assert not ok and why, spec
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["00000-42.png", "00001-42.png"]
