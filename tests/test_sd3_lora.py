"""LoRA on SD3 / SD3.5 checkpoints: the formats people download (kohya sd-scripts and ComfyUI in Stability's module
names, diffusers / PEFT, OneTrainer) patch the tiny SD3 transformer and its CLIP-L / CLIP-G / T5 by exactly the
changes the test built the file from. For Stability's names the reference is the change added to the model's own
weights in Stability's layout and converted by diffusers' single-file converter (fused qkv split, modulation halves
swapped); for diffusers' names it is diffusers' own `load_lora_weights` + `fuse_lora` on a StableDiffusion3Pipeline.
Also: multipliers, removal bit for bit, float8 layers, the family from tensors / metadata, LoRAs of other families
skipped with a warning both ways, and `<lora:...>` through the server with `Lora hashes` in the infotext."""
from __future__ import annotations

import copy
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from safetensors.torch import save_file

from tests.conftest import pixels
from tests.test_flux_lora import Builder, assert_bit_exact, install, snapshot, with_deltas
from webui.core.request import GenerationRequest
from webui.models import tiny_flux, tiny_sd3
from webui.models.hashing import HashCache
from webui.models.networks import LoraRegistry, NetworkRequest, apply_networks
from webui.models.networks.family import families_from_tensors, guess_family
from webui.models.sd3 import diffusers_to_sai
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

W = tiny_sd3.SD3_HEAD_DIM * tiny_sd3.HEADS  # the transformer's width (128)
CLIP_Q = "text_model.encoder.layers.0.self_attn.q_proj"
T5_Q = "encoder.block.0.layer.0.SelfAttention.q"
RANK, ALPHA = 4, 2.0
VARIANT = "sd3.5-medium"  # dual attention in block 0 (attn2), RMS q/k norms; block 1 is the last (context pre-only)


# --- the model's own outputs --------------------------------------------------------------------------------------

@torch.no_grad()
def transformer_out(module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = module.config
    return module(hidden_states=torch.randn(1, cfg.in_channels, 8, 8, generator=g),
                  encoder_hidden_states=torch.randn(1, 5, cfg.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                  timestep=torch.tensor([700.0])).sample.float()


@torch.no_grad()
def text_out(module) -> torch.Tensor:
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    if module.__class__.__name__.startswith("T5"):
        ids = torch.tensor([[37, 1712, 3, 1]])
    return module(ids).last_hidden_state.float()


def sd3_model(modules, family: str = "sd3"):
    return SimpleNamespace(family=family, unet=modules["transformer"],
                           text_encoders=[modules["clip_l"], modules["clip_g"], modules["t5"]])


def with_sai_deltas(transformer, deltas: dict[str, torch.Tensor], multiplier: float = 1.0):
    """The reference for Stability-named LoRAs: the model's weights in Stability's layout plus each change, back to
    diffusers' names by diffusers' own single-file converter."""
    sai = {k: v.detach().clone().float() for k, v in diffusers_to_sai(transformer.state_dict()).items()}
    for name, delta in deltas.items():
        sai[f"{name}.weight"] += multiplier * delta.reshape(sai[f"{name}.weight"].shape)
    clone = SD3Transformer2DModel(**transformer.config).eval()
    clone.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(sai))
    return clone


# --- LoRA files built from known low-rank matrices ---------------------------------------------------------------

def sai_modules(transformer) -> list[tuple[str, int, int]]:
    """(Stability's module name, rows, columns) of the linear layers a SD3 LoRA trains, shapes from the model."""
    sai = diffusers_to_sai(transformer.state_dict())
    names = ["joint_blocks.0.x_block.attn.qkv", "joint_blocks.0.context_block.attn.qkv",
             "joint_blocks.0.x_block.attn2.qkv", "joint_blocks.0.x_block.attn.proj",
             "joint_blocks.0.context_block.attn.proj", "joint_blocks.0.x_block.attn2.proj",
             "joint_blocks.0.x_block.adaLN_modulation.1", "joint_blocks.0.context_block.adaLN_modulation.1",
             "joint_blocks.1.context_block.adaLN_modulation.1", "joint_blocks.1.x_block.attn.qkv",
             "joint_blocks.1.x_block.mlp.fc1", "joint_blocks.0.context_block.mlp.fc2", "final_layer.linear",
             "final_layer.adaLN_modulation.1", "context_embedder", "t_embedder.mlp.0", "y_embedder.mlp.2"]
    return [(n, *sai[f"{n}.weight"].shape) for n in names if f"{n}.weight" in sai]  # attn2: SD3.5 Medium


def text_deltas(b: Builder, te_prefixes: tuple[str, str, str], dotted: bool, **kw) -> None:
    """A q projection of each text encoder whose prefix is given (CLIP-L, CLIP-G, T5)."""
    for prefix, component, name, width in zip(te_prefixes, ("clip_l", "clip_g", "t5"), (CLIP_Q, CLIP_Q, T5_Q),
                                              (tiny_sd3.CLIP_L_WIDTH, tiny_sd3.CLIP_G_WIDTH, tiny_flux.T5_WIDTH)):
        if prefix:
            key = prefix + (name if dotted else name.replace(".", "_"))
            b.te[component] = {name: b.kohya(key, width, width, **kw)}


def kohya_file(transformer) -> Builder:
    """kohya sd-scripts: `lora_unet_<SAI name with underscores>` with alphas, `lora_te1_` / `lora_te2_` /
    `lora_te3_`; the patch embedding as a conv LoRA."""
    b = Builder(21)
    for name, rows, cols in sai_modules(transformer):
        b.expected[name] = b.kohya("lora_unet_" + name.replace(".", "_"), rows, cols)
    down = torch.randn(RANK, 16, 2, 2, generator=b.g) * 0.3
    up = torch.randn(W, RANK, 1, 1, generator=b.g) * 0.3
    b.state["lora_unet_x_embedder_proj.lora_down.weight"], b.state["lora_unet_x_embedder_proj.lora_up.weight"] = \
        down, up
    b.state["lora_unet_x_embedder_proj.alpha"] = torch.tensor(ALPHA)
    b.expected["x_embedder.proj"] = (ALPHA / RANK * up.flatten(1) @ down.flatten(1)).reshape(W, 16, 2, 2)
    text_deltas(b, ("lora_te1_", "lora_te2_", "lora_te3_"), dotted=False)
    return b


def comfy_file(transformer) -> Builder:
    """ComfyUI's spelling: Stability's names with dots under `diffusion_model.`, PEFT endings, no alpha."""
    b = Builder(22)
    for name, rows, cols in sai_modules(transformer):
        b.expected[name] = b.kohya("diffusion_model." + name, rows, cols, alpha=None, down_end=".lora_A.weight",
                                   up_end=".lora_B.weight")
    return b


def peft_file() -> Builder:
    """diffusers / PEFT: `transformer.<module>.lora_A.weight`, `text_encoder.` / `text_encoder_2.`; no alpha."""
    b = Builder(23)
    for name, rows, cols in (("transformer_blocks.0.attn.to_q", W, W), ("transformer_blocks.0.attn.add_k_proj", W, W),
                             ("transformer_blocks.0.attn2.to_v", W, W), ("transformer_blocks.1.ff.net.2", W, 4 * W),
                             ("transformer_blocks.0.norm1_context.linear", 6 * W, W), ("proj_out", 64, W)):
        b.expected[name] = b.kohya("transformer." + name, rows, cols, alpha=None, down_end=".lora_A.weight",
                                   up_end=".lora_B.weight")
    text_deltas(b, ("text_encoder.", "text_encoder_2.", ""), dotted=True, alpha=None, down_end=".lora_A.weight",
                up_end=".lora_B.weight")
    return b


def onetrainer_file() -> Builder:
    """OneTrainer: diffusers' module names with underscores under `lora_transformer_`, with alphas."""
    b = Builder(24)
    for name, rows, cols in (("transformer_blocks.1.attn.to_k", W, W), ("transformer_blocks.0.ff_context.net.0.proj",
                                                                         4 * W, W)):
        b.expected[name] = b.kohya("lora_transformer_" + name.replace(".", "_"), rows, cols)
    text_deltas(b, ("lora_te1_", "lora_te2_", ""), dotted=False)
    return b


SAI_FORMATS = {"kohya": kohya_file, "comfyui": comfy_file}
DIFFUSERS_FORMATS = {"peft": lambda t: peft_file(), "onetrainer": lambda t: onetrainer_file()}


@pytest.fixture(scope="module")
def reference():
    return tiny_sd3.tiny_sd3_modules(0, VARIANT)


def _reference_transformer(reference, fmt: str, b: Builder, multiplier: float = 1.0):
    if fmt in SAI_FORMATS:
        return with_sai_deltas(reference["transformer"], b.expected, multiplier)
    return with_deltas(reference["transformer"], b.expected, multiplier)


def test_each_format_patches_exactly_the_expected_changes_and_restores_bit_for_bit(reference, tmp_path):
    for fmt, build in {**SAI_FORMATS, **DIFFUSERS_FORMATS}.items():
        modules = {k: copy.deepcopy(v) for k, v in reference.items()}
        model = sd3_model(modules)
        b = build(reference["transformer"])
        info = install(tmp_path / fmt, b.state, fmt)
        assert info.base_family == "sd3", fmt
        parts = [modules["transformer"], modules["clip_l"], modules["clip_g"], modules["t5"]]
        before = snapshot(*parts)
        report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])
        assert report.warnings == [] and [i.name for i in report.applied] == [fmt], (fmt, report.warnings)
        expected = _reference_transformer(reference, fmt, b)
        ours, theirs = modules["transformer"].state_dict(), expected.state_dict()
        for key in theirs:  # each weight itself, so a wrong split or swap cannot hide
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=f"{fmt} {key}")
        torch.testing.assert_close(transformer_out(modules["transformer"]), transformer_out(expected),
                                   rtol=1e-4, atol=1e-5, msg=fmt)
        for component, deltas in b.te.items():
            torch.testing.assert_close(text_out(modules[component]),
                                       text_out(with_deltas(reference[component], deltas)), rtol=1e-4, atol=1e-5)
        # multipliers: 0.5 for the transformer, 0 for the text encoders
        apply_networks(model, [NetworkRequest(info, 0.0, 0.5)])
        torch.testing.assert_close(transformer_out(modules["transformer"]),
                                   transformer_out(_reference_transformer(reference, fmt, b, 0.5)),
                                   rtol=1e-4, atol=1e-5, msg=fmt)
        for component in b.te:
            assert torch.equal(text_out(modules[component]), text_out(reference[component])), (fmt, component)
        assert apply_networks(model, [NetworkRequest(info, 0.0, 0.5)]).modules_changed == 0
        apply_networks(model, [])
        assert_bit_exact(parts, before)


def test_diffusers_own_fuse_lora_agrees(reference, tmp_path):
    """diffusers' StableDiffusion3Pipeline.load_lora_weights + fuse_lora on the same tiny modules and PEFT file."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    b = peft_file()
    ours = {k: copy.deepcopy(v) for k, v in reference.items()}
    info = install(tmp_path / "peft", b.state, "peft")
    report = apply_networks(sd3_model(ours), [NetworkRequest(info)])
    assert report.applied and not report.warnings, report.warnings
    theirs = {k: copy.deepcopy(v) for k, v in reference.items()}
    pipe = StableDiffusion3Pipeline(transformer=theirs["transformer"], scheduler=FlowMatchEulerDiscreteScheduler(),
                                    vae=theirs["vae"], text_encoder=theirs["clip_l"], tokenizer=None,
                                    text_encoder_2=theirs["clip_g"], tokenizer_2=None,
                                    text_encoder_3=theirs["t5"], tokenizer_3=None)
    pipe.load_lora_weights({k: v.clone() for k, v in b.state.items()}, adapter_name="x")
    pipe.fuse_lora(components=["transformer", "text_encoder", "text_encoder_2"], lora_scale=1.0)
    pipe.unload_lora_weights()
    torch.testing.assert_close(transformer_out(ours["transformer"]), transformer_out(pipe.transformer),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_out(ours["clip_l"]), text_out(pipe.text_encoder), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_out(ours["clip_g"]), text_out(pipe.text_encoder_2), rtol=1e-4, atol=1e-5)


def test_a_fused_qkv_of_a_kind_not_split_by_rows_is_left_out_with_a_warning(reference, tmp_path):
    """LoHa on a fused qkv cannot be split onto q / k / v; the rest of the file still applies."""
    g = torch.Generator().manual_seed(2)
    b = Builder(25)
    b.expected["joint_blocks.0.x_block.attn.proj"] = b.kohya("lora_unet_joint_blocks_0_x_block_attn_proj", W, W)
    qkv = "lora_unet_joint_blocks_0_x_block_attn_qkv"
    for end, shape in ((".hada_w1_a", (3 * W, 2)), (".hada_w1_b", (2, W)), (".hada_w2_a", (3 * W, 2)),
                       (".hada_w2_b", (2, W))):
        b.state[qkv + end] = torch.randn(*shape, generator=g)
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    report = apply_networks(sd3_model(modules), [NetworkRequest(install(tmp_path, b.state, "loha-qkv"))])
    assert [i.name for i in report.applied] == ["loha-qkv"]
    assert report.warnings == ['LoRA "loha-qkv": 4 tensors of a kind we cannot apply were ignored '
                               '(e.g. joint_blocks_0_x_block_attn_qkv.hada_w1_a)'], report.warnings
    torch.testing.assert_close(transformer_out(modules["transformer"]),
                               transformer_out(with_sai_deltas(reference["transformer"], b.expected)),
                               rtol=1e-4, atol=1e-5)


def test_family_from_tensor_names_widths_and_metadata():
    lora = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (4, 1536)}
    assert families_from_tensors(lora) == {"sd3"}  # SD3 Medium's width
    assert families_from_tensors({k: (4, 3072) for k in lora}) == {"flux"}
    tiny = {k: (4, 128) for k in lora}  # a width that tells nothing: FLUX.1 or SD3 by the names alone
    assert families_from_tensors(tiny) == {"flux", "sd3"} and guess_family(tiny, {}) is None
    assert guess_family(tiny, {"ss_base_model_version": "sd3"}) == "sd3"
    assert guess_family(tiny, {"modelspec.architecture": "stable-diffusion-3.5-large/lora"}) == "sd3"
    assert guess_family(tiny, {"modelspec.architecture": "flux-1-dev/lora"}) == "flux"
    assert families_from_tensors({"transformer.transformer_blocks.23.attn.to_q.lora_A.weight": (4, 128)}) == {"sd3"}
    assert families_from_tensors({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (4, 128)}) == {"sd3"}
    assert families_from_tensors({"lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight": (4, 32)}) \
        == {"sd3"}
    clip_g_only = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280)}
    assert families_from_tensors(clip_g_only) == {"sdxl", "sd3"}
    assert guess_family(clip_g_only, {}) == "sdxl"  # as A1111: `lora_te2_` alone means SDXL...
    assert guess_family(clip_g_only, {"ss_base_model_version": "sd3"}) == "sd3"  # ...unless the metadata says SD3
    # an SDXL LoRA stays SDXL
    assert families_from_tensors({"lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight":
                                  (4, 2048)}) == {"sdxl"}


def test_fp8_layers_hold_the_lora_in_the_compute_dtype_and_go_back_to_fp8(reference, tmp_path):
    from webui.models.loader import read_state_dict
    from webui.models.sd3 import read_sd3_file

    path = tiny_sd3.write_sd3(tmp_path / "fp8.safetensors", "SAI", VARIANT, dtype=torch.float8_e4m3fn)
    parts = read_sd3_file(read_state_dict(path), path.name, torch.float32)
    modules = {"transformer": parts.transformer, "clip_l": parts.clip_l, "clip_g": parts.clip_g, "t5": parts.t5}
    to_q = parts.transformer.transformer_blocks[0].attn.to_q
    assert to_q.weight.dtype == torch.float8_e4m3fn
    plain = transformer_out(parts.transformer)
    before = snapshot(*modules.values())
    b = kohya_file(reference["transformer"])
    info = install(tmp_path / "Lora", b.state, "kohya")
    model = sd3_model(modules)
    report = apply_networks(model, [NetworkRequest(info, 1.0, 0.3)])
    assert report.applied and not report.warnings, report.warnings
    rounded = copy.deepcopy(reference["transformer"])  # the float8-rounded file values plus the exact change
    with torch.no_grad():
        for p in [*rounded.parameters(), *rounded.buffers()]:  # (the file holds pos_embed in float8 too)
            p.copy_(p.to(torch.float8_e4m3fn).float())
    expected = with_sai_deltas(rounded, b.expected, 0.3)
    torch.testing.assert_close(transformer_out(parts.transformer), transformer_out(expected), rtol=1e-4, atol=1e-5)
    assert to_q.weight.dtype == torch.float32  # held in the compute dtype while patched
    assert parts.transformer.transformer_blocks[1].ff.net[2].weight.dtype == torch.float8_e4m3fn  # untouched
    apply_networks(model, [])
    assert to_q.weight.dtype == torch.float8_e4m3fn
    assert_bit_exact(list(modules.values()), before)
    assert torch.equal(transformer_out(parts.transformer), plain)


def test_wrong_family_is_skipped_with_a_warning_both_ways(reference, tmp_path, tiny_models):
    from tests import lora_files as lf
    from tests.test_flux_lora import flux_model, kohya_file as flux_kohya_file
    from webui.models.devices import DevicePolicy
    from webui.models.loader import load_checkpoint

    sd3_lora = install(tmp_path / "Lora", kohya_file(reference["transformer"]).state, "sd3-style",
                       {"ss_base_model_version": "sd3"})
    flux_lora = install(tmp_path / "Lora", flux_kohya_file().state, "flux-style", {"ss_base_model_version": "flux1"})
    sd1 = load_checkpoint(tiny_models["sd1"], DevicePolicy.cpu(), tmp_path / "cache",
                          tiny_models["sd1"].with_suffix(".yaml"))
    lf.kohya_lora(sd1.unet, sd1.text_encoders, "sd1").save(tmp_path / "Lora" / "sd-style.safetensors")
    registry = LoraRegistry([tmp_path / "Lora"], HashCache())
    registry.refresh()
    # SD3 LoRA on SD1 and FLUX.1
    before = snapshot(sd1.unet, *sd1.text_encoders)
    report = apply_networks(sd1, [NetworkRequest(sd3_lora)])
    assert report.applied == [] and report.warnings == [
        'LoRA "sd3-style" does not fit this checkpoint (SD3 LoRA on an SD1 model): skipped']
    assert_bit_exact([sd1.unet, *sd1.text_encoders], before)
    flux_modules = tiny_flux.tiny_flux_modules(0, "dev")
    before = snapshot(flux_modules["transformer"], flux_modules["clip"])
    report = apply_networks(flux_model(flux_modules), [NetworkRequest(sd3_lora)])
    assert report.applied == [] and report.warnings == [
        'LoRA "sd3-style" does not fit this checkpoint (SD3 LoRA on an FLUX.1 model): skipped']
    assert_bit_exact([flux_modules["transformer"], flux_modules["clip"]], before)
    # FLUX.1 and SD1 LoRAs on SD3
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    parts = [modules["transformer"], modules["clip_l"], modules["clip_g"], modules["t5"]]
    before = snapshot(*parts)
    report = apply_networks(sd3_model(modules), [NetworkRequest(flux_lora), NetworkRequest(registry.find("sd-style"))])
    assert report.applied == [] and len(report.warnings) == 2, report.warnings
    assert report.warnings[0] == 'LoRA "flux-style" does not fit this checkpoint (FLUX.1 LoRA on an SD3 model): skipped'
    assert report.warnings[1].startswith('LoRA "sd-style" does not fit this checkpoint (SD1')
    assert report.warnings[1].endswith("LoRA on an SD3 model): skipped")
    assert_bit_exact(parts, before)


# --- through the server -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd3_app(tmp_path_factory):
    from fastapi.testclient import TestClient

    from app import create_app

    data = tmp_path_factory.mktemp("sd3-lora-data")
    tiny_sd3.write_sd3(data / "models" / "Stable-diffusion" / "sd3-packed.safetensors", "SAI")
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    b = kohya_file(tiny_sd3.tiny_sd3_modules(0)["transformer"])
    b.te.pop("t5")  # (the T5 change is checked above; here the picture's reference keeps diffusers' T5)
    for key in [k for k in b.state if k.startswith("lora_te3_")]:
        del b.state[key]
    lora_dir = data / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    save_file(b.state, str(lora_dir / "sd3-style.safetensors"), {"ss_base_model_version": "sd3"})
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services, b
    services.stop()
    shutil.rmtree(data, ignore_errors=True)


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=2,
                             width=64, height=64, seed=11, cfg_scale=4.5, save_images=False, checkpoint="sd3-packed")


def test_lora_tag_in_an_sd3_generation(sd3_app):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    client, services, b = sd3_app
    tagged = services.engine.run(_request("a lighthouse <lora:sd3-style:0.8>"))
    assert tagged.warnings == [], tagged.warnings
    lora = services.models.loras.find("sd3-style")
    info = tagged.infotexts[0]
    assert f"Lora hashes: \"sd3-style: {lora.shorthash}\"" in info or f"Lora hashes: sd3-style: {lora.shorthash}" \
        in info, info
    _, model = services.models.get("sd3-packed")
    modules = tiny_sd3.tiny_sd3_modules(0)

    def pipe(transformer, clip_l, clip_g):
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=modules["vae"],
            text_encoder=clip_l, tokenizer=model.tokenizers[0], text_encoder_2=clip_g, tokenizer_2=model.tokenizers[1],
            text_encoder_3=modules["t5"], tokenizer_3=model.tokenizers[2])("a lighthouse", num_inference_steps=2,
                                                                            guidance_scale=4.5, height=64, width=64,
                                                                            generator=torch.Generator().manual_seed(11)
                                                                            ).images[0]

    expected = pipe(with_sai_deltas(modules["transformer"], b.expected, 0.8),
                    with_deltas(modules["clip_l"], b.te["clip_l"], 0.8), with_deltas(modules["clip_g"], b.te["clip_g"],
                                                                                    0.8))
    assert np.abs(pixels(tagged.images[0]) - pixels(expected)).max() <= 1
    plain = services.engine.run(_request("a lighthouse"))
    assert "Lora hashes" not in plain.infotexts[0]
    assert np.abs(pixels(plain.images[0]) - pixels(tagged.images[0])).max() > 3
    unpatched = pipe(modules["transformer"], modules["clip_l"], modules["clip_g"])
    assert np.abs(pixels(plain.images[0]) - pixels(unpatched)).max() <= 1
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a lighthouse <lora:sd3-style:0.8>", "steps": 2, "sampler_name": "Euler", "cfg_scale": 4.5,
        "width": 64, "height": 64, "seed": 11, "override_settings": {"sd_model_checkpoint": "sd3-packed"}})
    assert response.status_code == 200, response.text
    assert "Lora hashes" in response.json()["info"]
