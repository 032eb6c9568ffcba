"""FLUX.1 Fill (BFL's inpainting / outpainting model) through the whole server: txt2img and inpainting against
diffusers' own FluxFillPipeline on the same tiny weights (the masked image's latents and the 8x8 pixel mask as the
transformer's extra input), the API with a mask and with outpainting, its family defaults, and the Depth / Canny
variants still refused by name."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import pixels
from tests.transformer_checks import encode_to_posterior_mean, random_image
from webui.core.request import GenerationRequest
from webui.models.tiny_flux import tiny_flux_modules, write_flux
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

PROMPT = "a red fox in the snow"
SIZE = 64


@pytest.fixture(scope="module")
def fill_app(tmp_path_factory):
    from app import create_app

    data = tmp_path_factory.mktemp("flux-fill-data")
    checkpoints = data / "models" / "Stable-diffusion"
    write_flux(checkpoints / "flux-fill.safetensors", "ComfyUI", variant="fill")  # with its AE, CLIP-L and T5
    write_flux(checkpoints / "flux-canny.safetensors", "ComfyUI", variant="control")
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services
    services.stop()


def _request(**fields) -> GenerationRequest:
    base = dict(prompt=PROMPT, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=4,
                width=SIZE, height=SIZE, seed=21, cfg_scale=1.0, distilled_cfg_scale=30.0, save_images=False,
                checkpoint="flux-fill")
    base.update(fields)
    return GenerationRequest(**base)


def _fill_pipeline(services):
    """diffusers' FluxFillPipeline on the tiny weights the file was written from, with the same tokenizers; its VAE
    encodes to the posterior mean, as our inpainting input does."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline

    from webui.models.flux import scheduler_config

    modules = tiny_flux_modules(0, "fill")
    _, model = services.models.get("flux-fill")
    pipe = FluxFillPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config("dev")),
                            vae=modules["vae"], text_encoder=modules["clip"], tokenizer=model.tokenizers[0],
                            text_encoder_2=modules["t5"], tokenizer_2=model.tokenizers[1],
                            transformer=modules["transformer"])
    encode_to_posterior_mean(pipe)
    return pipe


def _reference(services, image: Image.Image, mask: Image.Image, seed: int = 21) -> Image.Image:
    pipe = _fill_pipeline(services)
    return pipe(PROMPT, image=image, mask_image=mask, num_inference_steps=4, guidance_scale=30.0, height=SIZE,
                width=SIZE, generator=torch.Generator().manual_seed(seed), max_sequence_length=512).images[0]


def _patterned_mask() -> Image.Image:
    """White (regenerate) except the last two columns and the last row of every 8x8 block: no block is uniform and
    none is symmetric, so the 8x8 -> 64-channel order of the mask matters; every latent pixel is mostly white, so
    A1111's latent mask (the mask resized to the latents, rounded) is all ones and keeps nothing at latent level."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    keep = (xs % 8 >= 6) | (ys % 8 == 7)
    return Image.fromarray(np.where(keep, 0, 255).astype(np.uint8), "L")


def test_fill_checkpoint_is_recognised(fill_app):
    client, services = fill_app
    _, model = services.models.get("flux-fill")
    assert model.family == "flux-fill" and model.inpainting
    assert "FLUX.1 Fill" in model.label
    titles = [entry["title"] for entry in client.get("/sdapi/v1/sd-models").json()]
    assert any(title.startswith("flux-fill.safetensors") for title in titles)


def test_inpainting_matches_diffusers_fill_pipeline(fill_app):
    """The masked image and a mask with structure inside each 8x8 block: the regenerated pixels equal
    FluxFillPipeline's; the kept ones are the init image's (A1111's overlay)."""
    services = fill_app[1]
    init, mask = random_image(5, SIZE), _patterned_mask()
    result = services.engine.run(_request(mode="img2img", init_images=[init], mask=mask, mask_blur_x=0,
                                          mask_blur_y=0, denoising_strength=1.0, inpainting_fill=1))
    out = pixels(result.images[0])
    expected = pixels(_reference(services, init, mask))
    regenerated = np.asarray(mask) == 255
    assert np.abs(out - expected)[regenerated].max() <= 1
    assert np.array_equal(out[~regenerated], pixels(init)[~regenerated])
    assert out[regenerated].std() > 5  # a picture, not a flat field
    info = result.infotexts[0]
    assert "Distilled CFG Scale: 30" in info and "Conditional mask weight: 1" in info
    assert "Model: flux-fill" in info


def test_an_ordinary_mask_matches_fill_pipeline_with_a1111s_latent_blend(fill_app):
    """A rectangle mask: A1111 keeps the unmasked latents on the init picture's own noised path at every step (the
    denoised prediction blended with the init latents there) and lays the original pixels back over them. The
    reference is FluxFillPipeline with that blend done in its step callback: after each Euler step, the latents
    outside A1111's latent mask (the mask resized to the latents, rounded) are set to (1 - sigma) x init + sigma x
    the starting noise."""
    from webui.engine.transformer_call import pack

    services = fill_app[1]
    init = random_image(5, SIZE)
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 8, 48, 40))
    result = services.engine.run(_request(mode="img2img", init_images=[init], mask=mask, mask_blur_x=0,
                                          mask_blur_y=0, denoising_strength=1.0, inpainting_fill=1))
    pipe = _fill_pipeline(services)
    side = SIZE // 8
    with torch.no_grad():
        pixels_in = torch.from_numpy(np.asarray(init, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        init_latents = pipe.vae.encode(pixels_in).latent_dist.mode()
        init_latents = (init_latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    noise = torch.randn((1, 16, side, side), generator=torch.Generator().manual_seed(21))
    small = np.around(np.asarray(mask.convert("RGB").resize((side, side)), dtype=np.float32)[:, :, 0] / 255)
    keep = pack((1 - torch.from_numpy(small))[None, None].expand(1, 16, side, side).contiguous())

    def blend(pipeline, index, timestep, tensors):
        sigma = float(pipeline.scheduler.sigmas[index + 1])
        path = pack((1 - sigma) * init_latents + sigma * noise)
        return {"latents": tensors["latents"] * (1 - keep) + path * keep}

    expected = pipe(PROMPT, image=init, mask_image=mask, num_inference_steps=4, guidance_scale=30.0, height=SIZE,
                    width=SIZE, generator=torch.Generator().manual_seed(21), max_sequence_length=512,
                    callback_on_step_end=blend, callback_on_step_end_tensor_inputs=["latents"]).images[0]
    out, inside = pixels(result.images[0]), np.asarray(mask) == 255
    assert np.abs(out - pixels(expected))[inside].max() <= 1
    assert np.array_equal(out[~inside], pixels(init)[~inside])
    assert np.abs(out[inside] - pixels(init)[inside]).mean() > 10


def test_the_mask_order_inside_a_block_matters(fill_app):
    """The reference check above can see the mask's layout: the same mask transposed inside each 8x8 block (rows and
    columns of the block swapped) gives another picture."""
    services = fill_app[1]
    init, mask = random_image(5, SIZE), _patterned_mask()
    blocks = np.asarray(mask).reshape(SIZE // 8, 8, SIZE // 8, 8).transpose(0, 3, 2, 1).reshape(SIZE, SIZE)
    common = dict(mode="img2img", init_images=[init], mask_blur_x=0, mask_blur_y=0, denoising_strength=1.0)
    straight = pixels(services.engine.run(_request(mask=mask, **common)).images[0])
    swapped = pixels(services.engine.run(_request(mask=Image.fromarray(blocks, "L"), **common)).images[0])
    both = (np.asarray(mask) == 255) & (blocks == 255)
    assert np.abs(straight - swapped)[both].max() > 1


def test_txt2img_is_a_fill_of_a_blank_canvas(fill_app):
    """txt2img with a Fill checkpoint: A1111's conditioning for inpainting checkpoints, a full mask over a grey
    picture, i.e. FluxFillPipeline with a grey image and a white mask."""
    services = fill_app[1]
    result = services.engine.run(_request())
    grey = Image.new("RGB", (SIZE, SIZE), (127, 127, 127))
    white = Image.new("L", (SIZE, SIZE), 255)
    # an 8-bit grey is 127 / 255 * 2 - 1 = -0.0039 to diffusers' image processor, not our 0: still within 1 / 255
    expected = pixels(_reference(services, grey, white))
    assert np.abs(pixels(result.images[0]) - expected).max() <= 1


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _decoded(data: str) -> np.ndarray:
    return pixels(Image.open(io.BytesIO(base64.b64decode(data))))


def test_api_inpaints_and_outpaints_with_the_fill_checkpoint(fill_app):
    client = fill_app[0]
    init = random_image(7, SIZE)
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {"prompt": PROMPT, "init_images": [_b64(init)], "mask": _b64(mask), "mask_blur": 0, "steps": 3,
            "width": SIZE, "height": SIZE, "seed": 4, "sampler_name": "Euler", "cfg_scale": 1,
            "distilled_cfg_scale": 30, "denoising_strength": 1.0, "inpainting_fill": 1,
            "override_settings": {"sd_model_checkpoint": "flux-fill"}}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    out, before = _decoded(response.json()["images"][0]), pixels(init)
    inside = np.asarray(mask) == 255
    assert np.array_equal(out[~inside], before[~inside])
    assert np.abs(out[inside] - before[inside]).mean() > 10
    info = response.json()["info"]
    assert "flux-fill" in info and "Distilled CFG Scale: 30" in info

    outpaint = dict(body, mask=None, outpaint={"left": 16, "right": 0, "up": 0, "down": 16, "fill": "edge",
                                               "overlap": 0})
    response = client.post("/sdapi/v1/img2img", json=outpaint)
    assert response.status_code == 200, response.text
    grown = _decoded(response.json()["images"][0])
    assert grown.shape[:2] == (SIZE + 16, SIZE + 16)
    assert np.array_equal(grown[:SIZE, 16:], before)  # the picture is kept where it was

    odd = dict(outpaint, outpaint=dict(outpaint["outpaint"], left=8))  # 72 pixels wide: not FLUX.1's multiple of 16
    response = client.post("/sdapi/v1/img2img", json=odd)
    assert response.status_code == 422 or response.status_code == 400, response.text
    assert "outpaint" in response.text and "width 72" in response.text and "multiples of 16" in response.text


def test_choosing_fill_sets_its_usual_values_in_the_ui(fill_app, tiny_models):
    """After an SD checkpoint, choosing the Fill checkpoint sets BFL's values for it (Distilled CFG Scale 30, 50
    steps) in both tabs."""
    from tests.conftest import install_model
    from webui.ui.family_defaults import FIELDS, on_checkpoint_changed

    services = fill_app[1]
    install_model(services.paths.data_dir, tiny_models["sd1"])
    services.models.refresh()
    services.models.select("flux-fill")
    family, *values = on_checkpoint_changed(services, "sd1", 2)
    assert family == "flux-fill"
    assert dict(zip(FIELDS, values[:len(FIELDS)])) == {
        "steps": 50, "cfg_scale": 1.0, "distilled_cfg_scale": 30.0, "width": 1024, "height": 1024,
        "sampler": "Euler", "scheduler": "Simple"}


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_with_the_fill_checkpoint(fill_app, upscaler):
    """The second pass gets the Fill input too: the upscaled picture (or, from upscaled latents, a grey canvas)
    under a full mask."""
    services = fill_app[1]
    result = services.engine.run(_request(steps=2, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler,
                                          denoising_strength=0.6, hr_second_pass_steps=2, batch_size=2))
    assert [image.size for image in result.images] == [(192, 96), (96, 96), (96, 96)]  # the grid, then each
    assert pixels(result.images[1]).std() > 5
    assert f"Hires upscaler: {upscaler}" in result.infotexts[0]


def test_depth_and_canny_checkpoints_are_refused_by_name(fill_app):
    client = fill_app[0]
    body = {"prompt": PROMPT, "steps": 2, "width": SIZE, "height": SIZE, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "flux-canny"}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "FLUX.1 Depth / Canny" in response.text and "flux-canny" in response.text


def test_a_flux_dev_lora_patches_fill_and_skips_only_the_input_layer(tmp_path):
    """A kohya FLUX.1 LoRA trained on dev: every layer Fill shares is patched exactly, the input layer (64 inputs on
    dev, 384 on Fill) is skipped with a warning naming the shapes, and removal restores Fill bit for bit."""
    import copy
    from types import SimpleNamespace

    from tests.test_flux_lora import (H, assert_bit_exact, install, kohya_file, snapshot, transformer_out,
                                      with_deltas)
    from webui.models.networks import NetworkRequest, apply_networks

    reference = tiny_flux_modules(0, "fill")
    modules = {name: copy.deepcopy(module) for name, module in reference.items()}
    model = SimpleNamespace(family="flux-fill", unet=modules["transformer"],
                            text_encoders=[modules["clip"], modules["t5"]])
    lora = kohya_file()
    lora.kohya("lora_unet_img_in", H, 64)  # dev's input layer: not in `expected`, as it cannot apply
    info = install(tmp_path, lora.state, "dev-lora")
    before = snapshot(modules["transformer"], modules["clip"])
    report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])
    assert [item.name for item in report.applied] == ["dev-lora"]
    assert len(report.warnings) == 1 and "FLUX.1 Fill" in report.warnings[0]
    assert "x_embedder: 64x64 in the LoRA, 64x384 in the model" in report.warnings[0]
    torch.testing.assert_close(transformer_out(modules["transformer"]),
                               transformer_out(with_deltas(reference["transformer"], lora.expected)),
                               rtol=1e-4, atol=1e-5)
    apply_networks(model, [])
    assert_bit_exact([modules["transformer"], modules["clip"]], before)
