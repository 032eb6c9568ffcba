"""The A1111-compatible HTTP API (`/sdapi/v1/*`) as a client sees it: shapes, defaults, errors, progress, auth.

One API app (two tiny SD1 checkpoints in a fresh data dir) serves most tests; generations are 64x64 with a few steps
so each takes a fraction of a second on the CPU.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model
from webui.engine import images as imaging
from webui.models.tiny import write_single_file
from webui.settings.flags import parse_flags

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
SMALL = {"width": 64, "height": 64, "steps": 2}


# --- fixtures and helpers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    """The API app over a data dir with `tiny-sd1` (selected by default: first by name) and `tiny-zeta`
    (another SD1 with different weights, so a different hash)."""
    data = tmp_path_factory.mktemp("api-data")
    sd1 = install_model(data, tiny_models["sd1"])
    other_src = write_single_file(tmp_path_factory.mktemp("other-model") / "tiny-zeta.safetensors", "sd1", seed=7)
    other = install_model(data, other_src)
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        assert services.hasher.wait_idle(30)
        yield SimpleNamespace(client=TestClient(app), services=services, data=data, sd1=sd1, other=other)
    finally:
        services.stop()


@pytest.fixture
def client(api) -> TestClient:
    return api.client


def post_ok(client: TestClient, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def info_of(payload: dict) -> dict:
    assert isinstance(payload["info"], str)
    return json.loads(payload["info"])


def decode_png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    assert image.format == "PNG"
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def gradient_image(width: int = 96, height: int = 80) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    y = np.linspace(0, 255, height)[:, None] * np.ones((1, width))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8), "RGB")


def current_model_line(infotext: str) -> str:
    return re.search(r"Model: ([^,]+)", infotext).group(1)


def files_under(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- txt2img -------------------------------------------------------------------------------------------------------
def test_txt2img_response_shape_and_info(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "prompt": "a red cube", "seed": 1234, "batch_size": 2})
    assert set(payload) >= {"images", "parameters", "info"}
    assert payload["parameters"]["prompt"] == "a red cube" and payload["parameters"]["batch_size"] == 2
    info = info_of(payload)
    assert info["seed"] == 1234
    assert info["all_seeds"] == [1234, 1235]
    assert info["all_prompts"] == ["a red cube", "a red cube"]
    assert info["sd_model_name"] == "tiny-sd1"
    assert re.fullmatch(r"[0-9a-f]{10}", info["sd_model_hash"])
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])  # A1111's %Y%m%d%H%M%S
    assert len(info["infotexts"]) == 2 and len(payload["images"]) == 2
    for index, (data, infotext) in enumerate(zip(payload["images"], info["infotexts"])):
        image = decode_png(data)
        assert image.size == (64, 64)
        assert image.info["parameters"] == infotext
        assert infotext.startswith("a red cube\n")
        assert f"Seed: {1234 + index}," in infotext
        assert f"Model hash: {info['sd_model_hash']}, Model: tiny-sd1" in infotext


def test_txt2img_api_defaults_are_50_steps_euler(client):
    payload = post_ok(client, TXT2IMG, {"width": 64, "height": 64})
    infotext = info_of(payload)["infotexts"][0]
    assert "Steps: 50, Sampler: Euler," in infotext
    assert "Size: 64x64" in infotext


def test_sampler_index_is_accepted(client):
    infotext = info_of(post_ok(client, TXT2IMG, {**SMALL, "sampler_index": "DDIM"}))["infotexts"][0]
    assert "Sampler: DDIM," in infotext


def test_scheduler_is_case_insensitive(client):
    infotext = info_of(post_ok(client, TXT2IMG, {**SMALL, "sampler_name": "Euler", "scheduler": "karras"}))
    assert "Sampler: Euler, Schedule type: Karras," in infotext["infotexts"][0]


def test_old_combined_sampler_name_is_split(client):
    infotext = info_of(post_ok(client, TXT2IMG, {**SMALL, "sampler_name": "DPM++ 2M Karras"}))["infotexts"][0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in infotext


def test_unknown_fields_are_ignored(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "no_such_field": 1, "hr_whatever": {"a": [1, 2]}, "s_churn": 0.5})
    assert len(payload["images"]) == 1


def test_send_images_false_returns_no_images(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "send_images": False})
    assert payload["images"] == []
    assert len(info_of(payload)["infotexts"]) == 1


def test_save_images_only_when_asked(api, client):
    outputs = api.data / "outputs" / "txt2img-images"
    before = files_under(outputs)
    assert before == []  # no other test in this module saves
    post_ok(client, TXT2IMG, {**SMALL, "seed": 77})  # API default: save_images false
    assert files_under(outputs) == []

    day_before = datetime.now().strftime("%Y-%m-%d")
    post_ok(client, TXT2IMG, {**SMALL, "seed": 4242, "save_images": True})
    day_after = datetime.now().strftime("%Y-%m-%d")
    saved = files_under(outputs)
    assert len(saved) == 1
    path = saved[0]
    assert path.name == "00000-4242.png"
    assert path.parent.parent == outputs and path.parent.name in (day_before, day_after)
    with Image.open(path) as image:
        assert "Seed: 4242," in image.info["parameters"]


def test_width_is_rounded_down_to_multiple_of_8(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "width": 70, "height": 64})
    info = info_of(payload)
    assert decode_png(payload["images"][0]).size == (64, 64)
    assert "Size: 64x64" in info["infotexts"][0]
    assert info["width"] == 64
    assert info["warnings"] == ["Width 70 was rounded down to 64 (image sides are multiples of 8)"]


def test_size_limit_is_the_ui_sliders_and_beyond_it_is_a_422(client):
    """One limit for the page and the API: the Width slider's maximum is what the API takes, and more is refused
    with a message naming the field, never silently clamped."""
    response = client.post(TXT2IMG, json={**SMALL, "width": 4104, "height": 64})
    assert response.status_code == 422
    assert "width must be between 64 and 4096, got 4104" in response.text
    response = client.post(TXT2IMG, json={**SMALL, "width": 7, "height": 64})
    assert response.status_code == 422 and "got 7" in response.text


def test_same_seed_gives_identical_pixels(client):
    body = {**SMALL, "prompt": "same", "seed": 987654}
    first = pixels(decode_png(post_ok(client, TXT2IMG, body)["images"][0]))
    second = pixels(decode_png(post_ok(client, TXT2IMG, body)["images"][0]))
    assert np.array_equal(first, second)
    other = pixels(decode_png(post_ok(client, TXT2IMG, {**body, "seed": 987655})["images"][0]))
    assert not np.array_equal(first, other)


def test_override_settings_apply_to_one_request_only(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2}})
    assert "Clip skip: 2" in info_of(payload)["infotexts"][0]
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
    plain = info_of(post_ok(client, TXT2IMG, SMALL))["infotexts"][0]
    assert "Clip skip" not in plain


def test_override_settings_invalid_value_gives_422(client):
    response = client.post(TXT2IMG, json={**SMALL, "override_settings": {"CLIP_stop_at_last_layers": "abc"}})
    assert response.status_code == 422, response.text
    assert "CLIP_stop_at_last_layers" in response.json()["detail"]


def test_force_task_id_is_accepted(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "force_task_id": "task(my-own-id)"})
    assert len(payload["images"]) == 1
    # the id is free again once that job has finished
    assert len(post_ok(client, TXT2IMG, {**SMALL, "force_task_id": "task(my-own-id)"})["images"]) == 1


# --- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("steps", 151), ("cfg_scale", 0.5), ("cfg_scale", 31), ("batch_size", 0), ("steps", "abc"),
])
def test_out_of_range_values_give_422_naming_the_field(client, field, value):
    response = client.post(TXT2IMG, json={**SMALL, field: value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body)
    assert field in body["detail"]


def test_unknown_sampler_gives_400_listing_samplers(client):
    response = client.post(TXT2IMG, json={**SMALL, "sampler_name": "Euler Z"})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "Euler Z" in detail
    for name in ("Euler a", "DPM++ 2M", "DDIM", "UniPC"):
        assert name in detail


def test_img2img_input_errors_and_server_keeps_running(client):
    response = client.post(IMG2IMG, json=SMALL)
    assert response.status_code == 422, response.text
    assert "init image" in response.json()["detail"]

    response = client.post(IMG2IMG, json={**SMALL, "init_images": ["@@@ not base64 @@@"]})
    assert response.status_code == 422, response.text
    assert "init_images" in response.json()["detail"]

    not_an_image = base64.b64encode(b"these bytes are no picture at all").decode("ascii")
    response = client.post(IMG2IMG, json={**SMALL, "init_images": [not_an_image]})
    assert response.status_code == 422, response.text
    assert "init_images" in response.json()["detail"]

    # after all the bad requests above (and in the tests before), a good one still works
    assert len(post_ok(client, TXT2IMG, SMALL)["images"]) == 1


# --- img2img -------------------------------------------------------------------------------------------------------
def test_img2img_with_init_image(client):
    body = {"width": 64, "height": 64, "steps": 4, "denoising_strength": 0.5,
            "init_images": [encode_png(gradient_image())]}
    payload = post_ok(client, IMG2IMG, body)
    assert len(payload["images"]) == 1
    assert decode_png(payload["images"][0]).size == (64, 64)
    infotext = info_of(payload)["infotexts"][0]
    assert "Denoising strength: 0.5" in infotext
    assert "init_images" not in payload["parameters"]


def test_img2img_from_a_generated_image_other_size(client):
    generated = post_ok(client, TXT2IMG, {**SMALL, "seed": 5})["images"][0]
    payload = post_ok(client, IMG2IMG, {"width": 96, "height": 64, "steps": 2, "init_images": [generated]})
    assert decode_png(payload["images"][0]).size == (96, 64)


def test_img2img_accepts_data_url_prefix(client):
    data = "data:image/png;base64," + encode_png(gradient_image())
    payload = post_ok(client, IMG2IMG, {**SMALL, "init_images": [data]})
    assert decode_png(payload["images"][0]).size == (64, 64)


def test_img2img_denoising_zero_stays_near_the_init_image(api, client):
    """Denoising 0 runs A1111's single step (t_enc + 1 = 1) at the schedule's smallest sigma: the result stays
    near the init image's VAE round trip (made here with the loaded model's own VAE; the tiny test VAE has random
    weights, so the round trip itself is far from the identity), nearer than a 0.75 denoise."""
    init = gradient_image()
    body = {"width": 64, "height": 64, "steps": 4, "seed": 31, "denoising_strength": 0,
            "init_images": [encode_png(init)]}
    payload = post_ok(client, IMG2IMG, body)
    result = pixels(decode_png(payload["images"][0]))
    assert "Denoising strength: 0," in info_of(payload)["infotexts"][0]
    strong = pixels(decode_png(post_ok(client, IMG2IMG, {**body, "denoising_strength": 0.75})["images"][0]))

    _, model = api.services.models.current
    fitted = imaging.fit(init, 64, 64, 0)
    with torch.no_grad():
        vae = model.vae
        latent = vae.encode(imaging.to_tensor([fitted]).to(vae.dtype)).latent_dist.mode()
        trip = pixels(imaging.to_pil(vae.decode(latent, return_dict=False)[0])[0])
    assert np.abs(result - trip).mean() < np.abs(strong - trip).mean()


# --- models and options --------------------------------------------------------------------------------------------
def test_sd_models_listing(api, client):
    models = client.get("/sdapi/v1/sd-models").json()
    by_name = {m["model_name"]: m for m in models}
    assert set(by_name) == {"tiny-sd1", "tiny-zeta"}
    for path in (api.sd1, api.other):
        entry = by_name[path.stem]
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["sha256"] == sha256
        assert entry["hash"] == sha256[:10]
        assert entry["title"] == f"{path.name} [{sha256[:10]}]"
        assert re.fullmatch(r".+\.safetensors \[[0-9a-f]{10}\]", entry["title"])
        assert entry["filename"] == str(path)
        assert entry["config"] == str(path.with_suffix(".yaml"))
    assert by_name["tiny-sd1"]["hash"] != by_name["tiny-zeta"]["hash"]


def test_options_checkpoint_switch(api, client):
    titles = {m["model_name"]: m["title"] for m in client.get("/sdapi/v1/sd-models").json()}
    post_ok(client, TXT2IMG, SMALL)
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-sd1"]
    try:
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-zeta"})
        assert response.status_code == 200, response.text
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-zeta"]
        infotext = info_of(post_ok(client, TXT2IMG, SMALL))["infotexts"][0]
        assert current_model_line(infotext) == "tiny-zeta"
        assert f"Model hash: {titles['tiny-zeta'][-11:-1]}" in infotext

        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model.safetensors"})
        assert response.status_code == 400, response.text
        assert "no-such-model" in response.json()["detail"]
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-zeta"]
        assert current_model_line(info_of(post_ok(client, TXT2IMG, SMALL))["infotexts"][0]) == "tiny-zeta"
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles["tiny-sd1"]})
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-sd1"]


def test_options_invalid_value_gives_422(client):
    before = client.get("/sdapi/v1/options").json()["sd_checkpoints_limit"]
    response = client.post("/sdapi/v1/options", json={"sd_checkpoints_limit": "abc"})
    assert response.status_code == 422, response.text
    assert "sd_checkpoints_limit" in response.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["sd_checkpoints_limit"] == before


def test_options_non_integer_for_int_option_gives_422(tmp_path):
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui"]))
    try:
        client = TestClient(app)
        response = client.post("/sdapi/v1/options", json={"sd_checkpoints_limit": 2.5})
        assert response.status_code == 422, response.text
        assert "sd_checkpoints_limit" in response.json()["detail"]
        assert client.get("/sdapi/v1/options").json()["sd_checkpoints_limit"] == 1
    finally:
        services.stop()


# --- listings ------------------------------------------------------------------------------------------------------
def test_samplers_listing(client):
    samplers = client.get("/sdapi/v1/samplers").json()
    names = {s["name"] for s in samplers}
    assert names >= {"Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE",
                     "DPM++ 2S a", "DPM++ 3M SDE", "DDIM", "PLMS", "UniPC", "LCM"}
    for sampler in samplers:
        assert set(sampler) >= {"name", "aliases", "options"}
        assert isinstance(sampler["aliases"], list) and isinstance(sampler["options"], dict)


def test_schedulers_listing(client):
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert {s["name"] for s in schedulers} >= {"automatic", "uniform", "karras", "exponential", "sgm_uniform"}
    for schedule in schedulers:
        assert set(schedule) >= {"name", "label"}


# --- progress and interrupt ----------------------------------------------------------------------------------------
def test_progress_and_interrupt(client):
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job"] == ""
    assert set(idle) == {"progress", "eta_relative", "state", "current_image", "textinfo"}  # A1111's keys only

    outcome: dict = {}

    def long_generation():
        outcome["response"] = client.post(TXT2IMG, json={"width": 64, "height": 64, "steps": 150, "n_iter": 3})

    worker = threading.Thread(target=long_generation, daemon=True)
    worker.start()
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.is_alive():
        progress = client.get("/sdapi/v1/progress").json()
        if progress["state"]["sampling_step"] > 0:
            seen = progress
            break
        time.sleep(0.02)
    assert seen is not None, f"no sampling progress seen: {outcome.get('response') and outcome['response'].text}"
    assert 0 < seen["progress"] < 1
    assert seen["eta_relative"] >= 0
    assert seen["state"]["job"] != ""
    assert seen["state"]["sampling_steps"] == 150
    assert seen["state"]["job_count"] == 3

    assert client.post("/sdapi/v1/interrupt").status_code == 200
    worker.join(60)
    assert not worker.is_alive(), "the interrupted txt2img call did not return"
    response = outcome["response"]
    assert response.status_code == 200, response.text
    payload = response.json()
    info = info_of(payload)
    assert len(payload["images"]) < 3
    assert len(payload["images"]) == len(info["infotexts"])
    assert any("Interrupted" in warning for warning in info["warnings"])

    after = client.get("/sdapi/v1/progress").json()
    assert after["progress"] == 0 and after["state"]["job"] == ""
    # the interrupt does not stick: the next request runs in full
    assert len(post_ok(client, TXT2IMG, {**SMALL, "n_iter": 2})["images"]) == 2


# --- png-info ------------------------------------------------------------------------------------------------------
def test_png_info_of_a_generated_image(client):
    payload = post_ok(client, TXT2IMG, {**SMALL, "prompt": "info please", "seed": 555, "width": 72})
    infotext = info_of(payload)["infotexts"][0]
    response = post_ok(client, "/sdapi/v1/png-info", {"image": payload["images"][0]})
    assert response["info"] == infotext
    params = response["parameters"]
    assert params["Prompt"] == "info please"
    assert str(params["Steps"]) == "2"
    assert params["Sampler"] == "Euler"
    assert str(params["Seed"]) == "555"
    assert str(params["Size-1"]) == "72" and str(params["Size-2"]) == "64"
    assert response["items"]["parameters"] == infotext


# --- auth and docs -------------------------------------------------------------------------------------------------
def test_api_auth(tmp_path):
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "user:pass"]))
    try:
        client = TestClient(app)
        assert client.get("/sdapi/v1/samplers").status_code == 401
        assert client.get("/sdapi/v1/samplers", auth=("user", "wrong")).status_code == 401
        assert client.get("/sdapi/v1/samplers", auth=("someone", "pass")).status_code == 401
        response = client.get("/sdapi/v1/samplers", auth=("user", "pass"))
        assert response.status_code == 200
        assert any(s["name"] == "Euler" for s in response.json())
    finally:
        services.stop()


def test_docs_and_openapi(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    schema = client.get("/openapi.json").json()
    assert "/sdapi/v1/txt2img" in schema["paths"]
    assert "/sdapi/v1/img2img" in schema["paths"]
