"""LoRA on FLUX.1 checkpoints: each format people download (kohya sd-scripts, ComfyUI, OneTrainer, diffusers /
PEFT, XLabs) patches the tiny FLUX.1 transformer and CLIP-L by exactly the low-rank changes the test built the file
from (fused qkv / linear1 split onto diffusers' separate layers), as diffusers' own `load_lora_weights` +
`fuse_lora` does where it can; multipliers; removal bit for bit; float8 layers; LoRAs for the other family skipped
with a warning both ways; and `<lora:...>` through the server with `Lora hashes` in the infotext."""
from __future__ import annotations

import copy
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import pixels
from webui.core.request import GenerationRequest
from webui.models import flux, tiny_flux
from webui.models.hashing import HashCache
from webui.models.networks import LoraRegistry, NetworkRequest, apply_networks
from webui.models.networks.flux_names import convert_bfl_names
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

H = tiny_flux.HEAD_DIM * tiny_flux.HEADS  # the transformer's width (64)
CLIP = tiny_flux.CLIP_WIDTH
RANK, ALPHA = 4, 2.0
CLIP_Q = "text_model.encoder.layers.0.self_attn.q_proj"


# --- the model's own outputs --------------------------------------------------------------------------------------

@torch.no_grad()
def transformer_out(module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = module.config
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"),
                          -1).reshape(16, 3)
    return module(hidden_states=torch.randn(1, 16, cfg.in_channels, generator=g),
                  encoder_hidden_states=torch.randn(1, 5, cfg.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                  timestep=torch.tensor([0.7]), img_ids=img_ids, txt_ids=torch.zeros(5, 3),
                  guidance=torch.tensor([3.5])).sample.float()


@torch.no_grad()
def clip_out(module) -> torch.Tensor:
    return module(torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])).last_hidden_state


def snapshot(*modules) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def assert_bit_exact(modules, before) -> None:
    for module, saved in zip(modules, before):
        now = module.state_dict()
        assert now.keys() == saved.keys()
        for key, value in saved.items():
            assert now[key].dtype == value.dtype, key
            assert torch.equal(now[key].view(torch.uint8), value.view(torch.uint8)), key


def submodule(module, name: str):
    """By name; CLIP-L's `text_model.` level exists in some transformers versions only."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        return module.get_submodule(name.removeprefix("text_model."))


def with_deltas(module, deltas: dict[str, torch.Tensor], multiplier: float = 1.0):
    """A copy of module with W + multiplier * delta for each named sub-module: the reference."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = submodule(clone, name).weight
            weight.copy_((weight.float() + multiplier * delta).to(weight.dtype))
    return clone


def flux_model(modules):
    return SimpleNamespace(family="flux", unet=modules["transformer"], text_encoders=[modules["clip"], modules["t5"]])


def install(folder, state: dict, name: str, metadata: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / f"{name}.safetensors"), metadata)
    registry = LoraRegistry([folder], HashCache())
    registry.refresh()
    return registry.find(name)


# --- LoRA files built from known low-rank matrices ---------------------------------------------------------------

class Builder:
    """Random low-rank pairs; `expected` collects the weight change each diffusers module must get (alpha / rank
    included), `te` those of CLIP-L."""

    def __init__(self, seed: int = 5):
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}
        self.expected: dict[str, torch.Tensor] = {}
        self.te: dict[str, torch.Tensor] = {}

    def pair(self, rows: int, cols: int, rank: int = RANK) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(rank, cols, generator=self.g) * 0.3, torch.randn(rows, rank, generator=self.g) * 0.3)

    def kohya(self, key: str, rows: int, cols: int, alpha: float | None = ALPHA, down_end=".lora_down.weight",
              up_end=".lora_up.weight") -> torch.Tensor:
        down, up = self.pair(rows, cols)
        self.state[key + down_end], self.state[key + up_end] = down, up
        if alpha is not None:
            self.state[key + ".alpha"] = torch.tensor(alpha)
        return (alpha / RANK if alpha is not None else 1.0) * up @ down


def bfl_deltas(b: Builder, name, prefix: str = "lora_unet_", sep: str = "_", **kw) -> None:
    """The BFL-named modules of block 0 (double) and 0 (single) plus the final layer, split by hand."""
    def key(bfl: str) -> str:
        return prefix + name(bfl).replace(".", sep)

    e = b.expected
    d = b.kohya(key("double_blocks.0.img_attn.qkv"), 3 * H, H, **kw)
    e["transformer_blocks.0.attn.to_q"], e["transformer_blocks.0.attn.to_k"], e["transformer_blocks.0.attn.to_v"] = \
        d[:H], d[H:2 * H], d[2 * H:]
    d = b.kohya(key("double_blocks.0.txt_attn.qkv"), 3 * H, H, **kw)
    e["transformer_blocks.0.attn.add_q_proj"], e["transformer_blocks.0.attn.add_k_proj"], \
        e["transformer_blocks.0.attn.add_v_proj"] = d[:H], d[H:2 * H], d[2 * H:]
    e["transformer_blocks.0.attn.to_out.0"] = b.kohya(key("double_blocks.0.img_attn.proj"), H, H, **kw)
    e["transformer_blocks.0.ff_context.net.0.proj"] = b.kohya(key("double_blocks.0.txt_mlp.0"), 4 * H, H, **kw)
    e["transformer_blocks.0.norm1.linear"] = b.kohya(key("double_blocks.0.img_mod.lin"), 6 * H, H, **kw)
    d = b.kohya(key("single_blocks.0.linear1"), 7 * H, H, **kw)
    s = "single_transformer_blocks.0."
    e[s + "attn.to_q"], e[s + "attn.to_k"], e[s + "attn.to_v"], e[s + "proj_mlp"] = \
        d[:H], d[H:2 * H], d[2 * H:3 * H], d[3 * H:]
    e[s + "proj_out"] = b.kohya(key("single_blocks.0.linear2"), H, 5 * H, **kw)
    e["proj_out"] = b.kohya(key("final_layer.linear"), 64, H, **kw)
    d = b.kohya(key("final_layer.adaLN_modulation.1"), 2 * H, H, **kw)
    e["norm_out.linear"] = torch.cat([d[H:], d[:H]])  # BFL (shift, scale) is diffusers' (scale, shift)


def kohya_file() -> Builder:
    b = Builder()
    bfl_deltas(b, lambda n: n)
    b.te[CLIP_Q] = b.kohya("lora_te1_" + CLIP_Q.replace(".", "_"), CLIP, CLIP)
    return b


def comfy_file() -> Builder:
    """ComfyUI's spelling: BFL names with dots under `diffusion_model.`, PEFT endings, no alpha."""
    b = Builder(6)
    bfl_deltas(b, lambda n: n, prefix="diffusion_model.", sep=".", alpha=None, down_end=".lora_A.weight",
               up_end=".lora_B.weight")
    return b


def onetrainer_file() -> Builder:
    """OneTrainer: diffusers' module names with underscores under `lora_transformer_` / `lora_te1_`, with alphas."""
    b = Builder(7)
    for name, rows, cols in (("transformer_blocks.0.attn.to_q", H, H), ("transformer_blocks.0.ff.net.2", H, 4 * H),
                             ("single_transformer_blocks.0.proj_mlp", 4 * H, H), ("x_embedder", H, 64)):
        b.expected[name] = b.kohya("lora_transformer_" + name.replace(".", "_"), rows, cols)
    b.te[CLIP_Q] = b.kohya("lora_te1_" + CLIP_Q.replace(".", "_"), CLIP, CLIP)
    return b


def peft_file(prefix: str = "transformer.") -> Builder:
    """diffusers / PEFT: `transformer.<module>.lora_A.weight` (or bare), `text_encoder.` for CLIP-L; no alpha."""
    b = Builder(8)
    for name, rows, cols in (("transformer_blocks.0.attn.to_k", H, H), ("transformer_blocks.0.attn.add_v_proj", H, H),
                             ("single_transformer_blocks.0.attn.to_v", H, H), ("context_embedder", H, 32)):
        b.expected[name] = b.kohya(prefix + name, rows, cols, alpha=None, down_end=".lora_A.weight",
                                   up_end=".lora_B.weight")
    if prefix:
        b.te[CLIP_Q] = b.kohya("text_encoder." + CLIP_Q, CLIP, CLIP, alpha=None, down_end=".lora_A.weight",
                               up_end=".lora_B.weight")
    return b


def xlabs_file() -> Builder:
    """XLabs: `double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`, no alpha (scale 1)."""
    b = Builder(9)
    e = b.expected
    d = b.kohya("double_blocks.0.processor.qkv_lora1", 3 * H, H, alpha=None, down_end=".down.weight",
                up_end=".up.weight")
    e["transformer_blocks.0.attn.to_q"], e["transformer_blocks.0.attn.to_k"], e["transformer_blocks.0.attn.to_v"] = \
        d[:H], d[H:2 * H], d[2 * H:]
    d = b.kohya("double_blocks.0.processor.qkv_lora2", 3 * H, H, alpha=None, down_end=".down.weight",
                up_end=".up.weight")
    e["transformer_blocks.0.attn.add_q_proj"], e["transformer_blocks.0.attn.add_k_proj"], \
        e["transformer_blocks.0.attn.add_v_proj"] = d[:H], d[H:2 * H], d[2 * H:]
    e["transformer_blocks.0.attn.to_out.0"] = b.kohya("double_blocks.0.processor.proj_lora1", H, H, alpha=None,
                                                      down_end=".down.weight", up_end=".up.weight")
    e["transformer_blocks.0.attn.to_add_out"] = b.kohya("double_blocks.0.processor.proj_lora2", H, H, alpha=None,
                                                        down_end=".down.weight", up_end=".up.weight")
    return b


FORMATS = {"kohya": kohya_file, "comfyui": comfy_file, "onetrainer": onetrainer_file, "peft": peft_file,
           "peft-bare": lambda: peft_file(""), "xlabs": xlabs_file}


@pytest.fixture(scope="module")
def reference():
    return tiny_flux.tiny_flux_modules(0, "dev")


def test_each_format_patches_exactly_the_expected_changes_and_restores_bit_for_bit(reference, tmp_path):
    for fmt, build in FORMATS.items():
        modules = {k: copy.deepcopy(v) for k, v in reference.items()}
        model = flux_model(modules)
        b = build()
        info = install(tmp_path / fmt, b.state, fmt)
        assert info.base_family == "flux", fmt
        before = snapshot(modules["transformer"], modules["clip"])
        report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])
        assert report.warnings == [] and [i.name for i in report.applied] == [fmt], (fmt, report.warnings)
        assert model.networks.patched == len(b.expected) + len(b.te), fmt
        expected = with_deltas(reference["transformer"], b.expected)
        torch.testing.assert_close(transformer_out(modules["transformer"]), transformer_out(expected),
                                   rtol=1e-4, atol=1e-5, msg=fmt)
        for name, delta in {**b.expected}.items():  # each layer itself, so a wrong split cannot hide
            torch.testing.assert_close(modules["transformer"].get_submodule(name).weight,
                                       reference["transformer"].get_submodule(name).weight + delta,
                                       rtol=1e-5, atol=1e-6, msg=f"{fmt} {name}")
        if b.te:
            torch.testing.assert_close(clip_out(modules["clip"]), clip_out(with_deltas(reference["clip"], b.te)),
                                       rtol=1e-4, atol=1e-5)
        # multipliers: 0.5 for the transformer, 0 for CLIP-L; only what changed is rewritten
        report = apply_networks(model, [NetworkRequest(info, 0.0, 0.5)])
        assert report.modules_changed == len(b.expected) + len(b.te), fmt
        torch.testing.assert_close(transformer_out(modules["transformer"]),
                                   transformer_out(with_deltas(reference["transformer"], b.expected, 0.5)),
                                   rtol=1e-4, atol=1e-5)
        assert torch.equal(clip_out(modules["clip"]), clip_out(reference["clip"]))
        assert apply_networks(model, [NetworkRequest(info, 0.0, 0.5)]).modules_changed == 0
        apply_networks(model, [])
        assert_bit_exact([modules["transformer"], modules["clip"]], before)


def test_diffusers_own_fuse_lora_agrees(reference, tmp_path):
    """diffusers' FluxPipeline.load_lora_weights + fuse_lora on the same tiny modules and file. (Its kohya converter
    splits linear1 for FLUX.1's width only, and ignores kohya's alpha for final_layer, where we apply it as kohya
    does: the kohya file here leaves both out; the test above checks them against the expected changes.)"""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    kohya = Builder(11)
    bfl_deltas(kohya, lambda n: n)
    for key in [k for k in kohya.state if "single_blocks" in k or "final_layer" in k]:
        del kohya.state[key]
    for fmt, b in {"peft": peft_file(), "xlabs": xlabs_file(), "kohya": kohya}.items():
        ours = {k: copy.deepcopy(v) for k, v in reference.items()}
        info = install(tmp_path / fmt, b.state, fmt)
        report = apply_networks(flux_model(ours), [NetworkRequest(info)])
        assert report.applied and not report.warnings, report.warnings
        theirs = {k: copy.deepcopy(v) for k, v in reference.items()}
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=theirs["vae"],
                            text_encoder=theirs["clip"], tokenizer=None, text_encoder_2=theirs["t5"],
                            tokenizer_2=None, transformer=theirs["transformer"])
        pipe.load_lora_weights({k: v.clone() for k, v in b.state.items()}, adapter_name="x")
        pipe.fuse_lora(components=["transformer", "text_encoder"], lora_scale=1.0)
        pipe.unload_lora_weights()
        torch.testing.assert_close(transformer_out(ours["transformer"]), transformer_out(pipe.transformer),
                                   rtol=1e-4, atol=1e-5, msg=fmt)
        if b.te:
            torch.testing.assert_close(clip_out(ours["clip"]), clip_out(pipe.text_encoder), rtol=1e-4, atol=1e-5)


def test_linear1_split_matches_diffusers_converter_at_flux_width():
    """Our linear1 split (any width) against diffusers' kohya converter at FLUX.1's 3072 (rank 2: small tensors)."""
    from diffusers import FluxPipeline

    g = torch.Generator().manual_seed(3)
    width = flux_names_width()
    kohya = {"lora_unet_single_blocks_0_linear1.lora_down.weight": torch.randn(2, width, generator=g),
             "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.randn(7 * width, 2, generator=g),
             "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(1.0)}
    theirs = FluxPipeline.lora_state_dict({k: v.clone() for k, v in kohya.items()})
    # ours (used for every other width) on the same tensors, alpha / rank = 0.5 baked in as convert_bfl_names does
    from webui.models.networks.flux_names import _split_linear1
    down = kohya["lora_unet_single_blocks_0_linear1.lora_down.weight"] * 0.5
    ours = _split_linear1(0, down, kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        prefix = key.rsplit(".", 2)[0]
        if key.endswith("lora_B.weight"):
            torch.testing.assert_close(ours[key] @ ours[prefix + ".lora_A.weight"],
                                       theirs[key] @ theirs[prefix + ".lora_A.weight"])
    converted, notes = convert_bfl_names(dict(kohya))  # at 3072 the converter itself runs
    assert notes == [] and converted.keys() == theirs.keys()


def flux_names_width() -> int:
    from webui.models.networks.flux_names import CONVERTER_WIDTH
    return CONVERTER_WIDTH


def test_fp8_layers_hold_the_lora_in_the_compute_dtype_and_go_back_to_fp8(reference, tmp_path):
    path = tiny_flux.write_flux(tmp_path / "fp8.safetensors", "ComfyUI", "dev", dtype=torch.float8_e4m3fn)
    from webui.models.loader import read_state_dict
    parts = flux.read_flux_file(read_state_dict(path), path.name, torch.float32)
    model = SimpleNamespace(family="flux", unet=parts.transformer, text_encoders=[parts.clip, parts.t5])
    to_q = parts.transformer.transformer_blocks[0].attn.to_q
    assert to_q.weight.dtype == torch.float8_e4m3fn
    plain = transformer_out(parts.transformer)
    before = snapshot(parts.transformer, parts.clip)
    b = kohya_file()
    info = install(tmp_path / "Lora", b.state, "kohya")
    report = apply_networks(model, [NetworkRequest(info, 1.0, 0.3)])
    assert report.applied and not report.warnings, report.warnings
    # the reference: the float8-rounded weights in float32 plus the exact change (nothing rounded to float8)
    rounded = copy.deepcopy(reference["transformer"])
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(torch.float8_e4m3fn).float())
    out = transformer_out(parts.transformer)
    torch.testing.assert_close(out, transformer_out(with_deltas(rounded, b.expected, 0.3)), rtol=1e-4, atol=1e-5)
    assert to_q.weight.dtype == torch.float32  # held in the compute dtype while patched, also after a call
    untouched = parts.transformer.transformer_blocks[0].ff.net[2]
    assert untouched.weight.dtype == torch.float8_e4m3fn  # layers no LoRA patches stay float8
    # a small change survives (in float8 it would round away): 1% of the LoRA still moves the output
    apply_networks(model, [NetworkRequest(info, 1.0, 0.01)])
    assert (transformer_out(parts.transformer) - plain).abs().max() > 1e-4
    apply_networks(model, [])
    assert to_q.weight.dtype == torch.float8_e4m3fn
    assert_bit_exact([parts.transformer, parts.clip], before)
    assert torch.equal(transformer_out(parts.transformer), plain)
    assert to_q.weight.dtype == torch.float8_e4m3fn  # the hook stores it in float8 again after a call


def test_wrong_family_is_skipped_with_a_warning_both_ways(reference, tmp_path, tiny_models):
    from webui.models.devices import DevicePolicy
    from webui.models.loader import load_checkpoint

    sd1 = load_checkpoint(tiny_models["sd1"], DevicePolicy.cpu(), tmp_path / "cache",
                          tiny_models["sd1"].with_suffix(".yaml"))
    flux_lora = install(tmp_path / "Lora", kohya_file().state, "flux-style", {"ss_base_model_version": "flux1"})
    before = snapshot(sd1.unet, *sd1.text_encoders)
    report = apply_networks(sd1, [NetworkRequest(flux_lora)])
    assert report.applied == [] and report.warnings == [
        'LoRA "flux-style" does not fit this checkpoint (FLUX.1 LoRA on an SD1 model): skipped']
    assert_bit_exact([sd1.unet, *sd1.text_encoders], before)

    from tests import lora_files as lf
    sd_lora = lf.kohya_lora(sd1.unet, sd1.text_encoders, "sd1")
    sd_lora.save(tmp_path / "Lora" / "sd-style.safetensors")
    registry = LoraRegistry([tmp_path / "Lora"], HashCache())
    registry.refresh()
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    model = flux_model(modules)
    before = snapshot(modules["transformer"], modules["clip"])
    report = apply_networks(model, [NetworkRequest(registry.find("sd-style"))])
    assert report.applied == [] and len(report.warnings) == 1
    assert report.warnings[0].startswith('LoRA "sd-style" does not fit this checkpoint (SD1')
    assert report.warnings[0].endswith("LoRA on an FLUX.1 model): skipped")
    assert_bit_exact([modules["transformer"], modules["clip"]], before)
    # schnell checkpoints take FLUX.1 LoRAs too
    model.family = "flux-schnell"
    model.networks = None
    assert apply_networks(model, [NetworkRequest(flux_lora)]).applied


# --- through the server -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flux_app(tmp_path_factory):
    from fastapi.testclient import TestClient

    from app import create_app

    data = tmp_path_factory.mktemp("flux-lora-data")
    tiny_flux.write_flux(data / "models" / "Stable-diffusion" / "flux-packed.safetensors", "ComfyUI")
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    b = kohya_file()
    lora_dir = data / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    save_file(b.state, str(lora_dir / "flux-style.safetensors"), {"ss_base_model_version": "flux1"})
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services, b
    services.stop()
    shutil.rmtree(data, ignore_errors=True)


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=2,
                             width=64, height=64, seed=11, cfg_scale=1.0, distilled_cfg_scale=3.5, save_images=False,
                             checkpoint="flux-packed")


def test_lora_tag_in_a_flux_generation(flux_app, reference):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    client, services, b = flux_app
    tagged = services.engine.run(_request("a red fox <lora:flux-style:0.8>"))
    assert tagged.warnings == [], tagged.warnings
    info = tagged.infotexts[0]
    lora = services.models.loras.find("flux-style")
    assert f"Lora hashes: \"flux-style: {lora.shorthash}\"" in info or f"Lora hashes: flux-style: {lora.shorthash}" \
        in info, info
    # the same picture as diffusers' FluxPipeline with the expected changes in its weights
    _, model = services.models.get("flux-packed")
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**flux.scheduler_config("dev")),
                        vae=modules["vae"], text_encoder=with_deltas(modules["clip"], b.te, 0.8),
                        tokenizer=model.tokenizers[0], text_encoder_2=modules["t5"], tokenizer_2=model.tokenizers[1],
                        transformer=with_deltas(modules["transformer"], b.expected, 0.8))
    expected = pipe("a red fox", num_inference_steps=2, guidance_scale=3.5, height=64, width=64,
                    generator=torch.Generator().manual_seed(11), max_sequence_length=512).images[0]
    assert np.abs(pixels(tagged.images[0]) - pixels(expected)).max() <= 1
    plain = services.engine.run(_request("a red fox"))
    assert "Lora hashes" not in plain.infotexts[0]
    assert np.abs(pixels(plain.images[0]) - pixels(tagged.images[0])).max() > 3
    # the plain run restored the model: diffusers' pipeline without the LoRA gives its picture
    pipe.transformer, pipe.text_encoder = modules["transformer"], modules["clip"]
    unpatched = pipe("a red fox", num_inference_steps=2, guidance_scale=3.5, height=64, width=64,
                     generator=torch.Generator().manual_seed(11), max_sequence_length=512).images[0]
    assert np.abs(pixels(plain.images[0]) - pixels(unpatched)).max() <= 1
    # over HTTP too
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red fox <lora:flux-style:0.8>", "steps": 2, "sampler_name": "Euler", "cfg_scale": 1,
        "width": 64, "height": 64, "seed": 11, "override_settings": {"sd_model_checkpoint": "flux-packed"}})
    assert response.status_code == 200, response.text
    assert "Lora hashes" in response.json()["info"]
