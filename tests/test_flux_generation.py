"""FLUX.1 checkpoints through the whole server: files as people have them (ComfyUI-packed, BFL transformer plus
Forge's separate ae / clip_l / t5xxl files), txt2img and img2img against diffusers' own FluxPipeline /
FluxImg2ImgPipeline on the same tiny weights, batches and seeds, Forge's infotext keys and their paste-back, and
the refusals (samplers, sizes, missing parts)."""
from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import pixels
from tests.transformer_checks import encode_to_posterior_mean, random_image
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.models.tiny_flux import tiny_flux_modules, write_flux, write_flux_parts
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

PROMPT = "a red fox in the snow"
SIZE = 64


@pytest.fixture(scope="module")
def flux_app(tmp_path_factory):
    from app import create_app

    data = tmp_path_factory.mktemp("flux-data")
    checkpoints = data / "models" / "Stable-diffusion"
    write_flux(checkpoints / "flux-packed.safetensors", "ComfyUI")  # transformer, AE, CLIP-L and T5 in one file
    write_flux(checkpoints / "flux-bfl.safetensors", "BFL")  # the transformer alone
    write_flux(checkpoints / "flux-fp8.safetensors", "BFL", dtype=torch.float8_e4m3fn)  # kept in fp8
    parts = write_flux_parts(data / "models" / "text_encoder")
    (data / "models" / "VAE").mkdir(parents=True)
    shutil.move(parts["ae"], data / "models" / "VAE" / "ae.safetensors")
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services
    services.stop()


@pytest.fixture
def flux_server(flux_app):
    return flux_app[1]


def _request(**fields) -> GenerationRequest:
    base = dict(prompt=PROMPT, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=4,
                width=SIZE, height=SIZE, seed=11, cfg_scale=1.0, distilled_cfg_scale=3.5, save_images=False,
                checkpoint="flux-packed")
    base.update(fields)
    return GenerationRequest(**base)


def _reference_pipeline(services, cls):
    """diffusers' own pipeline on the tiny weights the files were written from, with the same tokenizers."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from webui.models.flux import scheduler_config

    modules = tiny_flux_modules(0, "dev")
    _, model = services.models.get("flux-packed")
    scheduler = FlowMatchEulerDiscreteScheduler(**scheduler_config("dev"))
    return cls(scheduler=scheduler, vae=modules["vae"], text_encoder=modules["clip"], tokenizer=model.tokenizers[0],
               text_encoder_2=modules["t5"], tokenizer_2=model.tokenizers[1], transformer=modules["transformer"])


def test_txt2img_matches_diffusers_flux_pipeline(flux_server):
    from diffusers import FluxPipeline

    result = flux_server.engine.run(_request())
    pipe = _reference_pipeline(flux_server, FluxPipeline)
    expected = pipe(PROMPT, num_inference_steps=4, guidance_scale=3.5, height=SIZE, width=SIZE,
                    generator=torch.Generator().manual_seed(11), max_sequence_length=512).images[0]
    difference = np.abs(pixels(result.images[0]) - pixels(expected))
    assert difference.max() <= 1, difference.max()
    assert pixels(result.images[0]).std() > 5  # a picture, not a flat field
    info = result.infotexts[0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 11" in info
    assert "Clip skip" not in info


def test_img2img_matches_diffusers_with_a1111_step_count(flux_server):
    """img2img runs A1111's t_enc + 1 steps of the schedule (8 steps at 0.5: the last 5), which diffusers'
    FluxImg2ImgPipeline runs at strength 0.625; both start from the init image's posterior mean."""
    from diffusers import FluxImg2ImgPipeline

    init = random_image(3, SIZE)
    result = flux_server.engine.run(_request(mode="img2img", init_images=[init], denoising_strength=0.5, steps=8))
    pipe = _reference_pipeline(flux_server, FluxImg2ImgPipeline)
    encode_to_posterior_mean(pipe)
    expected = pipe(PROMPT, image=init, strength=0.625, num_inference_steps=8, guidance_scale=3.5, height=SIZE,
                    width=SIZE, generator=torch.Generator().manual_seed(11)).images[0]
    assert np.abs(pixels(result.images[0]) - pixels(expected)).max() <= 1
    assert "Denoising strength: 0.5" in result.infotexts[0]


def test_batch_images_carry_consecutive_seeds(flux_server):
    batch = flux_server.engine.run(_request(batch_size=2, steps=3))
    single = flux_server.engine.run(_request(seed=12, steps=3))
    assert [*batch.seeds] == [11, 12]
    first, second = batch.images[-2:]  # after the batch grid
    assert np.abs(pixels(second) - pixels(single.images[0])).max() <= 1  # batched rows: float rounding only
    assert np.abs(pixels(first) - pixels(second)).max() > 20


def test_distilled_cfg_scale_steers_the_picture(flux_server):
    low = flux_server.engine.run(_request(distilled_cfg_scale=1.0, steps=3))
    high = flux_server.engine.run(_request(distilled_cfg_scale=6.0, steps=3))
    assert np.abs(pixels(low.images[0]) - pixels(high.images[0])).max() > 3
    assert "Distilled CFG Scale: 6" in high.infotexts[0]


def test_separate_parts_are_chosen_and_named_in_the_infotext(flux_server):
    services = flux_server
    with pytest.raises(Exception) as missing:  # two T5 files and nothing chosen: which one is the user's call
        services.engine.run(_request(checkpoint="flux-bfl", steps=2))
    assert "T5-XXL text encoder" in str(missing.value) and "VAE / Text Encoder" in str(missing.value)
    services.options.update({"forge_additional_modules": ["ae.safetensors", "clip_l", "t5xxl_fp16"]})
    try:
        result = services.engine.run(_request(checkpoint="flux-bfl", steps=2))
        packed = services.engine.run(_request(steps=2))
    finally:
        services.options.update({"forge_additional_modules": []})
    info = result.infotexts[0]
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in info
    assert "Module 1" not in packed.infotexts[0]
    # the same weights (fp16 text encoders against the packed float32 ones): the same picture within rounding
    assert np.abs(pixels(result.images[0]) - pixels(packed.images[0])).max() <= 3


def test_flow_refusals_are_clear(flux_server):
    with pytest.raises(RequestError) as sampler:
        flux_server.engine.run(_request(sampler_name="DDIM", steps=2))
    assert "DDIM" in str(sampler.value) and "Euler" in str(sampler.value)
    with pytest.raises(RequestError) as size:
        flux_server.engine.run(_request(width=72, steps=2))
    assert size.value.field == "width" and "multiples of 16" in str(size.value)


def test_api_takes_distilled_cfg_scale_and_a_pasted_forge_infotext(flux_app):
    client = flux_app[0]
    forge = (f"{PROMPT}\nSteps: 3, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 2.5, "
             f"Seed: 21, Size: {SIZE}x{SIZE}, Model: flux-packed, Version: f2.0.1v1.10.1-previous-313-g8a042934, "
             "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16")
    pasted = client.post("/sdapi/v1/txt2img", json={"infotext": forge, "override_settings": {
        "sd_model_checkpoint": "flux-packed"}})
    explicit_body = {"prompt": PROMPT, "steps": 3, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1,
                     "distilled_cfg_scale": 2.5, "seed": 21, "width": SIZE, "height": SIZE,
                     "override_settings": {"sd_model_checkpoint": "flux-packed"}}
    explicit = client.post("/sdapi/v1/txt2img", json=explicit_body)
    assert pasted.status_code == 200 and explicit.status_code == 200, (pasted.text, explicit.text)
    def picture(response):
        return pixels(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))))

    np.testing.assert_array_equal(picture(pasted), picture(explicit))
    default = client.post("/sdapi/v1/txt2img", json={**explicit_body, "distilled_cfg_scale": 3.5})
    assert np.abs(picture(default) - picture(explicit)).max() > 3  # the pasted value was used, not the default
    for response in (pasted, explicit):
        info = response.json()["info"]
        assert '"distilled_cfg_scale": 2.5' in info and "Distilled CFG Scale: 2.5" in info


def test_a_lora_on_flux_is_skipped_with_a_warning(flux_server):
    from safetensors.torch import save_file

    lora_dir = flux_server.paths.lora
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)},
              str(lora_dir / "sd-style.safetensors"))
    plain = flux_server.engine.run(_request(steps=2))
    tagged = flux_server.engine.run(_request(prompt=PROMPT + " <lora:sd-style:0.8>", steps=2))
    assert any('LoRA "sd-style"' in w and "FLUX.1" in w for w in tagged.warnings), tagged.warnings
    np.testing.assert_array_equal(pixels(plain.images[0]), pixels(tagged.images[0]))
    assert "Lora hashes" not in tagged.infotexts[0]


def test_refiner_and_cross_family_latent_hires_are_refused(flux_server, tiny_models):
    from tests.conftest import install_model

    install_model(flux_server.paths.data_dir, tiny_models["sd1"])
    flux_server.models.refresh()
    with pytest.raises(RequestError) as refiner:
        flux_server.engine.run(_request(steps=2, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.5))
    assert refiner.value.field == "refiner_checkpoint" and "FLUX.1" in str(refiner.value)
    with pytest.raises(RequestError) as hires:
        flux_server.engine.run(_request(steps=2, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                        hr_checkpoint_name="tiny-sd1", denoising_strength=0.5))
    assert hires.value.field == "hr_checkpoint_name" and "image upscaler" in str(hires.value)
    warned = flux_server.engine.run(_request(steps=2, cfg_scale=3.0))
    assert any("guidance-distilled" in w for w in warned.warnings)


def test_override_settings_choose_the_parts_for_one_job(flux_app):
    """Forge's API clients send `forge_additional_modules` in override_settings: that job loads with those files,
    an unknown name is said, and the setting itself is unchanged."""
    client, services = flux_app
    body = {"prompt": PROMPT, "steps": 2, "sampler_name": "Euler", "cfg_scale": 1, "seed": 5, "width": SIZE,
            "height": SIZE, "override_settings": {"sd_model_checkpoint": "flux-bfl",
                                                  "forge_additional_modules": ["ae", "clip_l", "t5xxl_fp8_e4m3fn",
                                                                               "../../secret"]}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = response.json()["info"]
    assert "Module 3: t5xxl_fp8_e4m3fn" in info and "Schedule type: Simple" in info
    assert "'../../secret' is no .safetensors file" in info
    assert services.options.get("forge_additional_modules") == []
    choices = services.options.specs["forge_additional_modules"].choices()
    assert {"ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"} <= set(choices)


def test_ui_fields_follow_the_model_family(flux_app, tiny_models):
    """Choosing a FLUX.1 checkpoint after an SD one sets FLUX's usual values in both tabs; another FLUX.1
    checkpoint keeps what the user set."""
    import gradio as gr

    from tests.conftest import install_model
    from webui.ui.family_defaults import FIELDS, on_checkpoint_changed

    _, services = flux_app
    install_model(services.paths.data_dir, tiny_models["sd1"])
    services.models.refresh()
    services.models.select("flux-packed")
    family, *values = on_checkpoint_changed(services, "sd1", 2)
    assert family == "flux"
    assert dict(zip(FIELDS, values[:len(FIELDS)])) == {
        "steps": 20, "cfg_scale": 1.0, "distilled_cfg_scale": 3.5, "width": 1024, "height": 1024,
        "sampler": "Euler", "scheduler": "Simple"}
    assert values[:len(FIELDS)] == values[len(FIELDS):]
    family, *values = on_checkpoint_changed(services, "flux", 2)
    assert family == "flux" and all(isinstance(v, type(gr.skip())) for v in values)
    services.models.select("tiny-sd1")
    family, *values = on_checkpoint_changed(services, "flux", 1)
    assert family == "sd1" and values[:2] == [20, 7.0] and values[3:5] == [512, 512]


def test_an_fp8_checkpoint_generates_within_its_rounding(flux_server):
    services = flux_server
    services.options.update({"forge_additional_modules": ["ae", "clip_l", "t5xxl_fp16"]})
    try:
        fp8 = services.engine.run(_request(checkpoint="flux-fp8", steps=3))
        full = services.engine.run(_request(checkpoint="flux-bfl", steps=3))
        _, model = services.models.get("flux-fp8", ["ae", "clip_l", "t5xxl_fp16"])
    finally:
        services.options.update({"forge_additional_modules": []})
    weights = [p.dtype for p in model.unet.parameters()]
    assert weights.count(torch.float8_e4m3fn) > len(weights) // 2  # stored in fp8, computed in float32
    difference = np.abs(pixels(fp8.images[0]) - pixels(full.images[0]))
    assert difference.mean() < 12 and pixels(fp8.images[0]).std() > 5


def test_hires_fix_and_previews_run_on_flux(flux_server):
    """Hires fix (latent upscale, then a second flow pass at the larger size's own shift) and live previews
    (cheap ones: the latents' main directions, as no TAEF1 file is installed) on FLUX.1's 16-channel latents."""
    from webui.core.run_control import RunControl
    from webui.engine.preview import current_preview

    flux_server.options.update({"live_previews_enable": True, "show_progress_every_n_steps": 1})
    previews = []
    control = RunControl()
    real_report = control.report

    def report(**fields):
        real_report(**fields)
        if fields.get("sampling_step"):
            picture = current_preview(control)
            if picture is not None:
                previews.append(picture.size)

    control.report = report
    result = flux_server.engine.run(_request(steps=3, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                             denoising_strength=0.6, hr_second_pass_steps=2), control)
    assert result.images[0].size == (96, 96)
    assert "Hires upscale: 1.5" in result.infotexts[0] and "Hires schedule type" not in result.infotexts[0]
    assert (8, 8) in previews  # 64 px / 8: the cheap preview at latent size


def test_the_parts_choice_is_remembered_per_checkpoint(flux_app):
    client, services = flux_app
    chosen = ["ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"]
    try:
        refused = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux-bfl"})
        assert refused.status_code >= 400 and "T5-XXL" in refused.text  # two T5 files, none chosen yet
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux-bfl",
                                                          "forge_additional_modules": chosen})
        assert response.status_code == 200, response.text
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux-packed",
                                               "forge_additional_modules": []})
        assert client.get("/sdapi/v1/options").json()["forge_additional_modules"] == []
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux-bfl"})
        assert client.get("/sdapi/v1/options").json()["forge_additional_modules"] == chosen  # restored
    finally:
        services.options.update({"forge_additional_modules": [], "forge_modules_by_checkpoint": {}})


def test_inpainting_regenerates_only_the_masked_part(flux_server):
    init = Image.fromarray((np.random.RandomState(8).rand(SIZE, SIZE, 3) * 255).astype(np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = flux_server.engine.run(_request(mode="img2img", init_images=[init], mask=mask, mask_blur_x=0,
                                             mask_blur_y=0, denoising_strength=0.9, steps=4))
    out, before = pixels(result.images[0]), pixels(init)
    assert np.array_equal(out[:8], before[:8]) and np.array_equal(out[:, -8:], before[:, -8:])  # kept
    assert np.abs(out[20:44, 20:44] - before[20:44, 20:44]).mean() > 10  # regenerated


def test_a_lora_on_a_streamed_transformer_is_added_at_run_time(flux_server):
    """With the transformer streamed from RAM (diffusers' group offloading keeps its own copies of the weights, so
    a change written into them would be lost), a LoRA's output is added at run time instead: the picture equals
    the one made with the LoRA fused into the weights of an unstreamed copy of the same checkpoint, the streamed
    weights are never written, and removing the LoRA gives the unpatched picture bit for bit."""
    from diffusers.hooks import apply_group_offloading
    from safetensors.torch import save_file

    from webui.models.streaming import Placement

    services = flux_server
    lora_dir = services.paths.lora
    lora_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    save_file({"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": torch.randn(4, 64, generator=g),
               "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.randn(64, 4, generator=g),
               "lora_unet_single_blocks_0_linear2.lora_down.weight": torch.randn(4, 320, generator=g),
               "lora_unet_single_blocks_0_linear2.lora_up.weight": torch.randn(64, 4, generator=g)},
              str(lora_dir / "flux-any.safetensors"))
    fused = services.engine.run(_request(prompt=PROMPT + " <lora:flux-any:1>", steps=2))

    checkpoints = services.paths.checkpoints
    shutil.copy(checkpoints / "flux-packed.safetensors", checkpoints / "flux-streamed.safetensors")
    services.models.refresh()
    _, model = services.models.get("flux-streamed")
    apply_group_offloading(model.unet, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=1, use_stream=False)
    model.placement = Placement(True, True, 0, "test")
    weights = {name: value.clone() for name, value in model.unet.state_dict().items()}
    plain = services.engine.run(_request(steps=2, checkpoint="flux-streamed"))
    streamed = services.engine.run(_request(prompt=PROMPT + " <lora:flux-any:1>", steps=2,
                                            checkpoint="flux-streamed"))
    assert streamed.warnings == [] and "Lora hashes" in streamed.infotexts[0]
    assert np.abs(pixels(streamed.images[0]) - pixels(fused.images[0])).max() <= 1
    assert np.abs(pixels(streamed.images[0]) - pixels(plain.images[0])).mean() > 1  # the LoRA shows
    assert all(torch.equal(value, weights[name]) for name, value in model.unet.state_dict().items())
    again = services.engine.run(_request(steps=2, checkpoint="flux-streamed"))
    assert np.array_equal(pixels(again.images[0]), pixels(plain.images[0]))
    assert "Lora hashes" not in again.infotexts[0]


def test_xyz_plot_varies_distilled_cfg_scale(flux_server):
    """Forge's X/Y/Z axis: each cell is the picture made alone with that Distilled CFG Scale."""
    from tests.test_xyz_plot import xyz_args
    services = flux_server
    job = services.generate(_request(steps=2, script_name="X/Y/Z plot", script_run_args=xyz_args(
        ("Distilled CFG Scale", "1, 6"), include_lone_images=True)))
    assert job.wait(300) and job.error is None, job.error
    result = job.result
    assert result.index_of_first_image == 1 and len(result.images) == 3
    for index, value in enumerate((1.0, 6.0)):
        alone = services.engine.run(_request(steps=2, distilled_cfg_scale=value))
        assert np.abs(pixels(result.images[1 + index]) - pixels(alone.images[0])).max() == 0
        assert f"Distilled CFG Scale: {value:g}" in result.infotexts[1 + index]
    assert np.abs(pixels(result.images[1]) - pixels(result.images[2])).max() > 0
