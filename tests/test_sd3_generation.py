"""SD3 / SD3.5 checkpoints through the server: Stability's single file with its text encoders, a transformer file
with separate clip_l / clip_g / t5xxl files, txt2img and img2img against diffusers' own StableDiffusion3Pipeline /
StableDiffusion3Img2ImgPipeline on the same tiny weights, running without T5, and the family's refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import pixels
from tests.transformer_checks import encode_to_posterior_mean, random_image
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.models.tiny_sd3 import tiny_sd3_modules, write_sd3, write_sd3_parts
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

PROMPT = "a lighthouse at dusk"
NEGATIVE = "blurry"
SIZE = 64


@pytest.fixture(scope="module")
def sd3_server(tmp_path_factory):
    from webui.services import build_services

    data = tmp_path_factory.mktemp("sd3-data")
    checkpoints = data / "models" / "Stable-diffusion"
    write_sd3(checkpoints / "sd3-packed.safetensors", "SAI")  # MMDiT, VAE, CLIP-L, CLIP-G and T5 in one file
    write_sd3(checkpoints / "sd3-alone.safetensors", "SAI", parts=("vae",))  # SD3.5's files: text encoders apart
    parts = write_sd3_parts(data / "models" / "text_encoder")
    parts["sd3_vae"].unlink()
    parts["t5xxl_fp8_e4m3fn"].unlink()
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.hasher.wait_idle(30)
    yield services
    services.stop()


def _request(**fields) -> GenerationRequest:
    base = dict(prompt=PROMPT, negative_prompt=NEGATIVE, sampler_name="Euler", scheduler="Automatic", steps=4,
                width=SIZE, height=SIZE, seed=3, cfg_scale=4.5, save_images=False, checkpoint="sd3-packed")
    base.update(fields)
    return GenerationRequest(**base)


def _reference(services, cls, t5: bool = True):
    from diffusers import FlowMatchEulerDiscreteScheduler

    modules = tiny_sd3_modules(0)
    _, model = services.models.get("sd3-packed")
    return cls(transformer=modules["transformer"], scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
               vae=modules["vae"], text_encoder=modules["clip_l"], tokenizer=model.tokenizers[0],
               text_encoder_2=modules["clip_g"], tokenizer_2=model.tokenizers[1],
               text_encoder_3=modules["t5"] if t5 else None, tokenizer_3=model.tokenizers[2] if t5 else None)


def test_txt2img_matches_diffusers_sd3_pipeline(sd3_server):
    from diffusers import StableDiffusion3Pipeline

    result = sd3_server.engine.run(_request())
    expected = _reference(sd3_server, StableDiffusion3Pipeline)(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=4.5, height=SIZE, width=SIZE,
        generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(pixels(result.images[0]) - pixels(expected)).max() <= 1
    assert pixels(result.images[0]).std() > 5
    info = result.infotexts[0]
    assert "Sampler: Euler, Schedule type: Uniform, CFG scale: 4.5, Seed: 3" in info  # its own: diffusers'
    assert "Distilled CFG Scale" not in info


def test_img2img_matches_diffusers(sd3_server):
    """A1111's t_enc + 1 steps (8 steps at 0.5: the last 5) are diffusers' strength 0.625; both start from the
    init image's posterior mean."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    init = random_image(4, SIZE)
    result = sd3_server.engine.run(_request(mode="img2img", init_images=[init], denoising_strength=0.5, steps=8))
    pipe = _reference(sd3_server, StableDiffusion3Img2ImgPipeline)
    encode_to_posterior_mean(pipe)
    expected = pipe(PROMPT, negative_prompt=NEGATIVE, image=init, strength=0.625, num_inference_steps=8, height=SIZE,
                    width=SIZE, guidance_scale=4.5, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(pixels(result.images[0]) - pixels(expected)).max() <= 1


def test_separate_text_encoders_and_running_without_t5(sd3_server):
    """SD3.5's layout: the MMDiT file with its VAE, CLIP-L / CLIP-G / T5 from models/text_encoder (the only file
    of each kind there, so no choice is needed); with T5 left out by the choice, the picture is diffusers' with
    no third text encoder."""
    from diffusers import StableDiffusion3Pipeline

    packed = sd3_server.engine.run(_request(steps=3))
    apart = sd3_server.engine.run(_request(steps=3, checkpoint="sd3-alone"))
    # fp16 text-encoder files against the packed float32 ones: the same picture within rounding
    assert np.abs(pixels(packed.images[0]) - pixels(apart.images[0])).max() <= 3
    assert "Module 1: clip_l, Module 2: clip_g, Module 3: t5xxl_fp16" in apart.infotexts[0]
    t5 = sd3_server.paths.text_encoder / "t5xxl_fp16.safetensors"
    moved = t5.with_suffix(".bak")  # no T5 file at all: SD3 runs on its CLIP encoders (a T5 part of zeros)
    t5.rename(moved)
    sd3_server.models.unload_all()
    try:
        no_t5 = sd3_server.engine.run(_request(steps=3, checkpoint="sd3-alone"))
    finally:
        moved.rename(t5)
        sd3_server.models.unload_all()
    expected = _reference(sd3_server, StableDiffusion3Pipeline, t5=False)(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=4.5, height=SIZE, width=SIZE,
        generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(pixels(no_t5.images[0]) - pixels(expected)).max() <= 3
    assert "t5xxl" not in no_t5.infotexts[0]


def test_sd3_refusals(sd3_server):
    with pytest.raises(RequestError) as size:
        sd3_server.engine.run(_request(height=72, steps=2))
    assert size.value.field == "height" and "multiples of 16" in str(size.value)
    with pytest.raises(RequestError) as sampler:
        sd3_server.engine.run(_request(sampler_name="DPM++ SDE", steps=2))
    assert "Euler" in str(sampler.value)
