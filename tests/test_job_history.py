"""The job history: SQLite records written as jobs go (queued, started, each saved image, finished), payloads
stored and rebuilt with their images, unfinished jobs marked failed after a crash, events for followers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.control.units import ControlUnit
from webui.core.request import GenerationRequest, Outpaint
from webui.jobs.queue import CANCELLED, DONE, FAILED, JobQueue
from webui.jobs.records import PayloadError, decode_payload, encode_payload
from webui.jobs.store import STOPPED, JobStore

TIMEOUT = 30
ROOT = Path(__file__).resolve().parents[1]


def gradient(width=48, height=40) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (height, 1))] * 3, axis=-1))


def test_a_request_with_images_and_units_round_trips():
    request = GenerationRequest(mode="img2img", prompt="a fox", seed=7, init_images=[gradient()],
                                mask=gradient().convert("L"), outpaint=Outpaint(left=8),
                                controlnet_units=[ControlUnit(enabled=True, module="canny", image=gradient(32, 32))],
                                context={"not": object()})
    encoded = encode_payload(request)
    assert encoded.complete and len(encoded.images) == 3
    back = decode_payload(encoded.json, encoded.images)
    assert isinstance(back, GenerationRequest) and back.prompt == "a fox" and back.seed == 7
    assert back.outpaint == Outpaint(left=8) and back.context == {}
    assert np.array_equal(np.asarray(back.init_images[0]), np.asarray(gradient()))
    assert back.mask.mode == "L" and back.controlnet_units[0].module == "canny"
    assert np.array_equal(np.asarray(back.controlnet_units[0].image), np.asarray(gradient(32, 32)))


def test_values_that_cannot_be_stored_are_marked_and_foreign_classes_refused():
    encoded = encode_payload(GenerationRequest(script_run_args=[object()]))
    assert not encoded.complete
    assert decode_payload(encoded.json, encoded.images).script_run_args == [None]
    with pytest.raises(PayloadError, match="not one of ours"):
        decode_payload('{"$dataclass": "subprocess.Popen", "fields": {}}', [])
    with pytest.raises(PayloadError, match="not stored"):
        decode_payload('{"$image": 3}', [])


@pytest.fixture
def store(tmp_path):
    made = JobStore(tmp_path / "jobs.sqlite3")
    yield made
    made.close()


def test_queue_records_each_moment_and_images_as_they_are_saved(store):
    queue = JobQueue(store=store)
    seen_during = []

    def runner(job):
        job.control.image_saved("/out/1.png", "first")
        seen_during.append(store.get(job.id).images)  # on record before the job ends
        job.control.image_saved("/out/2.png", "second")
        return "ok"

    queue.register("work", runner)
    queue.start()
    try:
        job = queue.run("work", {"prompt": "a fox", "steps": 3}, timeout=TIMEOUT, source="api")
    finally:
        queue.stop()
    assert job.state == DONE and job.outputs == ["/out/1.png", "/out/2.png"]
    assert seen_during == [["/out/1.png"]]
    record = store.get(job.id)
    assert (record.state, record.kind, record.source) == ("done", "work", "api")
    assert record.summary == {"prompt": "a fox", "steps": 3}
    assert record.created <= record.started <= record.finished
    assert [o["infotext"] for o in record.outputs] == ["first", "second"]
    assert record.result == {"value": "ok"}


def test_failed_and_cancelled_jobs_are_recorded_with_their_reason(store):
    queue = JobQueue(user_errors=(ValueError,), store=store)
    gate = threading.Event()
    queue.register("block", lambda job: gate.wait(TIMEOUT))
    queue.register("fail", lambda job: (_ for _ in ()).throw(ValueError("steps must be positive")))
    queue.start()
    try:
        blocker = queue.submit("block", None)
        waiting = queue.submit("fail", None)
        cancelled = queue.submit("block", None)
        assert queue.cancel(cancelled.id)
        gate.set()
        assert waiting.wait(TIMEOUT) and blocker.wait(TIMEOUT)
    finally:
        queue.stop()
    assert store.get(waiting.id).state == FAILED and store.get(waiting.id).error == "steps must be positive"
    assert store.get(cancelled.id).state == CANCELLED
    assert [r.id for r in store.list()] == [cancelled.id, waiting.id, blocker.id]  # newest first
    assert [r.id for r in store.list(kinds=("fail",))] == [waiting.id]


def test_reused_task_ids_keep_both_records(store):
    queue = JobQueue(store=store)
    queue.register("work", lambda job: job.payload)
    queue.start()
    try:
        first = queue.run("work", "one", task_id="task(fixed)", timeout=TIMEOUT)
        second = queue.run("work", "two", task_id="task(fixed)", timeout=TIMEOUT)
    finally:
        queue.stop()
    assert first.seq != second.seq and store.count() == 2
    assert store.get("task(fixed)").result == {"value": "two"}


def test_old_jobs_are_forgotten_beyond_the_limit(tmp_path):
    small = JobStore(tmp_path / "small.sqlite3", keep=3)
    try:
        for n in range(5):
            seq = small.add(f"job{n}", "work", n)
            small.finished(seq, "done", time.time())
        assert [r.id for r in small.list()] == ["job4", "job3", "job2"]
    finally:
        small.close()


def test_a_crash_mid_batch_keeps_the_images_already_recorded(tmp_path):
    """A child process records a job and one saved image, then dies without finishing it. The next start marks the
    job failed and still lists the image."""
    db = tmp_path / "jobs.sqlite3"
    script = textwrap.dedent(f"""
        import os, time
        from webui.jobs.store import JobStore
        store = JobStore({str(db)!r})
        seq = store.add("task(crash)", "generate", {{"prompt": "a fox"}})
        store.started(seq, time.time())
        store.add_output(seq, "/out/00001.png", "a fox\\nSteps: 3")
        queued = store.add("task(waiting)", "generate", {{"prompt": "a cat"}})
        os._exit(9)  # no close, no commit of anything else: as a crash
    """)
    crashed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert crashed.returncode == 9
    store = JobStore(db)
    try:
        assert store.recover() == 2
        record = store.get("task(crash)")
        assert record.state == FAILED and record.images == ["/out/00001.png"]
        assert record.error == f"{STOPPED} (1 image had been saved)"
        assert store.get("task(waiting)").error == STOPPED
        assert store.recover() == 0
    finally:
        store.close()


def test_events_follow_a_job(store):
    queue = JobQueue(store=store)

    def runner(job):
        job.control.report(sampling_step=1, sampling_steps=2)
        job.control.image_saved("/out/a.png")
        return None

    queue.register("work", runner)
    with queue.events.subscribe() as subscription:
        queue.start()
        try:
            job = queue.run("work", None, timeout=TIMEOUT)
        finally:
            queue.stop()
        events = []
        while (event := subscription.get(0.1)) is not None:
            events.append(event)
    assert [e["type"] for e in events] == ["queued", "started", "progress", "image", "finished"]
    assert all(e["job"] == job.id for e in events)
    assert events[0]["position"] == 1 and events[2]["step"] == 1 and events[2]["steps"] == 2
    assert events[-1] == {"type": "finished", "job": job.id, "kind": "work", "state": "done", "error": None,
                          "images": ["/out/a.png"]}
    assert queue.events.subscriber_count == 0


def test_a_slow_follower_loses_old_progress_events_never_the_others(store):
    queue = JobQueue(store=store)
    with queue.events.subscribe(limit=3) as subscription:
        queue.events.publish({"type": "finished", "job": "a"})
        for n in range(10):
            queue.events.publish({"type": "progress", "job": "x", "step": n})
        got = [subscription.get(0.1) for _ in range(3)]
        assert [e["type"] for e in got] == ["finished", "progress", "progress"]
        assert [e["step"] for e in got[1:]] == [8, 9]
        assert subscription.get(0.05) is None


def test_input_images_are_kept_for_the_newest_jobs_only(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3", keep_inputs=2)
    try:
        seqs = []
        for n in range(3):
            seqs.append(store.add(f"job{n}", "generate", GenerationRequest(mode="img2img", init_images=[gradient()])))
            store.finished(seqs[-1], "done", time.time())
        oldest = store.get_seq(seqs[0])
        assert not oldest.payload_complete  # its init image is gone: it cannot be re-run
        assert store.get_seq(seqs[2]).payload_complete
        assert store.payload(seqs[2]).init_images[0].size == (48, 40)
    finally:
        store.close()


def test_a_job_cannot_queue_and_wait_for_another_from_the_worker(store):
    queue = JobQueue(store=store)
    queue.register("plain", lambda job: "done")
    queue.register("nested", lambda job: queue.submit("plain", None))
    queue.start()
    try:
        job = queue.run("nested", None, timeout=TIMEOUT)
    finally:
        queue.stop()
    assert job.state == FAILED and "would wait for itself" in job.error


def test_a_reused_task_id_is_listed_once(store):
    queue = JobQueue(store=store)
    queue.register("work", lambda job: None)
    queue.start()
    try:
        queue.run("work", None, task_id="task(same)", timeout=TIMEOUT)
        queue.run("work", None, task_id="task(same)", timeout=TIMEOUT)
        assert [job.id for job in queue.recent()] == ["task(same)"]
    finally:
        queue.stop()
