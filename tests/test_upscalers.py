"""Image upscalers: the built-in resizes, and tiny Real-ESRGAN compact files (the real layout, read by spandrel)
listed by name, run at their scale (repeated, at most 3 passes) to the exact size, tiled without seams, and clear
errors for files that are not upscalers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from spandrel import ModelLoader

from tiny_upscalers import compact_state_dict, write_compact
from webui.core.run_control import RunControl
from webui.models.devices import DevicePolicy
from webui.models.tiny import write_single_file
from webui.models.upscaler_tiles import run_tiled, tile_starts
from webui.models.upscalers import (UnknownUpscalerError, UpscalerLoadError, UpscalerRegistry, scale_from_name)
from webui.settings.options import Options


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth-ish random picture (noise would make every upscaler look the same)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
    noise = rng.integers(-12, 13, size=(height, width, 3))
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.int32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def reference_pass(path, image: Image.Image) -> Image.Image:
    """One pass of the model run by spandrel directly, on the whole image: the independent reference."""
    model = ModelLoader().load_from_file(path).eval()
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = model(x)[0].permute(1, 2, 0).numpy()
    return Image.fromarray((y * 255.0).round().astype(np.uint8))


@pytest.fixture
def folders(tmp_path):
    dirs = {kind: tmp_path / "models" / kind for kind in ("ESRGAN", "RealESRGAN", "SwinIR")}
    write_compact(dirs["ESRGAN"] / "2x-TinyCompact.pth", scale=2, seed=1)
    write_compact(dirs["RealESRGAN"] / "sub" / "TinyFour.safetensors", scale=4, seed=2)
    write_compact(dirs["SwinIR"] / "1x-Denoise.pth", scale=1, seed=3)
    return dirs


def make_registry(folders, tmp_path, tile: int = 0, overlap: int = 8) -> UpscalerRegistry:
    options = Options(tmp_path / "config.json")
    options.update({"ESRGAN_tile": tile, "ESRGAN_tile_overlap": overlap})
    registry = UpscalerRegistry(folders, DevicePolicy.cpu(), options)
    registry.refresh()
    return registry


# --- the file in the real layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_file_is_read_by_spandrel_as_real_esrgan_compact(tmp_path, suffix):
    path = write_compact(tmp_path / f"tiny{suffix}", scale=4)
    model = ModelLoader().load_from_file(path)
    assert model.architecture.id == "Compact"
    assert (model.scale, model.input_channels, model.output_channels, model.purpose) == (4, 3, 3, "SR")
    assert model.tags == ["8nf", "2nc"]


# --- listing ------------------------------------------------------------------------------------------------------
def test_names_list_builtins_then_model_stems(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    assert registry.names() == ["None", "Lanczos", "Nearest", "2x-TinyCompact", "TinyFour", "1x-Denoise"]
    infos = {info.name: info for info in registry.list()}
    assert infos["None"].kind == "builtin" and infos["None"].path is None and infos["None"].scale == 4
    assert infos["2x-TinyCompact"].kind == "ESRGAN" and infos["2x-TinyCompact"].scale == 2  # guessed from the name
    assert infos["TinyFour"].kind == "RealESRGAN" and infos["TinyFour"].path.name == "TinyFour.safetensors"
    assert infos["1x-Denoise"].model_name == "1x-Denoise"
    assert registry.find("tinyfour.safetensors").name == "TinyFour"  # by file name too, any case


def test_scale_read_from_the_file_replaces_the_guess(folders, tmp_path):
    write_compact(folders["ESRGAN"] / "Mystery.pth", scale=2)
    registry = make_registry(folders, tmp_path)
    assert registry.find("Mystery").scale == 4  # A1111's default before the file is read
    registry.load(registry.find("Mystery"))
    assert registry.find("Mystery").scale == 2
    registry.refresh()
    assert registry.find("Mystery").scale == 2


def test_same_stem_in_two_folders_gets_its_folder_in_the_name(folders, tmp_path):
    write_compact(folders["RealESRGAN"] / "2x-TinyCompact.pth", scale=2, seed=9)
    registry = make_registry(folders, tmp_path)
    assert "2x-TinyCompact (RealESRGAN)" in registry.names()
    assert registry.find("2x-TinyCompact (RealESRGAN)").path.parent.name == "RealESRGAN"


def test_scale_from_name():
    assert scale_from_name("4x-UltraSharp") == 4
    assert scale_from_name("RealESRGAN_x2plus") == 2
    assert scale_from_name("4x_foolhardy_Remacri") == 4
    assert scale_from_name("SwinIR_4x") == 4
    assert scale_from_name("ESRGAN_x8") == 8
    assert scale_from_name("realesr-general-x4v3") == 4
    assert scale_from_name("4xNomos8kSC") == 4
    assert scale_from_name("UltraMix") == 4


# --- built-ins ----------------------------------------------------------------------------------------------------
def test_builtins_resize_exactly(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(40, 30)
    lanczos = image.resize((123, 77), Image.LANCZOS)
    assert np.array_equal(pixels(registry.upscale(image, "Lanczos", 123, 77)), pixels(lanczos))
    assert np.array_equal(pixels(registry.upscale(image, "None", 123, 77)), pixels(lanczos))
    nearest = registry.upscale(image, "nearest", 80, 60)
    assert np.array_equal(pixels(nearest), pixels(image.resize((80, 60), Image.NEAREST)))


# --- models -------------------------------------------------------------------------------------------------------
def test_one_pass_equals_spandrel_run_directly(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(48, 36)
    out = registry.upscale(image, "2x-TinyCompact", 96, 72)
    assert out.size == (96, 72)
    reference = reference_pass(folders["ESRGAN"] / "2x-TinyCompact.pth", image)
    assert np.abs(pixels(out) - pixels(reference)).max() <= 1
    # the model did something beyond a plain resize
    assert np.abs(pixels(out) - pixels(image.resize((96, 72), Image.NEAREST))).mean() > 2


def test_repeats_while_smaller_then_lanczos_to_the_exact_size(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(30, 20)
    out = registry.upscale(image, "2x-TinyCompact", 100, 70)  # 2x -> 60x40, again -> 120x80, then down to 100x70
    assert out.size == (100, 70)
    path = folders["ESRGAN"] / "2x-TinyCompact.pth"
    reference = reference_pass(path, reference_pass(path, image)).resize((100, 70), Image.LANCZOS)
    assert np.abs(pixels(out) - pixels(reference)).max() <= 1


def test_at_most_three_passes(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(8, 8)
    control = RunControl()
    passes = []
    control.report = lambda **changes: passes.append(changes) if "textinfo" in changes else None  # one per pass
    out = registry.upscale(image, "2x-TinyCompact", 128, 128, control=control)  # 16x asked: 3 passes (8x), Lanczos
    assert out.size == (128, 128) and len(passes) == 3
    path = folders["ESRGAN"] / "2x-TinyCompact.pth"
    three = reference_pass(path, reference_pass(path, reference_pass(path, image)))
    assert three.size == (64, 64)
    assert np.abs(pixels(out) - pixels(three.resize((128, 128), Image.LANCZOS))).max() <= 1


def test_no_pass_when_the_target_is_not_larger(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(64, 48)
    out = registry.upscale(image, "2x-TinyCompact", 32, 24)
    assert np.array_equal(pixels(out), pixels(image.resize((32, 24), Image.LANCZOS)))


def test_a_1x_model_runs_once(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(40, 32)
    out = registry.upscale(image, "1x-Denoise", 40, 32)
    reference = reference_pass(folders["SwinIR"] / "1x-Denoise.pth", image)
    assert np.abs(pixels(out) - pixels(reference)).max() <= 1
    assert np.abs(pixels(out) - pixels(image)).mean() > 2


def test_safetensors_model_and_rgba_input(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    image = picture(20, 16).convert("RGBA")
    out = registry.upscale(image, "TinyFour", 80, 64)
    assert out.size == (80, 64) and out.mode == "RGB"
    reference = reference_pass(folders["RealESRGAN"] / "sub" / "TinyFour.safetensors", image.convert("RGB"))
    assert np.abs(pixels(out) - pixels(reference)).max() <= 1


# --- tiles --------------------------------------------------------------------------------------------------------
def test_tiled_matches_untiled(folders, tmp_path):
    image = picture(100, 70, seed=4)
    untiled = make_registry(folders, tmp_path, tile=0).upscale(image, "2x-TinyCompact", 200, 140)
    tiled = make_registry(folders, tmp_path, tile=32, overlap=16).upscale(image, "2x-TinyCompact", 200, 140)
    assert np.abs(pixels(tiled) - pixels(untiled)).max() <= 2
    coarse = make_registry(folders, tmp_path, tile=40, overlap=8).upscale(image, "2x-TinyCompact", 200, 140)
    assert np.abs(pixels(coarse) - pixels(untiled)).mean() < 0.5  # the default overlap: no visible seams


def test_tile_blending_is_exact_for_a_pointwise_upscale():
    image = torch.rand(1, 3, 45, 70)

    def nearest(x):
        return F.interpolate(x, scale_factor=3, mode="nearest")

    tiled = run_tiled(nearest, image, 3, tile=16, overlap=6)
    assert torch.allclose(tiled, nearest(image), atol=1e-6)
    assert tile_starts(70, 16, 6) == [0, 10, 20, 30, 40, 50, 54]
    assert tile_starts(10, 16, 6) == [0]


def test_progress_per_tile_and_interrupt(folders, tmp_path):
    registry = make_registry(folders, tmp_path, tile=32, overlap=8)
    image = picture(64, 64)
    control = RunControl()
    seen = []
    original = control.report

    def report(**changes):
        original(**changes)
        seen.append((control.progress.sampling_step, control.progress.sampling_steps, control.progress.textinfo))
        if len(seen) == 3:
            control.interrupt()

    control.report = report
    assert registry.upscale(image, "2x-TinyCompact", 128, 128, control=control) is None
    assert seen[0] == (0, 9, "Upscaling with 2x-TinyCompact")  # 64 px in 32 px tiles overlapping 8: 3 x 3
    assert [step for step, _, text in seen if text != "Interrupting..."] == [0, 1, 2]
    assert seen[-1][2] == "Interrupting..."  # said at once, before the next tile would start


# --- cache --------------------------------------------------------------------------------------------------------
def test_models_are_cached_and_unloaded(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    registry.keep = 1
    first = registry.load(registry.find("2x-TinyCompact"))
    assert registry.load(registry.find("2x-TinyCompact")) is first
    registry.load(registry.find("TinyFour"))
    assert registry.load(registry.find("2x-TinyCompact")) is not first  # evicted by the other one
    again = registry.load(registry.find("2x-TinyCompact"))
    registry.unload()
    assert registry.load(registry.find("2x-TinyCompact")) is not again


def test_a_changed_file_is_read_again(folders, tmp_path):
    import os
    registry = make_registry(folders, tmp_path)
    path = folders["ESRGAN"] / "2x-TinyCompact.pth"
    image = picture(24, 24)
    before = registry.upscale(image, "2x-TinyCompact", 48, 48)
    torch.save(compact_state_dict(scale=2, seed=42), path)
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    after = registry.upscale(image, "2x-TinyCompact", 48, 48)
    assert np.abs(pixels(after) - pixels(before)).max() > 3


# --- errors -------------------------------------------------------------------------------------------------------
def test_unknown_name_lists_the_names(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    with pytest.raises(UnknownUpscalerError) as caught:
        registry.upscale(picture(8, 8), "4x-UltraSharp", 32, 32)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert "'4x-UltraSharp' not found" in message
    assert "None, Lanczos, Nearest, 2x-TinyCompact, TinyFour, 1x-Denoise" in message


def test_corrupt_file_is_a_clear_error_and_others_keep_working(folders, tmp_path):
    (folders["ESRGAN"] / "4x-Broken.pth").write_bytes(b"this is not a pickle" * 10)
    registry = make_registry(folders, tmp_path)
    with pytest.raises(UpscalerLoadError) as caught:
        registry.upscale(picture(8, 8), "4x-Broken", 32, 32)
    assert str(caught.value).startswith("Upscaler model 4x-Broken.pth: not a model file spandrel can read")
    assert registry.upscale(picture(8, 8), "2x-TinyCompact", 16, 16).size == (16, 16)


def test_a_checkpoint_is_not_an_upscaler(folders, tmp_path):
    write_single_file(folders["ESRGAN"] / "sd-model.safetensors", "sd1")
    registry = make_registry(folders, tmp_path)
    with pytest.raises(UpscalerLoadError) as caught:
        registry.upscale(picture(8, 8), "sd-model", 32, 32)
    assert "sd-model.safetensors" in str(caught.value)
    assert "match no architecture spandrel knows" in str(caught.value)


def test_a_grayscale_model_is_refused(folders, tmp_path):
    write_compact(folders["ESRGAN"] / "2x-Gray.pth", scale=2, channels=1)
    registry = make_registry(folders, tmp_path)
    with pytest.raises(UpscalerLoadError, match=r"2x-Gray\.pth: a RealESRGAN Compact model for 1-channel images"):
        registry.upscale(picture(8, 8), "2x-Gray", 16, 16)


def test_tile_options_are_registered(tmp_path):
    options = Options(tmp_path / "config.json")
    assert options.get("ESRGAN_tile") == 192 and options.get("ESRGAN_tile_overlap") == 8
    assert options.specs["ESRGAN_tile"].label == "Tile size for ESRGAN upscalers. 0 = no tiling."
    assert options.specs["ESRGAN_tile_overlap"].label == "Tile overlap for ESRGAN upscalers."
    assert options.specs["ESRGAN_tile"].section == ("upscaling", "Upscaling")


def test_no_second_pass_that_would_overshoot_far_past_the_target(folders, tmp_path):
    """A 4x model on 10 px asked for 50 px: one pass gives 40; a second would give 160 (over twice 50), so Lanczos
    takes 40 to 50 instead. Asked for 90 px, the second pass (160 <= 180) still runs."""
    registry = make_registry(folders, tmp_path)
    name = next(n for n in registry.names() if "TinyFour" in n)
    sizes = []
    original = registry._run_model

    def counting(model, current, *rest):
        sizes.append(current.size)
        return original(model, current, *rest)

    registry._run_model = counting
    assert registry.upscale(picture(10, 10), name, 50, 50).size == (50, 50)
    assert sizes == [(10, 10)]
    sizes.clear()
    assert registry.upscale(picture(10, 10), name, 90, 90).size == (90, 90)
    assert sizes == [(10, 10), (40, 40)]


def test_sixteen_bit_greyscale_is_scaled_not_clipped(folders, tmp_path):
    registry = make_registry(folders, tmp_path)
    grey = Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16))  # mid grey in 16 bits
    assert grey.mode.startswith("I")
    for name in ("Lanczos", "2x-TinyCompact"):
        out = registry.upscale(grey, name, 32, 32)
        assert out.mode == "RGB"
    lanczos = pixels(registry.upscale(grey, "Lanczos", 32, 32))
    assert np.all(np.abs(lanczos - 117) <= 1)  # 30000 / 257, not white
