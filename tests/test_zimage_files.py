"""Z-Image files: detection of each layout, parts sorted, every layout loading to modules whose outputs equal
diffusers'/transformers' own modules (the tiny random ones the files were written from), float8 files staying float8,
broken files giving CheckpointFormatError; and the network call: ZImageCall in a plain Euler loop reproducing
diffusers' ZImagePipeline latents."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

from tests.transformer_checks import assert_refused, assert_same, rounded, vae_out
from webui.engine.sampling.flow import FlowLevels
from webui.engine.zimage_call import ZImageCall, stack_captions
from webui.models import flux, tiny_flux, tiny_zimage, zimage
from webui.models.architecture import CheckpointFormatError
from webui.models.loader import read_state_dict

PARTS = tiny_zimage.PARTS


@pytest.fixture(scope="module")
def ref() -> dict:
    return tiny_zimage.tiny_zimage_modules(0)


# --- the modules' own forward passes on fixed inputs ---------------------------------------------------------------

@torch.no_grad()
def transformer_out(module, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(16, 1, 4, 6, generator=g).to(dtype), torch.randn(16, 1, 4, 6, generator=g).to(dtype)]
    width = module.config.cap_feat_dim
    captions = [torch.randn(7, width, generator=g).to(dtype), torch.randn(40, width, generator=g).to(dtype)]
    out = module(images, torch.tensor([0.3, 0.8]), captions, return_dict=False)[0]
    return torch.stack(out).float()


@torch.no_grad()
def qwen_out(module) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, tiny_zimage.TINY_QWEN_VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids).bool()
    mask[1, 6:] = False
    out = module(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[-2].float(), out.last_hidden_state.float()


# --- recognising files ---------------------------------------------------------------------------------------------

def test_layouts_are_recognised_and_other_models_are_not(ref, tiny_models):
    for layout in tiny_zimage.LAYOUTS:
        for parts in ((), PARTS):
            state = tiny_zimage.zimage_state(ref, layout, parts)
            assert zimage.zimage_layout(state) == layout
            assert flux.flux_layout(state) is None  # Flux's reader names it, never takes it
    bare = tiny_zimage.zimage_state(ref, "ComfyUI")
    assert "layers.0.attention.qkv.weight" in bare and "x_embedder.weight" in bare
    assert "model.diffusion_model.final_layer.adaLN_modulation.1.weight" in \
        tiny_zimage.zimage_state(ref, "ComfyUI", PARTS)
    # Lumina 2 (ComfyUI's NextDiT names: a SiLU before each block's modulation) and other families: not Z-Image
    lumina = {k.replace("adaLN_modulation.0", "adaLN_modulation.1"): v for k, v in bare.items()}
    assert zimage.zimage_layout(lumina) is None
    assert zimage.zimage_layout(read_state_dict(tiny_models["sd1"])) is None
    assert zimage.zimage_layout(tiny_flux.flux_state(tiny_flux.tiny_flux_modules(0), "BFL")) is None
    with pytest.raises(CheckpointFormatError, match="not a Z-Image model"):
        zimage.read_zimage_file(read_state_dict(tiny_models["sd1"]), "sd1.safetensors")


def test_comfy_names_round_trip_through_diffusers_converter(ref):
    ours = ref["transformer"].state_dict()
    comfy = zimage.diffusers_to_comfy(ours)
    assert "layers.1.attention.out.weight" in comfy and "noise_refiner.0.attention.q_norm.weight" in comfy
    back = zimage.comfy_to_diffusers(comfy, "x")
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def test_z_image_turbo_shapes_give_its_config():
    """Z-Image-Turbo's published transformer (dim 3840, 30 layers, 30 heads of 128, Qwen3-4B captions)."""
    config = dict(tiny_zimage.tiny_transformer_config(), dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
                  n_kv_heads=30, cap_feat_dim=2560, axes_dims=[32, 48, 48])
    with torch.device("meta"):
        full = zimage.ZImageTransformer2DModel(**config)
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in zimage.diffusers_to_comfy(full.state_dict()).items()}
    assert zimage.zimage_layout(shapes) == "ComfyUI"
    derived = zimage.zimage_config(zimage.comfy_to_diffusers(shapes, "full"))
    assert {k: derived[k] for k in config} == {**config, "all_patch_size": (2,), "all_f_patch_size": (1,)}
    assert sum(v.numel() for v in shapes.values()) == 6_154_908_736  # Z-Image: a 6B-parameter DiT


# --- every layout loads to the same modules ------------------------------------------------------------------------

@pytest.mark.parametrize("layout, parts", [("ComfyUI", ()), ("ComfyUI", PARTS), ("diffusers", ()),
                                           ("diffusers", PARTS)])
def test_each_layout_loads_to_modules_with_the_originals_outputs(ref, tmp_path, layout, parts):
    path = tiny_zimage.write_zimage(tmp_path / "m.safetensors", layout, parts=parts)
    loaded = zimage.read_zimage_file(read_state_dict(path), path.name, torch.float32)
    assert (loaded.layout, loaded.variant, loaded.storage_dtype) == (layout, "z-image", torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(ref["transformer"]))
    assert (loaded.vae is not None, loaded.text_encoder is not None) == (bool(parts), bool(parts))
    if parts:
        assert_same(vae_out(loaded.vae), vae_out(ref["vae"]))
        assert (loaded.vae.config.scaling_factor, loaded.vae.config.shift_factor) == (0.3611, 0.1159)
        assert_same(qwen_out(loaded.text_encoder), qwen_out(ref["qwen3"]))


def test_comfy_save_extras_and_vae_prefix(ref):
    """ComfyUI's saves may carry NextDiT's unused `norm_final.weight`; packed AEs sit under `vae.` as well."""
    state = tiny_zimage.zimage_state(ref, "ComfyUI", PARTS)
    state = {k.replace("first_stage_model.", "vae."): v for k, v in state.items()}
    state["model.diffusion_model.norm_final.weight"] = torch.ones(tiny_zimage.DIM)
    loaded = zimage.read_zimage_file(state, "aio.safetensors", torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(ref["transformer"]))
    assert_same(vae_out(loaded.vae), vae_out(ref["vae"]))


def test_diffusers_folder(ref, tmp_path):
    folder = tiny_zimage.write_zimage_folder(tmp_path / "tiny-zimage")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "ZImagePipeline"
    assert zimage.zimage_folder_class(folder) == "ZImagePipeline" and zimage.zimage_folder_class(tmp_path) is None
    loaded = zimage.read_zimage_folder(folder, torch.float32)
    assert_same(transformer_out(loaded.transformer), transformer_out(ref["transformer"]))
    assert_same(vae_out(loaded.vae), vae_out(ref["vae"]))
    assert_same(qwen_out(loaded.text_encoder), qwen_out(ref["qwen3"]))
    with pytest.raises(CheckpointFormatError, match="not a Z-Image diffusers folder"):
        zimage.read_zimage_folder(tmp_path)


# --- separate part files -------------------------------------------------------------------------------------------

def test_part_files_are_sorted_and_load_exactly(ref, tmp_path, tiny_models):
    files = tiny_zimage.write_zimage_parts(tmp_path)
    states = {stem: read_state_dict(path) for stem, path in files.items()}
    assert {stem: zimage.zimage_part_kind(s) for stem, s in states.items()} == \
        {"ae": "vae", "qwen_3_4b": "qwen3", "qwen_3_4b_fp8_e4m3fn": "qwen3"}
    assert "model.layers.2.self_attn.q_norm.weight" in states["qwen_3_4b"]  # ComfyUI's qwen_3_4b names
    assert zimage.zimage_part_kind(tiny_flux.t5_file_state(tiny_flux.tiny_t5())) is None
    assert zimage.zimage_part_kind(read_state_dict(tiny_models["sd1"])) is None
    assert zimage.zimage_part_kind(tiny_zimage.zimage_state(ref, "ComfyUI")) is None
    assert_same(vae_out(zimage.read_zimage_vae_file(states["ae"], "ae.safetensors")), vae_out(ref["vae"]))
    qwen = zimage.read_qwen3_file(states["qwen_3_4b"], "qwen_3_4b.safetensors", torch.float32)
    assert (qwen.config.num_attention_heads, qwen.config.num_key_value_heads, qwen.config.head_dim) == (4, 2, 16)
    assert qwen.config.rope_parameters["rope_theta"] == 1e6
    assert_same(qwen_out(qwen), qwen_out(rounded(ref["qwen3"], torch.bfloat16)))
    with_head = {**states["qwen_3_4b"], "lm_head.weight": states["qwen_3_4b"]["model.embed_tokens.weight"]}
    assert_same(qwen_out(zimage.read_qwen3_file(with_head, "q.safetensors", torch.float32)), qwen_out(qwen))


# --- float8 --------------------------------------------------------------------------------------------------------

def test_fp8_files_stay_fp8_and_compute_like_their_rounded_weights(ref, tmp_path):
    path = tiny_zimage.write_zimage(tmp_path / "fp8.safetensors", "ComfyUI", torch.float8_e4m3fn, PARTS)
    loaded = zimage.read_zimage_file(read_state_dict(path), path.name, torch.float32)
    assert loaded.storage_dtype == torch.float8_e4m3fn
    block = loaded.transformer.layers[0]
    assert block.attention.to_q.weight.dtype == block.feed_forward.w2.weight.dtype == torch.float8_e4m3fn
    assert loaded.transformer.t_embedder.mlp[0].weight.dtype == torch.float32  # precision-sensitive: computed dtype
    assert loaded.text_encoder.layers[0].mlp.down_proj.weight.dtype == torch.float8_e4m3fn
    # float8 values are exact in float32: computed in float32 it is the float32 model on float8-rounded weights
    assert_same(transformer_out(loaded.transformer), transformer_out(rounded(ref["transformer"], torch.float8_e4m3fn)))
    assert block.attention.to_q.weight.dtype == torch.float8_e4m3fn  # back to float8 after the call
    assert_same(qwen_out(loaded.text_encoder), qwen_out(rounded(ref["qwen3"], torch.float8_e4m3fn)))
    as_bf16 = zimage.read_zimage_file(read_state_dict(path), path.name, torch.bfloat16)
    assert_same(transformer_out(as_bf16.transformer, torch.bfloat16),
                transformer_out(rounded(ref["transformer"], torch.float8_e4m3fn).to(torch.bfloat16), torch.bfloat16))
    fp8_qwen = zimage.read_qwen3_file(read_state_dict(tiny_zimage.write_zimage_parts(tmp_path)[
        "qwen_3_4b_fp8_e4m3fn"]), "qwen_3_4b_fp8_e4m3fn.safetensors", torch.float32)
    assert fp8_qwen.layers[1].self_attn.q_proj.weight.dtype == torch.float8_e4m3fn
    assert_same(qwen_out(fp8_qwen), qwen_out(rounded(ref["qwen3"], torch.float8_e4m3fn)))


# --- broken files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, drop, message", [
    ("ComfyUI", "model.diffusion_model.layers.1.feed_forward.w2.weight", "Z-Image transformer is incomplete"),
    ("ComfyUI", "model.diffusion_model.cap_embedder.0.weight", "cap_embedder.0.weight is missing"),
    ("ComfyUI", "model.diffusion_model.x_pad_token", "Z-Image transformer is incomplete"),
    ("ComfyUI", "text_encoders.qwen3_4b.transformer.model.layers.1.mlp.up_proj.weight",
     "Qwen3 text encoder is incomplete"),
    ("ComfyUI", "text_encoders.qwen3_4b.transformer.model.embed_tokens.weight", "embed_tokens.weight is missing"),
    ("ComfyUI", "first_stage_model.decoder.conv_in.weight", "VAE tensor decoder.conv_in.weight is missing"),
    ("diffusers", "transformer.layers.0.attention.to_k.weight", "Z-Image transformer is incomplete"),
])
def test_missing_tensors_are_named(ref, layout, drop, message):
    state = tiny_zimage.zimage_state(ref, layout, PARTS)
    assert_refused(zimage.read_zimage_file, state, message, drop=drop, name="broken.safetensors", dtype=torch.float32)


def test_unexpected_misshapen_and_mismatched_tensors_are_refused(ref, tmp_path):
    state = tiny_zimage.zimage_state(ref, "ComfyUI", PARTS)
    read = zimage.read_zimage_file
    assert_refused(read, state, "belong to no part of a Z-Image model .e.g. stray.weight",
                   add={"stray.weight": torch.zeros(2)})
    assert_refused(read, state, "Z-Image transformer is incomplete.*1 unexpected",
                   add={"model.diffusion_model.layers.0.extra.weight": torch.zeros(2)})
    assert_refused(read, state, "x: the Z-Image transformer tensors do not fit",
                   add={"model.diffusion_model.layers.0.feed_forward.w1.weight": torch.zeros(7, tiny_zimage.DIM)},
                   dtype=torch.float32)
    assert_refused(read, state, "not three equal q, k, v parts",
                   add={"model.diffusion_model.layers.1.attention.qkv.weight": torch.zeros(190, tiny_zimage.DIM)},
                   dtype=torch.float32)
    wide = tiny_zimage.qwen3_file_state(tiny_zimage.tiny_qwen3())
    wide = {k: (torch.zeros(*v.shape[:-1], 64) if k.endswith("embed_tokens.weight") else v) for k, v in wide.items()}
    other = {k: v for k, v in state.items() if not k.startswith("text_encoders.")}
    other.update({"text_encoders.qwen3_4b.transformer." + k: v for k, v in wide.items()})
    with pytest.raises(CheckpointFormatError, match="Qwen3 text encoder"):
        zimage.read_zimage_file(other, "x", torch.float32)
    with pytest.raises(CheckpointFormatError, match="the Qwen3 text encoder tensor embed_tokens.weight is missing"):
        zimage.read_qwen3_file(tiny_flux.t5_file_state(tiny_flux.tiny_t5()), "t5.safetensors")
    path = tiny_zimage.write_zimage(tmp_path / "cut.safetensors", "ComfyUI")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(path)


def test_text_encoder_width_must_fit_the_transformer(ref):
    qwen = tiny_zimage.tiny_qwen3()
    qwen.config.hidden_size = 64
    with pytest.raises(CheckpointFormatError, match="64 wide; this Z-Image transformer takes 48-wide captions"):
        zimage.check_text_encoder(ref["transformer"], qwen, "x")


# --- the network call ----------------------------------------------------------------------------------------------

def _captions():
    g = torch.Generator().manual_seed(5)
    return [torch.randn(1, n, tiny_zimage.QWEN_WIDTH, generator=g) for n in (11, 37, 5, 23)]


def _reference_latents(ref, guidance: float, steps: int, noise: torch.Tensor, positive, negative=None):
    pipe = tiny_zimage.zimage_pipeline(ref)
    return pipe(prompt_embeds=[c[0] for c in positive], negative_prompt_embeds=negative and [c[0] for c in negative],
                guidance_scale=guidance, num_inference_steps=steps, height=64, width=96, latents=noise.clone(),
                output_type="latent").images


def _sigmas(steps: int) -> torch.Tensor:
    scheduler = FlowMatchEulerDiscreteScheduler(**tiny_zimage.scheduler_config())
    scheduler.set_timesteps(sigmas=get_default_z_image_sigmas(steps))
    return scheduler.sigmas


def test_zimage_call_in_euler_loop_gives_zimage_pipeline_latents(ref):
    """Turbo's way (guidance 0: no CFG), two prompts of different lengths in one batch."""
    captions = _captions()[:2]
    noise = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(7))
    expected = _reference_latents(ref, 0.0, 4, noise, captions)
    call = ZImageCall(ref["transformer"], None)
    embeds, lengths = stack_captions(captions)
    assert embeds.shape == (2, 37, tiny_zimage.QWEN_WIDTH) and lengths.tolist() == [11, 37]
    sigmas = _sigmas(4)
    x = noise.clone()
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (sigma_next - sigma) * call(x, sigma.reshape(1), embeds, lengths)
    assert torch.equal(x, expected)
    # the schedule is our "Simple" one under a constant shift of 3
    assert torch.allclose(FlowLevels(3.0, own="Simple").uniform(4), sigmas, atol=1e-6)


def test_zimage_call_with_cfg_matches_pipeline_guidance(ref):
    """Real CFG: A1111's scale c is diffusers' guidance_scale c - 1 (pos + g (pos - neg)); the denoiser's rows are
    [uncond..., cond...] in one call, x0 = x - sigma v as the flow denoiser computes it."""
    captions = _captions()
    positive, negative = captions[:2], captions[2:]
    noise = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(8))
    expected = _reference_latents(ref, 2.5, 3, noise, positive, negative)
    call = ZImageCall(ref["transformer"], None)
    embeds, lengths = stack_captions(negative + positive)
    levels = FlowLevels(3.0, own="Simple")
    sigmas = levels.uniform(3)
    x = noise.clone()
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            v = call(torch.cat([x, x]), sigma.reshape(1), embeds, lengths)
            x0 = levels.denoised(torch.cat([x, x]), sigma.expand(4), v)
            uncond, cond = x0.chunk(2)
            denoised = uncond + 3.5 * (cond - uncond)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
    assert torch.allclose(x, expected, atol=1e-4, rtol=1e-4), (x - expected).abs().max()
    assert (x - noise).abs().mean() > 0.1  # it moved


def test_zimage_call_rows_without_lengths_use_the_whole_caption(ref):
    captions = _captions()[:1]
    call = ZImageCall(ref["transformer"])
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(9))
    sigma = torch.tensor([0.6])
    with torch.no_grad():
        padded, lengths = stack_captions(captions)
        assert torch.equal(call(x, sigma, padded, None), call(x, sigma, padded, lengths))
        direct = ref["transformer"]([x[0, :, None]], torch.tensor([0.4]), [captions[0][0]], return_dict=False)[0][0]
    assert torch.allclose(-direct[:, 0], call(x, sigma, padded)[0], atol=1e-6)
    with pytest.raises(ValueError, match="2 caption rows for 1 latent rows"):
        call(x, sigma, torch.cat([padded, padded]))
