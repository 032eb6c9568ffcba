"""Tiled VAE decode/encode (webui/models/vae_tiling.py): where tiles go, that the blending is exact for a VAE without
global statistics and seamless for one with them, how close tiled is to untiled on real VAE shapes (random
weights), that nothing changes below the threshold, and the engine using it (hires fix, fp16 NaN retry)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from conftest import pixels
from webui.core.request import GenerationRequest
from webui.models import vae_tiling
from webui.models.tiny import build_modules

TILES = vae_tiling.TileSettings(threshold=64, tile_size=192, overlap=64)


def smooth_latents(size: int, seed: int = 1) -> torch.Tensor:
    """Latents with image-like structure (bicubic-upsampled noise), (1, 4, size, size)."""
    noise = torch.randn(1, 4, size // 4, size // 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic")


def smooth_pixels(size: int, seed: int = 2) -> torch.Tensor:
    noise = torch.rand(1, 3, size // 16, size // 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic").clamp(-1, 1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


class PointwiseVae:
    """A stand-in VAE with no spatial context and no global statistics (each latent becomes an 8x8 block of a linear
    function of it; encoding averages 8x8 blocks): tiling it must change nothing at all."""

    class config:
        block_out_channels = (1, 1, 1, 1)

    def __init__(self, subtract_tile_mean: bool = False):
        self.weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
        self.subtract_tile_mean = subtract_tile_mean  # a crude GroupNorm: statistics of what it is given

    def decode(self, z, return_dict=False):
        out = torch.einsum("oc,nchw->nohw", self.weight, z).repeat_interleave(8, -2).repeat_interleave(8, -1)
        if self.subtract_tile_mean:
            out = out - z.mean()
        return (out,)

    def encode(self, x):
        mean = torch.nn.functional.avg_pool2d(torch.cat([x, x[:, :1]], 1), 8)
        return type("Out", (), {"latent_dist": DiagonalGaussianDistribution(torch.cat([mean, mean * 0 - 2], 1))})


@pytest.fixture(scope="module")
def real_shaped_vae():
    """SD1.5's VAE structure (4 levels, 2 ResNets per block, GroupNorm 32, mid-block attention), narrower."""
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(32, 64, 128, 128), layers_per_block=2, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=32, sample_size=512).eval()


@pytest.fixture(scope="module")
def tiny_vae():
    return build_modules("sd1")[3].eval()


# --- where tiles go -------------------------------------------------------------------------------------------------
def test_tiles_cover_evenly_at_full_size_with_at_least_the_overlap():
    for tile, overlap in ((8, 2), (16, 4), (64, 8), (24, 11)):
        for length in range(1, 200):
            starts = vae_tiling.tile_starts(length, tile, overlap)
            size = min(tile, length)
            assert starts[0] == 0 and starts[-1] + size == length, (length, tile, overlap, starts)
            gaps = [b - a for a, b in zip(starts, starts[1:])]
            assert all(size - gap >= overlap for gap in gaps)  # overlap never below the setting
            assert not gaps or max(gaps) - min(gaps) <= 1  # evenly spread: no thin leftover tile


def test_settings_come_from_the_options(make_services):
    services = make_services()
    settings = vae_tiling.TileSettings.from_options(services.options)
    assert settings == vae_tiling.TileSettings(1536, 512, 64)
    assert not settings.applies(1536, 1024) and settings.applies(1544, 512)
    assert not vae_tiling.TileSettings(0, 512, 64).applies(8192, 8192)  # 0: never
    assert settings.in_latents(8) == (64, 8)


# --- the blending ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(40, 40), (23, 61), (17, 9)])
def test_blending_is_exact_for_a_vae_without_context(height, width):
    vae = PointwiseVae()
    settings = vae_tiling.TileSettings(threshold=32, tile_size=64, overlap=16)
    z = torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(3))
    untiled, tiled = vae.decode(z)[0], vae_tiling.decode(vae, z, settings)
    assert tiled.shape == untiled.shape == (2, 3, height * 8, width * 8)
    assert torch.allclose(tiled, untiled, atol=1e-5)
    x = torch.rand(2, 3, height * 8, width * 8, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(vae_tiling.encode(vae, x, settings).mean, vae.encode(x).latent_dist.mean, atol=1e-5)


def test_tiles_with_their_own_statistics_blend_without_a_seam():
    """Each tile shifted by its own mean (as GroupNorm statistics shift a tile's tones): the tiled result differs from
    the untiled one by a smooth field, changing by at most (largest shift between tiles) / (overlap in pixels) from
    one pixel to the next, where cutting tiles without blending would jump by the whole shift."""
    vae = PointwiseVae(subtract_tile_mean=True)
    settings = vae_tiling.TileSettings(threshold=32, tile_size=128, overlap=32)
    ramp = torch.linspace(-3, 3, 48).view(1, 1, 1, 48).expand(1, 4, 48, 48)  # tiles differ in their means
    z = ramp + 0.1 * torch.randn(1, 4, 1, 48, generator=torch.Generator().manual_seed(5))  # the same in every row
    difference = vae_tiling.decode(vae, z, settings) - vae.decode(z)[0]
    starts = vae_tiling.tile_starts(48, 16, 4)
    means = [float(z[..., :, s:s + 16].mean()) for s in starts]
    biggest_shift = max(abs(a - b) for a, b in zip(means, means[1:]))
    assert biggest_shift > 1.0  # the check below is not vacuous
    steps = (difference[..., 1:] - difference[..., :-1]).abs().max()
    assert steps <= biggest_shift / 32 * 1.1
    assert (difference[..., 1:, :] - difference[..., :-1, :]).abs().max() < 1e-4  # nothing varies vertically


# --- real VAE shapes ------------------------------------------------------------------------------------------------
# Measured with random weights at 256x256 (tiles 192 px, overlap 64): decode mean |diff| 0.13 (tiny) and 0.08
# (real-shaped) on outputs of standard deviation 0.58 / 0.40, correlation 0.95 / 0.94; encode means 0.06 / 0.03,
# correlation 0.99. The differences come from GroupNorm statistics and the mid-block attention seeing one tile
# instead of the whole image. How much of that trained VAE weights show could not be measured offline (the
# SD1.5-shaped random VAE of bench/bench_vae_tiling.py, 512 px tiles: correlation 0.99 at 768 px, 0.94 at 2048).
# Smaller tiles are worse (128 px tiles: correlation 0.7-0.8 on these random weights).
@pytest.mark.parametrize("which, decode_mad, decode_corr, encode_mad", [
    ("tiny", 0.15, 0.93, 0.075), ("real_shaped", 0.10, 0.92, 0.045)])
def test_tiled_is_close_to_untiled_on_real_vae_shapes(which, decode_mad, decode_corr, encode_mad, request):
    vae = request.getfixturevalue(f"{which}_vae")
    z, x = smooth_latents(32), smooth_pixels(256)
    with torch.no_grad():
        untiled, tiled = vae.decode(z, return_dict=False)[0], vae_tiling.decode(vae, z, TILES)
        assert torch.equal(vae_tiling.decode(vae, z, vae_tiling.TileSettings(256, 192, 64)), untiled)  # not past
        assert (tiled - untiled).abs().mean() <= decode_mad
        assert correlation(tiled, untiled) >= decode_corr
        plain, tiled_dist = vae.encode(x).latent_dist, vae_tiling.encode(vae, x, TILES)
        assert torch.equal(vae_tiling.encode(vae, x, vae_tiling.TileSettings(0, 192, 64)).mean, plain.mean)
    assert tiled_dist.mean.shape == plain.mean.shape == (1, 4, 32, 32)
    assert (tiled_dist.mean - plain.mean).abs().mean() <= encode_mad
    assert correlation(tiled_dist.mean, plain.mean) >= 0.98
    assert (tiled_dist.logvar - plain.logvar).abs().mean() <= 0.5


# --- in the engine --------------------------------------------------------------------------------------------------
def hires_request(**fields) -> GenerationRequest:
    return GenerationRequest(**{**dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=3,
                                       width=64, height=64, seed=5, save_images=False, enable_hr=True), **fields})


def test_engine_tiles_past_the_threshold_only_and_infotext_is_unchanged(make_services):
    services = make_services("sd1")
    untiled = [services.engine.run(hires_request(hr_upscaler=name)) for name in ("Latent", "Lanczos")]
    services.options.update({"vae_tiling_threshold": 0}, save=False)  # never
    never = services.engine.run(hires_request())
    assert np.array_equal(pixels(never.images[0]), pixels(untiled[0].images[0]))  # both untiled: the same run
    services.options.update({"vae_tiling_threshold": 96, "vae_tile_size": 64, "vae_tile_overlap": 16}, save=False)
    plain = services.engine.run(hires_request(enable_hr=False))  # 64x64: below the threshold
    services.options.update({"vae_tiling_threshold": 1536}, save=False)
    default = services.engine.run(hires_request(enable_hr=False))
    assert np.array_equal(pixels(plain.images[0]), pixels(default.images[0]))  # both below it: the same run
    services.options.update({"vae_tiling_threshold": 96}, save=False)
    for name, reference in zip(("Latent", "Lanczos"), untiled):  # Lanczos: the upscaled picture is encoded in tiles
        tiled = services.engine.run(hires_request(hr_upscaler=name))
        assert tiled.images[0].size == (128, 128)
        assert tiled.infotexts == reference.infotexts
        difference = np.abs(pixels(tiled.images[0]) - pixels(reference.images[0]))
        assert 0 < difference.mean() < 40  # the tiny random VAE's tiles differ (see above), the picture stays


def test_half_precision_nans_are_decoded_again_in_full_precision_in_tiles(make_services):
    services = make_services("sd1")
    services.options.update({"vae_tiling_threshold": 96, "vae_tile_size": 96, "vae_tile_overlap": 16}, save=False)
    _, model = services.models.get()
    vae = model.vae
    original = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        vae.post_quant_conv.weight.mul_(3e4)  # overflows float16 (max 65504), fine in float32
    big = dict(enable_hr=False, width=128, height=128)  # past the threshold: decoded in tiles
    try:
        full = services.engine.run(hires_request(**big))
        vae.to(torch.float16)
        retried = services.engine.run(hires_request(**big))
        assert vae.dtype == torch.float16
    finally:
        vae.to(torch.float32)
        vae.load_state_dict(original)
    assert any("NaNs in half precision" in w for w in retried.warnings)
    assert retried.images[0].size == (128, 128)
    assert np.abs(pixels(retried.images[0]) - pixels(full.images[0])).max() <= 1
