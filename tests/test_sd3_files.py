"""SD3 / SD3.5 files: detection of each layout and variant (agreeing with diffusers' own model-type inference at full
size), parts sorted, and every layout loading to modules whose outputs equal diffusers'/transformers' own modules (the
tiny random ones the files were written from); float8 files stay float8; broken files give CheckpointFormatError
naming the problem."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.loaders.single_file_utils import (convert_sd3_transformer_checkpoint_to_diffusers,
                                                 infer_diffusers_model_type)
from transformers import CLIPTextModel

from tests.transformer_checks import assert_refused, assert_same, t5_out, vae_out
from webui.models import sd3, tiny_flux, tiny_sd3
from webui.models.architecture import CheckpointFormatError
from webui.models.loader import read_state_dict

PARTS = tiny_sd3.PARTS
FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def refs() -> dict[str, dict]:
    return {variant: tiny_sd3.tiny_sd3_modules(0, variant) for variant in sd3.VARIANTS}


# --- the modules' own forward passes on fixed inputs -------------------------------------------------------------

@torch.no_grad()
def transformer_out(module, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = module.config
    return module(hidden_states=torch.randn(1, cfg.in_channels, 8, 12, generator=g).to(dtype),
                  encoder_hidden_states=torch.randn(1, 5, cfg.joint_attention_dim, generator=g).to(dtype),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g).to(dtype),
                  timestep=torch.tensor([700.0], dtype=dtype)).sample.float()


IDS = torch.tensor([[49406, 320, 1125, 539, 3309, 49407] + [49407] * 71])


@torch.no_grad()
def clip_out(module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Last and penultimate hidden states (SD3 uses the penultimate) and the projected pooled output."""
    out = module(IDS, output_hidden_states=True)
    return out.last_hidden_state, out.hidden_states[-2], out.text_embeds


def rounded(module, dtype):
    """A copy of module whose weights went through `dtype` and back (the reference for a file stored in dtype)."""
    import copy
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for name, param in clone.named_parameters():
            if name != "text_projection.weight" or not torch.equal(param, torch.eye(param.shape[0])):
                param.copy_(param.to(dtype).to(param.dtype))
        for buffer in clone.buffers():  # SD3's position embedding is stored in the file's dtype too
            if buffer.is_floating_point():
                buffer.copy_(buffer.to(dtype).to(buffer.dtype))
    return clone


def assert_sd3_parts(loaded, ref, dtype=None) -> None:
    """Each loaded part against transformers'/diffusers' modules (rounded through the file's dtype)."""
    def r(m):
        return rounded(m, dtype) if dtype is not None else m
    assert_same(vae_out(loaded.vae), vae_out(ref["vae"]))
    assert (loaded.vae.config.scaling_factor, loaded.vae.config.shift_factor) == (1.5305, 0.0609)
    assert_same(clip_out(loaded.clip_l), clip_out(r(ref["clip_l"])))
    assert_same(clip_out(loaded.clip_g), clip_out(r(ref["clip_g"])))
    assert_same(t5_out(loaded.t5), t5_out(r(ref["t5"])))


# --- detection -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", tiny_sd3.LAYOUTS)
@pytest.mark.parametrize("variant", sd3.VARIANTS)
def test_each_layout_and_variant_is_recognised_and_loads_exactly(refs, tmp_path, layout, variant):
    path = tiny_sd3.write_sd3(tmp_path / "model.safetensors", layout, variant)
    state = read_state_dict(path)
    assert sd3.sd3_layout(state) == layout
    loaded = sd3.read_sd3_file(state, path.name, torch.float32)
    assert (loaded.layout, loaded.variant, loaded.storage_dtype) == (layout, variant, torch.float32)
    expected = {k: v for k, v in tiny_sd3.tiny_transformer_config(variant).items()}
    assert {k: loaded.transformer.config[k] for k in expected} == expected
    assert_same(transformer_out(loaded.transformer), transformer_out(refs[variant]["transformer"]))


def test_other_models_and_parts_are_not_sd3(tiny_models, tmp_path, refs):
    for kind in ("sd1", "sdxl"):
        assert sd3.sd3_layout(read_state_dict(tiny_models[kind])) is None
    flux_modules = tiny_flux.tiny_flux_modules(0, "dev")
    for layout in tiny_flux.LAYOUTS:
        assert sd3.sd3_layout(tiny_flux.flux_state(flux_modules, layout)) is None
    for path in tiny_sd3.write_sd3_parts(tmp_path).values():
        assert sd3.sd3_layout(read_state_dict(path)) is None
    # an SD3 ControlNet in diffusers' names has the transformer's blocks and its own input embedding
    controlnet = dict(tiny_sd3.sd3_state(refs["sd3-medium"], "diffusers"))
    controlnet["pos_embed_input.proj.weight"] = torch.zeros(2)
    assert sd3.sd3_layout(controlnet) is None
    with pytest.raises(CheckpointFormatError, match="sd1.safetensors: not an SD3 / SD3.5 model"):
        sd3.read_sd3_file(read_state_dict(tiny_models["sd1"]), "sd1.safetensors")


@pytest.mark.parametrize("prefix", ["", "transformer.", "model.diffusion_model."])
def test_diffusers_names_under_each_prefix(refs, prefix):
    ref = refs["sd3.5-medium"]
    state = {prefix + k: v for k, v in tiny_sd3.sd3_state(ref, "diffusers").items()}
    assert sd3.sd3_layout(state) == "diffusers"
    assert_same(transformer_out(sd3.read_sd3_file(state, "x", torch.float32).transformer),
                transformer_out(ref["transformer"]))


def test_bare_sai_names_are_recognised(refs):
    state = {k.removeprefix("model.diffusion_model."): v for k, v in tiny_sd3.sd3_state(refs["sd3-medium"], "SAI")
             .items()}
    assert "joint_blocks.0.x_block.attn.qkv.weight" in state and sd3.sd3_layout(state) == "SAI"
    loaded = sd3.read_sd3_file(state, "x", torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(refs["sd3-medium"]["transformer"]))


# --- the converter, and full-size shapes -------------------------------------------------------------------------

def test_sai_names_round_trip_through_diffusers_converter(refs):
    """Our inverse, fed to diffusers' converter itself (no stand-ins), gives every tensor back exactly; our
    stand-in split agrees."""
    for variant in sd3.VARIANTS:
        ours = refs[variant]["transformer"].state_dict()
        sai = sd3.diffusers_to_sai(ours)
        assert any(".x_block.attn2.qkv." in k for k in sai) == (variant == "sd3.5-medium")
        assert any(".attn.ln_q." in k for k in sai) == variant.startswith("sd3.5")
        for back in (convert_sd3_transformer_checkpoint_to_diffusers(dict(sai)), sd3.sai_to_diffusers(sai, "x")):
            assert set(back) == set(ours)
            assert all(torch.equal(back[k], ours[k]) for k in ours)


# the published repositories' transformer/config.json values
FULL = {
    "sd3-medium": dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=192,
                       dual_attention_layers=(), qk_norm=None),
    "sd3.5-medium": dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=384,
                         dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
    "sd3.5-large": dict(num_layers=38, num_attention_heads=38, caption_projection_dim=2432, pos_embed_max_size=192,
                        dual_attention_layers=(), qk_norm="rms_norm"),
}
DIFFUSERS_TYPES = {"sd3-medium": "sd3", "sd3.5-medium": "sd35_medium", "sd3.5-large": "sd35_large"}


@pytest.mark.parametrize("variant", sd3.VARIANTS)
def test_full_size_shapes_give_the_published_configs(variant):
    config = dict(sample_size=128, patch_size=2, in_channels=16, attention_head_dim=64, joint_attention_dim=4096,
                  pooled_projection_dim=2048, out_channels=16, **FULL[variant])
    with torch.device("meta"):
        module = SD3Transformer2DModel(**config)
    sai = {"model.diffusion_model." + k: v for k, v in sd3.diffusers_to_sai(module.state_dict()).items()}
    assert infer_diffusers_model_type(sai) == DIFFUSERS_TYPES[variant]  # diffusers' own reading of the file
    assert sd3.sd3_layout(sai) == "SAI"
    weights = sd3.sai_to_diffusers({k.removeprefix("model.diffusion_model."): v for k, v in sai.items()}, "x")
    assert sd3.sd3_config(weights) == config
    assert sd3.variant_of(config) == variant


# --- packed parts, folders, part files ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", tiny_sd3.LAYOUTS)
def test_packed_parts_load_exactly(refs, tmp_path, layout):
    ref = refs["sd3.5-large"]
    path = tiny_sd3.write_sd3(tmp_path / "m.safetensors", layout, "sd3.5-large", parts=PARTS)
    loaded = sd3.read_sd3_file(read_state_dict(path), path.name, torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(ref["transformer"]))
    assert_sd3_parts(loaded, ref)
    state = read_state_dict(path)
    if layout == "SAI":  # Stability's names, as diffusers' CHECKPOINT_KEY_NAMES / single-file loader read them
        for key in ("text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight",
                    "text_encoders.clip_g.transformer.text_model.embeddings.position_embedding.weight",
                    "text_encoders.clip_g.transformer.text_projection.weight",
                    "text_encoders.t5xxl.transformer.shared.weight", "first_stage_model.encoder.down.0.block.0.conv1"
                    ".weight", "model.diffusion_model.joint_blocks.1.context_block.adaLN_modulation.1.bias"):
            assert key in state


def test_clip_l_pooled_output_is_unprojected_whatever_the_file_holds(refs, tmp_path):
    """SD3 uses CLIP-L's pooled output as is (Stability's reference: return_projected_pooled=False): compare with
    transformers' plain CLIPTextModel on the same weights."""
    files = tiny_sd3.write_sd3_parts(tmp_path)
    state = read_state_dict(files["clip_l"])
    assert "text_projection.weight" in state and not torch.equal(state["text_projection.weight"].float(),
                                                                 torch.eye(tiny_sd3.CLIP_L_WIDTH))
    clip_l = sd3.read_clip_l_file(state, "clip_l.safetensors", torch.float32)
    plain = CLIPTextModel(clip_l.config)
    plain.load_state_dict({k: v for k, v in clip_l.state_dict().items() if k.startswith("text_model.")}
                          if any(k.startswith("text_model.") for k in plain.state_dict()) else
                          {k.removeprefix("text_model."): v for k, v in clip_l.state_dict().items()
                           if k.startswith("text_model.")})
    with torch.no_grad():
        assert torch.equal(clip_l(IDS).text_embeds, plain.eval()(IDS).pooler_output)


def test_part_files_are_sorted_and_load_exactly(refs, tmp_path, tiny_models):
    ref = refs["sd3-medium"]
    files = tiny_sd3.write_sd3_parts(tmp_path)
    states = {stem: read_state_dict(path) for stem, path in files.items()}
    assert {stem: sd3.sd3_part_kind(s) for stem, s in states.items()} == \
        {"sd3_vae": "vae", "clip_l": "clip_l", "clip_g": "clip_g", "t5xxl_fp16": "t5", "t5xxl_fp8_e4m3fn": "t5"}
    assert sd3.sd3_part_kind(read_state_dict(tiny_models["sd1"])) is None
    assert sd3.sd3_part_kind(tiny_sd3.sd3_state(ref, "SAI")) is None
    wide = {"text_model.embeddings.token_embedding.weight": torch.zeros(8, 1280),
            "text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(1280, 1280)}
    assert sd3.sd3_part_kind(wide) == "clip_g"  # bigG's width
    assert sd3.sd3_part_kind({**wide, "text_model.embeddings.token_embedding.weight": torch.zeros(8, 1024)}) is None

    assert_same(vae_out(sd3.read_sd3_vae_file(states["sd3_vae"], "sd3_vae.safetensors")), vae_out(ref["vae"]))
    diffusers_vae = read_state_dict(tiny_sd3.write_sd3(tmp_path / "d.safetensors", "diffusers", parts=("vae",)))
    vae = sd3.read_sd3_vae_file(diffusers_vae, "d.safetensors")
    assert_same(vae_out(vae), vae_out(ref["vae"]))
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (1.5305, 0.0609)
    clip_g = sd3.read_clip_g_file(states["clip_g"], "clip_g.safetensors", torch.float32)
    assert_same(clip_out(clip_g), clip_out(rounded(ref["clip_g"], torch.float16)))
    clip_l = sd3.read_clip_l_file(states["clip_l"], "clip_l.safetensors", torch.float32)
    assert_same(clip_out(clip_l), clip_out(rounded(ref["clip_l"], torch.float16)))
    t5 = sd3.read_t5_file(states["t5xxl_fp16"], "t5xxl_fp16.safetensors", torch.float32)
    assert_same(t5_out(t5), t5_out(rounded(ref["t5"], torch.float16)))
    # OpenCLIP's own orientation of the projection (`text_projection`, [in, out]) reads the same
    openclip = {k: v for k, v in states["clip_g"].items() if k != "text_projection.weight"}
    openclip["text_projection"] = states["clip_g"]["text_projection.weight"].t().contiguous()
    assert_same(clip_out(sd3.read_clip_g_file(openclip, "g.safetensors", torch.float32)), clip_out(clip_g))


def test_diffusers_folder(refs, tmp_path):
    folder = tiny_sd3.write_sd3_folder(tmp_path / "tiny-sd3", "sd3.5-medium")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert sd3.sd3_folder_class(folder) == "StableDiffusion3Pipeline" and sd3.sd3_folder_class(tmp_path) is None
    loaded = sd3.read_sd3_folder(folder, torch.float32)
    ref = refs["sd3.5-medium"]
    assert (loaded.variant, loaded.layout) == ("sd3.5-medium", "diffusers folder")
    # diffusers' own loader: the same weights bit for bit; outputs equal up to float32 summation order (its tensors
    # come from the mapped file unaligned, which changes the CPU kernels' vector paths)
    for part in ("transformer", "vae", "clip_l", "clip_g", "t5"):
        mine, theirs = getattr(loaded, part).state_dict(), ref[part].state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    for ours, expected in ((transformer_out(loaded.transformer), transformer_out(ref["transformer"])),
                           (clip_out(loaded.clip_l)[2], clip_out(ref["clip_l"])[2]),
                           (clip_out(loaded.clip_g)[2], clip_out(ref["clip_g"])[2])):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointFormatError, match="not an SD3 diffusers folder"):
        sd3.read_sd3_folder(tmp_path)


# --- float8 --------------------------------------------------------------------------------------------------------

def test_fp8_file_stays_fp8_and_computes_like_its_rounded_weights(refs, tmp_path):
    ref = refs["sd3.5-medium"]
    path = tiny_sd3.write_sd3(tmp_path / "fp8.safetensors", "SAI", "sd3.5-medium", dtype=FP8)
    loaded = sd3.read_sd3_file(read_state_dict(path), path.name, torch.float32)
    assert loaded.storage_dtype == FP8
    block = loaded.transformer.transformer_blocks[0]
    for linear in (block.attn.to_q, block.attn.add_k_proj, block.attn2.to_v, block.ff.net[2]):
        assert linear.weight.dtype == linear.bias.dtype == FP8
    assert loaded.t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == FP8
    assert loaded.clip_g.text_model.encoder.layers[0].self_attn.q_proj.weight.dtype == FP8
    out = transformer_out(loaded.transformer)
    assert block.attn.to_q.weight.dtype == FP8  # back to float8 after the call
    # float8 values are exact in float32: the float32 module on float8-rounded weights
    assert_same(out, transformer_out(rounded(ref["transformer"], FP8)))
    assert_same(clip_out(loaded.clip_g), clip_out(rounded(ref["clip_g"], FP8)))
    assert_same(clip_out(loaded.clip_l), clip_out(rounded(ref["clip_l"], FP8)))
    assert_same(t5_out(loaded.t5), t5_out(rounded(ref["t5"], FP8)))
    full = transformer_out(ref["transformer"])
    assert 0 < (out - full).norm() / full.norm() < 0.15


# --- broken files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, drop, message", [
    ("SAI", "model.diffusion_model.joint_blocks.0.x_block.attn.proj.weight",
     "incomplete: tensor joint_blocks.0.x_block.attn.proj.weight"),
    ("SAI", "model.diffusion_model.y_embedder.mlp.0.weight", "incomplete: tensor y_embedder.mlp.0.weight"),
    ("SAI", "model.diffusion_model.pos_embed", "incomplete: tensor pos_embed"),
    ("SAI", "first_stage_model.decoder.conv_in.weight", "VAE tensor decoder.conv_in.weight is missing"),
    ("SAI", "text_encoders.clip_g.transformer.text_projection.weight",
     "CLIP-G text encoder tensor text_projection.weight is missing"),
    ("SAI", "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight",
     "CLIP-L text encoder is incomplete"),
    ("SAI", "text_encoders.t5xxl.transformer.encoder.block.1.layer.0.SelfAttention.q.weight",
     "T5 text encoder is incomplete"),
    ("diffusers", "transformer.transformer_blocks.0.attn.to_k.weight", "SD3 transformer is incomplete"),
    ("diffusers", "transformer.proj_out.weight", "SD3 transformer tensor proj_out.weight is missing"),
])
def test_missing_tensors_are_named(refs, layout, drop, message):
    state = tiny_sd3.sd3_state(refs["sd3.5-medium"], layout, PARTS)
    assert_refused(sd3.read_sd3_file, state, message, drop=drop, name="broken.safetensors", dtype=torch.float32)


def test_unexpected_misshapen_and_mismatched_tensors_are_refused(refs):
    state = tiny_sd3.sd3_state(refs["sd3-medium"], "SAI", PARTS)
    read = sd3.read_sd3_file
    assert_refused(read, state, "1 unexpected tensors .e.g. joint_blocks.0.extra.weight",
                   add={"model.diffusion_model.joint_blocks.0.extra.weight": torch.zeros(2)})
    assert_refused(read, state, "belong to no part of an SD3 model .e.g. stray.weight",
                   add={"stray.weight": torch.zeros(2)})
    assert_refused(read, state, "x: the SD3 transformer tensors do not fit its layout",
                   add={"model.diffusion_model.joint_blocks.0.x_block.mlp.fc2.weight": torch.zeros(128, 7)},
                   dtype=torch.float32)
    assert_refused(read, state, "127 rows, not three equal q, k, v parts",
                   add={"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(127, 128)},
                   dtype=torch.float32)
    other = tiny_sd3.sd3_state(refs["sd3-medium"], "SAI")
    flux_t5 = tiny_flux.t5_file_state(tiny_flux.tiny_flux_modules(0)["t5"])
    other.update({"text_encoders.t5xxl.transformer." + k: v for k, v in flux_t5.items()})
    wider = {k: torch.cat([v, v], dim=-1) if k.endswith("context_embedder.weight") else v for k, v in other.items()}
    with pytest.raises(CheckpointFormatError, match=r"its T5 \(32 wide\) does not fit its transformer \(64\)"):
        sd3.read_sd3_file(wider, "x", torch.float32)


def test_part_files_refuse_other_models(tiny_models):
    sd_vae = {k.removeprefix("first_stage_model."): v for k, v in read_state_dict(tiny_models["sd1"]).items()
              if k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointFormatError, match="4 latent channels"):
        sd3.read_sd3_vae_file(sd_vae, "sd-vae.safetensors")
    with pytest.raises(CheckpointFormatError, match="T5 token embedding"):
        sd3.read_t5_file({"encoder.final_layer_norm.weight": torch.ones(4)}, "t5.safetensors")
    with pytest.raises(CheckpointFormatError, match="CLIP-G text encoder tensor"):
        sd3.read_clip_g_file({"text_model.final_layer_norm.weight": torch.ones(4)}, "clip_g.safetensors")
