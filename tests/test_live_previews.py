"""Live previews: the four methods (Approx cheap, Approx NN and TAESD from files in models/VAE-approx or
models/VAE-taesd, Full), which of them are offered, bad files, and previews in the UI's gallery while a job runs."""
from __future__ import annotations

import base64
import io
import logging
import re
import threading
import time

import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderTiny
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from app import create_app
from conftest import install_model, pixels
from webui.engine import preview
from webui.core.run_control import RunControl
from webui.models.preview_decoders import ApproxDecoder, PreviewDecoders, taesd_decoder
from webui.settings.flags import parse_flags
from webui.settings.options import OptionError
from webui.ui import generation

LATENTS = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(3))


def approx_reference(state: dict, latents: torch.Tensor) -> torch.Tensor:
    """A1111's Approx NN written out with plain functional calls: nearest 2x, an 11-pixel zero border, eight
    unpadded convolutions each followed by leaky ReLU 0.1."""
    x = torch.nn.functional.interpolate(latents, scale_factor=2, mode="nearest")
    x = torch.nn.functional.pad(x, (11, 11, 11, 11))
    for number in range(1, 9):
        x = torch.nn.functional.conv2d(x, state[f"conv{number}.weight"], state[f"conv{number}.bias"])
        x = torch.nn.functional.leaky_relu(x, 0.1)
    return x


def write_approx(folder, name="model.pt", seed=0) -> dict:
    torch.manual_seed(seed)
    state = {k: v * 4 for k, v in ApproxDecoder().state_dict().items()}  # livelier than the init's small weights
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / name)
    return state


def write_taesd(folder, name="taesd_decoder.pth", seed=0, latent_channels=4) -> DecoderTiny:
    """A random TAESD decoder saved in TAESD's own layout (index 0 is the input clamp, so every index is one
    higher than diffusers' DecoderTiny's)."""
    torch.manual_seed(seed)
    decoder = taesd_decoder(latent_channels).eval()
    state = {f"{int(k.split('.')[1]) + 1}.{k.split('.', 2)[2]}": v for k, v in decoder.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    else:
        torch.save(state, folder / name)
    return decoder


def as_picture(rgb: torch.Tensor) -> np.ndarray:
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_approx_nn_file_renders_a1111s_network(tmp_path):
    state = write_approx(tmp_path / "VAE-approx")
    decoders = PreviewDecoders([tmp_path / "VAE-approx", tmp_path / "VAE-taesd"])
    assert decoders.methods() == ["Approx NN"]
    image = preview.Previewer(preview.APPROX_NN, decoders=decoders).render(LATENTS, "sd1")
    assert image.size == (24, 16)  # twice the latents' 12x8
    with torch.no_grad():
        expected = as_picture(approx_reference(state, LATENTS[:1])[0])
    # the same conv2d calls on the same one-image batch and weights, in this thread: bit-identical
    assert np.array_equal(np.asarray(image), expected)
    assert len(np.unique(np.asarray(image))) > 10  # a picture, not a flat colour


@pytest.mark.parametrize("name", ["taesd_decoder.pth", "taesd_decoder.safetensors"])
def test_taesd_file_renders_like_diffusers_tiny_decoder(tmp_path, name):
    reference = write_taesd(tmp_path / "VAE-taesd", name)
    decoders = PreviewDecoders([tmp_path / "VAE-approx", tmp_path / "VAE-taesd"])
    assert decoders.methods() == ["TAESD"]
    image = preview.Previewer(preview.TAESD, decoders=decoders).render(LATENTS, "sd1")
    assert image.size == (96, 64)  # the final image's size: 8x the latents
    with torch.no_grad():
        expected = as_picture(reference(LATENTS[:1])[0])
    assert np.abs(np.asarray(image, dtype=int) - expected.astype(int)).max() <= 1


def test_sdxl_looks_for_its_own_files(tmp_path):
    folder = tmp_path / "VAE-approx"
    write_approx(folder)  # SD1's file only
    decoders = PreviewDecoders([folder])
    assert decoders.find("Approx NN", "sd1") and decoders.find("Approx NN", "sd2")
    assert decoders.find("Approx NN", "sdxl") is None
    write_approx(folder, "vaeapprox-sdxl.pt", seed=1)
    assert decoders.find("Approx NN", "sdxl") == folder / "vaeapprox-sdxl.pt"


def test_offered_methods_follow_the_files(make_services):
    services = make_services("sd1")
    spec = services.options.specs["show_progress_type"]
    assert spec.default == "Approx cheap"
    assert spec.offered() == ["Approx cheap", "Full"]
    with pytest.raises(OptionError, match="'TAESD' is not available now"):
        services.options.validate({"show_progress_type": "TAESD"})
    with pytest.raises(OptionError, match="must be one of"):
        services.options.validate({"show_progress_type": "Sharp"})
    folder = services.paths.preview_decoder_dirs[0]  # models/VAE-approx: TAESD files are found there too
    write_taesd(folder)
    write_approx(folder)
    assert spec.offered() == ["Approx cheap", "Approx NN", "TAESD", "Full"]  # found without a restart
    assert services.options.validate({"show_progress_type": "TAESD"}) == {"show_progress_type": "TAESD"}


def test_a_broken_file_falls_back_to_cheap_previews_once(tmp_path, caplog):
    folder = tmp_path / "VAE-approx"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"not a torch file")
    previewer = preview.Previewer(preview.APPROX_NN, decoders=PreviewDecoders([folder]))
    with caplog.at_level(logging.WARNING):
        first = previewer.render(LATENTS, "sd1")
        second = previewer.render(LATENTS, "sd1")
    assert np.array_equal(np.asarray(first), np.asarray(preview.cheap_preview(LATENTS)))
    assert np.array_equal(np.asarray(second), np.asarray(first))
    messages = [r.getMessage() for r in caplog.records if "model.pt" in r.getMessage()]
    assert len(messages) == 1 and "model.pt is not a usable Approx NN decoder: UnpicklingError" in messages[0]


def test_method_names_accept_the_long_spellings():
    assert preview.method_name("Approximate NN") == "Approx NN"
    assert preview.method_name("approximate cheap") == "Approx cheap"
    with pytest.raises(ValueError, match="unknown live preview method"):
        preview.method_name("Sharp")


def test_full_previews_decode_with_the_runs_vae_every_n_steps(make_services):
    services = make_services("sd1")
    services.options.update({"show_progress_type": "Full", "show_progress_every_n_steps": 2}, save=False)
    shown = []
    control = RunControl(on_progress=lambda progress: shown.append((progress.sampling_step, control.preview)))
    from webui.core.request import GenerationRequest
    result = services.engine.run(GenerationRequest(prompt="a fox", sampler_name="Euler", steps=4, width=64,
                                                   height=64, seed=5, save_images=False), control)
    previews = {step: image for step, image in shown if step}
    assert previews[1] is None and previews[2] is not None and previews[3] is previews[2]
    assert previews[4].size == (64, 64)
    # the last step's latents are the image: the same one-image decode by the run's VAE, bit-identical
    assert np.array_equal(pixels(previews[4]), pixels(result.images[0]))
    assert preview.current_preview(control) is previews[4]


def test_taesd_previews_of_a_run_are_rendered_on_demand(make_services):
    services = make_services("sd1")
    write_taesd(services.paths.preview_decoder_dirs[1])
    services.options.update({"show_progress_type": "TAESD"}, save=False)
    control = RunControl()
    from webui.core.request import GenerationRequest
    services.engine.run(GenerationRequest(prompt="a fox", sampler_name="Euler", steps=2, width=64, height=64,
                                          seed=5, save_images=False), control)
    assert control.preview is None  # nothing rendered in the loop
    image = preview.current_preview(control)
    assert image.size == (64, 64)
    assert not np.array_equal(pixels(image), pixels(preview.cheap_preview(control.latents).resize((64, 64))))


def test_unknown_stored_method_gives_cheap_previews(make_services):
    services = make_services("sd1")
    services.options._values["show_progress_type"] = "Sharp"  # a config.json edited by hand
    control = RunControl()
    from webui.core.request import GenerationRequest
    services.engine.run(GenerationRequest(prompt="a fox", steps=2, width=64, height=64, seed=5,
                                          save_images=False), control)
    assert control.previewer.method == "Approx cheap"
    assert preview.current_preview(control).size == (8, 8)


def test_watcher_gives_one_preview_per_n_steps():
    control = RunControl()
    watcher = preview.PreviewWatcher(control, 3)
    assert watcher.poll() is None  # nothing sampled yet
    seen = []
    for step in range(1, 8):
        control.publish_latents(LATENTS, "sd1")
        control.report(sampling_step=step)
        seen.append(watcher.poll() is not None)
        assert watcher.poll() is None  # asked again within the same N steps: nothing new
    assert seen == [True, False, True, False, False, True, False]  # steps 1, 3, 6: stages 0, 1, 2
    assert preview.PreviewWatcher(control, 0).poll() is None


def shown_previews(updates: list[dict]) -> list[Image.Image]:
    """The pictures the live preview element (over the gallery) was given, decoded from their data URLs."""
    found = []
    for update in updates:
        match = re.search(r'src="data:image/(png|jpeg);base64,([^"]+)"', update["live_preview"]) \
            if isinstance(update["live_preview"], str) else None
        if match:
            found.append(Image.open(io.BytesIO(base64.b64decode(match.group(2)))))
    return found


def test_previews_show_over_the_gallery_and_never_in_it(make_services):
    services = make_services("sd1")
    services.options.update({"show_progress_every_n_steps": 1}, save=False)
    values = ("a red fox", "blurry", "Euler", "Automatic", 40, 64, 64, 1, 1, 7.0, 1234)
    updates = [dict(zip(generation.OUTPUTS, out)) for out in generation.generate(services, "txt2img", None,
                                                                                   *values)]
    previews = shown_previews(updates)
    assert previews, "no live preview was shown"
    assert all(image.size == (8, 8) for image in previews)  # Approx cheap: 1/8 of the 64x64 picture
    galleries = [u["gallery"] for u in updates if isinstance(u["gallery"], list)]
    assert len(galleries) == 1, "the gallery got something before the result"  # it keeps the last results
    final = galleries[0]
    assert len(final) == 1 and final[0].size == (64, 64) and "Steps: 40" in final[0].info["parameters"]
    assert updates[-1]["live_preview"] == ""  # the preview is gone with the result


def test_gallery_gets_no_previews_when_they_are_off(make_services):
    services = make_services("sd1")
    services.options.update({"live_previews_enable": False, "show_progress_every_n_steps": 1}, save=False)
    values = ("a red fox", "blurry", "Euler", "Automatic", 20, 64, 64, 1, 1, 7.0, 1234)
    updates = [dict(zip(generation.OUTPUTS, out)) for out in generation.generate(services, "txt2img", None, *values)]
    shown = [u["gallery"] for u in updates if isinstance(u["gallery"], list)]
    assert len(shown) == 1 and shown[0][0].size == (64, 64)  # only the result
    assert shown_previews(updates) == []


def test_api_sets_the_method_and_progress_shows_its_preview(tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui"]))
    try:
        client = TestClient(app)
        refused = client.post("/sdapi/v1/options", json={"show_progress_type": "TAESD"})
        assert refused.status_code in (400, 422)
        assert "'TAESD' is not available now (available: Approx cheap, Full)" in refused.text
        write_taesd(services.paths.preview_decoder_dirs[1])
        assert client.post("/sdapi/v1/options", json={"show_progress_type": "TAESD"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["show_progress_type"] == "TAESD"
        worker = threading.Thread(target=client.post, args=("/sdapi/v1/txt2img",),
                                  kwargs={"json": {"prompt": "a fox", "steps": 150, "width": 64, "height": 64}})
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while True:
                progress = client.get("/sdapi/v1/progress").json()
                if progress["current_image"]:
                    break
                assert time.monotonic() < deadline, "no preview while the job ran"
                time.sleep(0.05)
            image = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
            assert image.size == (64, 64)  # TAESD: full size (Approx cheap would give 8x8)
        finally:
            client.post("/sdapi/v1/interrupt")
            worker.join(60)
    finally:
        services.stop()


def test_transformer_families_look_for_their_tiny_decoders(tmp_path):
    """SD3 / SD3.5 use `taesd3_decoder`, Z-Image (FLUX.1's AE latents) and FLUX.1's variants `taef1_decoder`; an SD
    decoder (4 latent channels) is never offered for their 16-channel latents."""
    folder = tmp_path / "VAE-taesd"
    write_taesd(folder)  # SD1's only
    decoders = PreviewDecoders([folder])
    assert all(decoders.find("TAESD", family) is None for family in ("sd3", "zimage", "flux", "flux-fill"))
    write_taesd(folder, "taef1_decoder.safetensors", seed=1, latent_channels=16)
    reference = write_taesd(folder, "taesd3_decoder.pth", seed=2, latent_channels=16)
    taef1 = folder / "taef1_decoder.safetensors"
    assert decoders.find("TAESD", "zimage") == decoders.find("TAESD", "flux-fill") == taef1
    assert decoders.find("TAESD", "sd3") == folder / "taesd3_decoder.pth"
    assert decoders.find("TAESD", "sd1") == folder / "taesd_decoder.pth"
    latents = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(4))
    image = preview.Previewer(preview.TAESD, decoders=decoders).render(latents, "sd3")
    assert image.size == (96, 64)
    with torch.no_grad():
        expected = as_picture(reference(latents)[0])
    assert np.abs(np.asarray(image, dtype=int) - expected.astype(int)).max() <= 1
