"""A1111's Tiling: with circular padding every convolution wraps around the edges, so the UNet commutes with
rolling the latents (what makes the picture tile seamlessly); without it, it does not. The API field and infotext."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tests.conftest import install_model
from webui.engine.tiling import circular_padding
from webui.models.devices import DevicePolicy
from webui.models.loader import load_checkpoint
from webui.settings.flags import parse_flags


def test_the_unet_commutes_with_rolling_only_under_circular_padding(tiny_models, tmp_path):
    model = load_checkpoint(tiny_models["sd1"], DevicePolicy.cpu(), tmp_path / "cache",
                            tiny_models["sd1"].with_suffix(".yaml"))
    unet = model.unet
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 16, 16)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    t = torch.tensor([500])

    def rolled_difference() -> float:
        with torch.no_grad():
            plain = unet(latents, t, encoder_hidden_states=text).sample
            shifted = unet(torch.roll(latents, shifts=(8, 4), dims=(2, 3)), t, encoder_hidden_states=text).sample
        return (torch.roll(plain, shifts=(8, 4), dims=(2, 3)) - shifted).abs().max().item()

    before = [m.padding_mode for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert rolled_difference() > 1e-2
    with circular_padding(unet, model.vae):
        assert rolled_difference() < 1e-4
    assert [m.padding_mode for m in unet.modules() if isinstance(m, torch.nn.Conv2d)] == before


def test_api_tiling_field_changes_the_image_and_is_in_the_infotext(tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui"]))
    try:
        client = TestClient(app)
        body = {"prompt": "tiles", "steps": 2, "width": 64, "height": 64, "seed": 3}
        plain, tiled = (client.post("/sdapi/v1/txt2img", json={**body, "tiling": flag}).json() for flag in (False, True))
        text = json.loads(tiled["info"])["infotexts"][0]
        assert "RNG" in text and ", Tiling: True" in text
        assert "Tiling" not in json.loads(plain["info"])["infotexts"][0]
        pictures = [np.asarray(Image.open(io.BytesIO(base64.b64decode(r["images"][0]))), dtype=np.int16)
                    for r in (plain, tiled)]
        assert np.abs(pictures[0] - pictures[1]).max() > 0
        again = client.post("/sdapi/v1/txt2img", json=body).json()  # the model's padding was put back
        assert again["images"][0] == plain["images"][0]  # the same request in the same process: the same PNG
    finally:
        services.stop()
