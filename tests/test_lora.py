"""LoRA / LyCORIS: every file format patches the right weights by the right amount (checked against references
computed here from the file's tensors), removing restores the model bit for bit, and problems become warnings."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests import lora_files as lf
from webui.models.devices import DevicePolicy
from webui.models.hashing import HashCache, sha256_file
from webui.models.loader import load_checkpoint
from webui.models.networks import (HASH_KIND, LoraRegistry, NetworkFileCache, NetworkRequest, addnet_sha256,
                                   apply_networks)
from webui.models.networks.family import guess_family

# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora-cache")


@pytest.fixture
def load(tiny_models, cache_dir):
    """load("sd1" | "sdxl") -> a freshly loaded tiny model (tests change its weights)."""

    def _load(kind: str = "sd1"):
        path = tiny_models[kind]
        return load_checkpoint(path, DevicePolicy.cpu(), cache_dir, path.with_suffix(".yaml"))

    return _load


def install(folder: Path, lora: lf.LoraFile, name: str, suffix: str = ".safetensors"):
    """Save the LoRA into folder/Lora and return its LoraInfo from a fresh registry."""
    lora.save(folder / "Lora" / f"{name}{suffix}")
    registry = LoraRegistry([folder / "Lora"], HashCache())
    registry.refresh()
    info = registry.find(name)
    assert info is not None
    return info


def snapshot(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(model.modules()) for k, v in m.state_dict().items()}


def assert_bit_exact(model, before: dict[str, torch.Tensor]) -> None:
    now = snapshot(model)
    assert now.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], now[k])]
    assert not changed, f"{len(changed)} tensors differ from the original, e.g. {changed[:3]}"


def module_of(model, component: str, name: str) -> torch.nn.Module:
    root = model.unet if component == "unet" else model.text_encoders[int(component[2]) - 1]
    return root.get_submodule(name)


def originals(model, lora: lf.LoraFile) -> dict[str, torch.Tensor]:
    return {key: module_of(model, *target).weight.detach().clone() for key, target in lora.targets.items()}


def lora_change(t: dict[str, torch.Tensor], shape) -> torch.Tensor:
    """kohya / LoCon without a mid: alpha / rank * up @ down, with the kernel carried by down."""
    down, up = t["lora_down.weight"].float(), t["lora_up.weight"].float()
    rank = down.shape[0]
    scale = t["alpha"].float().item() / rank if "alpha" in t else 1.0
    return (scale * (up.reshape(up.shape[0], -1) @ down.reshape(rank, -1))).reshape(shape)


def unet_output(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    config = model.unet.config
    x = torch.randn(2, config.in_channels, 16, 16, generator=g)
    context = torch.randn(2, 5, config.cross_attention_dim, generator=g)
    extra = {}
    if config.addition_embed_type == "text_time":
        pooled = model.unet.add_embedding.linear_1.in_features - 6 * config.addition_time_embed_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=g),
                                      "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        return model.unet(x, torch.tensor([500, 500]), encoder_hidden_states=context, **extra).sample


def text_output(encoder) -> torch.Tensor:
    ids = torch.tensor([[49406, 320, 1929, 539, 49407, 49407]])
    with torch.no_grad():
        return encoder(ids).last_hidden_state


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kronecker product written out index by index (independent of torch.kron)."""
    if b.ndim == 4:
        return torch.einsum("ij,klhw->ikjlhw", a, b).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1],
                                                             *b.shape[2:])
    return torch.einsum("ij,kl->ikjl", a, b).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])


def tucker(core: torch.Tensor, a_rank_out: torch.Tensor, b_rank_in: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) from a core (r, r, kh, kw) and factors stored (rank, out) / (rank, in), by tensordot."""
    half = torch.tensordot(a_rank_out.t(), core, dims=([1], [0]))  # (out, r_in, kh, kw)
    full = torch.tensordot(half, b_rank_in, dims=([1], [0]))  # (out, kh, kw, in)
    return full.permute(0, 3, 1, 2)


# --- formats ------------------------------------------------------------------------------------------------------


def test_kohya_sd1_patches_unet_and_text_encoder_by_alpha_over_rank(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1", rank=4, alpha=2.0)
    info = install(tmp_path, lora, "kohya_sd1")
    before, weights = snapshot(model), originals(model, lora)

    report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])

    assert report.warnings == [] and [i.name for i in report.applied] == ["kohya_sd1"]
    assert report.modules_changed == len(lora.targets)
    assert {c for c, _ in lora.targets.values()} == {"unet", "te1"}
    for key, (component, name) in lora.targets.items():
        weight = module_of(model, component, name).weight
        expected = weights[key] + lora_change(lora.of(key), weight.shape)
        torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)
    touched = {f"{0 if c == 'unet' else 2}.{n}.weight" for c, n in lora.targets.values()}
    untouched = [k for k in before if k not in touched]
    after = snapshot(model)  # once: a snapshot copies every weight
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)


def test_kohya_sd1_with_ldm_names_patches_the_same_modules(load, tmp_path):
    model_a, model_b = load("sd1"), load("sd1")
    by_diffusers = lf.kohya_lora(model_a.unet, model_a.text_encoders, "sd1", naming="diffusers", seed=7)
    by_ldm = lf.kohya_lora(model_b.unet, model_b.text_encoders, "sd1", naming="ldm", seed=7)
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in by_ldm.targets
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in by_diffusers.targets

    apply_networks(model_a, [NetworkRequest(install(tmp_path, by_diffusers, "diffusers_named"))])
    apply_networks(model_b, [NetworkRequest(install(tmp_path, by_ldm, "ldm_named"))])

    assert_bit_exact(model_b, snapshot(model_a))


def test_kohya_sdxl_te1_te2_and_ldm_unet_names(load, tmp_path):
    model = load("sdxl")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sdxl", naming="ldm", unet_kinds=("attn", "ff", "proj"))
    assert lora.targets["lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k"] == \
        ("unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k")
    assert lora.targets["lora_unet_middle_block_1_proj_in"] == ("unet", "mid_block.attentions.0.proj_in")
    assert lora.targets["lora_unet_output_blocks_1_1_transformer_blocks_0_ff_net_2"] == \
        ("unet", "up_blocks.0.attentions.1.transformer_blocks.0.ff.net.2")
    assert lora.targets["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == \
        ("te1", "encoder.layers.0.self_attn.q_proj")
    assert lora.targets["lora_te2_text_model_encoder_layers_1_mlp_fc1"] == \
        ("te2", "text_model.encoder.layers.1.mlp.fc1")
    info = install(tmp_path, lora, "kohya_xl")
    assert info.base_family == "sdxl"
    weights = originals(model, lora)

    report = apply_networks(model, [NetworkRequest(info, 0.5, 1.5)])

    assert report.warnings == [] and report.modules_changed == len(lora.targets)
    for key, (component, name) in lora.targets.items():
        weight = module_of(model, component, name).weight
        multiplier = 1.5 if component == "unet" else 0.5
        expected = weights[key] + multiplier * lora_change(lora.of(key), weight.shape)
        torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)


def test_locon_conv_3x3_down_and_1x1_up_equals_the_two_convolutions(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, None, "sd1", unet_kinds=("conv",), rank=3, alpha=1.5)
    assert any(t.ndim == 4 and t.shape[2:] == (3, 3) for k, t in lora.tensors.items() if "lora_down" in k)
    info = install(tmp_path, lora, "locon")
    weights = originals(model, lora)
    apply_networks(model, [NetworkRequest(info, 1.0, 0.8)])

    x = torch.randn(1, 128, 8, 8)
    for key, (_, name) in lora.targets.items():
        conv = model.unet.get_submodule(name)
        t = lora.of(key)
        xin = x[:, :conv.in_channels]
        change = F.conv2d(xin, conv.weight, None, conv.stride, conv.padding) \
            - F.conv2d(xin, weights[key], None, conv.stride, conv.padding)
        hidden = F.conv2d(xin, t["lora_down.weight"].float(), None, conv.stride, conv.padding)
        expected = 0.8 * 1.5 / 3 * F.conv2d(hidden, t["lora_up.weight"].float())
        torch.testing.assert_close(change, expected, rtol=0, atol=2e-5)


def test_locon_cp_mid_equals_three_convolutions(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, None, "sd1", unet_kinds=("conv",), conv_mode="cp", rank=4, alpha=4.0)
    assert any(k.endswith("lora_mid.weight") for k in lora.tensors)
    weights = originals(model, lora)
    apply_networks(model, [NetworkRequest(install(tmp_path, lora, "locon_cp"))])

    x = torch.randn(1, 128, 8, 8)
    for key, (_, name) in lora.targets.items():
        conv, t = model.unet.get_submodule(name), lora.of(key)
        xin = x[:, :conv.in_channels]
        change = F.conv2d(xin, conv.weight, None, conv.stride, conv.padding) \
            - F.conv2d(xin, weights[key], None, conv.stride, conv.padding)
        if "lora_mid.weight" in t:
            hidden = F.conv2d(xin, t["lora_down.weight"].float())
            hidden = F.conv2d(hidden, t["lora_mid.weight"].float(), None, conv.stride, conv.padding)
        else:  # 1x1 convolutions have no mid
            hidden = F.conv2d(xin, t["lora_down.weight"].float(), None, conv.stride, conv.padding)
        expected = F.conv2d(hidden, t["lora_up.weight"].float())
        torch.testing.assert_close(change, expected, rtol=0, atol=2e-5)


def test_loha_linear_and_tucker_conv(load, tmp_path):
    model = load("sd1")
    lora = lf.loha(model.unet, model.text_encoders, "sd1", rank=4, alpha=2.0)
    assert any(k.endswith("hada_t1") for k in lora.tensors)
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "loha"))])
    assert report.warnings == []

    for key, (component, name) in lora.targets.items():
        t, weight = lora.of(key), module_of(model, component, name).weight
        if "hada_t1" in t:
            w1 = tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
            w2 = tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
        else:
            w1, w2 = t["hada_w1_a"] @ t["hada_w1_b"], t["hada_w2_a"] @ t["hada_w2_b"]
        expected = weights[key] + (2.0 / 4) * (w1 * w2).reshape(weight.shape)
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)


def test_lokr_full_low_rank_and_tucker_factors(load, tmp_path):
    model = load("sd1")
    lora = lf.lokr(model.unet, model.text_encoders, "sd1", rank=2, alpha=3.0)
    kinds = {frozenset(lora.of(k)) for k in lora.targets}
    assert len(kinds) == 3  # full w1 + low-rank w2, low-rank w1 + Tucker w2, both full
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "lokr"))])
    assert report.warnings == []

    for key, (component, name) in lora.targets.items():
        t, weight = lora.of(key), module_of(model, component, name).weight
        if "lokr_t2" in t:
            w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
            w2 = tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
            scale = 3.0 / 2
        elif "lokr_w2" in t:
            w1, w2, scale = t["lokr_w1"], t["lokr_w2"], 1.0  # no factor has a rank: alpha is not used
        else:
            w1, w2, scale = t["lokr_w1"], t["lokr_w2_a"] @ t["lokr_w2_b"], 3.0 / 2
        expected = weights[key] + scale * kron(w1, w2).reshape(weight.shape)
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_diffusers_peft_file_reproduces_the_peft_adapter(load, tmp_path, dora):
    model = load("sd1")
    path, adapted_unet, adapted_text = lf.peft_adapted_copies(model.unet, model.text_encoders[0], tmp_path / "peft",
                                                              rank=4, alpha=8.0, dora=dora)
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert any(k.startswith("unet.") and k.endswith("lora_A.weight") for k in header)
    assert "lora_adapter_metadata" in header["__metadata__"]
    assert any("lora_magnitude_vector" in k for k in header) == dora
    assert any(k.endswith("proj_in.lora_magnitude_vector") and v["shape"][:2] == [1, 32] for k, v in header.items()
               if isinstance(v, dict)) == dora  # PEFT's conv magnitudes are (1, out, 1, 1): per output channel
    registry = LoraRegistry([path.parent], HashCache())
    registry.refresh()
    reference = SimpleNamespace(unet=adapted_unet)
    plain = unet_output(model)

    report = apply_networks(model, [NetworkRequest(registry.find("pytorch_lora_weights"))])

    assert report.warnings == []
    patched = unet_output(model)
    assert (patched - plain).abs().max() > 1e-2
    torch.testing.assert_close(patched, unet_output(reference), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(text_output(model.text_encoders[0]), text_output(adapted_text), rtol=1e-4, atol=1e-4)


def test_peft_layout_for_sdxl_text_encoder_2_with_alpha_metadata(load, tmp_path):
    model = load("sdxl")
    lora = lf.peft_lora(model.unet, model.text_encoders, rank=4, alpha=2.0)
    assert any(k.startswith("text_encoder_2.text_model.") for k in lora.tensors)
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "peft_xl"))])
    assert report.warnings == []
    for key, (component, name) in lora.targets.items():
        t, weight = lora.of(key), module_of(model, component, name).weight
        expected = weights[key] + (2.0 / 4) * t["lora_B.weight"] @ t["lora_A.weight"]
        torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)


def test_older_diffusers_layouts(load, tmp_path):
    model = load("sd1")
    lora = lf.diffusers_old_lora(model.unet, model.text_encoders[0], rank=4)
    assert any(".processor.to_out_lora.down.weight" in k for k in lora.tensors)
    assert any("self_attn.to_q_lora.down.weight" in k for k in lora.tensors)
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "old_diffusers"), 1.0, 1.0)])
    assert report.warnings == [] and report.modules_changed == len(lora.targets)
    for key, (component, name) in lora.targets.items():
        t, weight = lora.of(key), module_of(model, component, name).weight
        down = next(v for k, v in t.items() if k.endswith("down.weight"))
        up = next(v for k, v in t.items() if k.endswith("up.weight"))
        alpha = next((v.item() for k, v in t.items() if k.endswith("alpha")), None)
        scale = alpha / 4 if alpha is not None else 1.0
        torch.testing.assert_close(weight, weights[key] + scale * up @ down, rtol=0, atol=1e-6)
    assert sum(1 for k in lora.tensors if k.endswith(".down.weight.alpha")) > 0


def test_dora_sets_the_merged_weight_norms(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, None, "sd1", unet_kinds=("attn",), dora=True, rank=4, alpha=4.0,
                         dtype=torch.float32)
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "dora"), 1.0, 1.0)])
    assert report.warnings == []
    for key, (_, name) in lora.targets.items():
        t, weight = lora.of(key), model.unet.get_submodule(name).weight
        merged = weights[key] + t["lora_up.weight"] @ t["lora_down.weight"]
        column_norms = torch.linalg.vector_norm(merged, dim=0, keepdim=True)
        expected = merged / column_norms * t["dora_scale"]
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.linalg.vector_norm(weight, dim=0), t["dora_scale"].reshape(-1), rtol=1e-4,
                                   atol=1e-5)


def test_pt_file_loads(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1", unet_kinds=("attn",))
    info = install(tmp_path, lora, "old_format", suffix=".pt")
    weights = originals(model, lora)
    report = apply_networks(model, [NetworkRequest(info)])
    assert report.warnings == [] and report.modules_changed == len(lora.targets)
    key, (component, name) = next(iter(lora.targets.items()))
    weight = module_of(model, component, name).weight
    torch.testing.assert_close(weight, weights[key] + lora_change(lora.of(key), weight.shape), rtol=0, atol=1e-6)


# --- applying, re-weighting, removing -------------------------------------------------------------------------------


def test_patched_unet_output_equals_weights_set_by_hand(load, tmp_path):
    model, by_hand = load("sd1"), load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1", unet_kinds=("attn", "ff", "proj", "conv"))
    plain = unet_output(model)
    with torch.no_grad():
        for key, (component, name) in lora.targets.items():
            weight = module_of(by_hand, component, name).weight
            weight += 0.7 * lora_change(lora.of(key), weight.shape)

    apply_networks(model, [NetworkRequest(install(tmp_path, lora, "by_hand"), 0.7, 0.7)])

    patched = unet_output(model)
    assert (patched - plain).abs().max() > 0.05
    torch.testing.assert_close(patched, unet_output(by_hand), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text_output(model.text_encoders[0]), text_output(by_hand.text_encoders[0]),
                               rtol=1e-5, atol=1e-5)


def test_apply_reweight_switch_and_remove_are_bit_exact(load, tmp_path):
    model, untouched = load("sd1"), load("sd1")
    a = install(tmp_path, lf.kohya_lora(model.unet, model.text_encoders, "sd1", seed=1), "a")
    b = install(tmp_path, lf.loha(model.unet, model.text_encoders, "sd1", seed=2), "b")
    before, plain = snapshot(model), unet_output(model)

    apply_networks(model, [NetworkRequest(a, 1.0, 1.0)])
    apply_networks(model, [NetworkRequest(a, 0.3, -0.6)])
    apply_networks(model, [NetworkRequest(b, 1.0, 1.0)])
    apply_networks(model, [NetworkRequest(a, 1.0, 1.0), NetworkRequest(b, 0.5, 0.5)])
    report = apply_networks(model, [])

    assert report.applied == [] and report.warnings == []
    assert model.networks.patched == 0
    assert_bit_exact(model, before)
    assert torch.equal(unet_output(model), plain)
    assert torch.equal(unet_output(model), unet_output(untouched))


def test_kept_originals_follow_weights_rewritten_by_others(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1")
    info = install(tmp_path, lora, "kept")
    apply_networks(model, [NetworkRequest(info)])
    apply_networks(model, [])
    assert model.networks.originals_bytes > 0  # kept for the next LoRA
    key, (component, name) = next(iter(lora.targets.items()))
    weight = module_of(model, component, name).weight
    with torch.no_grad():
        weight.mul_(2)  # e.g. weights reloaded into the same modules
    reloaded = weight.detach().clone()

    apply_networks(model, [NetworkRequest(info)])
    torch.testing.assert_close(weight, reloaded + lora_change(lora.of(key), weight.shape), rtol=0, atol=1e-6)
    apply_networks(model, [])
    assert torch.equal(weight, reloaded)
    assert model.networks.release_originals() > 0 and model.networks.originals_bytes == 0


def test_weight_zero_changes_nothing_and_counts_as_applied(load, tmp_path):
    model = load("sd1")
    info = install(tmp_path, lf.kohya_lora(model.unet, model.text_encoders, "sd1"), "zero")
    before = snapshot(model)
    report = apply_networks(model, [NetworkRequest(info, 0.0, 0.0)])
    assert [i.name for i in report.applied] == ["zero"] and report.modules_changed == 0
    assert_bit_exact(model, before)


def test_two_loras_add_up(load, tmp_path):
    model = load("sd1")
    first = lf.kohya_lora(model.unet, model.text_encoders, "sd1", seed=1, unet_kinds=("attn", "ff"))
    second = lf.kohya_lora(model.unet, model.text_encoders, "sd1", seed=2, unet_kinds=("attn", "proj"), rank=8,
                           alpha=None)
    weights = {**originals(model, first), **originals(model, second)}
    report = apply_networks(model, [NetworkRequest(install(tmp_path, first, "first"), 0.5, 1.0),
                                    NetworkRequest(install(tmp_path, second, "second"), 1.0, 0.25)])
    assert [i.name for i in report.applied] == ["first", "second"]

    expected: dict[tuple[str, str], torch.Tensor] = {}
    for lora, te, unet in ((first, 0.5, 1.0), (second, 1.0, 0.25)):
        for key, (component, name) in lora.targets.items():
            shape = module_of(model, component, name).weight.shape
            change = (unet if component == "unet" else te) * lora_change(lora.of(key), shape)
            expected[(component, name)] = expected.get((component, name), weights[key]) + change
    assert any(len([1 for lo in (first, second) if target in lo.targets.values()]) == 2 for target in expected)
    for (component, name), value in expected.items():
        torch.testing.assert_close(module_of(model, component, name).weight, value, rtol=0, atol=1e-6)


def test_te_and_unet_multipliers_act_on_their_own_modules(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1")
    info = install(tmp_path, lora, "split")
    weights = originals(model, lora)

    apply_networks(model, [NetworkRequest(info, te_multiplier=0.5, unet_multiplier=0.0)])
    for key, (component, name) in lora.targets.items():
        weight = module_of(model, component, name).weight
        if component == "unet":
            assert torch.equal(weight, weights[key])
        else:
            torch.testing.assert_close(weight, weights[key] + 0.5 * lora_change(lora.of(key), weight.shape),
                                       rtol=0, atol=1e-6)

    apply_networks(model, [NetworkRequest(info, te_multiplier=0.0, unet_multiplier=2.0)])
    for key, (component, name) in lora.targets.items():
        weight = module_of(model, component, name).weight
        if component == "unet":
            torch.testing.assert_close(weight, weights[key] + 2.0 * lora_change(lora.of(key), weight.shape),
                                       rtol=0, atol=1e-6)
        else:
            assert torch.equal(weight, weights[key])


def test_same_list_is_free_and_changes_recompute_only_what_changed(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1")
    info = install(tmp_path, lora, "incremental")
    files = NetworkFileCache()
    te_modules = sum(1 for c, _ in lora.targets.values() if c != "unet")

    first = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)], files)
    again = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)], files)
    reweighted = apply_networks(model, [NetworkRequest(info, 0.4, 1.0)], files)

    assert first.modules_changed == len(lora.targets)
    assert again.modules_changed == 0 and again.applied == first.applied
    assert reweighted.modules_changed == te_modules
    assert files.reads == 1  # re-weighting never re-read the file

    # the file changes on disk (new contents, new mtime): it is read again and the new weights are used
    changed = lf.kohya_lora(model.unet, model.text_encoders, "sd1", seed=99)
    changed.save(info.path)
    os.utime(info.path, ns=(os.stat(info.path).st_atime_ns, os.stat(info.path).st_mtime_ns + 10**9))
    weights_before = originals(model, changed)
    apply_networks(model, [NetworkRequest(info, 0.4, 1.0)], files)
    assert files.reads == 2
    key, (component, name) = next((k, t) for k, t in changed.targets.items() if t[0] == "unet")
    assert not torch.equal(module_of(model, component, name).weight, weights_before[key])


def test_fp16_weights_get_float32_sums_and_exact_restore(load, tmp_path):
    model = load("sd1")
    model.unet.half()
    model.text_encoders[0].half()
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1", dtype=torch.float16)
    info = install(tmp_path, lora, "half")
    before, weights = snapshot(model), originals(model, lora)

    apply_networks(model, [NetworkRequest(info, 0.9, 0.9)])
    for key, (component, name) in lora.targets.items():
        weight = module_of(model, component, name).weight
        assert weight.dtype == torch.float16
        expected = (weights[key].float() + 0.9 * lora_change(lora.of(key), weight.shape)).half()
        assert (weight.float() - expected.float()).abs().max() <= 2 * torch.finfo(torch.float16).eps * \
            expected.float().abs().max()
    apply_networks(model, [])
    assert_bit_exact(model, before)


def test_sequential_offload_weights_are_patched_in_the_offload_map(load, tmp_path):
    from accelerate import cpu_offload

    model, reference = load("sd1"), load("sd1")
    cpu_offload(model.unet, execution_device=torch.device("cpu"))  # what --lowvram does, with the CPU as "device"
    assert model.unet.conv_in.weight.device.type == "meta"
    info = install(tmp_path, lf.kohya_lora(model.unet, model.text_encoders, "sd1", unet_kinds=("attn", "conv")),
                   "offloaded")
    plain = unet_output(model)

    report = apply_networks(model, [NetworkRequest(info)])
    apply_networks(reference, [NetworkRequest(info)])

    assert report.warnings == []
    assert torch.equal(unet_output(model), unet_output(reference))
    apply_networks(model, [])
    assert torch.equal(unet_output(model), plain)


# --- problems become warnings -----------------------------------------------------------------------------------------


def test_sdxl_lora_on_sd1_model_is_skipped_with_a_warning(load, tmp_path):
    sd1, sdxl = load("sd1"), load("sdxl")
    xl_info = install(tmp_path, lf.kohya_lora(sdxl.unet, sdxl.text_encoders, "sdxl", naming="ldm"), "xl_style")
    xl_unet_only = lf.kohya_lora(sdxl.unet, None, "sdxl", naming="ldm")
    unet_only_info = install(tmp_path, xl_unet_only, "xl_unet_only")
    sd1_info = install(tmp_path, lf.kohya_lora(sd1.unet, sd1.text_encoders, "sd1"), "sd1_style")
    before_sd1, before_xl = snapshot(sd1), snapshot(sdxl)

    report = apply_networks(sd1, [NetworkRequest(xl_info), NetworkRequest(unet_only_info)])
    assert report.applied == []
    assert report.warnings == [
        'LoRA "xl_style" does not fit this checkpoint (SDXL LoRA on an SD1 model): skipped',
        'LoRA "xl_unet_only" does not fit this checkpoint (SDXL LoRA on an SD1 model): skipped']
    assert_bit_exact(sd1, before_sd1)

    report = apply_networks(sdxl, [NetworkRequest(sd1_info)])  # no metadata; attention at the first level
    assert report.warnings == [
        'LoRA "sd1_style" does not fit this checkpoint (SD1 or SD2 LoRA on an SDXL model): skipped']
    tagged = install(tmp_path, lf.kohya_lora(sd1.unet, None, "sd1", output_name="tagged"), "sd1_tagged")
    report = apply_networks(sdxl, [NetworkRequest(tagged)])  # ss_base_model_version: sd_v1
    assert report.warnings == ['LoRA "sd1_tagged" does not fit this checkpoint (SD1 LoRA on an SDXL model): skipped']
    assert_bit_exact(sdxl, before_xl)


def test_bad_files_warn_naming_the_file_and_good_ones_still_apply(load, tmp_path):
    model = load("sd1")
    good = install(tmp_path, lf.kohya_lora(model.unet, model.text_encoders, "sd1"), "good")
    folder = tmp_path / "Lora"
    (folder / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    whole = lf.kohya_lora(model.unet, None, "sd1").save(folder / "cut.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(whole[:len(whole) // 2])
    torch.save({"weights": torch.zeros(2), "object": Path("x")}, folder / "pickled.pt")
    shutil.copy(good.path, folder / "gone.safetensors")
    registry = LoraRegistry([folder], HashCache())
    registry.refresh()
    vanished = registry.find("gone")
    (folder / "gone.safetensors").unlink()  # deleted after the last refresh
    assert registry.find("garbage").error is not None

    report = apply_networks(model, [NetworkRequest(registry.find(n)) for n in ("garbage", "cut", "pickled")]
                            + [NetworkRequest(vanished), NetworkRequest(good)])

    assert [i.name for i in report.applied] == ["good"]
    assert len(report.warnings) == 4
    for name, text in zip(("garbage", "cut", "pickled", "gone"), report.warnings):
        assert text.startswith(f'LoRA "{name}"') and text.endswith("skipped")
    assert "garbage.safetensors: the safetensors header is not valid JSON" in report.warnings[0]
    assert "cut.safetensors: corrupt or truncated" in report.warnings[1]
    assert "pickled.pt" in report.warnings[2] and "refused" in report.warnings[2]
    assert "gone.safetensors" in report.warnings[3]


def test_unknown_keys_and_shapes_warn_with_counts(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, model.text_encoders, "sd1")
    total = len(lora.targets)
    for i in range(3):
        lora.tensors[f"lora_unet_no_such_module_{i}.lora_down.weight"] = torch.zeros(4, 8)
        lora.tensors[f"lora_unet_no_such_module_{i}.lora_up.weight"] = torch.zeros(8, 4)
    lora.tensors["lora_unet_conv_in.ia3_scale"] = torch.ones(4)
    misshapen = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    lora.tensors[f"{misshapen}.lora_down.weight"] = torch.zeros(4, 77)  # the model's to_k takes 64 inputs
    weights = originals(model, lora)

    report = apply_networks(model, [NetworkRequest(install(tmp_path, lora, "partial"))])

    assert [i.name for i in report.applied] == ["partial"]
    assert report.warnings == [
        f'LoRA "partial": 3 of {total + 3} keys match no module of this SD1 model and were skipped '
        f'(e.g. lora_unet_no_such_module_0)',
        f'LoRA "partial": 1 of {total + 3} keys have shapes that do not fit this SD1 model and were skipped '
        f'(e.g. {misshapen}: 32x77 in the LoRA, 32x64 in the model)',
        'LoRA "partial": 1 tensor of a kind we cannot apply was ignored (e.g. lora_unet_conv_in.ia3_scale)']
    for key, target in lora.targets.items():
        assert torch.equal(module_of(model, *target).weight, weights[key]) == (key == misshapen)


def test_lora_for_other_shapes_does_not_fit(load, tmp_path):
    model = load("sd1")
    sdxl = load("sdxl")
    # an SDXL-shaped UNet LoRA with the SD1 model's module names and no family hints at all
    other = lf.LoraFile({})
    for name, module in lf.unet_modules(sdxl.unet, ("ff",)):
        if name.startswith("down_blocks.1."):
            sd1_name = name.replace("transformer_blocks.1.", "transformer_blocks.0.")
            key = "lora_unet_" + sd1_name.replace("down_blocks.1.", "down_blocks.0.").replace(".", "_")
            other.tensors[f"{key}.lora_down.weight"] = torch.zeros(4, module.weight.shape[1])
            other.tensors[f"{key}.lora_up.weight"] = torch.zeros(module.weight.shape[0], 4)
    before = snapshot(model)

    report = apply_networks(model, [NetworkRequest(install(tmp_path, other, "misshapen"))])

    assert report.applied == []
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith('LoRA "misshapen" does not fit this checkpoint (its weights have other '
                                         'shapes than this SD1 model')
    assert "in the LoRA" in report.warnings[0] and report.warnings[0].endswith("): skipped")
    assert_bit_exact(model, before)


def test_lora_whose_keys_match_nothing_is_skipped(load, tmp_path):
    model = load("sd1")
    foreign = lf.LoraFile({  # e.g. a LoRA for a transformer-based model we do not know (FLUX.1's, SD3's, Z-Image's
        # are known)
        "lora_unet_blocks_0_cross_attn_q.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_blocks_0_cross_attn_q.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_blocks_1_cross_attn_q.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_blocks_1_cross_attn_q.lora_up.weight": torch.zeros(32, 4)})
    report = apply_networks(model, [NetworkRequest(install(tmp_path, foreign, "foreign"))])
    assert report.applied == [] and report.warnings == [
        'LoRA "foreign" does not fit this checkpoint (none of its 2 keys matches a module of this SD1 model, '
        'e.g. lora_unet_blocks_0_cross_attn_q): skipped']


# --- hashes and the registry ----------------------------------------------------------------------------------------


def test_lora_hash_is_sha256_after_the_header_and_is_cached(load, tmp_path):
    model = load("sd1")
    path = lf.kohya_lora(model.unet, None, "sd1", output_name="hashme").save(tmp_path / "Lora" / "hashme.safetensors")
    data = path.read_bytes()
    expected = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()
    cache = HashCache(tmp_path / "cache.json")
    registry = LoraRegistry([tmp_path / "Lora"], cache)
    registry.refresh()

    info = registry.find("hashme")
    assert info.shorthash == expected[:12] and len(info.shorthash) == 12
    assert addnet_sha256(path) == expected
    assert cache.get(path, HASH_KIND) == expected
    assert HashCache(tmp_path / "cache.json").get(path, HASH_KIND) == expected  # persisted

    cache.put(path, "ab" * 32, HASH_KIND)  # a fresh registry takes the cached value without reading the file
    fresh = LoraRegistry([tmp_path / "Lora"], cache)
    fresh.refresh()
    assert fresh.find("hashme").shorthash == "ab" * 6


def test_lora_hash_from_sshs_metadata_and_pt_files(load, tmp_path):
    model = load("sd1")
    lora = lf.kohya_lora(model.unet, None, "sd1", unet_kinds=("proj",))
    lora.metadata = {"sshs_model_hash": "0123456789abcdef" * 4}
    lora.save(tmp_path / "Lora" / "claimed.safetensors")
    pt = lora.save(tmp_path / "Lora" / "legacy.pt")
    registry = LoraRegistry([tmp_path / "Lora"], HashCache())
    registry.refresh()
    assert registry.find("claimed").shorthash == "0123456789ab"
    assert registry.find("legacy").shorthash == sha256_file(pt)[:12]


def test_registry_subfolders_alias_sidecars_and_refresh(load, tmp_path):
    model = load("sd1")
    lora_dir, lyco_dir = tmp_path / "Lora", tmp_path / "LyCORIS"
    lf.kohya_lora(model.unet, None, "sd1", output_name="Fancy Style").save(lora_dir / "styles" / "fancy_v2.safetensors")
    lf.loha(model.unet, None, "sd1").save(lyco_dir / "hadamard.safetensors")
    (lora_dir / "styles" / "fancy_v2.preview.png").write_bytes(b"png")
    (lora_dir / "styles" / "fancy_v2.webp").write_bytes(b"webp")
    (lora_dir / "styles" / "fancy_v2.txt").write_text("A fancy style.\n", encoding="utf-8")
    (lora_dir / "styles" / "fancy_v2.json").write_text('{"activation text": "fancy"}', encoding="utf-8")
    (lora_dir / "notes.txt").write_text("not a model", encoding="utf-8")
    registry = LoraRegistry([lora_dir, lyco_dir], HashCache())
    registry.refresh()

    assert [i.name for i in registry.list()] == ["fancy_v2", "hadamard"]
    fancy = registry.find("fancy_v2")
    assert fancy is registry.find("Fancy Style") is registry.find("styles/fancy_v2")
    assert registry.find("styles\\fancy_v2") is fancy
    assert fancy.alias == "Fancy Style" and fancy.relative_name == "styles/fancy_v2"
    assert fancy.filename == str(lora_dir / "styles" / "fancy_v2.safetensors") and fancy.path.is_file()
    assert fancy.metadata["ss_output_name"] == "Fancy Style"
    assert fancy.preview == lora_dir / "styles" / "fancy_v2.preview.png"  # .png before .webp, as A1111
    assert fancy.description == "A fancy style."
    assert fancy.user_metadata == {"activation text": "fancy"}
    assert fancy.base_family == "sd1"
    hadamard = registry.find("HADAMARD")
    assert hadamard.alias == "hadamard" and hadamard.preview is None and hadamard.description == ""
    assert registry.find("nothing") is None
    registry.refresh()  # nothing changed: the same objects (and whatever they computed, e.g. the hash)
    assert registry.find("fancy_v2") is fancy and registry.find("hadamard") is hadamard

    lf.kohya_lora(model.unet, None, "sd1").save(lora_dir / "new_one.safetensors")
    (lyco_dir / "hadamard.safetensors").unlink()
    (lora_dir / "styles" / "fancy_v2.preview.png").unlink()
    (lora_dir / "styles" / "fancy_v2.txt").write_text("Now even fancier.", encoding="utf-8")
    registry.refresh()
    assert [i.name for i in registry.list()] == ["fancy_v2", "new_one"]
    assert registry.find("fancy_v2").preview == lora_dir / "styles" / "fancy_v2.webp"
    assert registry.find("fancy_v2").description == "Now even fancier."


def test_base_family_from_keys_and_metadata(load, tmp_path):
    sd1, sdxl = load("sd1"), load("sdxl")
    folder = tmp_path / "Lora"
    lf.kohya_lora(sdxl.unet, sdxl.text_encoders, "sdxl").save(folder / "xl_keys.safetensors")  # te1/te2, no metadata
    lf.kohya_lora(sdxl.unet, None, "sdxl", naming="ldm").save(folder / "xl_unet.safetensors")  # depth-2 transformer
    plain = lf.kohya_lora(sd1.unet, sd1.text_encoders, "sd1")
    plain.save(folder / "unknown.safetensors")  # tiny SD1 shapes, no metadata: SD1 or SD2
    plain.metadata = {"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}
    plain.save(folder / "spec_v2.safetensors")
    registry = LoraRegistry([folder], HashCache())
    registry.refresh()
    assert {i.name: i.base_family for i in registry.list()} == {
        "spec_v2": "sd2", "unknown": None, "xl_keys": "sdxl", "xl_unet": "sdxl"}

    # full-size shapes decide by themselves (the cross-attention and text widths), whatever the metadata says
    def shapes(context: int, text: int):
        return {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, context),
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, text)}
    assert guess_family(shapes(768, 768), {"ss_base_model_version": "sd_v2"}) == "sd1"
    assert guess_family(shapes(1024, 1024), {}) == "sd2"
    assert guess_family({"unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (8, 2048)},
                        {}) == "sdxl"


def test_registry_lists_unreadable_files_and_apply_reports_them(load, tmp_path):
    model = load("sd1")
    folder = tmp_path / "Lora"
    folder.mkdir()
    (folder / "empty.safetensors").write_bytes(b"")
    registry = LoraRegistry([folder], HashCache())
    registry.refresh()
    info = registry.find("empty")
    assert info is not None and "too short" in info.error and info.metadata == {} and info.shorthash == ""
    report = apply_networks(model, [NetworkRequest(info)])
    assert report.applied == [] and report.warnings == [
        'LoRA "empty" could not be loaded: empty.safetensors: too short to be a safetensors file (0 bytes): skipped']


def test_pickled_objects_are_refused_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    folder = tmp_path / "Lora"
    folder.mkdir()
    with open(folder / "evil.pt", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    from webui.models.networks import load_network, NetworkFileError

    with pytest.raises(NetworkFileError, match="evil.pt"):
        load_network(folder / "evil.pt")
    assert not (tmp_path / "ran").exists()
