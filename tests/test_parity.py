"""Where a diffusers scheduler computes what A1111 computes, the engine's images equal the bare diffusers pipeline's
for the same model, prompt, seeds, size and sampler: Euler and Euler a over the uniform schedule, in txt2img.

Elsewhere A1111 (and so the engine) differs from diffusers on purpose: DPM++ 2M starts from noise x sigma_max rather
than x sqrt(1 + sigma_max^2), DDIM and PLMS use A1111's own timesteps, img2img runs int(steps x denoising) + 1
steps. Those are checked against k-diffusion, A1111's sampling library, in test_a1111_parity.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

from webui.core.request import GenerationRequest

# What each A1111 sampler name means in diffusers terms (A1111's "Automatic" schedule for each).
REFERENCE = {
    "Euler a": lambda c: EulerAncestralDiscreteScheduler.from_config(c, timestep_spacing="linspace"),
    "Euler": lambda c: EulerDiscreteScheduler.from_config(c, timestep_spacing="linspace"),
}


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, tiny_models):
    from tests.conftest import install_model
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("parity")
    install_model(data, tiny_models["sd1"])
    services = build_services(parse_flags(["--data-dir", str(data)]))
    yield services
    services.stop()


def _components(services, cls, scheduler):
    _, model = services.models.get()
    pipe = cls(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
               scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, model


def _max_diff(ours, theirs) -> int:
    assert len(ours) == len(theirs)
    return max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("sampler", list(REFERENCE))
def test_txt2img_matches_diffusers(sd1, sampler):
    request = GenerationRequest(prompt="a red fox in the snow", negative_prompt="blurry", sampler_name=sampler,
                                steps=8, cfg_scale=6.5, seed=1234, width=64, height=96, batch_size=2,
                                save_images=False, do_not_save_grid=True)  # the batch grid: test_grids.py
    ours = sd1.engine.run(request).images
    _, model = sd1.models.get()
    pipe, _ = _components(sd1, StableDiffusionPipeline, REFERENCE[sampler](model.scheduler_config))
    theirs = pipe("a red fox in the snow", negative_prompt="blurry", num_inference_steps=8, guidance_scale=6.5,
                  width=64, height=96, num_images_per_prompt=2,
                  generator=[torch.Generator().manual_seed(1234 + i) for i in range(2)]).images
    assert _max_diff(ours, theirs) <= 1
