"""The server driven by `webuiapi`, the A1111 client from PyPI, over a real socket: generation, inpainting, PNG
info, options, checkpoints, progress, interrupt and the model listings, exactly as scripts written for A1111 call
them. A failure here means our server is not A1111-compatible where a real client looks.

One server (--nowebui) over a data dir with two tiny SD1 checkpoints (`alpha-tiny`, selected first, and `beta-tiny`
with other weights) and a tiny kohya LoRA; images are 64x64 with 3 steps.
"""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import webuiapi
from PIL import Image

from live_server import install_alpha_and_beta, serve, wait_for_sampling
from tests.lora_files import kohya_lora
from webui.models.tiny import build_modules

SIZE = 64
SMALL = {"width": SIZE, "height": SIZE, "steps": 3}
BLUR_REACH = 11  # the default mask blur (4) is a Gaussian of sigma 4: it spreads 10 pixels


# --- the server and the client -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("webuiapi-data")
    install_alpha_and_beta(data, tiny_models, tmp_path_factory)
    _, _, unet, _, encoders = build_modules("sd1")
    kohya_lora(unet, encoders, "sd1", output_name="tiny-ink").save(data / "models" / "Lora" / "tiny-ink.safetensors")
    with serve(data, "--nowebui") as live:
        yield live


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host=server.host, port=server.port, sampler="Euler", steps=3)


def titles(api: webuiapi.WebUIApi) -> dict[str, str]:
    """{model_name: title} of the listed checkpoints."""
    return {model["model_name"]: model["title"] for model in api.get_sd_models()}


def gradient() -> Image.Image:
    x = np.linspace(0, 255, SIZE)[None, :] * np.ones((SIZE, 1))
    y = np.linspace(0, 255, SIZE)[:, None] * np.ones((1, SIZE))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8), "RGB")


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (SIZE // 2, 0, SIZE, SIZE))
    return mask


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# --- generation ----------------------------------------------------------------------------------------------------
def test_txt2img_gives_images_seeds_and_infotexts(api):
    result = api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=4321, batch_size=2, **SMALL)
    assert len(result.images) == 2
    assert all(image.size == (SIZE, SIZE) for image in result.images)
    info = result.info
    assert isinstance(info, dict), f"info is not a JSON object: {info!r}"
    assert info["seed"] == 4321 and info["all_seeds"] == [4321, 4322]
    assert info["all_prompts"] == ["a red fox", "a red fox"]
    assert info["negative_prompt"] == "blurry" and info["steps"] == 3 and info["sampler_name"] == "Euler"
    assert len(info["infotexts"]) == 2
    for seed, infotext, image in zip((4321, 4322), info["infotexts"], result.images):
        assert infotext.startswith("a red fox\nNegative prompt: blurry\n")
        assert f"Seed: {seed}," in infotext and "Steps: 3," in infotext and "Sampler: Euler," in infotext
        assert f"Size: {SIZE}x{SIZE}" in infotext and "Model: alpha-tiny" in infotext
        assert image.info["parameters"] == infotext  # the PNG carries its own infotext
    assert result.parameters["prompt"] == "a red fox" and result.parameters["seed"] == 4321
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))

    alone = api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=4321, **SMALL)
    again = api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=4321, **SMALL)
    assert np.array_equal(pixels(alone.image), pixels(again.image))  # same seed, same picture
    # the first image of the batch has the same seed: the same picture up to float rounding of batched math
    assert np.abs(pixels(alone.image) - pixels(result.images[0])).max() <= 2


def test_img2img_with_a_mask_changes_only_the_masked_region(api):
    init = gradient()
    result = api.img2img(images=[init], mask_image=right_half_mask(), prompt="a blue sky", seed=77,
                         denoising_strength=0.9, inpaint_full_res=False, **SMALL)
    assert len(result.images) == 1 and result.image.size == (SIZE, SIZE)
    out, original = pixels(result.image), pixels(init)
    keep = SIZE // 2 - BLUR_REACH
    assert np.array_equal(out[:, :keep], original[:, :keep])  # outside the mask and its blur: pixel for pixel
    assert np.abs(out[:, SIZE // 2 + BLUR_REACH:] - original[:, SIZE // 2 + BLUR_REACH:]).mean() > 8
    info = result.info
    assert info["seed"] == 77 and info["denoising_strength"] == 0.9
    assert "Mask blur: 4" in info["infotexts"][0] and "Denoising strength: 0.9" in info["infotexts"][0]
    assert "init_images" not in result.parameters and "mask" not in result.parameters  # A1111 leaves them out


def test_png_info_reads_back_the_parameters_of_a_generated_image(api):
    generated = api.txt2img(prompt="a lighthouse at dusk", seed=99, cfg_scale=6.5, **SMALL)
    infotext = generated.info["infotexts"][0]
    answer = api.png_info(generated.image)
    assert answer.info == infotext
    assert answer.json["items"]["parameters"] == infotext
    params = answer.parameters
    assert params["Prompt"] == "a lighthouse at dusk"
    assert str(params["Seed"]) == "99" and str(params["Steps"]) == "3" and params["Sampler"] == "Euler"
    assert str(params["CFG scale"]) == "6.5"
    assert str(params["Size-1"]) == str(SIZE) and str(params["Size-2"]) == str(SIZE)
    assert params["Model"] == "alpha-tiny"


# --- options and checkpoints ---------------------------------------------------------------------------------------
def test_get_and_set_options(api):
    options = api.get_options()
    assert options["CLIP_stop_at_last_layers"] == 1 and options["samples_format"] == "png"
    try:
        assert api.set_options({"CLIP_stop_at_last_layers": 2}) == {}
        assert api.get_options()["CLIP_stop_at_last_layers"] == 2
        infotext = api.txt2img(prompt="clip skip", seed=3, **SMALL).info["infotexts"][0]
        assert "Clip skip: 2" in infotext  # the option reaches the next generation
    finally:
        api.set_options({"CLIP_stop_at_last_layers": 1})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 1


def test_util_set_model_switches_the_checkpoint(api):
    listed = titles(api)
    assert sorted(api.util_get_model_names()) == sorted(listed.values())
    assert set(listed) == {"alpha-tiny", "beta-tiny"}
    assert all(title.endswith("]") and "[" in title for title in listed.values())  # `name.safetensors [hash]`
    before = api.txt2img(prompt="switch", seed=11, **SMALL)
    try:
        api.util_set_model("beta-tiny")
        assert api.util_get_current_model() == listed["beta-tiny"]
        after = api.txt2img(prompt="switch", seed=11, **SMALL)
        assert "Model: beta-tiny" in after.info["infotexts"][0]
        assert after.info["sd_model_name"] == "beta-tiny"
        assert not np.array_equal(pixels(after.image), pixels(before.image))  # other weights, other picture
    finally:
        api.util_set_model("alpha-tiny")
    assert api.util_get_current_model() == listed["alpha-tiny"]


def test_get_sd_models_lists_a1111s_fields(api, server):
    for model in api.get_sd_models():
        assert set(model) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert model["title"] == f"{model['model_name']}.safetensors [{model['hash']}]"
        assert len(model["hash"]) == 10 and model["sha256"].startswith(model["hash"])
        assert model["filename"].startswith(str(server.data_dir / "models" / "Stable-diffusion"))


def test_refresh_checkpoints_finds_a_checkpoint_copied_in_later(api, server):
    folder = server.data_dir / "models" / "Stable-diffusion"
    shutil.copy2(folder / "beta-tiny.safetensors", folder / "gamma-tiny.safetensors")
    shutil.copy2(folder / "beta-tiny.yaml", folder / "gamma-tiny.yaml")
    try:
        assert "gamma-tiny" not in titles(api)  # as in A1111, the listing changes on refresh only
        assert api.refresh_checkpoints() == {}
        assert "gamma-tiny" in titles(api)
        assert any(name.startswith("gamma-tiny.safetensors") for name in api.util_get_model_names())
    finally:
        (folder / "gamma-tiny.safetensors").unlink()
        (folder / "gamma-tiny.yaml").unlink()
        api.refresh_checkpoints()
    assert "gamma-tiny" not in titles(api)


def test_samplers_and_loras_listings(api):
    names = api.util_get_sampler_names()
    assert {"Euler", "Euler a", "DPM++ 2M"} <= set(names)
    for sampler in api.get_samplers():
        assert set(sampler) >= {"name", "aliases", "options"}

    loras = api.get_loras()
    assert [lora["name"] for lora in loras] == ["tiny-ink"]
    assert loras[0]["path"].endswith("tiny-ink.safetensors")
    assert loras[0]["metadata"]["ss_output_name"] == "tiny-ink"
    used = api.txt2img(prompt="a fox <lora:tiny-ink:1>", seed=5, **SMALL)
    plain = api.txt2img(prompt="a fox", seed=5, **SMALL)
    assert 'Lora hashes: "tiny-ink: ' in used.info["infotexts"][0]
    assert not np.array_equal(pixels(used.image), pixels(plain.image))


# --- progress and interrupt ----------------------------------------------------------------------------------------
def test_progress_while_running_and_interrupt(api, server):
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0

    outcome: dict = {}

    def long_job():
        try:
            outcome["result"] = api.txt2img(prompt="a long one", seed=8, width=SIZE, height=SIZE, steps=150,
                                            n_iter=3)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=long_job, daemon=True)
    worker.start()
    wait_for_sampling(server)
    progress = webuiapi.WebUIApi(host=server.host, port=server.port).get_progress()  # another client
    state = progress["state"]
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] >= 0
    assert state["job"] != "" and state["job_count"] == 3 and state["sampling_steps"] == 150
    assert 0 < state["sampling_step"] <= 150 and state["interrupted"] is False

    assert api.interrupt() == {}
    worker.join(60)
    assert not worker.is_alive(), "the interrupted txt2img call did not return"
    assert "error" not in outcome, f"the interrupted job failed: {outcome.get('error')}"
    result = outcome["result"]
    assert len(result.images) < 3 and len(result.images) == len(result.info["infotexts"])
    assert any("Interrupted" in warning for warning in result.info["warnings"])

    after = api.get_progress()
    assert after["progress"] == 0 and after["state"]["job"] == ""
    assert len(api.txt2img(prompt="after", seed=1, n_iter=2, **SMALL).images) == 2  # the interrupt did not stick
