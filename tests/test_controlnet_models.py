"""ControlNet model files: listing as A1111 (`name [legacy hash]`), name resolution, and loading every layout users
have (original single file as .safetensors and .pth, diffusers-layout single file, diffusers folder) for SD1, SD2
and SDXL, with the weights landing where diffusers' own model has them."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from webui.models.controlnet import ControlNetCache, ControlNetLoadError
from webui.models.controlnet_registry import ControlNetRegistry, UnknownControlNetError
from webui.models.devices import DevicePolicy
from webui.models.hashing import legacy_model_hash
from webui.models.tiny import build_controlnet, write_controlnet

LAYOUTS = [("single", ".safetensors"), ("single", ".pth"), ("diffusers-file", ".safetensors"), ("diffusers", "")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ControlNet")
    for kind in ("sd1", "sd2-v", "sdxl"):
        for layout, suffix in LAYOUTS:
            write_controlnet(root / f"cn-{kind}-{layout}{suffix.replace('.', '-') if suffix == '.pth' else ''}"
                             f"{suffix}", kind, layout, seed=3)
    return root


def test_listing_titles_use_the_legacy_hash(folder):
    registry = ControlNetRegistry([folder])
    registry.refresh()
    titles = registry.titles()
    assert titles[0] == "None" and len(titles) == 1 + 3 * len(LAYOUTS)
    single = registry.resolve("cn-sd1-single")
    assert single.title == f"cn-sd1-single [{legacy_model_hash(single.path)}]"
    folder_entry = registry.resolve("cn-sdxl-diffusers")
    assert folder_entry.is_folder and folder_entry.weights.name == "diffusion_pytorch_model.safetensors"
    assert folder_entry.shorthash == legacy_model_hash(folder_entry.weights)


def test_resolution_rules(folder):
    registry = ControlNetRegistry([folder])
    registry.refresh()
    exact = registry.resolve("cn-sd1-single").title
    assert registry.resolve(exact).name == "cn-sd1-single"
    assert registry.resolve("CN-SD1-SINGLE").name == "cn-sd1-single"  # name, any case
    assert registry.resolve("cn-sd1-single [00000000]").name == "cn-sd1-single"  # a stale hash: by name
    assert registry.resolve("sd2-v-diffusers").name == "cn-sd2-v-diffusers"  # shortest containing it
    with pytest.raises(UnknownControlNetError, match="Unknown ControlNet model 'nothing'"):
        registry.resolve("nothing")
    with pytest.raises(UnknownControlNetError):
        registry.resolve("None")


@pytest.mark.parametrize("kind", ["sd1", "sd2-v", "sdxl"])
@pytest.mark.parametrize("layout,suffix", LAYOUTS)
def test_every_layout_loads_the_same_weights(folder, kind, layout, suffix):
    registry = ControlNetRegistry([folder])
    registry.refresh()
    name = f"cn-{kind}-{layout}{'-pth' if suffix == '.pth' else ''}"
    loaded = ControlNetCache(DevicePolicy.cpu()).get(registry.resolve(name))
    _, reference = build_controlnet(kind, seed=3)
    ours, theirs = loaded.model.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert loaded.is_sdxl == (kind == "sdxl")
    if layout != "diffusers-file":  # heads come from the sidecar / config.json; outputs must then match exactly
        sample = torch.randn(1, 4, 8, 8)
        context = torch.randn(1, 3, reference.config.cross_attention_dim)
        cond = torch.rand(1, 3, 64, 64)
        added = None
        if kind == "sdxl":
            added = {"text_embeds": torch.randn(1, 64), "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}
        a = loaded.model(sample, 10, context, cond, added_cond_kwargs=added, return_dict=False)
        b = reference(sample, 10, context, cond, added_cond_kwargs=added, return_dict=False)
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip([*a[0], a[1]], [*b[0], b[1]]))


def test_cache_loads_once(folder, monkeypatch):
    import webui.models.controlnet as module
    registry = ControlNetRegistry([folder])
    registry.refresh()
    calls = []
    real = module.load_controlnet
    monkeypatch.setattr(module, "load_controlnet", lambda info, policy: calls.append(info.name) or real(info, policy))
    cache = ControlNetCache(DevicePolicy.cpu())
    first = cache.get(registry.resolve("cn-sd1-single"))
    assert cache.get(registry.resolve("cn-sd1-single")) is first
    assert calls == ["cn-sd1-single"]


def test_wrong_architecture_is_reported(folder, tiny_models):
    from webui.models.loader import load_checkpoint
    registry = ControlNetRegistry([folder])
    registry.refresh()
    cache = ControlNetCache(DevicePolicy.cpu())
    sd1 = load_checkpoint(tiny_models["sd1"], DevicePolicy.cpu(), folder / ".cache",
                          config_path=tiny_models["sd1"].with_suffix(".yaml"))
    assert cache.get(registry.resolve("cn-sd1-single")).fits(sd1.unet) is None
    problem = cache.get(registry.resolve("cn-sdxl-single")).fits(sd1.unet)
    assert "is an SDXL ControlNet and the checkpoint is" in problem


def test_files_that_are_not_controlnets_give_clear_errors(tmp_path):
    (tmp_path / "lora_like.safetensors").parent.mkdir(exist_ok=True)
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 4)}, str(tmp_path / "lora_like.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    registry = ControlNetRegistry([tmp_path])
    registry.refresh()
    cache = ControlNetCache(DevicePolicy.cpu())
    with pytest.raises(ControlNetLoadError, match="lora_like.*not a ControlNet model"):
        cache.get(registry.resolve("lora_like"))
    with pytest.raises(ControlNetLoadError, match="broken.*corrupt or truncated"):
        cache.get(registry.resolve("broken"))
