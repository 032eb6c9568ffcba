"""Placing a transformer family's parts on a GPU smaller than the model (Forge's "GPU Weights"): the decision from
the sizes and the free memory, and the streamed transformer computing exactly what the resident one does (checked
on the CPU: diffusers' group offloading between two CPU "devices" runs the same hooks as between GPU and RAM)."""
from __future__ import annotations

import torch

from webui.models.streaming import Placement, apply_placement, plan_placement, placement_for
from webui.models.tiny_flux import tiny_flux_modules

GIB = 2 ** 30


def test_plan_follows_the_budget():
    flux_dev = dict(transformer=24 * GIB, text_encoders=10 * GIB, vae=GIB // 6)
    assert not plan_placement(**flux_dev, free=78 * GIB).stream_transformer  # an H100: everything resident
    mid = plan_placement(**flux_dev, free=30 * GIB)  # transformer + VAE fit, T5 does not too
    assert (mid.stream_transformer, mid.stream_text_encoders) == (False, True)
    small = plan_placement(**flux_dev, free=12 * GIB)
    assert small.stream_transformer and small.stream_text_encoders
    assert small.budget == 9 * GIB and "streamed block by block" in small.reason
    forced = plan_placement(**flux_dev, free=78 * GIB, gpu_weights_mb=8192)  # the setting overrides the free VRAM
    assert forced.stream_transformer and forced.budget == 8 * GIB


def test_medvram_and_lowvram_keep_their_meaning():
    modules = tiny_flux_modules(0)

    class Model:
        unet, vae, text_encoders = modules["transformer"], modules["vae"], [modules["clip"], modules["t5"]]

    class Policy:
        device = torch.device("cpu")
        offload = "model"

    medvram = placement_for(Model, Policy, free=80 * GIB)
    assert medvram.stream_text_encoders and not medvram.stream_transformer
    Policy.offload = "sequential"
    assert placement_for(Model, Policy, free=80 * GIB).stream_transformer


def test_streamed_transformer_computes_what_the_resident_one_does():
    modules = tiny_flux_modules(0)
    transformer = modules["transformer"]
    inputs = dict(hidden_states=torch.randn(1, 16, 64), timestep=torch.tensor([0.5]),
                  guidance=torch.tensor([3.5]), pooled_projections=torch.randn(1, 64),
                  encoder_hidden_states=torch.randn(1, 8, 32), txt_ids=torch.zeros(8, 3),
                  img_ids=torch.zeros(16, 3), return_dict=False)
    with torch.no_grad():
        resident = transformer(**inputs)[0]

    class Model:
        unet, vae, text_encoders = transformer, modules["vae"], [modules["clip"], modules["t5"]]

    apply_placement(Model, torch.device("cpu"), Placement(True, True, 0, "test"))
    assert any(hasattr(m, "_diffusers_hook") for m in transformer.modules())  # group offloading hooks installed
    with torch.no_grad():
        streamed = transformer(**inputs)[0]
    torch.testing.assert_close(streamed, resident, rtol=0, atol=0)
