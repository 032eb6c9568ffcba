"""The web UI, driven without a browser: its handlers against real services with a tiny model, the Blocks it
builds, and the whole app served by uvicorn (a page, then a generation through Gradio's own client)."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
from PIL import Image

from webui.jobs.queue import Job, RUNNING
from webui.models.tiny import write_single_file
from webui.outputs.save import read_infotext
from webui.services import build_services
from webui.settings.flags import parse_flags
from webui.ui import checkpoints, generation, pnginfo
from webui.ui.blocks import CSS, JS, build_ui
from webui.ui.progress import progress_html

# prompt, negative, sampler, schedule, steps, width, height, batch count, batch size, CFG, seed
SMALL = ("a red fox", "blurry", "DPM++ 2M", "Automatic", 4, 64, 64, 1, 1, 7.0, 1234)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return write_single_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", "sd1")


def install(data: Path, model: Path, name: str = "tiny.safetensors") -> Path:
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (model, model.with_suffix(".yaml")):
        if source.exists():
            shutil.copy2(source, folder / (Path(name).stem + source.suffix))
    return folder / name


@pytest.fixture(scope="module")
def services(tmp_path_factory, model_file):
    data = tmp_path_factory.mktemp("data")
    install(data, model_file)
    made = build_services(parse_flags(["--data-dir", str(data)]))
    made.hasher.wait_idle(30)
    yield made
    made.stop()


def run(services, mode="txt2img", values=SMALL, state=None) -> list[tuple]:
    return list(generation.generate(services, mode, state, *values))


def visible(update) -> bool:
    return update.visible


# --- the Blocks ---------------------------------------------------------------------------------------------------
def test_build_ui_has_a1111_elem_ids_and_defaults(services):
    blocks = build_ui(services)
    assert isinstance(blocks, gr.Blocks)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    expected = {"setting_sd_model_checkpoint", "refresh_sd_model_checkpoint", "tab_txt2img", "tab_img2img",
                "tab_pnginfo", "img2img_image", "img2img_denoising_strength", "resize_mode", "pnginfo_image",
                "html_info", "pnginfo_generation_info", "pnginfo_send_txt2img", "pnginfo_send_img2img"}
    for tab in ("txt2img", "img2img"):
        expected |= {f"{tab}_{name}" for name in (
            "prompt", "neg_prompt", "generate", "interrupt", "skip", "sampling", "scheduler", "steps", "width",
            "height", "batch_count", "batch_size", "cfg_scale", "seed", "random_seed", "reuse_seed", "gallery",
            "progress")} | {f"html_info_{tab}"}
    assert expected <= set(by_id), expected - set(by_id)
    config_ids = {c["props"].get("elem_id") for c in blocks.get_config_file()["components"]}
    assert expected <= config_ids

    assert by_id["setting_sd_model_checkpoint"].value == "tiny.safetensors [" + \
        services.models.checkpoints()[0].shorthash + "]"
    assert by_id["txt2img_sampling"].value == "DPM++ 2M"
    assert by_id["txt2img_scheduler"].value == "Automatic"
    assert (by_id["txt2img_steps"].value, by_id["txt2img_steps"].minimum, by_id["txt2img_steps"].maximum) == (20, 1, 150)
    assert (by_id["txt2img_width"].value, by_id["txt2img_width"].step, by_id["txt2img_width"].maximum) == (512, 8, 4096)
    assert by_id["txt2img_cfg_scale"].value == 7 and by_id["txt2img_cfg_scale"].step == 0.5
    assert by_id["txt2img_seed"].value == -1
    assert by_id["img2img_denoising_strength"].value == 0.75
    assert by_id["resize_mode"].choices[-1][0] == "Just resize (latent upscale)"
    assert not by_id["txt2img_interrupt"].visible and not by_id["txt2img_skip"].visible
    assert "_generate" in JS and "Escape" in JS and ".progressbar" in CSS


# --- txt2img / img2img --------------------------------------------------------------------------------------------
def test_txt2img_streams_progress_then_the_image_and_its_infotext(services):
    outputs = run(services)
    names = generation.OUTPUTS
    first, last = dict(zip(names, outputs[0])), dict(zip(names, outputs[-1]))
    # while the job is queued or running: a progress bar, Interrupt and Skip instead of Generate
    assert 'class="progressbar"' in first["progress"]
    assert visible(first["interrupt"]) and visible(first["skip"]) and not visible(first["generate"])
    assert first["state"]["job_id"]
    # at the end: the image, its infotext, Generate back
    gallery = last["gallery"]
    assert len(gallery) == 1 and gallery[0].size == (64, 64)
    assert "Steps: 4" in gallery[0].info["parameters"]  # the PNG the gallery serves carries the parameters
    assert "Steps: 4" in last["infotext"] and "Seed: 1234" in last["infotext"] and "a red fox" in last["infotext"]
    assert "Done" in last["progress"]
    assert visible(last["generate"]) and not visible(last["interrupt"]) and not visible(last["skip"])
    state = last["state"]
    assert state["job_id"] is None and state["seeds"] == [1234]
    assert generation.reuse_seed(state) == 1234
    assert generation.random_seed() == -1


def test_batch_gallery_selection_shows_that_images_infotext_and_seed(services):
    values = SMALL[:7] + (2, 2) + SMALL[9:]  # batch count 2, batch size 2
    last = dict(zip(generation.OUTPUTS, run(services, values=values)[-1]))
    assert len(last["gallery"]) == 5  # A1111's batch grid first (2x2 cells), then the four images
    assert last["gallery"][0].size == (128, 128)
    state, html = generation.select_image(last["state"], 3)
    assert "Seed: 1236" in html
    assert generation.reuse_seed(state) == 1236
    state, html = generation.select_image(state, 0)  # the grid: the run's infotext, the first image's seed
    assert "Seed: 1234" in html and generation.reuse_seed(state) == 1234


@pytest.mark.parametrize("values, message", [
    (SMALL[:4] + (0,) + SMALL[5:], "steps must be between 1 and 150"),
    (SMALL[:2] + ("Nope sampler",) + SMALL[3:], "Unknown sampler"),
    (SMALL[:10] + (None,), "seed must be a number"),
])
def test_bad_values_warn_instead_of_failing(services, values, message):
    with pytest.warns(UserWarning, match=message):
        outputs = run(services, values=values)
    assert len(outputs) == 1
    out = dict(zip(generation.OUTPUTS, outputs[0]))
    assert visible(out["generate"]) and not visible(out["interrupt"])
    assert out["state"]["job_id"] is None


def run_img2img(services, image, denoising_strength, resize_mode) -> list[tuple]:
    own = {"img2img_mode": "img2img", "image": image, "denoising_strength": denoising_strength,
           "resize_mode": resize_mode}
    return list(generation.generate(services, "img2img", None, *SMALL, img2img=own))


def test_img2img_needs_an_image_and_generates_from_one(services):
    with pytest.warns(UserWarning, match="No image in the img2img tab"):
        run_img2img(services, None, 0.5, "Just resize")
    init = Image.new("RGB", (80, 48), (200, 40, 40))
    last = dict(zip(generation.OUTPUTS, run_img2img(services, init, 0.5, "Crop and resize")[-1]))
    assert last["gallery"][0].size == (64, 64)
    assert "Denoising strength: 0.5" in last["infotext"]
    with pytest.warns(UserWarning, match="resize mode"):
        run_img2img(services, init, 0.5, "Stretch")


def test_interrupt_stops_this_tabs_job_and_keeps_finished_images(services):
    values = SMALL[:4] + (150, 64, 64, 20) + SMALL[8:]  # long enough to be stopped midway
    stream = generation.generate(services, "txt2img", None, *values)
    state = next(stream)[0]
    job = services.queue.get(state["job_id"])
    deadline = time.monotonic() + 60
    while job.state != RUNNING or job.control.progress.sampling_step < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    generation.interrupt(services, state)
    with pytest.warns(UserWarning, match="Interrupted"):
        rest = list(stream)
    last = dict(zip(generation.OUTPUTS, rest[-1]))
    assert job.result.interrupted and len(job.result.images) < 20
    assert visible(last["generate"]) and not visible(last["interrupt"])


def test_progress_panel_shows_percent_eta_and_queue_place():
    job = Job("task(x)", "generate", None)
    assert "Waiting in queue (2 jobs ahead)" in progress_html(job, 3)
    job.state = RUNNING
    job.control.report(job_no=0, job_count=2, sampling_step=10, sampling_steps=20,
                       started=time.monotonic() - 3.0, textinfo="Batch 1 of 2")
    panel = progress_html(job)
    assert "25% ETA: 9s" in panel and "step 10/20" in panel and "width: 25.0%" in panel


# --- PNG Info ---------------------------------------------------------------------------------------------------
def saved_image(services) -> Image.Image:
    run(services, values=SMALL[:3] + ("Karras", 5, 64, 72) + SMALL[7:10] + (77,))
    newest = max((services.paths.outputs / "txt2img-images").rglob("*-77.png"), key=lambda p: p.stat().st_mtime)
    return Image.open(newest)


def test_pnginfo_reads_a_generated_image_and_sends_it_to_txt2img(services):
    image = saved_image(services)
    html, text = pnginfo.read_parameters(image)
    assert "a red fox" in html and "<td>Steps</td><td>5</td>" in html
    assert text == read_infotext(image)
    sent = pnginfo.send_to("txt2img", text, "Euler", "Uniform")
    values, tabs = dict(zip(pnginfo.FIELDS, sent[:-1])), sent[-1]
    assert values == {"prompt": "a red fox", "negative_prompt": "blurry", "steps": 5, "sampler": "DPM++ 2M",
                      "scheduler": "Karras", "cfg_scale": 7.0, "seed": 77, "width": 64, "height": 72,
                      # no variation seed or Tiling in this infotext: "Extra" and Tiling unticked, the rest kept
                      "subseed_show": False, "subseed": gr.skip(), "subseed_strength": gr.skip(),
                      "seed_resize_from_w": gr.skip(), "seed_resize_from_h": gr.skip(), "tiling": False,
                      "distilled_cfg_scale": gr.skip()}
    assert isinstance(tabs, gr.Tabs) and tabs.selected == "txt2img"

    sent = pnginfo.send_to("img2img", text, "Euler", "Uniform", image)
    assert sent[len(pnginfo.FIELDS)] is image and sent[-1].selected == "img2img"


def test_send_to_splits_old_sampler_names_and_keeps_unknown_ones():
    old = "a cat\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 9, Size: 640x448"
    values = dict(zip(pnginfo.FIELDS, pnginfo.send_to("txt2img", old, "Euler", "Automatic")))
    assert (values["sampler"], values["scheduler"]) == ("DPM++ 2M", "Karras")
    assert (values["steps"], values["cfg_scale"], values["width"], values["height"]) == (30, 6.5, 640, 448)
    plain = dict(zip(pnginfo.FIELDS, pnginfo.send_to("txt2img", old.replace(" Karras", " a").replace(
        "DPM++ 2M a", "Euler a"), "Euler", "Karras")))
    assert (plain["sampler"], plain["scheduler"]) == ("Euler a", "Automatic")
    with pytest.warns(UserWarning, match="Unknown sampler"):
        unknown = dict(zip(pnginfo.FIELDS, pnginfo.send_to("txt2img", old.replace("DPM++ 2M Karras", "Mystery"),
                                                            "Euler", "Automatic")))
    assert isinstance(unknown["sampler"], dict) and isinstance(unknown["scheduler"], dict)  # gr.skip(): kept
    assert unknown["prompt"] == "a cat"
    with pytest.warns(UserWarning, match="No generation parameters"):
        pnginfo.send_to("txt2img", "", "Euler", "Automatic")
    html, text = pnginfo.read_parameters(Image.new("RGB", (8, 8)))
    assert text == "" and "No generation parameters" in html


# --- checkpoint dropdown ------------------------------------------------------------------------------------------
def test_checkpoint_dropdown_loads_refreshes_and_reports_errors(services, model_file, capsys):
    folder = services.paths.checkpoints
    install(folder.parent.parent, model_file, "second.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a model")
    update = checkpoints.refresh_checkpoints(services)
    assert {"second.safetensors", "broken.safetensors"} <= {c[0].split(" [")[0] for c in update.choices}
    services.hasher.wait_idle(30)  # titles gain their short hash once the background hasher has read the file
    titles = {c[0].split(" [")[0]: c[0] for c in checkpoints.refresh_checkpoints(services).choices}
    assert set(titles) == {"tiny.safetensors", "second.safetensors", "broken.safetensors"}

    for name in ("second.safetensors", "tiny.safetensors"):
        update = checkpoints.change_checkpoint(services, titles[name])
        assert update.value == titles[name] == services.models.current_title()
        assert f"Loaded checkpoint {titles[name]}" in capsys.readouterr().out  # gr.Info outside a page prints
    pending = len(services.queue.pending())
    assert checkpoints.change_checkpoint(services, titles["tiny.safetensors"]).value == titles["tiny.safetensors"]
    assert "Loaded" not in capsys.readouterr().out and len(services.queue.pending()) == pending  # nothing to do

    with pytest.warns(UserWarning, match="Unknown checkpoint 'nope.safetensors'"):
        update = checkpoints.change_checkpoint(services, "nope.safetensors")
    assert update.value == titles["tiny.safetensors"]
    with pytest.warns(UserWarning, match="broken.safetensors"):
        update = checkpoints.change_checkpoint(services, titles["broken.safetensors"])
    assert update.value == titles["tiny.safetensors"] == services.models.current_title()  # the previous model stays


# --- the whole app ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_the_page_and_generates_through_gradio(tmp_path, model_file):
    import uvicorn
    from gradio_client import Client

    from app import create_app

    install(tmp_path, model_file)
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path)]))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/"
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "txt2img_generate" in httpx.get(url + "config", timeout=30).text

        client = Client(url, verbose=False)
        try:
            outputs = client.predict(*SMALL, api_name="/txt2img")
        finally:
            client.close()
        progress, gallery, infotext = outputs[:3]
        assert "Done" in progress and "Steps: 4" in infotext and len(gallery) == 1
        image = Image.open(gallery[0]["image"])
        assert image.size == (64, 64) and "Seed: 1234" in read_infotext(image)
    finally:
        server.should_exit = True
        thread.join(15)
        services.stop()
    assert not thread.is_alive()
