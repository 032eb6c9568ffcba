"""LoRA tags in a generation: the image changes, the infotext names the LoRA with A1111's hash, taking the tag out
gives back the exact image, and LoRAs that don't fit are warnings. Plus the API listings of LoRAs, embeddings,
VAEs and their refresh routes."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.lora_files import kohya_lora
from tests.test_vae import other_vae, write_ldm_vae
from tests.ti_files import random_vectors, write_a1111_pt
from tests.conftest import pixels, quick_run as run
from webui.models.tiny import build_modules
from webui.outputs.infotext import parse_infotext


def addnet_hash(path) -> str:
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header:]).hexdigest()[:12]


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    from tests.conftest import install_model
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("lora-engine")
    install_model(data, tiny_models["sd1"])
    services = build_services(parse_flags(["--data-dir", str(data)]))
    _, model = services.models.select("tiny-sd1")
    lora = services.paths.lora
    kohya_lora(model.unet, model.text_encoders, "sd1", seed=1).save(lora / "ink.safetensors")
    kohya_lora(model.unet, model.text_encoders, "sd1", seed=2).save(lora / "styles" / "glow.safetensors")
    _, _, unet, _, encoders = build_modules("sdxl")
    kohya_lora(unet, encoders, "sdxl", naming="ldm", seed=3).save(lora / "xl-only.safetensors")
    yield services
    services.stop()


def test_lora_changes_the_image_and_is_named_in_the_infotext(services):
    plain = run(services)
    inked = run(services, prompt="a fox <lora:ink:0.8>")
    assert not np.array_equal(pixels(plain.images[0]), pixels(inked.images[0]))
    params = parse_infotext(inked.infotexts[0])
    assert params["Lora hashes"] == f"ink: {addnet_hash(services.paths.lora / 'ink.safetensors')}"
    assert params["Prompt"] == "a fox <lora:ink:0.8>"
    again = run(services)
    assert np.array_equal(pixels(plain.images[0]), pixels(again.images[0]))  # removed exactly


def test_weights_and_sets_change_between_generations(services):
    plain = run(services)
    light = run(services, prompt="a fox <lora:ink:0.3>")
    strong = run(services, prompt="a fox <lora:ink:1.2>")
    light_again = run(services, prompt="a fox <lora:ink:0.3>")
    assert np.array_equal(pixels(light.images[0]), pixels(light_again.images[0]))
    assert not np.array_equal(pixels(light.images[0]), pixels(strong.images[0]))
    both = run(services, prompt="a fox <lora:ink:0.3> <lora:glow:1:0.5>")
    assert parse_infotext(both.infotexts[0])["Lora hashes"].count(":") == 2
    zero = run(services, prompt="a fox <lora:ink:0>")
    # weight 0 leaves the checkpoint's weights as they were: the same computation as `plain`, bit-identical
    assert np.array_equal(pixels(plain.images[0]), pixels(zero.images[0]))


def test_text_encoder_and_unet_weights_act_separately(services):
    plain = run(services)
    te_only = run(services, prompt="a fox <lora:ink:1:0>")
    unet_only = run(services, prompt="a fox <lora:ink:te=0:unet=1>")
    for result in (te_only, unet_only):
        assert not np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))
    assert not np.array_equal(pixels(te_only.images[0]), pixels(unet_only.images[0]))


def test_an_sdxl_lora_on_sd1_is_skipped_with_a_warning(services):
    plain = run(services)
    result = run(services, prompt="a fox <lora:xl-only:1>")
    # the skipped LoRA patches nothing and its tag is cut: the same computation as `plain`, bit-identical
    assert np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))
    assert any("xl-only" in w and "SDXL" in w for w in result.warnings), result.warnings
    assert "Lora hashes" not in result.infotexts[0]


def test_api_lists_and_refreshes_the_model_folders(services):
    from app import create_app
    from webui.settings.flags import parse_flags
    app, _ = create_app(parse_flags(["--nowebui"]), services=services)
    client = TestClient(app)
    loras = {item["name"]: item for item in client.get("/sdapi/v1/loras").json()}
    assert {"ink", "glow", "xl-only"} <= set(loras)
    assert loras["ink"]["path"].endswith("ink.safetensors")

    write_a1111_pt(services.paths.embeddings / "fits.pt", random_vectors(2, 64, 1))
    write_a1111_pt(services.paths.embeddings / "too-wide.pt", random_vectors(1, 768, 2))
    assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
    listing = client.get("/sdapi/v1/embeddings").json()
    assert listing["loaded"]["fits"]["vectors"] == 2 and listing["loaded"]["fits"]["shape"] == 64
    assert "768" in listing["skipped"]["too-wide"]["reason"]

    write_ldm_vae(services.paths.vae / "soft.safetensors", other_vae(seed=9))
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    assert [v["model_name"] for v in client.get("/sdapi/v1/sd-vae").json()] == ["soft.safetensors"]
    bad = client.post("/sdapi/v1/options", json={"sd_vae": "nothing.safetensors"})
    assert bad.status_code == 400 and "soft.safetensors" in bad.json()["detail"]
    assert client.post("/sdapi/v1/options", json={"sd_vae": "soft.safetensors"}).status_code == 200
    try:
        body = {"prompt": "a fox <lora:ink:1>", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
        info = client.post("/sdapi/v1/txt2img", json=body).json()["info"]
        import json
        info = json.loads(info)
        assert info["sd_vae_name"] == "soft.safetensors" and len(info["sd_vae_hash"]) == 10
        assert "Lora hashes" in info["extra_generation_params"]
    finally:
        services.options.update({"sd_vae": "Automatic"})
