"""A pooled server (`--workers 2`) on a local Ray runtime, two CPU workers and tiny checkpoints, through the real HTTP
API: jobs side by side, checkpoint affinity, models checked by sha256, Interrupt / Skip / cancel, progress and
previews on /queue/events, the real `webuiapi` client, an extension's `process_images` in a worker, and a worker
killed mid-batch. One server for the module (Ray and two workers take seconds to start); the kill comes last.

Worker 0 gets its own checkpoint folder (as another machine would have): alpha and beta as the head's, no `only1`,
and a `diff.safetensors` that is another file than the head's under that name. Worker 1 uses the head's folder.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("ray") is None:  # not imported here: the pool sets up Ray's one-machine mode first
    pytest.skip("Ray is not installed (requirements-ray.lock)", allow_module_level=True)

from conftest import install_model  # noqa: E402
from live_server import serve  # noqa: E402
from tests.extension_repos import make_extension_repo  # noqa: E402
from tests.extension_sources import SELECTABLE  # noqa: E402
from webui.models.tiny import write_single_file  # noqa: E402
from webui.models.tiny_flux import write_flux, write_flux_parts  # noqa: E402
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer  # noqa: E402

# An extension whose selectable script calls A1111's process_images and writes the process it ran in to the infotext.
WHERE = {
    "scripts/where.py": '''
import os

import modules.scripts as scripts
from modules.processing import process_images


class Where(scripts.Script):
    def title(self):
        return "Where it runs"

    def run(self, p):
        p.extra_generation_params["Ran in"] = f"pid {os.getpid()}"
        return process_images(p)
''',
}

SMALL = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 7}


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64.split(",", 1)[-1]))).convert("RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, tiny_models):
    from webui import pool_head

    root = tmp_path_factory.mktemp("pool")
    data, own = root / "data", root / "worker0-checkpoints"
    beta = write_single_file(root / "src" / "beta.safetensors", "sd1", seed=7)
    install_model(data, tiny_models["sd1"], "alpha.safetensors")
    install_model(data, beta, "beta.safetensors")
    install_model(data, tiny_models["sd1"], "only1.safetensors")
    install_model(data, beta, "diff.safetensors")
    own.mkdir()
    for name, source in (("alpha", tiny_models["sd1"]), ("beta", beta), ("diff", tiny_models["sd1"])):
        shutil.copy2(source, own / f"{name}.safetensors")
        shutil.copy2(source.with_suffix(".yaml"), own / f"{name}.yaml")
    # FLUX.1 with Forge's separate parts: the head's ae / clip_l / t5xxl; worker 0's VAE folder holds another
    # ae.safetensors (other weights under the same name)
    write_flux(data / "models" / "Stable-diffusion" / "flux-bfl.safetensors", "BFL")
    shutil.copy2(data / "models" / "Stable-diffusion" / "flux-bfl.safetensors", own / "flux-bfl.safetensors")
    parts = write_flux_parts(root / "flux-parts")
    for folder in ("VAE", "text_encoder"):
        (data / "models" / folder).mkdir(parents=True, exist_ok=True)
    shutil.move(parts["ae"], data / "models" / "VAE" / "ae.safetensors")
    shutil.move(parts["t5xxl_fp16"], data / "models" / "text_encoder" / parts["t5xxl_fp16"].name)
    # a link to a file elsewhere, as people keep big files on another disk
    (data / "models" / "text_encoder" / "clip_l.safetensors").symlink_to(parts["clip_l"])
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    own_vae = root / "worker0-vae"
    own_vae.mkdir()
    shutil.move(write_flux_parts(root / "flux-parts-other", seed=1)["ae"], own_vae / "ae.safetensors")
    extensions = data / "extensions"
    extensions.mkdir(parents=True)
    make_extension_repo(extensions, "sd-webui-twice", SELECTABLE)
    make_extension_repo(extensions, "sd-webui-where", WHERE)
    listening = _network_listeners()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_head, "worker_environment",
                      lambda index: {"WEBUI_WORKER_FLAGS": f"--ckpt-dir {own} --vae-dir {own_vae}"}
                      if index == 0 else {})
        with serve(data, "--workers", "2", "--skip-install", "--worker-timeout", "6") as server:
            pool = server.services.queue.pool
            deadline = time.monotonic() + 240
            while pool.ready() < 2:
                assert time.monotonic() < deadline, f"the workers did not start: {pool.status()}"
                time.sleep(0.2)
            server.opened = _network_listeners() - listening
            yield server


def _network_listeners() -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of this machine listening beyond the loopback interface."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            loopback = address in ("0100007F", "00000000000000000000000001000000") or (
                width == 32 and address.endswith("0100007F") and address.startswith("0000000000000000FFFF0000"))
            if not loopback:
                found.add((address, int(port, 16)))
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models):
    """The same server without a pool (the in-process worker): what the pool's pictures must equal. With one torch
    thread, as each pool worker here has one CPU (float sums in another order may move a pixel by one step)."""
    import torch
    data = tmp_path_factory.mktemp("single")
    install_model(data, tiny_models["sd1"], "alpha.safetensors")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with serve(data, "--nowebui") as server:
            yield server
    finally:
        torch.set_num_threads(threads)


def _txt2img(server, **fields) -> dict:
    response = httpx.post(server.api("txt2img"), json={**SMALL, **fields}, timeout=240)
    assert response.status_code == 200, response.text
    return response.json()


def _queue(server) -> dict:
    return httpx.get(server.url + "/queue", timeout=30).json()


def _job(server, job_id: str) -> dict:
    return httpx.get(f"{server.url}/queue/jobs/{job_id}", timeout=30).json()


def _in_background(server, **fields) -> tuple[threading.Thread, dict]:
    """POST txt2img on a thread; `out` gets the answer's JSON and its `status`."""
    out: dict = {}

    def post():
        response = httpx.post(server.api("txt2img"), json={**SMALL, **fields}, timeout=240)
        out.update(response.json(), status=response.status_code)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, out


def _wait_running(server, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = _job(server, job_id)
        if view.get("state") == "running" and (view.get("progress") or {}).get("step", 0) > 0:
            return view
        time.sleep(0.02)
    raise AssertionError(f"{job_id} did not start sampling: {_job(server, job_id)}")


def test_a_local_pool_opens_nothing_beyond_the_loopback_interface(pooled):
    assert pooled.opened == set()  # Ray's services, the workers and the server: 127.0.0.1 only (no --listen)


def test_two_jobs_run_at_once_on_two_workers(pooled):
    first, a = _in_background(pooled, prompt="a fox", steps=24, force_task_id="task(two-a)",
                              override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    second, b = _in_background(pooled, prompt="a hen", steps=24, force_task_id="task(two-b)",
                               override_settings={"sd_model_checkpoint": "beta.safetensors"})
    seen: set = set()
    deadline = time.monotonic() + 120
    while len(seen) < 2 and time.monotonic() < deadline:
        running = _queue(pooled).get("running_jobs", [])
        if len(running) == 2:
            seen = {job["worker"] for job in running}
        time.sleep(0.02)
    first.join(240), second.join(240)
    assert seen == {0, 1}, "the two jobs never ran at the same time on the two workers"
    assert len(a["images"]) == len(b["images"]) == 1
    workers = {w["worker"]: w for w in _queue(pooled)["workers"]}
    assert {w["state"] for w in workers.values()} == {"idle"} and all(w["pid"] != os.getpid() for w in workers.values())


def test_the_page_generates_on_the_pool_and_shows_the_workers(pooled):
    from gradio_client import Client

    from webui.ui.history_tab import queue_html
    changed = httpx.post(pooled.api("options"), json={"sd_model_checkpoint": "beta.safetensors"}, timeout=60)
    assert changed.status_code == 200  # the default for new jobs: no worker reloads for it
    client = Client(pooled.url, verbose=False)
    try:
        outputs = client.predict("a boat", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 4321, api_name="/txt2img")
    finally:
        client.close()
    progress, gallery, infotext = outputs[:3]
    assert "Done" in progress and "Model: beta" in infotext
    api = _txt2img(pooled, prompt="a boat", seed=4321)
    assert json.loads(api["info"])["infotexts"][0].replace("\n", "<br>") in infotext  # shown as HTML
    assert np.abs(_pixels(Image.open(gallery[0]["image"])) - _pixels(_decode(api["images"][0]))).max() == 0
    page = queue_html(pooled.services)
    assert "Workers (2 of 2 ready)" in page and "worker 0 · idle" in page and "worker 1 · idle" in page
    httpx.post(pooled.api("options"), json={"sd_model_checkpoint": "alpha.safetensors"}, timeout=60)


def test_alternating_checkpoints_cause_no_reloads_after_warm_up(pooled):
    def loads():
        return sum(w["checkpoint_loads"] for w in _queue(pooled)["workers"])

    def alternate(count):
        threads = []
        for i in range(count):
            name = "alpha.safetensors" if i % 2 == 0 else "beta.safetensors"
            threads.append(_in_background(pooled, prompt=f"job {i}", seed=i,
                                          override_settings={"sd_model_checkpoint": name})[0])
            time.sleep(0.05)
        for thread in threads:
            thread.join(240)

    alternate(2)  # warm-up: each worker holds one of the two
    before = loads()
    alternate(8)
    assert loads() == before, _queue(pooled)["workers"]
    held = sorted(w["checkpoint"] for w in _queue(pooled)["workers"])
    assert held == ["alpha.safetensors", "beta.safetensors"]


def test_a_checkpoint_only_one_worker_has_runs_there(pooled):
    made = _txt2img(pooled, prompt="only one has it", force_task_id="task(only1)",
                    override_settings={"sd_model_checkpoint": "only1.safetensors"})
    assert "Model: only1" in json.loads(made["info"])["infotexts"][0]
    assert _job(pooled, "task(only1)")["worker"] == 1


def test_a_different_file_under_the_same_name_is_refused_and_the_job_goes_elsewhere(pooled):
    busy, _ = _in_background(pooled, prompt="keep worker 1 busy", steps=40, force_task_id="task(busy)",
                             override_settings={"sd_model_checkpoint": "only1.safetensors"})
    _wait_running(pooled, "task(busy)")
    made = _txt2img(pooled, prompt="which diff", force_task_id="task(diff)",
                    override_settings={"sd_model_checkpoint": "diff.safetensors"})
    busy.join(240)
    view = _job(pooled, "task(diff)")
    assert view["worker"] == 1
    assert any("worker 0" in r and "different checkpoint" in r and "diff.safetensors" in r
               for r in view["refusals"]), view
    beta_hash = next(m["hash"] for m in httpx.get(pooled.api("sd-models"), timeout=30).json()
                     if m["model_name"] == "beta")
    assert f"Model hash: {beta_hash}" in json.loads(made["info"])["infotexts"][0]  # the head's file, not worker 0's


def test_flux_parts_a_worker_takes_must_be_the_servers_files(pooled):
    """FLUX.1's separate VAE / text encoders: the one a worker takes by itself (the only ae in its models/VAE) and
    the ones chosen in VAE / Text Encoder are checked against the head's files of that name by sha256; worker 0's
    ae.safetensors holds other weights, so it refuses and worker 1 makes the picture."""
    flux = {"steps": 2, "cfg_scale": 1, "override_settings": {"sd_model_checkpoint": "flux-bfl.safetensors"}}
    for task, extra in (("task(flux-auto)", {}),
                        ("task(flux-chosen)", {"forge_additional_modules": ["ae.safetensors", "clip_l",
                                                                            "t5xxl_fp16"]})):
        busy, _ = _in_background(pooled, prompt="keep worker 1 busy", steps=40, force_task_id=f"{task}-busy",
                                 override_settings={"sd_model_checkpoint": "only1.safetensors"})
        _wait_running(pooled, f"{task}-busy")
        fields = {**flux, "override_settings": {**flux["override_settings"], **extra}}
        made = _txt2img(pooled, prompt="a red fox", force_task_id=task, **fields)
        busy.join(240)
        view = _job(pooled, task)
        assert view["worker"] == 1, view
        assert any("worker 0" in r and "different" in r and "ae.safetensors" in r for r in view["refusals"]), view
        assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in json.loads(made["info"])["infotexts"][0]
    # the choice concerns only checkpoints that lack parts: an SD1 job runs on worker 0 all the same
    busy, _ = _in_background(pooled, prompt="keep worker 1 busy", steps=40, force_task_id="task(sd1-busy)",
                             override_settings={"sd_model_checkpoint": "only1.safetensors"})
    _wait_running(pooled, "task(sd1-busy)")
    _txt2img(pooled, prompt="sd1 with flux parts chosen", force_task_id="task(sd1-modules)",
             override_settings={"sd_model_checkpoint": "alpha.safetensors",
                                "forge_additional_modules": ["ae.safetensors", "clip_l", "t5xxl_fp16"]})
    busy.join(240)
    view = _job(pooled, "task(sd1-modules)")
    assert view["worker"] == 0 and not view.get("refusals"), view


def test_the_parts_choice_is_remembered_per_checkpoint_on_a_pooled_server(pooled):
    def options(**values):
        response = httpx.post(pooled.api("options"), json=values, timeout=60)
        assert response.status_code == 200, response.text
        return httpx.get(pooled.api("options"), timeout=30).json()

    before = httpx.get(pooled.api("options"), timeout=30).json()["sd_model_checkpoint"]
    chosen = ["ae.safetensors", "clip_l", "t5xxl_fp16"]
    try:
        options(sd_model_checkpoint="flux-bfl.safetensors", forge_additional_modules=chosen)
        assert options(sd_model_checkpoint="alpha.safetensors", forge_additional_modules=[])[
            "forge_additional_modules"] == []
        back = options(sd_model_checkpoint="flux-bfl.safetensors")
        assert back["forge_additional_modules"] == chosen and back["sd_model_checkpoint"].startswith("flux-bfl")
    finally:
        options(sd_model_checkpoint=before, forge_additional_modules=[])


def test_sd_models_lists_what_the_pool_can_run(pooled):
    names = sorted(m["model_name"] for m in httpx.get(pooled.api("sd-models"), timeout=30).json())
    assert names == ["alpha", "beta", "diff", "flux-bfl", "only1"]


def test_pictures_and_infotexts_equal_the_single_process_server(pooled, reference):
    fields = {"prompt": "a lighthouse", "seed": 1234, "batch_size": 2,
              "override_settings": {"sd_model_checkpoint": "alpha.safetensors"}}
    pool_made, single_made = _txt2img(pooled, **fields), _txt2img(reference, **fields)
    assert len(pool_made["images"]) == len(single_made["images"]) == 2
    for ours, theirs in zip(pool_made["images"], single_made["images"]):
        assert np.abs(_pixels(_decode(ours)) - _pixels(_decode(theirs))).max() == 0
    assert json.loads(pool_made["info"])["infotexts"] == json.loads(single_made["info"])["infotexts"]


def test_webuiapi_client_against_the_pool(pooled, reference):
    import webuiapi
    results = []
    for server in (pooled, reference):
        api = webuiapi.WebUIApi(host=server.host, port=server.port, sampler="Euler", steps=2)
        results.append(api.txt2img(prompt="a kite", seed=99, width=64, height=64, cfg_scale=7,
                                   override_settings={"sd_model_checkpoint": "alpha.safetensors"}))
    pooled_result, single_result = results
    assert pooled_result.info["seed"] == 99 and pooled_result.info["infotexts"] == single_result.info["infotexts"]
    assert np.abs(_pixels(pooled_result.image) - _pixels(single_result.image)).max() == 0


def test_extension_process_images_runs_inside_a_worker(pooled):
    made = _txt2img(pooled, prompt="where", seed=5, script_name="Where it runs", script_args=[],
                    override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    infotext = json.loads(made["info"])["infotexts"][0]
    pids = {w["pid"] for w in _queue(pooled)["workers"]}
    ran_in = int(infotext.split("Ran in: pid ", 1)[1].split(",")[0].split("\n")[0])
    assert ran_in in pids and ran_in != os.getpid()
    twice = _txt2img(pooled, prompt="twice", seed=10, script_name="Run twice", script_args=[100],
                     override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    assert json.loads(twice["info"])["all_seeds"][:2] == [10, 110]


def test_skip_interrupt_and_cancel_reach_the_right_job(pooled, reference):
    fields = {"prompt": "skip me", "seed": 3, "n_iter": 2, "steps": 40,
              "override_settings": {"sd_model_checkpoint": "alpha.safetensors"}}
    skipped, skip_out = _in_background(pooled, force_task_id="task(skip)", **fields)
    _wait_running(pooled, "task(skip)")
    assert httpx.post(pooled.api("skip"), timeout=30).status_code == 200
    skipped.join(240)
    full = _txt2img(reference, **fields)
    assert len(skip_out["images"]) == len(full["images"]) == 2
    first, second = ([_pixels(_decode(made["images"][i])) for made in (skip_out, full)] for i in (0, 1))
    assert np.abs(first[0] - first[1]).max() > 0  # the skipped batch stopped early
    assert np.abs(second[0] - second[1]).max() == 0  # the next batch ran in full

    stopped, stop_out = _in_background(pooled, prompt="stop me", n_iter=3, steps=40, force_task_id="task(stop)",
                                       override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    other, other_out = _in_background(pooled, prompt="the other one", n_iter=2, steps=30,
                                      force_task_id="task(other)",
                                      override_settings={"sd_model_checkpoint": "beta.safetensors"})
    _wait_running(pooled, "task(stop)"), _wait_running(pooled, "task(other)")
    waiting, cancelled = _in_background(pooled, prompt="never runs", force_task_id="task(cancelled)")
    deadline = time.monotonic() + 30
    while _job(pooled, "task(cancelled)").get("state") != "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    jobs_before = sum(w["jobs"] for w in _queue(pooled)["workers"])
    assert httpx.delete(f"{pooled.url}/queue/jobs/task(cancelled)", timeout=30).json()["state"] == "cancelled"
    assert httpx.delete(f"{pooled.url}/queue/jobs/task(stop)", timeout=30).status_code == 200  # its Interrupt
    stopped.join(240), other.join(240), waiting.join(60)
    assert cancelled["status"] == 409 and "cancelled before it started" in cancelled["detail"]
    assert 1 <= len(stop_out["images"]) < 3  # the batch being sampled was kept, the rest never ran
    assert len(other_out["images"]) == 2  # the other worker's job was not touched
    assert sum(w["jobs"] for w in _queue(pooled)["workers"]) == jobs_before  # the cancelled job never reached one


def test_progress_and_previews_arrive_through_queue_events(pooled):
    httpx.post(pooled.api("options"), json={"show_progress_every_n_steps": 2, "live_previews_enable": True},
               timeout=30)
    events: list = []

    def follow():
        with httpx.Client(base_url=pooled.url, timeout=120) as client:
            with client.stream("GET", "/queue/events?job=task(followed)&previews=true") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        if events[-1]["type"] == "finished":
                            return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)
    # long enough for a preview: a worker holds progress up to 0.2 s per answer, and renders previews once someone
    # on the head has asked for one (after the first progress arrived); 80 steps (well under a second here) were
    # sometimes over before that, so the job is three batches of the most steps a request may ask
    _txt2img(pooled, prompt="followed", steps=150, n_iter=3, force_task_id="task(followed)",
             override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    follower.join(60)
    progress = [e for e in events if e["type"] == "progress"]
    previews = [e for e in events if e["type"] == "preview"]
    assert progress and {e.get("worker") for e in progress} <= {0, 1} and max(e["step"] for e in progress) == 150
    assert previews and _decode(previews[0]["image"]).size == (8, 8)  # Approx cheap: one pixel per latent
    assert events[-1]["type"] == "finished" and events[-1]["state"] == "done"


def test_a_worker_killed_mid_batch_keeps_its_images_and_the_job_finishes_elsewhere(pooled, reference):
    import ray
    fields = {"prompt": "a storm", "seed": 77, "n_iter": 3, "steps": 16, "save_images": True,
              "override_settings": {"sd_model_checkpoint": "alpha.safetensors"}}
    killed, out = _in_background(pooled, force_task_id="task(killed)", **fields)
    job = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = pooled.services.queue.get("task(killed)")
        if job is not None and job.outputs and job.batches:
            break
        time.sleep(0.01)
    first_saved = list(job.outputs)
    victim = pooled.services.queue.pool.slots[job.worker]
    ray.kill(victim.worker.actor, no_restart=True)
    killed.join(240)
    view = _job(pooled, "task(killed)")
    assert view["state"] == "done" and view["worker"] != int(victim.index) and view["notes"]
    assert view["images"][:len(first_saved)] == first_saved and len(view["images"]) == len(set(view["images"]))
    assert all(os.path.exists(path) for path in view["images"])
    single = _txt2img(reference, **fields)
    assert len(out["images"]) == len(single["images"]) == 4  # the grid (saved images come with it) and three
    for ours, theirs in zip(out["images"], single["images"]):
        assert np.abs(_pixels(_decode(ours)) - _pixels(_decode(theirs))).max() == 0
    deadline = time.monotonic() + 120
    while pooled.services.queue.pool.ready() < 2:  # the pool replaces the dead worker
        assert time.monotonic() < deadline, _queue(pooled)["workers"]
        time.sleep(0.2)


def test_a_hung_worker_is_replaced_and_its_job_moved(pooled):
    """A worker that stops answering (its process frozen) is dropped after --worker-timeout; the job goes on."""
    import signal
    pool = pooled.services.queue.pool
    busy, out = _in_background(pooled, prompt="a frozen worker", seed=8, n_iter=2, steps=30,
                               force_task_id="task(hung)",
                               override_settings={"sd_model_checkpoint": "alpha.safetensors"})
    view = _wait_running(pooled, "task(hung)")
    frozen = next(w for w in _queue(pooled)["workers"] if w["worker"] == view["worker"])
    os.kill(frozen["pid"], signal.SIGSTOP)
    try:
        busy.join(120)
    finally:
        try:
            os.kill(frozen["pid"], signal.SIGCONT)  # (the pool has killed it by now)
        except ProcessLookupError:
            pass
    finished = _job(pooled, "task(hung)")
    assert out["status"] == 200 and len(out["images"]) == 2
    assert finished["state"] == "done" and finished["worker"] != frozen["worker"]
    assert any("did not answer" in note for note in finished["notes"]), finished
    assert any(w["worker"] == frozen["worker"] and w["state"] in ("starting", "lost", "idle")
               for w in pool.status())


def test_a_worker_answers_a_short_job_in_one_reply_and_a_long_one_a_few_times_a_second(reference):
    """The host's protocol, in this process (no Ray): a short job's whole story (its progress and its result) is one
    answer, and a long job's progress comes within PROGRESS_EVERY of a step rather than after the poll's timeout.
    (For the short job the hold is made long, so that "short" does not depend on how fast this machine runs two
    steps while other tests share its cores.)"""
    from types import SimpleNamespace

    from webui import pool_head, worker_host
    from webui.core.request import GenerationRequest
    from webui.outputs import save as output_save
    from webui.settings.flags import parse_flags

    flags = {key: value for key, value in vars(parse_flags(["--data-dir", str(reference.data_dir)])).items()
             if isinstance(value, (str, int, float, bool, type(None)))}
    host = worker_host.WorkerHost(flags, reference.services.options.as_dict(), "worker t")
    try:
        def item(steps: int, seed: int, n_iter: int = 1) -> dict:
            request = GenerationRequest(prompt="a lighthouse", steps=steps, width=64, height=64, seed=seed,
                                        n_iter=n_iter, sampler_name="Euler", save_images=False)
            job = SimpleNamespace(id=f"task(t{seed})", pinned={}, payload=request, batches=[], notes=[])
            return pool_head.work_item(reference.services, job, request)[0]

        events = host.start(item(1, 1), timeout=60)  # loads the checkpoint
        while not any(kind == "result" for kind, *_ in events):
            events = host.poll(timeout=60)
        with pytest.MonkeyPatch.context() as patch:  # "short": within the hold, however busy the machine's cores
            patch.setattr(worker_host, "PROGRESS_EVERY", 30.0)
            events = host.start(item(2, 2), timeout=30)
        assert [kind for kind, *_ in events] == ["progress", "result"]

        events = host.start(item(150, 3, n_iter=4), timeout=30)
        started = time.monotonic()
        replies = 0
        while not any(kind in ("result", "error") for kind, *_ in events):
            assert {kind for kind, *_ in events} <= {"progress", "batch", "save"}, events
            for event in events:
                if event[0] == "save":  # the batch's grid: the head would write it (see HeadSink.save)
                    host.answer(event[1], (True, "grid.png"))
            replies += 1
            events = host.poll(timeout=30)
        seconds = time.monotonic() - started
        assert replies >= 2 and seconds / replies < worker_host.PROGRESS_EVERY + 0.5
    finally:
        output_save.route_writes(None)
        host.services.stop()
