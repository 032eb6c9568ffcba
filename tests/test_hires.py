"""Hires fix as users see it: the image size, that the second pass is an img2img of the upscaled first pass with the
same seed, the infotext, each latent mode, image upscalers, resize sizes, hires steps/sampler/checkpoint/prompts,
progress and Interrupt/Skip, bad fields, the API, the UI accordion and pasting infotext into it."""
from __future__ import annotations

import base64
import copy
import io
import json

import gradio as gr
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import install_model, pixels
from webui.engine import hires
from webui.core.run_control import RunControl
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.models.tiny import write_single_file
from webui.outputs.infotext import parse_infotext

BASE = dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=3, width=64, height=64, seed=5,
            save_images=False, do_not_save_grid=True)  # the batch grid: tests/test_grids.py


def request(**fields) -> GenerationRequest:
    return GenerationRequest(**{**BASE, **fields})


def hires_request(**fields) -> GenerationRequest:
    return request(**{"enable_hr": True, **fields})


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    """One tiny SD1 (selected) and another SD1 with other weights, for the hires checkpoint."""
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("hires-data")
    install_model(data, tiny_models["sd1"])
    other = write_single_file(tmp_path_factory.mktemp("other") / "tiny-other.safetensors", "sd1", seed=3)
    install_model(data, other)
    made = build_services(parse_flags(["--data-dir", str(data), "--nowebui"]))
    made.hasher.wait_idle(30)
    made.models.select("tiny-sd1")
    yield made
    made.stop()


def run(services, req: GenerationRequest, control: RunControl | None = None):
    return services.engine.run(req, control)


class RecordingUpscalers:
    """The server's upscalers, remembering each picture they are given (the first pass's decoded image)."""

    def __init__(self, real):
        self.real, self.seen = real, []

    def names(self):
        return self.real.names()

    def find(self, name):
        return self.real.find(name)

    def upscale(self, image, name, width, height, control=None):
        self.seen.append((image.copy(), name, width, height))
        return self.real.upscale(image, name, width, height, control)


# --- size rule ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first, scale, resize, upscaled, final", [
    ((512, 512), 2.0, (0, 0), (1024, 1024), (1024, 1024)),
    ((512, 768), 1.5, (0, 0), (768, 1152), (768, 1152)),
    ((512, 512), 1.3, (0, 0), (664, 664), (664, 664)),  # int(665.6) = 665, rounded down to whole latents
    ((512, 768), 2.0, (1024, 0), (1024, 1536), (1024, 1536)),  # one side given: the other follows the aspect
    ((512, 768), 2.0, (0, 960), (640, 960), (640, 960)),
    ((512, 512), 2.0, (1024, 768), (1024, 1024), (1024, 768)),  # both: cover, then cut (A1111's truncate)
    ((768, 512), 2.0, (1024, 1024), (1536, 1024), (1024, 1024)),
])
def test_target_size_follows_a1111s_rule(first, scale, resize, upscaled, final):
    size = hires.target_size(*first, scale, *resize)
    assert (size.upscale_width, size.upscale_height) == upscaled
    assert (size.width, size.height) == final
    latents = torch.zeros(1, 4, upscaled[1] // 8, upscaled[0] // 8)
    assert tuple(size.crop_latents(latents).shape[-2:]) == (final[1] // 8, final[0] // 8)
    assert size.crop_image(Image.new("RGB", upscaled)).size == final


# --- the engine -----------------------------------------------------------------------------------------------------
def test_hires_makes_the_bigger_image_with_a1111_infotext(services):
    result = run(services, hires_request())
    assert [image.size for image in result.images] == [(128, 128)]
    params = parse_infotext(result.infotexts[0])
    assert params["Size"] == "64x64"  # "Size" stays the first pass's, as A1111 writes
    assert params["Denoising strength"] == "0.75"
    assert params["Hires upscale"] == "2" and params["Hires upscaler"] == "Latent"
    line = result.infotexts[0].splitlines()[-1]
    for absent in ("Hires steps", "Hires prompt", "Hires negative prompt", "Hires sampler", "Hires checkpoint",
                   "Hires schedule type", "Hires resize"):
        assert f"{absent}:" not in line
    assert line.index("Denoising strength") < line.index("Hires upscale") < line.index("Hires upscaler") \
        < line.index("Version")
    plain = run(services, request())
    assert "Denoising strength" not in plain.infotexts[0] and "Hires" not in plain.infotexts[0]


def test_second_pass_is_img2img_of_the_upscaled_first_pass_with_the_same_seed(services):
    """Independent reconstruction: the first pass is exactly a plain txt2img of the seed, and the result is exactly
    the engine's plain img2img of that picture (Lanczos-upscaled) with the same seed over the same sigmas: A1111's
    hires pass runs its 4 steps as the tail of int(4 / 0.5) = 8 (t_enc 3), which plain img2img runs at 8 steps with
    denoising 0.4 (t_enc = int(0.4 x 8) = 3, so 4 steps)."""
    engine = copy.copy(services.engine)
    engine.upscalers = RecordingUpscalers(services.upscalers)
    result = engine.run(hires_request(hr_upscaler="Lanczos", hr_second_pass_steps=4, denoising_strength=0.5))
    first, name, width, height = engine.upscalers.seen[0]
    assert (name, width, height) == ("Lanczos", 128, 128)
    plain = run(services, request())
    # one image each, same process, and the first pass is the plain txt2img computation: bit-identical
    assert np.array_equal(pixels(first), pixels(plain.images[0]))

    upscaled = plain.images[0].resize((128, 128), Image.LANCZOS)
    again = run(services, request(mode="img2img", init_images=[upscaled], width=128, height=128, steps=8,
                                  denoising_strength=0.4))
    assert result.images[0].size == (128, 128)
    # the second pass is the engine's own img2img path on the same inputs, one image each: bit-identical
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))
    other_seed = run(services, request(mode="img2img", init_images=[upscaled], width=128, height=128, steps=8,
                                       denoising_strength=0.4, seed=6))
    assert not np.array_equal(pixels(result.images[0]), pixels(other_seed.images[0]))
    assert parse_infotext(result.infotexts[0])["Hires steps"] == "4"


def test_each_image_of_a_batch_keeps_its_own_seed_in_both_passes(services):
    batch = run(services, hires_request(batch_size=2))
    alone = run(services, hires_request(seed=6))
    assert batch.seeds == [5, 6]
    # batched and single matrix products round differently in the last bit: allow 1/255
    assert np.abs(pixels(batch.images[1]) - pixels(alone.images[0])).max() <= 1
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_every_latent_mode_runs_and_modes_differ_where_their_interpolation_does(services):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    size = hires.target_size(64, 64, 2.0, 0, 0)
    images, upscaled = {}, {}
    for name, (mode, antialias) in hires.LATENT_UPSCALE_MODES.items():
        result = run(services, hires_request(hr_upscaler=name))
        assert result.images[0].size == (128, 128)
        assert parse_infotext(result.infotexts[0])["Hires upscaler"] == name
        images[name] = pixels(result.images[0])
        upscaled[name] = torch.nn.functional.interpolate(latents, size=(16, 16), mode=mode, antialias=antialias)
        assert size.crop_latents(upscaled[name]).shape[-1] == 16
    names = list(images)
    # one image per run in one process: equal upscaled latents give bit-identical pictures
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.array_equal(images[a], images[b]) == torch.equal(upscaled[a], upscaled[b]), (a, b)
    assert not np.array_equal(images["Latent"], images["Latent (nearest)"])
    assert not np.array_equal(images["Latent"], images["Latent (bicubic)"])


def test_image_upscalers_nearest_and_lanczos_give_different_results(services):
    nearest = run(services, hires_request(hr_upscaler="Nearest"))
    lanczos = run(services, hires_request(hr_upscaler="Lanczos"))
    assert nearest.images[0].size == lanczos.images[0].size == (128, 128)
    assert not np.array_equal(pixels(nearest.images[0]), pixels(lanczos.images[0]))
    assert parse_infotext(nearest.infotexts[0])["Hires upscaler"] == "Nearest"


@pytest.mark.parametrize("size, resize, final, key", [
    ((96, 64), (144, 0), (144, 96), "144x0"),
    ((96, 64), (0, 128), (192, 128), "0x128"),
    ((96, 64), (128, 128), (128, 128), "128x128"),  # covers 192x128, then cut to 128x128
])
def test_resize_width_height_to(services, size, resize, final, key):
    result = run(services, hires_request(width=size[0], height=size[1], hr_resize_x=resize[0],
                                         hr_resize_y=resize[1], hr_upscaler="Lanczos"))
    assert result.images[0].size == final
    params = parse_infotext(result.infotexts[0])
    assert result.infotexts[0].count(f"Hires resize: {key}") == 1 and "Hires upscale" not in params


def test_hires_steps_and_progress_show_both_passes(services):
    seen = []
    control = RunControl(on_progress=lambda p: seen.append((p.job_no, p.job_count, p.sampling_step,
                                                              p.sampling_steps, p.textinfo, p.fraction)))
    result = run(services, hires_request(hr_second_pass_steps=2, n_iter=2), control)
    assert len(result.images) == 2
    assert "Hires steps: 2" in result.infotexts[0]
    hires_reports = [r for r in seen if r[4] == "Hires fix"]
    assert {r[1] for r in seen} == {4}  # two batches x two passes
    assert {r[0] for r in hires_reports} == {1, 3} and {r[3] for r in hires_reports} == {2}
    assert max(r[2] for r in hires_reports) == 2
    first_pass = [r for r in seen if r[0] in (0, 2) and r[2] > 0]
    assert {r[3] for r in first_pass} == {3} and max(r[2] for r in first_pass) == 3
    fractions = [r[5] for r in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_interrupt_in_the_second_pass_keeps_that_batch_at_the_hires_size(services):
    """As A1111: the batch being sampled is decoded at its last denoised latents and kept; then the run stops."""
    control = RunControl()

    def on_progress(progress):
        if progress.textinfo == "Hires fix" and progress.sampling_step >= 1:
            control.interrupt()
    control._on_progress = on_progress
    result = run(services, hires_request(n_iter=2), control)
    assert result.interrupted and result.seeds == [5] and result.images[0].size == (128, 128)
    assert "Hires upscale: 2" in result.infotexts[0]


def test_skip_in_the_second_pass_ends_that_batch_early_and_goes_on(services):
    control = RunControl()

    def on_progress(progress):
        if progress.textinfo == "Hires fix" and progress.job_no == 1 and progress.sampling_step == 1:
            control.skip()
    control._on_progress = on_progress
    result = run(services, hires_request(n_iter=2), control)
    alone = run(services, hires_request(seed=6))
    full = run(services, hires_request(seed=5))
    assert result.skipped_batches == 1 and result.seeds == [5, 6]
    assert result.images[0].size == (128, 128)
    assert not np.array_equal(pixels(result.images[0]), pixels(full.images[0]))  # ended early
    # each batch is one image: the same computation as seed 6 alone, bit-identical
    assert np.array_equal(pixels(result.images[1]), pixels(alone.images[0]))


def test_hires_prompt_is_used_and_written_only_when_it_differs(services):
    same = run(services, hires_request(hr_prompt="a fox", hr_negative_prompt="blurry"))
    default = run(services, hires_request())
    assert "Hires prompt" not in same.infotexts[0] and "Hires negative prompt" not in same.infotexts[0]
    # the same prompts: the same computation, one image each in the same process, bit-identical
    assert np.array_equal(pixels(same.images[0]), pixels(default.images[0]))
    other = run(services, hires_request(hr_prompt="a lighthouse", hr_negative_prompt="fog"))
    params = parse_infotext(other.infotexts[0])
    assert params["Hires prompt"] == "a lighthouse" and params["Hires negative prompt"] == "fog"
    assert params["Prompt"] == "a fox"
    assert not np.array_equal(pixels(other.images[0]), pixels(default.images[0]))


def test_styles_apply_to_a_hires_prompt_as_to_the_prompt(services):
    services.styles.save("warm", "warm light", "")
    job = services.generate(hires_request(hr_prompt="a wolf", styles=["warm"]))
    job.wait()
    params = parse_infotext(job.result.infotexts[0])
    assert params["Prompt"] == "a fox, warm light" and params["Hires prompt"] == "a wolf, warm light"
    assert "Hires negative prompt" not in job.result.infotexts[0]  # "" stays "the same as the first pass"


def test_hires_sampler_and_schedule_type(services):
    result = run(services, hires_request(hr_sampler_name="DPM++ 2M", hr_scheduler="Karras"))
    params = parse_infotext(result.infotexts[0])
    assert params["Sampler"] == "Euler" and params["Hires sampler"] == "DPM++ 2M"
    assert params["Hires schedule type"] == "Karras"
    default = run(services, hires_request())
    assert not np.array_equal(pixels(result.images[0]), pixels(default.images[0]))
    same = run(services, hires_request(hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler"))
    # the same sampler and schedule: the same computation, bit-identical
    assert np.array_equal(pixels(same.images[0]), pixels(default.images[0]))
    old_name = run(services, hires_request(hr_sampler_name="Euler Karras"))  # "X Karras" splits as for sampler_name
    assert parse_infotext(old_name.infotexts[0])["Hires schedule type"] == "Karras"


def test_hires_checkpoint_is_used_for_the_second_pass_and_the_main_one_stays(services):
    before = services.models.current_title()
    default = run(services, hires_request())
    other = run(services, hires_request(hr_checkpoint_name="tiny-other", n_iter=2))
    assert services.options.get("sd_checkpoints_limit") == 1
    assert services.models.loaded_titles() == [before]  # the borrowed checkpoint left the cache after the run
    info, _ = services.models.get("tiny-other")
    params = parse_infotext(other.infotexts[0])
    assert params["Hires checkpoint"] == f"tiny-other [{info.shorthash}]"
    assert params["Model"] == "tiny-sd1"
    assert not np.array_equal(pixels(other.images[0]), pixels(default.images[0]))
    assert services.models.current_title() == before
    # the main checkpoint's weights untouched, same request and process: bit-identical
    assert np.array_equal(pixels(run(services, hires_request()).images[0]), pixels(default.images[0]))


@pytest.mark.parametrize("fields, field, message", [
    (dict(hr_scale=0.5), "hr_scale", "between 1 and 8"),
    (dict(hr_resize_x=10), "hr_resize_x", "at least 64"),
    (dict(hr_resize_y=5000), "hr_resize_y", "between 0 and 4096"),
    (dict(hr_second_pass_steps=200), "hr_second_pass_steps", "between 0 and 150"),
    (dict(hr_sampler_name="Bogus"), "hr_sampler_name", "Unknown sampler 'Bogus'"),
    (dict(hr_scheduler="Weird"), "hr_scheduler", "unknown hires schedule type 'Weird'"),
    (dict(width=2048, height=2048, hr_scale=4.0), "hr_scale", "8192x8192"),
    (dict(mode="img2img", init_images=[Image.new("RGB", (64, 64))]), "enable_hr", "txt2img"),
])
def test_bad_hires_fields_are_request_errors_naming_the_field(fields, field, message):
    with pytest.raises(RequestError, match=message) as caught:
        hires_request(**fields).validate()
    assert caught.value.field == field


def test_the_scale_is_not_checked_when_resizing_to_a_size():
    req = hires_request(hr_scale=0, hr_resize_x=128).validate()
    assert hires.target_size(req.width, req.height, req.hr_scale, req.hr_resize_x, req.hr_resize_y).width == 128


def test_unknown_upscaler_and_checkpoint_are_request_errors(services):
    with pytest.raises(RequestError, match="unknown hires upscaler 'Nope'.*Latent.*Lanczos") as caught:
        run(services, hires_request(hr_upscaler="Nope"))
    assert caught.value.field == "hr_upscaler" and caught.value.status == 400
    with pytest.raises(RequestError, match="hires checkpoint: Unknown checkpoint 'missing'") as caught:
        run(services, hires_request(hr_checkpoint_name="missing"))
    assert caught.value.field == "hr_checkpoint_name" and caught.value.status == 400


def test_hires_fields_are_ignored_while_hires_is_off(services):
    plain = run(services, request(hr_scale=0.1, hr_upscaler="Nope", hr_sampler_name="Bogus"))
    assert plain.images[0].size == (64, 64)


def test_the_a1111_shim_carries_the_hires_attributes_to_the_request(services):
    """An extension's `process_images(p)` with A1111's hr_* attributes runs the hires fix."""
    import sys
    import types
    from webui.extensions.a1111 import COMPAT_PATH
    from webui.extensions.a1111.runtime import RUNTIME
    from webui.extensions.callbacks import CallbackRegistry
    from webui.extensions.problems import ProblemLog
    added = str(COMPAT_PATH) not in sys.path
    if added:
        sys.path.append(str(COMPAT_PATH))
    problems = ProblemLog()
    RUNTIME.bind(services, types.SimpleNamespace(callbacks=CallbackRegistry(problems), problems=problems))
    try:
        from modules.processing import StableDiffusionProcessingTxt2Img, process_images
        p = StableDiffusionProcessingTxt2Img(prompt="a fox", negative_prompt="blurry", sampler_name="Euler",
                                             steps=3, width=64, height=64, seed=5, enable_hr=True, hr_scale=1.5,
                                             hr_upscaler="Latent (bicubic)", hr_second_pass_steps=2,
                                             hr_resize_y=96, hr_prompt="a wolf", denoising_strength=0.4,
                                             do_not_save_samples=True)
        req = p.to_request()
        assert (req.enable_hr, req.hr_scale, req.hr_upscaler, req.hr_second_pass_steps, req.hr_resize_y,
                req.hr_prompt, req.denoising_strength) == (True, 1.5, "Latent (bicubic)", 2, 96, "a wolf", 0.4)
        processed = process_images(p)
    finally:
        RUNTIME.bind(None, None)
        if added:
            sys.path.remove(str(COMPAT_PATH))
    assert processed.images[0].size == (96, 96)
    params = parse_infotext(processed.infotexts[0])
    assert params["Hires resize"] == "0x96" and params["Denoising strength"] == "0.4"
    assert params["Hires prompt"] == "a wolf"


# --- the HTTP API ---------------------------------------------------------------------------------------------------
def test_api_txt2img_with_enable_hr(services):
    from app import create_app
    app, _ = create_app(services.flags, services)  # the fixture's flags have --nowebui
    client = TestClient(app)
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler_name": "Euler",
            "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (nearest-exact)", "hr_second_pass_steps": 2,
            "hr_prompt": "a wolf"}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    assert image.size == (96, 96)
    info = json.loads(data["info"])
    assert (info["width"], info["height"]) == (64, 64)  # A1111's info keeps the first pass's size
    params = parse_infotext(info["infotexts"][0])
    assert params["Denoising strength"] == "0.75"  # the API's default
    assert params["Hires upscale"] == "1.5" and params["Hires upscaler"] == "Latent (nearest-exact)"
    assert params["Hires steps"] == "2" and params["Hires prompt"] == "a wolf"
    assert data["parameters"]["enable_hr"] is True
    bad = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "Nope"})
    assert bad.status_code == 400 and "unknown hires upscaler 'Nope'" in bad.json()["detail"]  # an unknown name


# --- the UI ---------------------------------------------------------------------------------------------------------
HIRES_IDS = {"txt2img_hr", "txt2img_enable_hr", "txt2img_hr_upscaler", "txt2img_hires_steps",
             "txt2img_denoising_strength", "txt2img_hr_scale", "txt2img_hr_resize_x", "txt2img_hr_resize_y",
             "hr_checkpoint", "hr_sampler", "hr_scheduler", "hires_prompt", "hires_neg_prompt", "txtimg_hr_finalres"}


def test_txt2img_has_the_hires_accordion_and_generate_uses_it(services):
    from webui.ui import generation, hires_inputs
    from webui.ui.blocks import build_ui
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert HIRES_IDS <= set(by_id), HIRES_IDS - set(by_id)
    assert by_id["txt2img_hr_upscaler"].choices[0][0] == "Latent"
    assert {"Lanczos", "Nearest"} <= {choice[0] for choice in by_id["txt2img_hr_upscaler"].choices}
    assert by_id["txt2img_denoising_strength"].value == 0.7 and by_id["txt2img_hr_scale"].value == 2.0
    assert "from <b>512x512</b> to <b>1024x1024</b>" in hires_inputs.resolution_text(True, 512, 512, 2, 0, 0)
    assert "to <b>1024x768</b>" in hires_inputs.resolution_text(True, 512, 512, 2, 1024, 768)

    values = dict(zip(hires_inputs.HIRES_FIELDS, (True, "Lanczos", 2.0, 0.5, 1.5, 0.0, 0.0, "Use same checkpoint",
                                                  "Use same sampler", "Use same scheduler", "", "")))
    req = generation.build_request("txt2img", "a fox", "", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 5,
                                   hires=values)
    assert req.enable_hr and req.hr_second_pass_steps == 2 and isinstance(req.hr_second_pass_steps, int)
    result = run(services, req.validate())
    assert result.images[0].size == (96, 96)
    off = generation.build_request("txt2img", "a fox", "", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 5,
                                   hires={**values, "enable_hr": False})
    assert not off.enable_hr


def test_pasting_infotext_with_hires_keys_fills_the_accordion(services):
    from webui.ui import hires_inputs, pnginfo
    made = run(services, hires_request(hr_checkpoint_name="tiny-other", hr_second_pass_steps=2,
                                       hr_sampler_name="DPM++ 2M", hr_prompt="a wolf", hr_resize_x=96,
                                       hr_upscaler="Nearest", denoising_strength=0.45))
    values = dict(zip(hires_inputs.HIRES_FIELDS, pnginfo.hires_values(services, made.infotexts[0])))
    other_title = services.models.resolve("tiny-other").title
    assert values == {"enable_hr": True, "hr_upscaler": "Nearest", "hr_second_pass_steps": 2,
                      "denoising_strength": 0.45, "hr_scale": 2.0, "hr_resize_x": 96, "hr_resize_y": 0,
                      "hr_checkpoint_name": other_title, "hr_sampler_name": "DPM++ 2M",
                      "hr_scheduler": "Use same scheduler", "hr_prompt": "a wolf", "hr_negative_prompt": ""}
    # the pasted values make the same image again (the same request in the same process: bit-identical)
    again = run(services, hires_inputs.apply_hires(request(), values))
    assert np.array_equal(pixels(again.images[0]), pixels(made.images[0]))
    plain = pnginfo.hires_values(services, run(services, request()).infotexts[0])
    assert plain == (False,) + (gr.skip(),) * (len(hires_inputs.HIRES_FIELDS) - 1)  # off; the rest as it is
    assert pnginfo.hires_values(services, "") == (gr.skip(),) * len(hires_inputs.HIRES_FIELDS)


@pytest.mark.parametrize("sampler", ["DDIM", "DPM++ 2M"])
def test_a_very_low_denoising_strength_runs_its_steps(services, sampler):
    """60 steps at 0.05 stretch the hires schedule to 1200 steps, past the 1000 the model was trained with: A1111's
    timestep samplers cannot list more (range(0, 1000, 1000 // steps)), so for DDIM it is capped; sigma samplers
    interpolate between the trained noise levels and run it as A1111 does."""
    result = run(services, hires_request(sampler_name=sampler, steps=60, denoising_strength=0.05))
    assert result.images[0].size == (128, 128) and not result.warnings
    plan = hires.plan_hires(hires_request(sampler_name=sampler, steps=60, denoising_strength=0.05).validate(),
                            "Automatic", 8, None)
    expected = (1000, 50) if sampler == "DDIM" else (1200, 60)
    assert (plan.request.steps, plan.request.steps_to_run) == expected


def test_prompt_editing_in_the_hires_pass_counts_from_the_first_pass():
    """A1111: in the hires pass whole numbers count from the start of the first pass, and numbers with a point are
    fractions offset by 1 (first pass 10 steps, hires pass 6)."""
    from webui.prompts.schedule import prompt_schedule

    def texts(prompt: str) -> list[tuple[int, str]]:
        return [(entry.end_at_step, entry.text) for entry in prompt_schedule(prompt, 6, hires_base=10)]

    assert prompt_schedule("[cat:dog:0.5]", 10) == prompt_schedule("[cat:dog:0.5]", 10, None)
    assert texts("[cat:dog:0.5]") == [(6, "dog")]  # finished switching in the first pass
    assert texts("[cat:dog:10]") == [(6, "dog")]
    assert texts("[cat:dog:13]") == [(3, "cat"), (6, "dog")]  # step 13 of 16 is step 3 of the hires pass
    assert texts("[cat:dog:1.5]") == [(3, "cat"), (6, "dog")]  # half-way through the hires pass
