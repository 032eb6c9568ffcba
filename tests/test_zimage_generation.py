"""Z-Image (a 2025 family, the third transformer family) through the server: ComfyUI's transformer file with the
separate ae / qwen_3_4b files, txt2img and img2img against diffusers' own ZImagePipeline / ZImageImg2ImgPipeline on
the same tiny weights (with and without CFG: our CFG scale is diffusers' guidance + 1), batches whose prompts have
different lengths, and Forge-style infotext."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import pixels
from tests.transformer_checks import encode_to_posterior_mean, random_image, rounded
from webui.core.request import GenerationRequest
from webui.models.tiny_zimage import tiny_zimage_modules, write_zimage_data, zimage_pipeline
from webui.settings.flags import parse_flags

PROMPT = "a cat on a red sofa"
SIZE = 64


@pytest.fixture(scope="module")
def zimage_server(tmp_path_factory):
    from webui.services import build_services

    data = write_zimage_data(tmp_path_factory.mktemp("zimage-data"))
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.hasher.wait_idle(30)
    yield services
    services.stop()


def _request(**fields) -> GenerationRequest:
    base = dict(prompt=PROMPT, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=4, width=SIZE,
                height=SIZE, seed=9, cfg_scale=1.0, save_images=False, checkpoint="z_image_turbo")
    base.update(fields)
    return GenerationRequest(**base)


def _reference(services, cls=None):
    """diffusers' pipeline on the tiny modules, its Qwen3 rounded through bfloat16 as the server's
    `qwen_3_4b.safetensors` file holds it (the fp32 original gives captions ~0.04 away)."""
    _, model = services.models.get("z_image_turbo")
    modules = tiny_zimage_modules(0)
    modules["qwen3"] = rounded(modules["qwen3"], torch.bfloat16)
    pipe = zimage_pipeline(modules, model.tokenizers[0])
    if cls is not None:
        pipe = cls(**pipe.components)
    return pipe


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_txt2img_matches_diffusers_zimage_pipeline(zimage_server, cfg):
    negative = "" if cfg == 1.0 else "blurry, dark"
    result = zimage_server.engine.run(_request(cfg_scale=cfg, negative_prompt=negative))
    expected = _reference(zimage_server)(PROMPT, negative_prompt=negative, num_inference_steps=4,
                                         guidance_scale=cfg - 1.0, height=SIZE, width=SIZE,
                                         generator=torch.Generator().manual_seed(9)).images[0]
    difference = np.abs(pixels(result.images[0]) - pixels(expected))
    assert difference.max() <= 1 and difference.mean() < 0.6
    assert pixels(result.images[0]).std() > 5
    info = result.infotexts[0]
    assert "Sampler: Euler, Schedule type: Simple" in info and "Module 1: ae, Module 2: qwen_3_4b" in info


def test_img2img_matches_diffusers(zimage_server):
    from diffusers import ZImageImg2ImgPipeline

    init = random_image(5, SIZE)
    result = zimage_server.engine.run(_request(mode="img2img", init_images=[init], denoising_strength=0.5, steps=8))
    pipe = _reference(zimage_server, ZImageImg2ImgPipeline)
    encode_to_posterior_mean(pipe)
    expected = pipe(PROMPT, image=init, strength=0.625, num_inference_steps=8, guidance_scale=0.0, height=SIZE,
                    width=SIZE, generator=torch.Generator().manual_seed(9)).images[0]
    assert np.abs(pixels(result.images[0]) - pixels(expected)).max() <= 1


def test_a_batch_of_prompts_of_different_lengths(zimage_server):
    """Each caption keeps its own length in the batch (zero padding would change Z-Image's output)."""
    short, long = "a cat", "a cat on a red sofa beside a window with rain and a lamp and books"
    alone = zimage_server.engine.run(_request(prompt=short, negative_prompt=long, cfg_scale=2.0, steps=3))
    batch = zimage_server.engine.run(_request(prompt=short, negative_prompt=long, cfg_scale=2.0, steps=3,
                                              batch_size=2))
    assert np.abs(pixels(batch.images[-2]) - pixels(alone.images[0])).max() <= 1  # uncond and cond rows differ
    assert np.abs(pixels(batch.images[-1]) - pixels(batch.images[-2])).max() > 5  # in length; seeds 9 and 10
