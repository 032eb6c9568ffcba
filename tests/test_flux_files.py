"""FLUX.1 files: detection of each layout and variant, other families named, parts sorted, and every layout loading
to modules whose outputs equal diffusers'/transformers' own modules (the tiny random ones the files were written
from); float8 files stay float8; broken files give CheckpointFormatError naming the problem."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

from tests.transformer_checks import assert_refused, assert_same, rounded, t5_out, vae_out
from webui.models import flux, tiny_flux
from webui.models.architecture import CheckpointFormatError
from webui.models.loader import read_state_dict

PARTS = ("vae", "clip", "t5")


@pytest.fixture(scope="module")
def refs() -> dict[str, dict]:
    return {variant: tiny_flux.tiny_flux_modules(0, variant) for variant in tiny_flux.VARIANTS}


# --- the modules' own forward passes on fixed inputs -------------------------------------------------------------

@torch.no_grad()
def transformer_out(module, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = module.config
    tokens, text = 16, 5  # a 4x4 grid of 2x2 latent patches, 5 text tokens
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"),
                          -1).reshape(tokens, 3)
    kwargs = dict(hidden_states=torch.randn(1, tokens, cfg.in_channels, generator=g).to(dtype),
                  encoder_hidden_states=torch.randn(1, text, cfg.joint_attention_dim, generator=g).to(dtype),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g).to(dtype),
                  timestep=torch.tensor([0.7], dtype=dtype), img_ids=img_ids, txt_ids=torch.zeros(text, 3))
    if cfg.guidance_embeds:
        kwargs["guidance"] = torch.tensor([3.5], dtype=dtype)
    return module(**kwargs).sample.float()


@torch.no_grad()
def clip_out(module) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[49406, 320, 1125, 539, 3309, 49407] + [49407] * 71])
    out = module(ids)
    return out.last_hidden_state, out.pooler_output


def param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# --- detection -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", tiny_flux.LAYOUTS)
@pytest.mark.parametrize("variant", tiny_flux.VARIANTS)
def test_each_layout_and_variant_is_recognised_from_its_tensors(tmp_path, layout, variant):
    path = tiny_flux.write_flux(tmp_path / "model.bin.safetensors", layout, variant)
    state = read_state_dict(path)
    assert flux.flux_layout(state) == layout
    assert flux.other_family(state) is None
    parts = flux.read_flux_file(state, path.name, torch.float32)
    assert (parts.layout, parts.variant) == (layout, variant)
    assert parts.transformer.config.in_channels == {"fill": 384, "control": 128}.get(variant, 64)
    assert parts.transformer.config.guidance_embeds == (variant != "schnell")
    assert tuple(parts.transformer.config.axes_dims_rope) == (4, 14, 14)


def test_sd_checkpoints_and_parts_are_not_flux(tiny_models, tmp_path):
    sd = read_state_dict(tiny_models["sdxl"])
    assert flux.flux_layout(sd) is None and flux.other_family(sd) is None
    files = tiny_flux.write_flux_parts(tmp_path)
    for path in files.values():
        assert flux.flux_layout(read_state_dict(path)) is None


@pytest.mark.parametrize("family, key", [
    ("SD3 / SD3.5", "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias"),
    ("SD3 / SD3.5", "joint_blocks.0.context_block.adaLN_modulation.1.bias"),
    ("Flux.2", "model.diffusion_model.single_stream_modulation.lin.weight"),
    ("Flux.2", "double_stream_modulation_img.linear.weight"),
    ("Qwen-Image", "model.diffusion_model.txt_norm.weight"),
    ("Z-Image", "model.diffusion_model.layers.0.adaLN_modulation.0.weight"),
    ("Lumina 2", "model.diffusion_model.cap_embedder.0.weight"),
    ("AuraFlow", "model.diffusion_model.double_layers.0.attn.w1q.weight"),
    ("PixArt", "t_block.1.weight"),
    ("Sana", "blocks.0.mlp.inverted_conv.conv.weight"),
    ("HunyuanDiT", "model.diffusion_model.mlp_t5.0.weight"),
    ("HunyuanVideo", "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias"),
    ("Stable Cascade", "clip_txt_mapper.weight"),
    ("Wan (video)", "model.diffusion_model.head.modulation"),
    ("LTX-Video", "patchify_proj.weight"),
])
def test_other_families_are_named(family, key):
    state = {key: torch.zeros(2), "some.other.weight": torch.zeros(2)}
    assert flux.other_family(state) == family
    assert flux.flux_layout(state) is None
    with pytest.raises(CheckpointFormatError, match=f"this is a {family.replace('(', '.').replace(')', '.')} model"):
        flux.read_flux_file(state, "x.safetensors")


def test_kolors_and_diffusers_sd3_are_named():
    assert flux.other_family({"encoder_hid_proj.weight": torch.zeros(2048, 4096)}) == "Kolors"
    assert flux.other_family({"encoder_hid_proj.weight": torch.zeros(2048, 1024)}) is None
    sd3 = {"transformer_blocks.0.attn.add_q_proj.weight": torch.zeros(2), "pos_embed.proj.weight": torch.zeros(2)}
    assert flux.other_family(sd3) == "SD3 / SD3.5"


@pytest.mark.parametrize("layout", ["BFL", "ComfyUI", "diffusers"])
def test_chroma_is_told_from_flux(refs, layout):
    """Chroma: Flux's blocks without vector_in/guidance_in, with its distilled guidance layer."""
    state = tiny_flux.flux_state(refs["schnell"], layout)
    prefix = {"BFL": "", "ComfyUI": "model.diffusion_model.", "diffusers": ""}[layout]
    state = {k: v for k, v in state.items() if "vector_in" not in k and "text_embedder" not in k}
    state[prefix + "distilled_guidance_layer.in_proj.weight"] = torch.zeros(4, 4)
    assert flux.other_family(state) == "Chroma"
    assert flux.flux_layout(state) is None
    with pytest.raises(CheckpointFormatError, match="Chroma model; it is not supported yet"):
        flux.read_flux_file(state, "chroma.safetensors")


@pytest.mark.parametrize("prefix", ["transformer.", "model.diffusion_model."])
def test_prefixed_diffusers_names_are_recognised(refs, prefix):
    state = {prefix + k: v for k, v in tiny_flux.flux_state(refs["dev"], "diffusers").items()}
    assert flux.flux_layout(state) == "diffusers"
    assert_same(transformer_out(flux.read_flux_file(state, "x", torch.float32).transformer),
                transformer_out(refs["dev"]["transformer"]))


# --- the converters ------------------------------------------------------------------------------------------------

def test_bfl_names_round_trip_through_diffusers_converter(refs):
    for variant in tiny_flux.VARIANTS:
        ours = refs[variant]["transformer"].state_dict()
        back = flux.bfl_to_diffusers(flux.diffusers_to_bfl(ours), "x")
        assert set(back) == set(ours)
        assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_full_width_layout_is_split_by_diffusers_converter_itself():
    """At FLUX.1's width (3072) diffusers' converter splits linear1 itself: our inverse must match it exactly.
    (Tensors one column wide: the layout is in the rows.)"""
    with torch.device("meta"):
        full = flux.FluxTransformer2DModel(**dict(tiny_flux.FULL_CONFIG, num_layers=1, num_single_layers=2,
                                                  guidance_embeds=True))
    g = torch.Generator().manual_seed(0)
    ours = {k: torch.randn(v.shape[0], generator=g) for k, v in full.state_dict().items()}
    bfl = flux.diffusers_to_bfl(ours)
    assert bfl["single_blocks.1.linear1.weight"].shape == (7 * 3072,)
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    assert flux.bfl_to_diffusers(bfl, "x").keys() == ours.keys()


def test_flux1_dev_shapes_give_flux1_dev_config():
    shapes = tiny_flux.full_shapes(19, 38, "dev")
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert flux.flux_layout(state) == "BFL"
    config = flux.flux_config(flux.bfl_to_diffusers(state, "full"))
    assert config == {"patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": 19,
                      "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
                      "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
                      "axes_dims_rope": (16, 56, 56)}
    assert flux.variant_of(config) == "dev"
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 11_901_408_320  # FLUX.1 [dev]: 11.9B


# --- every layout loads to the same modules ------------------------------------------------------------------------

@pytest.mark.parametrize("layout, parts", [("BFL", ()), ("ComfyUI", PARTS), ("diffusers", ()), ("diffusers", PARTS)])
def test_each_layout_loads_to_modules_with_the_originals_outputs(refs, tmp_path, layout, parts):
    ref = refs["dev"]
    path = tiny_flux.write_flux(tmp_path / "m.safetensors", layout, "dev", parts=parts)
    loaded = flux.read_flux_file(read_state_dict(path), path.name, torch.float32)
    assert loaded.storage_dtype == torch.float32
    assert_same(transformer_out(loaded.transformer), transformer_out(ref["transformer"]))
    assert {"vae": loaded.vae is not None, "clip": loaded.clip is not None, "t5": loaded.t5 is not None} == \
        {p: p in parts for p in PARTS}
    if parts:
        assert_same(vae_out(loaded.vae), vae_out(ref["vae"]))
        assert (loaded.vae.config.scaling_factor, loaded.vae.config.shift_factor) == (0.3611, 0.1159)
        assert_same(clip_out(loaded.clip), clip_out(ref["clip"]))
        assert_same(t5_out(loaded.t5), t5_out(ref["t5"]))


@pytest.mark.parametrize("variant", ["schnell", "fill"])
def test_variants_load_exactly(refs, variant):
    state = tiny_flux.flux_state(refs[variant], "ComfyUI")
    loaded = flux.read_flux_file(state, "x", torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(refs[variant]["transformer"]))


def test_diffusers_folder(refs, tmp_path):
    folder = tiny_flux.write_flux_folder(tmp_path / "tiny-flux", "dev")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline" and not (folder / "tokenizer").exists()
    assert flux.flux_folder_class(folder) == "FluxPipeline"
    assert flux.flux_folder_class(tmp_path) is None
    loaded = flux.read_flux_folder(folder, torch.float32)
    assert loaded.variant == "dev"
    assert_same(transformer_out(loaded.transformer), transformer_out(refs["dev"]["transformer"]))
    assert_same(vae_out(loaded.vae), vae_out(refs["dev"]["vae"]))
    assert_same(clip_out(loaded.clip), clip_out(refs["dev"]["clip"]))
    assert_same(t5_out(loaded.t5), t5_out(refs["dev"]["t5"]))


# --- separate part files (models/VAE, models/text_encoder) ---------------------------------------------------------

def test_part_files_are_sorted_and_load_exactly(refs, tmp_path, tiny_models):
    ref = refs["dev"]
    files = tiny_flux.write_flux_parts(tmp_path)
    states = {stem: read_state_dict(path) for stem, path in files.items()}
    assert {stem: flux.part_kind(s) for stem, s in states.items()} == \
        {"ae": "vae", "clip_l": "clip_l", "t5xxl_fp16": "t5", "t5xxl_fp8_e4m3fn": "t5"}
    assert "encoder.down.0.block.0.conv1.weight" in states["ae"]  # BFL's ae.safetensors names
    assert flux.part_kind(read_state_dict(tiny_models["sd1"])) is None
    assert flux.part_kind(tiny_flux.flux_state(ref, "BFL")) is None

    assert_same(vae_out(flux.read_vae_file(states["ae"], "ae.safetensors")), vae_out(ref["vae"]))
    diffusers_vae = {k: v for k, v in ref["vae"].state_dict().items()}
    assert_same(vae_out(flux.read_vae_file(diffusers_vae, "vae.safetensors")), vae_out(ref["vae"]))
    clip = flux.read_clip_l_file(states["clip_l"], "clip_l.safetensors", torch.float32)
    assert_same(clip_out(clip), clip_out(rounded(ref["clip"], torch.float16)))
    bare = {k.removeprefix("text_model."): v for k, v in states["clip_l"].items()}
    assert flux.part_kind(bare) == "clip_l"
    assert_same(clip_out(flux.read_clip_l_file(bare, "clip_l.safetensors", torch.float32)), clip_out(clip))
    t5 = flux.read_t5_file(states["t5xxl_fp16"], "t5xxl_fp16.safetensors", torch.float32)
    assert_same(t5_out(t5), t5_out(rounded(ref["t5"], torch.float16)))
    embed_only = dict(states["t5xxl_fp16"])
    embed_only["encoder.embed_tokens.weight"] = embed_only.pop("shared.weight")
    assert_same(t5_out(flux.read_t5_file(embed_only, "t5.safetensors", torch.float32)), t5_out(t5))


# --- float8 --------------------------------------------------------------------------------------------------------

def test_fp8_file_stays_fp8_and_computes_like_its_rounded_weights(refs, tmp_path):
    ref = refs["dev"]
    path = tiny_flux.write_flux(tmp_path / "fp8.safetensors", "ComfyUI", "dev", dtype=torch.float8_e4m3fn)
    state = read_state_dict(path)
    loaded = flux.read_flux_file(state, path.name, torch.float32)
    assert loaded.storage_dtype == torch.float8_e4m3fn
    linear = loaded.transformer.transformer_blocks[0].attn.to_q
    assert linear.weight.dtype == linear.bias.dtype == torch.float8_e4m3fn
    assert loaded.t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float8_e4m3fn
    fp8_ref = rounded(ref["transformer"], torch.float8_e4m3fn)
    out = transformer_out(loaded.transformer)
    assert linear.weight.dtype == torch.float8_e4m3fn  # back to float8 after the call
    # float8 values are exact in float32: computed in float32 it is the float32 model on float8-rounded weights
    assert_same(out, transformer_out(fp8_ref))
    assert_same(t5_out(loaded.t5), t5_out(rounded(ref["t5"], torch.float8_e4m3fn)))
    assert_same(clip_out(loaded.clip), clip_out(rounded(ref["clip"], torch.float8_e4m3fn)))
    # ... and within float8's rounding of the float32 model (e4m3: 3 mantissa bits, relative step 1/8)
    full = transformer_out(ref["transformer"])
    assert 0 < (out - full).norm() / full.norm() < 0.15
    # bfloat16 compute: diffusers' own module in bfloat16 on the same rounded weights (float8 -> bf16 is exact too)
    as_bf16 = flux.read_flux_file(read_state_dict(path), path.name, torch.bfloat16)
    assert_same(transformer_out(as_bf16.transformer, torch.bfloat16),
                transformer_out(fp8_ref.to(torch.bfloat16), torch.bfloat16))
    # memory: the float8 transformer's matrices take half the bytes of the bfloat16 one's
    bf16 = flux.read_flux_file(tiny_flux.flux_state(ref, "ComfyUI", PARTS), "x", torch.bfloat16)
    assert param_bytes(as_bf16.transformer) < 0.53 * param_bytes(bf16.transformer)
    assert param_bytes(as_bf16.t5) < 0.53 * param_bytes(bf16.t5)


def test_fp8_t5_file_with_fp16_compute_keeps_wo_in_float32(tmp_path):
    files = tiny_flux.write_flux_parts(tmp_path)
    t5 = flux.read_t5_file(read_state_dict(files["t5xxl_fp8_e4m3fn"]), "t5xxl_fp8_e4m3fn.safetensors",
                           torch.float16)
    ff = t5.encoder.block[0].layer[1].DenseReluDense
    assert ff.wo.weight.dtype == torch.float32 and ff.wi_0.weight.dtype == torch.float8_e4m3fn
    ref = flux.read_t5_file(read_state_dict(files["t5xxl_fp8_e4m3fn"]), "t5.safetensors", torch.float32)
    expected = t5_out(ref)
    assert (t5_out(t5) - expected).norm() / expected.norm() < 0.01


def test_comfy_scaled_fp8_is_multiplied_back(refs):
    ref = refs["schnell"]["transformer"]
    state = tiny_flux.flux_state(refs["schnell"], "ComfyUI")
    scaled = {"model.diffusion_model.scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if value.ndim == 2:
            scale = value.abs().max() / 448
            scaled[key] = (value / scale).to(torch.float8_e4m3fn)
            scaled[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            scaled[key] = value
    loaded = flux.read_flux_file(scaled, "scaled.safetensors", torch.float32)
    expected = transformer_out(ref)
    assert (transformer_out(loaded.transformer) - expected).norm() / expected.norm() < 0.15


# --- broken files --------------------------------------------------------------------------------------------------

def test_truncated_file_is_refused(tmp_path):
    path = tiny_flux.write_flux(tmp_path / "cut.safetensors", "BFL", "dev")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(path)


@pytest.mark.parametrize("layout, drop, message", [
    ("BFL", "double_blocks.0.img_attn.proj.weight", "incomplete: tensor double_blocks.0.img_attn.proj.weight"),
    ("BFL", "single_blocks.0.linear1.weight", "incomplete: tensor single_blocks.0.linear1.weight"),
    ("ComfyUI", "model.diffusion_model.final_layer.linear.bias", "incomplete: tensor final_layer.linear.bias"),
    ("ComfyUI", "vae.decoder.conv_in.weight", "VAE tensor decoder.conv_in.weight is missing"),
    ("ComfyUI", "vae.decoder.up.0.block.0.conv1.weight", "VAE is incomplete"),
    ("ComfyUI", "text_encoders.t5xxl.transformer.encoder.block.1.layer.0.SelfAttention.q.weight",
     "T5 text encoder is incomplete"),
    ("ComfyUI", "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight",
     "CLIP-L text encoder is incomplete"),
    ("diffusers", "transformer_blocks.0.attn.to_k.weight", "Flux transformer is incomplete"),
    ("diffusers", "context_embedder.weight", "context_embedder.weight is missing"),
])
def test_missing_tensors_are_named(refs, layout, drop, message):
    state = tiny_flux.flux_state(refs["dev"], layout, PARTS if layout == "ComfyUI" else ())
    assert_refused(flux.read_flux_file, state, message, drop=drop, name="broken.safetensors", dtype=torch.float32)


def test_unexpected_and_misshapen_tensors_are_refused(refs):
    state = tiny_flux.flux_state(refs["dev"], "ComfyUI", PARTS)
    read = flux.read_flux_file
    assert_refused(read, state, "1 unexpected tensors .e.g. double_blocks.0.extra.weight",
                   add={"model.diffusion_model.double_blocks.0.extra.weight": torch.zeros(2)})
    assert_refused(read, state, "belong to no part of a Flux model .e.g. stray.weight",
                   add={"stray.weight": torch.zeros(2)})
    assert_refused(read, state, "VAE has 1 unexpected tensors", add={"vae.encoder.odd.weight": torch.zeros(2)})
    assert_refused(read, state, "x: the Flux transformer tensors do not fit",
                   add={"model.diffusion_model.double_blocks.0.img_mlp.2.weight": torch.zeros(64, 7)},
                   dtype=torch.float32)


def test_part_files_refuse_other_models(tiny_models, tmp_path):
    sd_vae = {k.removeprefix("first_stage_model."): v for k, v in read_state_dict(tiny_models["sd1"]).items()
              if k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointFormatError, match="4 latent channels; Flux needs its own 16-channel AE"):
        flux.read_vae_file(sd_vae, "sd-vae.safetensors")
    with pytest.raises(CheckpointFormatError, match="T5 token embedding"):
        flux.read_t5_file({"encoder.final_layer_norm.weight": torch.ones(4)}, "t5.safetensors")
    with pytest.raises(CheckpointFormatError, match="not a FLUX.1 model"):
        flux.read_flux_file(read_state_dict(tiny_models["sd1"]), "sd1.safetensors")


def test_an_nf4_file_with_an_unreadable_quantisation_state_is_refused_by_name(refs):
    """(NF4 files themselves: tests/test_nf4.py, written by bitsandbytes.)"""
    state = tiny_flux.flux_state(refs["dev"], "ComfyUI")
    state["model.diffusion_model.double_blocks.0.img_attn.qkv.weight.quant_state.bitsandbytes__nf4"] = \
        torch.full((8,), 255, dtype=torch.uint8)
    with pytest.raises(CheckpointFormatError, match="flux1-dev-bnb-nf4.safetensors: the NF4 quantisation state"):
        flux.read_flux_file(state, "flux1-dev-bnb-nf4.safetensors")


# --- the full-size writer (shapes as FLUX.1 [dev], streamed) ---------------------------------------------------------

def test_streamed_writer_writes_a_loadable_bfl_file(tmp_path, monkeypatch):
    small = dict(tiny_flux.FULL_CONFIG, attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                 pooled_projection_dim=64)
    monkeypatch.setattr(tiny_flux, "FULL_CONFIG", small)
    path = tiny_flux.write_full_transformer(tmp_path / "f.safetensors", torch.float8_e4m3fn, 2, 3, "dev")
    state = read_state_dict(path)
    assert flux.flux_layout(state) == "BFL" and {v.dtype for v in state.values()} == {torch.float8_e4m3fn}
    loaded = flux.read_flux_file(state, path.name, torch.float32)
    assert (loaded.transformer.config.num_layers, loaded.transformer.config.num_single_layers) == (2, 3)
    assert torch.isfinite(transformer_out(loaded.transformer)).all()

    class Full:
        free = 10 << 20
    monkeypatch.setattr(tiny_flux.shutil, "disk_usage", lambda _: Full)
    with pytest.raises(SystemExit, match="GB free, the file needs"):
        tiny_flux.write_full_transformer(tmp_path / "g.safetensors", torch.bfloat16, 2, 3)
    assert not (tmp_path / "g.safetensors").exists()
