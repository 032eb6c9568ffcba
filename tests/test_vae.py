"""VAE files: listing and choosing (A1111's sd_vae setting), and swapping a loaded model's VAE in place."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from webui.models.devices import DevicePolicy
from webui.models.hashing import HashCache
from webui.models.ldm_export import vae_to_ldm
from webui.models.loader import load_checkpoint
from webui.models.tiny import build_modules
from webui.models.vae import (UnknownVaeError, VaeCache, VaeInfo, VaeLoadError, VaeRegistry, apply_vae,
                              read_vae_weights)


def other_vae(seed: int) -> AutoencoderKL:
    """A tiny-SD1-shaped VAE with its own random weights: the reference the swapped model must match."""
    return build_modules("sd1", seed=seed)[3]


def ldm_tensors(vae: AutoencoderKL, prefixed: bool = False) -> dict[str, torch.Tensor]:
    state = {k: v.contiguous() for k, v in vae_to_ldm(vae).items()}  # keys under first_stage_model.
    return state if prefixed else {k.removeprefix("first_stage_model."): v for k, v in state.items()}


def write_ldm_vae(path, vae: AutoencoderKL):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_tensors(vae), str(path))
    return path


@pytest.fixture
def model(tiny_models, tmp_path):
    path = tiny_models["sd1"]
    return load_checkpoint(path, DevicePolicy.cpu(), tmp_path / "cache", config_path=path.with_suffix(".yaml"))


def info_for(path) -> VaeInfo:
    return VaeInfo(path.name, path, HashCache())


def snapshot(vae) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def assert_weights(vae, expected: dict[str, torch.Tensor]) -> None:
    actual = vae.state_dict()
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value.to(actual[key].dtype)), key


@torch.no_grad()
def decode(vae, seed: int = 0) -> torch.Tensor:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    return vae.decode(latent).sample


def test_ldm_file_replaces_the_weights_and_decodes_like_the_reference(model, tmp_path):
    reference = other_vae(seed=7)
    path = write_ldm_vae(tmp_path / "VAE" / "other.safetensors", reference)
    vae_before = model.vae
    apply_vae(model, info_for(path))
    assert model.vae is vae_before and model.vae_file == path
    assert_weights(model.vae, reference.state_dict())
    assert torch.equal(decode(model.vae), decode(reference))


def test_none_restores_the_checkpoint_vae_bit_exactly(model, tmp_path):
    original = snapshot(model.vae)
    original_image = decode(model.vae)
    first = write_ldm_vae(tmp_path / "a.safetensors", other_vae(seed=8))
    second = write_ldm_vae(tmp_path / "b.safetensors", other_vae(seed=9))
    apply_vae(model, info_for(first))
    apply_vae(model, info_for(second))  # from one file to another, then back to the checkpoint's own
    assert not torch.equal(decode(model.vae), original_image)
    apply_vae(model, None)
    assert model.vae_file is None
    assert_weights(model.vae, original)
    assert torch.equal(decode(model.vae), original_image)
    apply_vae(model, None)  # again: nothing to do
    assert_weights(model.vae, original)


def test_other_file_layouts_load_the_same_weights(model, tmp_path):
    reference = other_vae(seed=10)
    expected = reference.state_dict()

    ckpt = tmp_path / "wrapped.vae.pt"  # LDM names under first_stage_model., training leftovers, in a state_dict
    state = ldm_tensors(reference, prefixed=True)
    state.update({"loss.logvar": torch.zeros(()), "model_ema.decay": torch.tensor(0.999),
                  "model_ema.num_updates": torch.tensor(10)})
    torch.save({"state_dict": state, "global_step": 1000}, ckpt)

    diffusers_file = tmp_path / "diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in expected.items()}, str(diffusers_file))

    old_names = tmp_path / "old-diffusers.safetensors"  # diffusers' pre-0.15 attention names, 1x1 conv shapes
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for key, value in expected.items():
        for new, previous in renames.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".{new}.", f".{previous}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        old[key] = value.contiguous()
    save_file(old, str(old_names))

    for path in (ckpt, diffusers_file, old_names):
        apply_vae(model, None)
        apply_vae(model, info_for(path))
        assert_weights(model.vae, expected)


def test_repeat_apply_is_free_and_a_changed_file_is_read_again(model, tmp_path):
    first, second = other_vae(seed=11), other_vae(seed=12)
    path = write_ldm_vae(tmp_path / "swap.safetensors", first)
    apply_vae(model, info_for(path))
    stat = path.stat()
    write_ldm_vae(path, second)  # same size; put the old mtime back so the file looks untouched
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    apply_vae(model, info_for(path))
    assert_weights(model.vae, first.state_dict())  # not read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    apply_vae(model, info_for(path))
    assert_weights(model.vae, second.state_dict())


def test_cache_keeps_a_read_file(model, tmp_path):
    reference = other_vae(seed=13)
    path = write_ldm_vae(tmp_path / "cached.safetensors", reference)
    cache = VaeCache(1)
    apply_vae(model, info_for(path), cache)
    apply_vae(model, None, cache)
    stat = path.stat()
    path.write_bytes(b"\0" * stat.st_size)  # the bytes change but the signature does not: the cache answers
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    apply_vae(model, info_for(path), cache)
    assert_weights(model.vae, reference.state_dict())


def test_half_precision_vae_stays_half(model, tmp_path):
    model.vae.to(torch.float16)
    original = snapshot(model.vae)
    reference = other_vae(seed=14)
    apply_vae(model, info_for(write_ldm_vae(tmp_path / "x.safetensors", reference)))
    assert all(p.dtype == torch.float16 for p in model.vae.parameters())
    assert_weights(model.vae, reference.state_dict())  # compared after the same cast
    apply_vae(model, None)
    assert_weights(model.vae, original)


def test_sequentially_offloaded_vae_is_swapped_in_its_offload_store(model, tmp_path):
    from accelerate import cpu_offload

    original_image = decode(model.vae)
    cpu_offload(model.vae, execution_device=torch.device("cpu"))  # parameters move to `meta`
    reference = other_vae(seed=15)
    apply_vae(model, info_for(write_ldm_vae(tmp_path / "x.safetensors", reference)))
    assert torch.equal(decode(model.vae), decode(reference))
    apply_vae(model, None)
    assert torch.equal(decode(model.vae), original_image)


def test_file_that_does_not_fit_is_refused_and_the_model_keeps_its_vae(model, tmp_path):
    good = write_ldm_vae(tmp_path / "good.safetensors", other_vae(seed=16))
    apply_vae(model, info_for(good))
    before = snapshot(model.vae)

    config = dict(model.vae.config)
    config["latent_channels"] = 16  # an SD3/Flux-style VAE
    wide = AutoencoderKL.from_config(config)
    wrong = write_ldm_vae(tmp_path / "flux-ae.safetensors", wide)
    with pytest.raises(VaeLoadError, match=r"flux-ae\.safetensors.*encoder\.conv_out\.weight is \[32, 32, 3, 3\] "
                                           r"in the file but \[8, 32, 3, 3\]"):
        apply_vae(model, info_for(wrong))

    missing = tmp_path / "partial.safetensors"
    tensors = ldm_tensors(other_vae(seed=17))
    del tensors["post_quant_conv.weight"]
    save_file(tensors, str(missing))
    with pytest.raises(VaeLoadError, match=r"partial\.safetensors .*no tensor post_quant_conv\.weight"):
        apply_vae(model, info_for(missing))

    not_vae = tmp_path / "embedding.safetensors"
    save_file({"emb_params": torch.zeros(2, 64)}, str(not_vae))
    with pytest.raises(VaeLoadError, match=r"embedding\.safetensors: not a VAE .*emb_params"):
        apply_vae(model, info_for(not_vae))

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VaeLoadError, match=r"broken\.safetensors: corrupt or truncated"):
        apply_vae(model, info_for(broken))

    with pytest.raises(VaeLoadError, match=r"gone\.safetensors: cannot read"):
        apply_vae(model, info_for(tmp_path / "gone.safetensors"))

    assert model.vae_file == good
    assert_weights(model.vae, before)


def test_registry_names_as_the_dropdown_shows_them(tmp_path):
    root = tmp_path / "models" / "VAE"
    for name in ("vae-ft-mse.safetensors", "sub/anime.vae.pt", "b10.ckpt", "b9.ckpt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "readme.txt").write_text("not a vae")
    checkpoints = tmp_path / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    (checkpoints / "model.vae.safetensors").write_bytes(b"x")
    (checkpoints / "model.safetensors").write_bytes(b"x")
    vaes = VaeRegistry(root, HashCache(), checkpoint_roots=[checkpoints])
    vaes.refresh()
    assert vaes.names() == ["b9.ckpt", "b10.ckpt", "model.vae.safetensors", "sub/anime.vae.pt",
                            "vae-ft-mse.safetensors"]
    assert vaes.choose("sub/anime.vae.pt", checkpoints / "model.safetensors").path == root / "sub/anime.vae.pt"
    assert vaes.choose("anime.vae.pt", checkpoints / "x.safetensors").name == "sub/anime.vae.pt"  # infotext form
    assert vaes.choose("anime", checkpoints / "x.safetensors").name == "sub/anime.vae.pt"
    assert vaes.choose("VAE-FT-MSE", checkpoints / "x.safetensors").name == "vae-ft-mse.safetensors"
    assert vaes.choose("None", checkpoints / "model.safetensors") is None
    assert vaes.choose("Automatic", None) is None  # validating the setting alone, with no checkpoint
    assert vaes.choose("anime", None).name == "sub/anime.vae.pt"

    (root / "late.safetensors").write_bytes(b"x")
    vaes.refresh()
    assert "late.safetensors" in vaes.names()


def test_unknown_name_lists_the_choices(tmp_path):
    root = tmp_path / "VAE"
    root.mkdir()
    (root / "one.safetensors").write_bytes(b"x")
    vaes = VaeRegistry(root, HashCache())
    with pytest.raises(UnknownVaeError) as caught:
        vaes.choose("two.safetensors", tmp_path / "model.safetensors")
    assert str(caught.value) == "Unknown VAE 'two.safetensors'. Available: Automatic, None, one.safetensors"


def test_automatic_prefers_the_file_beside_the_checkpoint_then_the_same_stem(tmp_path):
    root = tmp_path / "VAE"
    checkpoints = tmp_path / "Stable-diffusion"
    (root / "deeper").mkdir(parents=True)
    checkpoints.mkdir()
    checkpoint = checkpoints / "dreamy.safetensors"
    checkpoint.write_bytes(b"x")
    vaes = VaeRegistry(root, HashCache())
    assert vaes.choose("Automatic", checkpoint) is None  # nothing: the checkpoint's own VAE

    (root / "deeper" / "dreamy.safetensors").write_bytes(b"x")
    vaes.refresh()
    assert vaes.choose("Automatic", checkpoint).name == "deeper/dreamy.safetensors"
    (root / "dreamy.vae.safetensors").write_bytes(b"x")
    vaes.refresh()
    assert vaes.choose("Automatic", checkpoint).name == "dreamy.vae.safetensors"  # the folder's own first

    (checkpoints / "dreamy.vae.ckpt").write_bytes(b"x")
    (checkpoints / "dreamy.vae.safetensors").write_bytes(b"x")
    chosen = vaes.choose("Automatic", checkpoint)
    assert chosen.path == checkpoints / "dreamy.vae.ckpt"  # beside the checkpoint wins; .pt, .ckpt, .safetensors
    assert vaes.choose("automatic", checkpoints / "other.safetensors") is None


def test_automatic_vae_for_a_real_checkpoint_applies(model, tiny_models, tmp_path):
    checkpoints = tmp_path / "Stable-diffusion"
    checkpoints.mkdir()
    checkpoint = checkpoints / tiny_models["sd1"].name
    shutil.copy2(tiny_models["sd1"], checkpoint)
    reference = other_vae(seed=18)
    write_ldm_vae(checkpoints / f"{checkpoint.stem}.vae.safetensors", reference)
    info = VaeRegistry(tmp_path / "VAE", HashCache()).choose("Automatic", checkpoint)
    apply_vae(model, info)
    assert torch.equal(decode(model.vae), decode(reference))


def test_hash_is_the_file_sha256_first_10_hex_and_cached(tmp_path):
    root = tmp_path / "VAE"
    path = write_ldm_vae(root / "hashed.safetensors", other_vae(seed=19))
    cache = HashCache(tmp_path / "cache.json")
    info = VaeRegistry(root, cache).list()[0]
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.shorthash == expected[:10] and info.sha256 == expected
    assert HashCache(tmp_path / "cache.json").get(path, "vae") == expected


def test_read_vae_weights_rejects_a_vae_with_another_depth(tmp_path):
    config = dict(other_vae(seed=0).config)
    deeper = dict(config, block_out_channels=[32] * 5, down_block_types=["DownEncoderBlock2D"] * 5,
                  up_block_types=["UpDecoderBlock2D"] * 5)
    path = write_ldm_vae(tmp_path / "deep.safetensors", AutoencoderKL.from_config(deeper))
    with pytest.raises(VaeLoadError, match="deep.safetensors: its encoder has 5 levels; this model's VAE has 4"):
        read_vae_weights(path, config)
