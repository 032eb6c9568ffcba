"""Stable Diffusion 3 / 3.5 files (SD3 Medium, SD3.5 Medium, SD3.5 Large and Large Turbo, fine-tunes) into
diffusers/transformers modules, offline.

SD3 files come in two layouts, told apart by their tensor names (never the file name):

- "SAI": Stability's originals (`sd3_medium.safetensors`, `sd3.5_large.safetensors`) and ComfyUI's saves: the MMDiT
  under `model.diffusion_model.` (or bare): `joint_blocks.N.{x,context}_block.attn.qkv`, `x_embedder.proj`,
  `context_embedder`, `t_embedder`, `y_embedder`, `pos_embed`, `final_layer`; SD3.5 Medium's MMDiT-X adds
  `x_block.attn2` in its first blocks, SD3.5 adds `attn.ln_q` / `ln_k` (RMS q/k norms). Packed files add CLIP-L under
  `text_encoders.clip_l.transformer.`, OpenCLIP bigG under `text_encoders.clip_g.transformer.` and T5-XXL under
  `text_encoders.t5xxl.transformer.` (all three in transformers' names: `text_model.*`, bigG's projection as
  `text_projection.weight`), and the 16-channel VAE under `first_stage_model.` (LDM names).
- "diffusers": diffusers' names (`transformer_blocks.N.attn.to_q`, `pos_embed.proj`, `time_text_embed`), bare or
  under `transformer.` / `model.diffusion_model.`; packed parts then sit under `vae.`, `text_encoder.` (CLIP-L),
  `text_encoder_2.` (CLIP-G) and `text_encoder_3.` (T5).

Sizes come from the tensors (SD3's attention heads are 64 wide in every published model: files without q/k norms do
not show the head size). Float8 tensors stay float8 in memory, computed layer by layer in the compute dtype, with the
helpers of `flux` (the same diffusers layerwise-casting hooks).

CLIP-L's pooled output: Stability's reference code (sd3_infer.py: `return_projected_pooled=False`) and diffusers'
single-file loader (an identity `text_projection`) both use CLIP-L's pooled output unprojected, so CLIP-L is built as
a CLIPTextModelWithProjection whose projection is the identity, whatever projection the file carries. OpenCLIP bigG's
pooled output is projected by its own `text_projection`. The pipeline concatenates CLIP-L and CLIP-G's hidden states
(768 + 1280) and pads them to T5's 4096; the pooled vector is CLIP-L's 768 + CLIP-G's 1280 = 2048.

Every use of `diffusers.loaders.single_file_utils` for SD3 is in this file (the SAI->diffusers MMDiT converter);
tests/test_sd3_files.py checks it against our inverse (`diffusers_to_sai`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from transformers import CLIPTextModelWithProjection, T5EncoderModel

from .architecture import CheckpointFormatError
from .flux import T5_VOCAB  # noqa: F401 (sd3.T5_VOCAB: T5 v1.1's vocabulary, for SD3's callers too)
from .flux import (FLUX_LATENT_CHANNELS, _assign, _build, _build_t5, _build_vae, _clip_weights, _count,
                   _dequantize_scaled, _plan_dtypes, _store_fp8, _vae_layout, is_t5_state)
from .loader import _clip_config, _empty_module
from .transformer_files import (PartsModules, Renaming, convert_split_fused, find_prefix, for_inference, load_part,
                                packed_transformer, pipeline_class, split_packed, strip_prefix, swap_halves,
                                vae_dtype)

SD3_VAE_SCALING = 1.5305  # diffusers' SD3 / SD3.5 vae/config.json scaling_factor
SD3_VAE_SHIFT = 0.0609  # ... and shift_factor
SD3_LATENT_CHANNELS = FLUX_LATENT_CHANNELS  # 16; the VAE has the FLUX.1 AE's shapes, other factors
SD3_HEAD_DIM = 64
CLIP_G_WIDTH, CLIP_G_LAYERS = 1280, 32  # OpenCLIP ViT-bigG/14
VARIANTS = ("sd3-medium", "sd3.5-medium", "sd3.5-large")

SAI_PREFIX = "model.diffusion_model."
CLIP_L_PREFIX = "text_encoders.clip_l."
CLIP_G_PREFIX = "text_encoders.clip_g."
T5_PREFIX = "text_encoders.t5xxl."
VAE_PREFIXES = ("first_stage_model.", "vae.")
DIFFUSERS_PREFIXES = ("", "transformer.", SAI_PREFIX)
DIFFUSERS_PART_PREFIXES = {"vae": "vae.", "clip_l": "text_encoder.", "clip_g": "text_encoder_2.",
                           "t5": "text_encoder_3."}

_SAI_MARK = "joint_blocks.0.x_block.attn.qkv.weight"
_SAI_EMBED = "x_embedder.proj.weight"
_DIFFUSERS_MARKS = ("transformer_blocks.0.attn.add_q_proj.weight", "pos_embed.proj.weight",
                    "time_text_embed.text_embedder.linear_1.weight", "context_embedder.weight")
# in the diffusers names of other models with SD3's blocks: FLUX.1 (its own patch embedding) and SD3 ControlNets
_DIFFUSERS_NOT = ("x_embedder.weight", "single_transformer_blocks.0.attn.to_q.weight", "controlnet_blocks.0.weight",
                  "pos_embed_input.proj.weight")


# --- recognising SD3 files ---------------------------------------------------------------------------------------

def _sai_prefix(state: Mapping) -> str | None:
    return find_prefix(state, (SAI_PREFIX, ""), (_SAI_MARK, _SAI_EMBED))


def _diffusers_prefix(state: Mapping) -> str | None:
    return find_prefix(state, DIFFUSERS_PREFIXES, _DIFFUSERS_MARKS, absent=_DIFFUSERS_NOT)


def sd3_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """"SAI" (Stability's and ComfyUI's names) or "diffusers" when the tensors hold an SD3 / SD3.5 MMDiT (alone or
    packed with its VAE and text encoders); None for anything else (FLUX.1, SD1/SD2/SDXL, other families, parts)."""
    if _sai_prefix(state) is not None:
        return "SAI"
    if _diffusers_prefix(state) is not None:
        return "diffusers"
    return None


# --- the MMDiT -----------------------------------------------------------------------------------------------------

def sd3_config(weights: Mapping[str, torch.Tensor]) -> dict:
    """SD3Transformer2DModel config from its tensors in diffusers' names."""
    try:
        hidden, in_channels, patch, _ = (int(x) for x in weights["pos_embed.proj.weight"].shape)
        positions = int(weights["pos_embed.pos_embed"].shape[1])
        caption, joint = (int(x) for x in weights["context_embedder.weight"].shape)
        pooled = int(weights["time_text_embed.text_embedder.linear_1.weight"].shape[1])
        out_channels = int(weights["proj_out.weight"].shape[0]) // (patch * patch)
    except KeyError as exc:
        raise CheckpointFormatError(f"the SD3 transformer tensor {exc.args[0]} is missing") from None
    except ValueError:
        raise CheckpointFormatError("the SD3 patch embedding (pos_embed.proj.weight) is not a 2-D convolution") \
            from None
    norm_q = weights.get("transformer_blocks.0.attn.norm_q.weight")
    head_dim = int(norm_q.shape[0]) if norm_q is not None else SD3_HEAD_DIM
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointFormatError(f"the SD3 position embedding has {positions} positions, not a square grid")
    if hidden % head_dim:
        raise CheckpointFormatError(f"SD3 transformer width {hidden} is not a multiple of its head size {head_dim}")
    dual = sorted({int(m.group(1)) for k in weights if (m := re.match(r"transformer_blocks\.(\d+)\.attn2\.", k))})
    return {"sample_size": 128, "patch_size": patch, "in_channels": in_channels,
            "num_layers": _count(weights, r"transformer_blocks\.(\d+)\."), "attention_head_dim": head_dim,
            "num_attention_heads": hidden // head_dim, "joint_attention_dim": joint,
            "caption_projection_dim": caption, "pooled_projection_dim": pooled, "out_channels": out_channels,
            "pos_embed_max_size": side, "dual_attention_layers": tuple(dual),
            "qk_norm": "rms_norm" if norm_q is not None else None}


def variant_of(config: Mapping) -> str:
    """"sd3.5-medium" (MMDiT-X: dual attention in its first blocks), "sd3.5-large" (q/k norms: Large and Large
    Turbo, which differ in weights only) or "sd3-medium"."""
    if config["dual_attention_layers"]:
        return "sd3.5-medium"
    return "sd3.5-large" if config["qk_norm"] else "sd3-medium"


def scheduler_config(variant: str) -> dict:
    """FlowMatchEulerDiscreteScheduler config of the published SD3 / SD3.5 repositories (shift 3 for all)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SD3 variant {variant!r}")
    return {"num_train_timesteps": 1000, "shift": 3.0}


_FUSED = re.compile(r"joint_blocks\.(\d+)\.(x_block\.attn|context_block\.attn|x_block\.attn2)\.qkv\.(weight|bias)")
_FUSED_NAMES = {"x_block.attn": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "context_block.attn": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                "x_block.attn2": ("attn2.to_q", "attn2.to_k", "attn2.to_v")}


def _split_fused(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """diffusers' names and row views for one fused q/k/v projection (no copy)."""
    block, stream, kind = _FUSED.fullmatch(key).groups()
    if value.shape[0] % 3:
        raise CheckpointFormatError(f"{key} has {value.shape[0]} rows, not three equal q, k, v parts")
    return {f"transformer_blocks.{block}.{n}.{kind}": t for n, t in zip(_FUSED_NAMES[stream], value.chunk(3, dim=0))}


def sai_to_diffusers(sai: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """SAI MMDiT names (no prefix) to diffusers', by diffusers' own converter. The fused q/k/v projections reach it
    as shape-only stand-ins and are split here into row views (the converter copies them: 2.4 of SD3.5 Large's 8
    billion parameters); tests/test_sd3_files.py checks the split against the converter's own."""
    if not any(k.startswith("joint_blocks.") for k in sai):
        raise CheckpointFormatError(f"{name}: the SD3 transformer has no joint blocks")
    return convert_split_fused(sai, name, "SD3 transformer", "SD3's layout",
                               convert_sd3_transformer_checkpoint_to_diffusers, _FUSED, _split_fused)


def diffusers_to_sai(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `sai_to_diffusers` (a test and benchmark tool: writes files in Stability's layout). Every
    tensor must find its place, so a layout change in diffusers shows up as a KeyError here."""
    renaming = Renaming(weights)
    w, out, move, cat = renaming.w, renaming.out, renaming.move, renaming.cat

    out["pos_embed"] = w.pop("pos_embed.pos_embed")
    move("pos_embed.proj", "x_embedder.proj")
    move("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0")
    move("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2")
    move("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0")
    move("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2")
    move("context_embedder", "context_embedder")
    layers = _count(w, r"transformer_blocks\.(\d+)\.")
    for i in range(layers):
        s, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == layers - 1
        for stream, names in _FUSED_NAMES.items():
            if f"{s}{names[0]}.weight" in w:
                cat(tuple(s + n for n in names), f"joint_blocks.{i}.{stream}.qkv")
        for src, dst in (("attn.norm_q", x + "attn.ln_q"), ("attn.norm_k", x + "attn.ln_k"),
                         ("attn.norm_added_q", c + "attn.ln_q"), ("attn.norm_added_k", c + "attn.ln_k"),
                         ("attn2.norm_q", x + "attn2.ln_q"), ("attn2.norm_k", x + "attn2.ln_k")):
            move(s + src, dst)
        move(s + "attn.to_out.0", x + "attn.proj")
        move(s + "attn2.to_out.0", x + "attn2.proj")
        move(s + "attn.to_add_out", c + "attn.proj")
        move(s + "norm1.linear", x + "adaLN_modulation.1")
        if last:  # the last context block keeps shift and scale only, in SAI's order (diffusers': scale, shift)
            for kind in ("weight", "bias"):
                out[f"{c}adaLN_modulation.1.{kind}"] = swap_halves(w.pop(f"{s}norm1_context.linear.{kind}"))
        else:
            move(s + "norm1_context.linear", c + "adaLN_modulation.1")
        move(s + "ff.net.0.proj", x + "mlp.fc1")
        move(s + "ff.net.2", x + "mlp.fc2")
        move(s + "ff_context.net.0.proj", c + "mlp.fc1")
        move(s + "ff_context.net.2", c + "mlp.fc2")
    move("proj_out", "final_layer.linear")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_halves(w.pop(f"norm_out.linear.{kind}"))
    if w:
        raise KeyError(f"no SAI name for {sorted(w)[:3]}")
    return out


def build_transformer(weights: dict, name: str, dtype: torch.dtype) -> SD3Transformer2DModel:
    """SD3Transformer2DModel from tensors in diffusers' names (float8 ones stay float8)."""
    try:
        config = sd3_config(weights)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{name}: {exc}") from None
    return _build(SD3Transformer2DModel, config, weights, "SD3 transformer", name, dtype)


# --- the VAE -------------------------------------------------------------------------------------------------------

def _sd3_vae(vae: dict, name: str, dtype: torch.dtype) -> AutoencoderKL:
    """The 16-channel VAE (the FLUX.1 AE's shapes) with SD3's scaling and shift."""
    conv = vae.get("decoder.conv_in.weight")
    if conv is not None and conv.ndim == 4 and conv.shape[1] != SD3_LATENT_CHANNELS:
        raise CheckpointFormatError(f"{name}: a VAE with {conv.shape[1]} latent channels; SD3 needs its own "
                                    f"{SD3_LATENT_CHANNELS}-channel VAE")
    module = _build_vae(vae, name, dtype)
    module.register_to_config(scaling_factor=SD3_VAE_SCALING, shift_factor=SD3_VAE_SHIFT)
    return module


def read_sd3_vae_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) \
        -> AutoencoderKL:
    """SD3's VAE from its own file (LDM or diffusers names, bare or under `first_stage_model.` / `vae.`)."""
    return _sd3_vae(strip_prefix(state, VAE_PREFIXES), name, dtype)


# --- text encoders -------------------------------------------------------------------------------------------------

def _clip_tensors(state: Mapping) -> tuple[dict, torch.Tensor | None]:
    """(transformers' `text_model.*` tensors, the projection in nn.Linear's [out, in] orientation or None). Files hold
    `text_projection.weight` (transformers'/ComfyUI's) or OpenCLIP's `text_projection` matrix ([in, out])."""
    projection = None
    for key, value in state.items():
        bare = key.removeprefix("transformer.")
        if bare == "text_projection.weight":
            projection = value
        elif bare == "text_projection":
            projection = value.t().contiguous()  # small; a transposed view would compute differently
    return _clip_weights({k: v for k, v in state.items() if not k.endswith("text_projection")}), projection


def _build_clip_with_projection(state: Mapping, what: str, name: str, dtype: torch.dtype, act: str,
                                identity: bool) -> CLIPTextModelWithProjection:
    weights, projection = _clip_tensors(state)
    try:
        if identity or projection is None:
            if not identity:
                raise KeyError("text_projection.weight")
            width = int(weights["text_model.embeddings.token_embedding.weight"].shape[1])
            projection = torch.eye(width, dtype=dtype)
        config = _clip_config(weights, act, projection)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: the {what} tensor {exc.args[0]} is missing") from None
    weights["text_projection.weight"] = projection
    module = _empty_module(CLIPTextModelWithProjection, config)
    if not any(k.startswith("text_model.") for k in module.state_dict()):
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    units = _plan_dtypes(module, weights, dtype)
    module = _assign(module, weights, what, name)
    _store_fp8(units, dtype)
    return module


def _build_clip_l(state: Mapping, name: str, dtype: torch.dtype) -> CLIPTextModelWithProjection:
    return _build_clip_with_projection(state, "CLIP-L text encoder", name, dtype, "quick_gelu", identity=True)


def _build_clip_g(state: Mapping, name: str, dtype: torch.dtype) -> CLIPTextModelWithProjection:
    return _build_clip_with_projection(state, "CLIP-G text encoder", name, dtype, "gelu", identity=False)


def read_clip_l_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) \
        -> CLIPTextModelWithProjection:
    """CLIP-L for SD3 from `clip_l.safetensors` (transformers' names, with or without `text_model.`), its pooled
    output unprojected (an identity projection: see the module docstring)."""
    return _build_clip_l(strip_prefix(state, (CLIP_L_PREFIX,)), name, dtype)


def read_clip_g_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) \
        -> CLIPTextModelWithProjection:
    """OpenCLIP bigG from `clip_g.safetensors` (transformers' names as ComfyUI and Stability save it, with its
    `text_projection.weight`)."""
    return _build_clip_g(strip_prefix(state, (CLIP_G_PREFIX,)), name, dtype)


def read_t5_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) \
        -> T5EncoderModel:
    """T5-XXL (`t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`, or under `text_encoders.t5xxl.`)."""
    return _build_t5(strip_prefix(_dequantize_scaled(state, dtype), (T5_PREFIX,)), name, dtype)


def sd3_part_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """Sort a file from models/VAE or models/text_encoder for SD3: "vae" (a 16-channel VAE: the caller sets SD3's
    factors), "clip_g" (a CLIP text encoder 1280 wide or 32 layers deep, as OpenCLIP bigG), "clip_l" (a CLIP text
    encoder narrower than 1024, as OpenAI CLIP-L's 768), "t5" (a T5 encoder with T5 v1.1's vocabulary) or None."""
    vae = strip_prefix(state, VAE_PREFIXES)
    if _vae_layout(vae) is not None:
        conv = vae.get("decoder.conv_in.weight")
        return "vae" if conv is not None and conv.shape[1] == SD3_LATENT_CHANNELS else None
    clip, _ = _clip_tensors(strip_prefix(state, (CLIP_L_PREFIX, CLIP_G_PREFIX)))
    token = clip.get("text_model.embeddings.token_embedding.weight")
    if token is not None and "text_model.encoder.layers.0.self_attn.q_proj.weight" in clip:
        width, layers = int(token.shape[1]), _count(clip, r"text_model\.encoder\.layers\.(\d+)\.")
        if width == CLIP_G_WIDTH or layers == CLIP_G_LAYERS:
            return "clip_g"
        return "clip_l" if width < 1024 else None
    return "t5" if is_t5_state(state, T5_PREFIX) else None


# --- whole files ---------------------------------------------------------------------------------------------------

@dataclass
class SD3Parts(PartsModules):
    """What one SD3 file holds, as modules. `storage_dtype`: the transformer's weight dtype in memory (float8 for
    float8 files, else the compute dtype); `variant`: "sd3-medium" | "sd3.5-medium" | "sd3.5-large"."""

    transformer: SD3Transformer2DModel
    variant: str
    layout: str
    storage_dtype: torch.dtype
    compute_dtype: torch.dtype
    vae: AutoencoderKL | None = None
    clip_l: CLIPTextModelWithProjection | None = None
    clip_g: CLIPTextModelWithProjection | None = None
    t5: T5EncoderModel | None = None
    warnings: list[str] = field(default_factory=list)


def _split_packed(state: Mapping, layout: str, name: str) -> tuple[dict, dict[str, dict]]:
    """(transformer tensors with the layout's prefix removed, {part: its tensors with the part's prefix removed})."""
    prefix = _sai_prefix(state) if layout == "SAI" else _diffusers_prefix(state)
    part_prefixes = {"vae": VAE_PREFIXES, "clip_l": (CLIP_L_PREFIX, DIFFUSERS_PART_PREFIXES["clip_l"]),
                     "clip_g": (CLIP_G_PREFIX, DIFFUSERS_PART_PREFIXES["clip_g"]),
                     "t5": (T5_PREFIX, DIFFUSERS_PART_PREFIXES["t5"])}
    return split_packed(state, prefix or "", part_prefixes, name, "an SD3 model")


def read_sd3_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) -> SD3Parts:
    """An SD3 / SD3.5 single file (either layout, alone or packed with its VAE / CLIP-L / CLIP-G / T5) as modules
    computed in `dtype`; float8 tensors stay float8. Raises CheckpointFormatError (naming the file and the problem)
    for other files."""
    layout = sd3_layout(state)
    if layout is None:
        raise CheckpointFormatError(f"{name}: not an SD3 / SD3.5 model (no MMDiT joint-block tensors)")
    state = _dequantize_scaled(state, dtype)
    transformer, storage, parts = packed_transformer(state, layout, name, dtype, _split_packed,
                                                     sai_to_diffusers if layout == "SAI" else None, build_transformer)
    result = SD3Parts(transformer, variant_of(transformer.config), layout, storage, dtype)
    if "vae" in parts:
        result.vae = _sd3_vae(parts["vae"], name, vae_dtype(dtype))
    if "clip_l" in parts:
        result.clip_l = _build_clip_l(parts["clip_l"], name, dtype)
    if "clip_g" in parts:
        result.clip_g = _build_clip_g(parts["clip_g"], name, dtype)
    if "t5" in parts:
        result.t5 = _build_t5(parts["t5"], name, dtype)
    _check_widths(result, name)
    return result


def _check_widths(parts: SD3Parts, name: str) -> None:
    """Text encoders packed with a transformer must fit it: CLIP-L + CLIP-G pooled widths = the pooled projection,
    their hidden widths together no wider than the joint attention width (T5's)."""
    config = parts.transformer.config
    if parts.clip_l is not None and parts.clip_g is not None:
        pooled = parts.clip_l.config.projection_dim + parts.clip_g.config.projection_dim
        hidden = parts.clip_l.config.hidden_size + parts.clip_g.config.hidden_size
        if pooled != config.pooled_projection_dim or hidden > config.joint_attention_dim:
            raise CheckpointFormatError(f"{name}: its CLIP-L and CLIP-G ({pooled} pooled) do not fit its transformer "
                                        f"({config.pooled_projection_dim} pooled)")
    if parts.t5 is not None and parts.t5.config.d_model != config.joint_attention_dim:
        raise CheckpointFormatError(f"{name}: its T5 ({parts.t5.config.d_model} wide) does not fit its transformer "
                                    f"({config.joint_attention_dim})")


# --- diffusers folders ---------------------------------------------------------------------------------------------

def sd3_folder_class(folder: Path) -> str | None:
    """The pipeline class of a diffusers folder when it is an SD3 one (StableDiffusion3Pipeline, ...Img2Img, ...)."""
    return pipeline_class(folder, r"StableDiffusion3[A-Za-z]*Pipeline")


def read_sd3_folder(folder: Path, dtype: torch.dtype = torch.bfloat16) -> SD3Parts:
    """An SD3 diffusers folder (transformer/, vae/, text_encoder/ = CLIP-L, text_encoder_2/ = CLIP-G,
    text_encoder_3/ = T5; tokenizer_3/ is read by the T5 tokenizer, not here), offline."""
    folder = Path(folder)
    name = folder.name
    if sd3_folder_class(folder) is None:
        raise CheckpointFormatError(f"{name}: not an SD3 diffusers folder (model_index.json names no SD3 pipeline)")
    try:
        transformer = load_part(folder, SD3Transformer2DModel, "transformer", torch_dtype=dtype)
        vae = load_part(folder, AutoencoderKL, "vae", torch_dtype=vae_dtype(dtype))
        clip_l = load_part(folder, CLIPTextModelWithProjection, "text_encoder", dtype=dtype)
        clip_g = load_part(folder, CLIPTextModelWithProjection, "text_encoder_2", dtype=dtype)
        t5 = load_part(folder, T5EncoderModel, "text_encoder_3", dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{name}: could not load the SD3 diffusers folder ({exc})") from None
    if transformer is None:
        raise CheckpointFormatError(f"{name}: the SD3 diffusers folder has no transformer/ folder")
    for_inference(transformer, vae, clip_l, clip_g, t5)
    result = SD3Parts(transformer, variant_of(transformer.config), "diffusers folder", dtype, dtype, vae, clip_l,
                      clip_g, t5)
    _check_widths(result, name)
    return result
