"""A running job's feedback in the txt2img / img2img tabs, driven without a browser: the progress panel's elapsed time,
which ticks while one step takes long, and its ETA once a step is done; the live preview, shown over the gallery and
never in it (so the send buttons only ever see finished images); the job's warnings, or its error, kept under the
gallery until the next run ends. (tests/test_e2e_run_layout.py shows the same in a browser.)"""
from __future__ import annotations

import re
import threading
import time

import pytest

from webui.jobs.queue import RUNNING, Job
from webui.services import build_services
from webui.settings.flags import parse_flags
from webui.ui import generation, pnginfo
from webui.ui.progress import progress_html, updates_until_done

from conftest import install_model

# prompt, negative, sampler, schedule, steps, width, height, batch count, batch size, CFG, seed
SMALL = ("a red fox", "blurry", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 1234)


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("data")
    install_model(data, tiny_models["sd1"])
    made = build_services(parse_flags(["--data-dir", str(data)]))
    made.hasher.wait_idle(30)
    yield made
    made.stop()


def outputs(services, values=SMALL, state=None) -> list[dict]:
    return [dict(zip(generation.OUTPUTS, out)) for out in generation.generate(services, "txt2img", state, *values)]


def running_job(seconds_ago: float) -> Job:
    job = Job("task(feedback)", "generate", None)
    job.state, job.started = RUNNING, time.time() - seconds_ago
    return job


# --- the progress panel -----------------------------------------------------------------------------------------

def test_panel_shows_the_elapsed_time_then_an_eta():
    job = running_job(75)
    job.control.report(sampling_step=0, sampling_steps=4, started=time.monotonic() - 75)
    panel = progress_html(job)
    assert re.search(r"Running: step 0/4 — 1m 1[56]s elapsed", panel), panel  # 75 s, a second late at most
    assert "ETA" not in panel  # nothing is known before the first step
    job.control.report(sampling_step=1, started=time.monotonic() - 80)
    panel = progress_html(job)
    # a quarter done in 80 s: 240 s to go
    assert re.search(r"step 1/4 — 1m 1[5-7]s elapsed", panel) and re.search(r"25% ETA: 4m 0[0-2]s", panel), panel


class _Queue:
    def position(self, job) -> int:
        return 0


def test_the_panel_changes_every_second_while_one_step_takes_long():
    job = running_job(0)
    job.control.report(sampling_step=0, sampling_steps=4)
    finisher = threading.Timer(3.2, job._done.set)  # the step never ends before the job does
    finisher.start()
    panels = [panel for panel, _ in updates_until_done(_Queue(), job, progress_html(job)) if panel is not None]
    finisher.join()
    elapsed = [re.search(r"step 0/4 — (\d+)s elapsed", panel).group(1) for panel in panels]
    assert len(set(elapsed)) >= 3, elapsed  # 1s, 2s, 3s at least: it ticks with no step done
    assert elapsed == sorted(elapsed, key=int)


# --- live previews and the send buttons ---------------------------------------------------------------------------

def test_a_preview_never_reaches_the_gallery_and_send_takes_the_finished_image(services):
    services.options.update({"show_progress_every_n_steps": 1}, save=False)
    first = outputs(services, ("a lighthouse", "", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 99))[-1]
    gallery, state = first["gallery"], first["state"]
    assert len(gallery) == 1 and "Seed: 99" in gallery[0].info["parameters"]

    stream = generation.generate(services, "txt2img", state, "a windmill", "", "Euler", "Automatic", 150, 64, 64, 1,
                                 1, 7.0, 5)
    seen = []
    for out in stream:
        update = dict(zip(generation.OUTPUTS, out))
        seen.append(update)
        state = update["state"] if isinstance(update["state"], dict) else state
        if isinstance(update["live_preview"], str) and "<img" in update["live_preview"]:
            break
    else:
        pytest.fail("no live preview while the job ran")
    assert all(not isinstance(update["gallery"], list) for update in seen), "the gallery changed during the run"
    # Send to img2img now: the gallery (unchanged on the page) and the state still hold the finished image
    sent = dict(zip((*pnginfo.FIELDS, "image"), pnginfo.send_from_gallery("img2img", state, gallery)))
    assert sent["image"] is gallery[0] and sent["image"].size == (64, 64)
    assert sent["prompt"] == "a lighthouse" and sent["seed"] == 99
    services.queue.cancel(state["job_id"])
    last = dict(zip(generation.OUTPUTS, list(stream)[-1]))
    assert last["live_preview"] == ""  # the preview leaves with the job


# --- warnings and errors under the gallery ------------------------------------------------------------------------

def test_warnings_stay_under_the_gallery_until_the_next_run(services):
    warned = outputs(services, ("a fox <lora:nothere:1>",) + SMALL[1:])[-1]
    assert 'LoRA "nothere" not found' in warned["warnings"] and 'class="job-warning"' in warned["warnings"]
    assert len(warned["gallery"]) == 1  # the job made its image all the same
    clean = outputs(services, state=warned["state"])[-1]
    assert clean["warnings"] == ""  # the next run's own (none) replace them


def test_a_failed_jobs_error_stays_under_the_gallery(services, monkeypatch):
    done = outputs(services)[-1]

    def broken(request, control):
        raise RuntimeError("the VAE ran out of memory")

    monkeypatch.setattr(services.engine, "run", broken)
    failed = outputs(services, state=done["state"])
    last = failed[-1]
    assert 'class="job-error"' in last["warnings"] and "RuntimeError: the VAE ran out of memory" in last["warnings"]
    assert not any(isinstance(update["gallery"], list) for update in failed)  # the last results stay
    assert last["state"]["infotexts"] == done["state"]["infotexts"] and last["state"]["job_id"] is None
