"""The queue over HTTP: /queue with positions, cancelling, the SSE event stream with live previews, /progress's
current_image, the history (kept across a restart, re-run), settings kept or restored after override_settings,
the infotext field, A1111's server routes, the offline /docs page."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tests.conftest import install_model
from webui.settings.flags import parse_flags

TXT2IMG = "/sdapi/v1/txt2img"
SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
TIMEOUT = 60


class WorkerGate:
    """Holds the queue's worker in a job of its own until released, so that jobs behind it stay queued."""

    def __init__(self, services):
        self.entered, self.release = threading.Event(), threading.Event()
        services.queue.register("test_gate", self._run)
        self.job = services.queue.submit("test_gate", None)
        assert self.entered.wait(TIMEOUT)

    def _run(self, job):
        self.entered.set()
        assert self.release.wait(TIMEOUT)

    def open(self):
        self.release.set()
        assert self.job.wait(TIMEOUT)


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("queue-api")
    install_model(data, tiny_models["sd1"])
    flags = ["--data-dir", str(data), "--nowebui", "--api-server-stop"]
    app, services = create_app(parse_flags(flags))
    stops = []
    services.stopper = lambda s, code: stops.append(code)
    try:
        assert services.hasher.wait_idle(30)
        yield SimpleNamespace(client=TestClient(app), services=services, data=data, flags=flags, stops=stops)
    finally:
        services.stop()


def post_ok(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def in_thread(call) -> tuple[threading.Thread, dict]:
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("value", call()), daemon=True)
    thread.start()
    return thread, outcome


def wait_until(condition, what: str):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_queue_lists_positions_and_cancels_a_queued_request(api):
    client, services = api.client, api.services
    gate = WorkerGate(services)
    try:
        first, first_out = in_thread(lambda: client.post(TXT2IMG, json={**SMALL, "prompt": "first",
                                                                         "force_task_id": "task(first)"}))
        wait_until(lambda: len(services.queue.pending()) == 1, "the first request to be queued")
        second, second_out = in_thread(lambda: client.post(TXT2IMG, json={**SMALL, "prompt": "second",
                                                                           "force_task_id": "task(second)"}))
        wait_until(lambda: len(services.queue.pending()) == 2, "the second request to be queued")
        listing = client.get("/queue").json()
        assert listing["running"]["id"] == gate.job.id
        assert [(j["id"], j["position"], j.get("prompt")) for j in listing["queued"]] == \
            [("task(first)", 1, "first"), ("task(second)", 2, "second")]
        assert client.get("/queue/jobs/task(second)").json()["position"] == 2

        cancelled = client.delete("/queue/jobs/task(first)")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        first.join(TIMEOUT)
        answer = first_out["value"]
        assert answer.status_code == 409 and "cancelled" in answer.json()["detail"]
        assert client.delete("/queue/jobs/task(nothing)").status_code == 404
    finally:
        gate.open()
    second.join(TIMEOUT)
    assert second_out["value"].status_code == 200
    assert client.delete("/queue/jobs/task(second)").status_code == 409  # finished: nothing to cancel
    history = client.get("/queue/history?kind=generate&limit=5").json()["jobs"]
    assert [(j["id"], j["state"]) for j in history[:2]] == [("task(second)", "done"), ("task(first)", "cancelled")]


def test_event_stream_follows_one_job_with_previews(api):
    client, services = api.client, api.services
    post_ok(client, "/sdapi/v1/options", {"show_progress_every_n_steps": 2})
    try:
        gate = WorkerGate(services)  # the job exists (queued) before the stream starts reading
        thread, outcome = in_thread(lambda: client.post(TXT2IMG, json={**SMALL, "steps": 6, "seed": 11,
                                                                        "force_task_id": "task(followed)"}))
        wait_until(lambda: services.queue.get("task(followed)") is not None, "the request to be queued")
        events = []
        with client.stream("GET", "/queue/events?job=task(followed)&previews=true") as stream:
            threading.Timer(0.3, gate.open).start()
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["type"] == kind
                    events.append(event)
    finally:
        post_ok(client, "/sdapi/v1/options", {"show_progress_every_n_steps": 10})
    thread.join(TIMEOUT)
    assert outcome["value"].status_code == 200
    types = [e["type"] for e in events]
    assert types[0] == "state" and events[0]["state"] == "queued" and events[0]["position"] == 1
    assert types[-1] == "finished" and events[-1]["state"] == "done"
    assert "started" in types and types.count("progress") >= 6
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and max(steps) == 6
    previews = [e for e in events if e["type"] == "preview"]
    assert 2 <= len(previews) <= 4, types  # one every 2 of 6 steps
    assert decode(previews[0]["image"]).size == (8, 8)  # the latents' size: 1/8 of 64x64
    assert all(e["job"] == "task(followed)" for e in events)


def test_progress_current_image_is_a_preview_unless_skipped(api):
    client, services = api.client, api.services
    thread, _ = in_thread(lambda: client.post(TXT2IMG, json={**SMALL, "steps": 150, "n_iter": 2}))
    try:
        wait_until(lambda: client.get("/sdapi/v1/progress?skip_current_image=true").json()["state"]
                   ["sampling_step"] > 0, "sampling to start")
        skipped = client.get("/sdapi/v1/progress?skip_current_image=true").json()
        shown = client.get("/sdapi/v1/progress").json()
        assert skipped["current_image"] is None
        assert shown["current_image"] and decode(shown["current_image"]).size == (8, 8)
    finally:
        client.post("/sdapi/v1/interrupt")
        thread.join(TIMEOUT)


def test_settings_overridden_for_one_job_are_restored_unless_asked_to_keep(api):
    client, services = api.client, api.services
    assert services.options.get("CLIP_stop_at_last_layers") == 1
    restored = post_ok(client, TXT2IMG, {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2}})
    assert "Clip skip: 2" in json.loads(restored["info"])["infotexts"][0]
    assert services.options.get("CLIP_stop_at_last_layers") == 1
    kept = post_ok(client, TXT2IMG, {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2},
                                     "override_settings_restore_afterwards": False})
    assert "Clip skip: 2" in json.loads(kept["info"])["infotexts"][0]
    try:
        assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    finally:
        post_ok(client, "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 1})


def test_infotext_fills_the_fields_the_request_left_out(api):
    text = "a lighthouse\nNegative prompt: fog\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: 4242, Size: 64x72"
    info = json.loads(post_ok(api.client, TXT2IMG, {"infotext": text, "cfg_scale": 6})["info"])
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["sampler_name"]) == \
        ("a lighthouse", "fog", 3, "Euler a")
    assert (info["seed"], info["width"], info["height"], info["cfg_scale"]) == (4242, 64, 72, 6)
    hires = "a fox\nSteps: 2, Sampler: Euler, Seed: 5, Size: 64x64, Model hash: 0000000000, Clip skip: 2, " \
        "RNG: CPU, ENSD: 31337, Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: Latent (nearest)"
    answer = post_ok(api.client, TXT2IMG, {"infotext": hires})
    info = json.loads(answer["info"])
    assert decode(answer["images"][0]).size == (96, 96)  # hires fix turned on by its keys
    assert "Hires upscale: 1.5, Hires upscaler: Latent (nearest)" in info["infotexts"][0]
    assert "Clip skip: 2" in info["infotexts"][0] and info["denoising_strength"] == 0.5
    assert api.services.options.get("CLIP_stop_at_last_layers") == 1  # an override, for that request only
    bad = api.client.post(TXT2IMG, json={"infotext": "x\nSteps: many, Sampler: Euler, Seed: 1"})
    assert bad.status_code == 422 and "Steps" in bad.json()["detail"]


def test_history_is_kept_across_a_restart_and_a_job_can_be_rerun(api, tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"])
    flags = parse_flags(["--data-dir", str(tmp_path), "--nowebui"])
    app, services = create_app(flags)
    try:
        first = post_ok(TestClient(app), TXT2IMG, {**SMALL, "prompt": "kept", "save_images": True})
    finally:
        services.stop()
    app, services = create_app(flags)
    try:
        client = TestClient(app)
        jobs = client.get("/queue/history").json()["jobs"]
        record = next(j for j in jobs if j["kind"] == "generate")
        assert record["summary"]["prompt"] == "kept" and record["state"] == "done" and len(record["images"]) == 1
        original = Image.open(record["images"][0])
        assert np.array_equal(np.asarray(original.convert("RGB")), np.asarray(decode(first["images"][0]).convert("RGB")))
        queued = client.post(f"/queue/history/{record['seq']}/rerun")
        assert queued.status_code == 200, queued.text
        job = services.queue.get(queued.json()["id"])
        assert job.wait(TIMEOUT) and job.state == "done"
        assert job.result.seeds == json.loads(first["info"])["all_seeds"]
        # the same checkpoint file, request and batch size in the same process: bit-identical
        assert np.array_equal(np.asarray(job.result.images[0].convert("RGB")), np.asarray(original.convert("RGB")))
        assert len(client.get(f"/queue/jobs/{job.id}").json()["images"]) == 1  # a re-run saves its images
        missing = client.post("/queue/history/99999/rerun")
        assert missing.status_code == 404 and missing.json()["detail"] == "No job #99999 in the history"
        with client.stream("GET", f"/queue/events?job={jobs[-1]['id']}") as stream:  # a job only the history knows
            services.queue._jobs.clear()
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert len(lines) == 1 and json.loads(lines[0][6:])["state"] in ("done", "failed")
    finally:
        services.stop()


def test_server_routes(api):
    client = api.client
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["data_dir"] == str(api.data) and flags["nowebui"] is True
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory
    assert client.get("/sdapi/v1/hypernetworks").json() == []
    assert client.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert api.services.models.current is None
    assert client.post("/sdapi/v1/reload-checkpoint").status_code == 200
    assert api.services.models.current_title().startswith("tiny-sd1")
    assert client.post("/sdapi/v1/server-stop").status_code == 200 and api.stops == [0]


def test_server_stop_needs_its_flag_and_logins_are_masked(tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "ann:pw"]))
    try:
        client = TestClient(app)
        auth = ("ann", "pw")
        assert client.post("/sdapi/v1/server-stop", auth=auth).status_code == 404
        assert client.post("/sdapi/v1/server-restart", auth=auth).status_code == 404
        assert client.get("/sdapi/v1/cmd-flags", auth=auth).json()["api_auth"] == "***"
        assert client.get("/queue").status_code == 401 and client.get("/queue", auth=auth).status_code == 200
    finally:
        services.stop()


def test_oversized_image_is_refused_before_decoding(api):
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, format="PNG")
    answer = api.client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()})
    assert answer.status_code == 422 and "too large: 9000x8000" in answer.json()["detail"]


def test_docs_page_works_offline(api):
    page = api.client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text
    assert api.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = api.client.get("/openapi.json").json()
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/queue", "/queue/events"} <= set(schema["paths"])
