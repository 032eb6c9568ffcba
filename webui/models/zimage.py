"""Z-Image files (Tongyi-MAI's Z-Image-Turbo, Z-Image and their fine-tunes) into diffusers/transformers modules,
offline.

Z-Image is a single-stream DiT (`ZImageTransformer2DModel`: 2 noise-refiner and 2 context-refiner blocks, then 30
joint blocks over [image tokens, caption tokens]) fed by the second-to-last hidden states of Qwen3-4B, decoding with
FLUX.1's 16-channel AE. Its files come in two layouts, told apart by their tensor names (never the file name):

- "ComfyUI": the original names, as Comfy-Org's `z_image_turbo_bf16.safetensors` (bare) and ComfyUI's all-in-one
  checkpoints (under `model.diffusion_model.`): fused `layers.N.attention.qkv`, `attention.out`, `attention.q_norm` /
  `k_norm`, `x_embedder`, `final_layer.{linear,adaLN_modulation.1}`, and names diffusers shares (`noise_refiner.N`,
  `context_refiner.N`, `t_embedder.mlp`, `cap_embedder.{0,1}`, `x_pad_token`, `cap_pad_token`, the blocks'
  `adaLN_modulation.0`, `feed_forward.w1/w2/w3`, `attention_norm1/2`, `ffn_norm1/2`). Some ComfyUI saves add an
  unused `norm_final.weight`. Packed files hold Qwen3-4B under `text_encoders.qwen3_4b.transformer.` (transformers'
  names, `model.layers.N...`) and the AE under `vae.` or `first_stage_model.` (LDM names, as BFL's ae.safetensors).
- "diffusers": diffusers' names (`all_x_embedder.2-1`, `all_final_layer.2-1`, `attention.to_q/to_k/to_v/to_out.0`,
  `attention.norm_q/norm_k`), bare or under `transformer.` / `model.diffusion_model.`; packed parts then sit under
  `vae.` (diffusers names) and `text_encoder.` (Qwen3Model names, with or without `model.`).

The text encoder also ships alone, as ComfyUI's `qwen_3_4b.safetensors` (`model.embed_tokens`, `model.layers.N.*`,
`model.norm`; sometimes an `lm_head` the encoder has no use for).

Every size is read from the tensors; modules are built empty and the file's tensors assigned. Float8 tensors stay
float8 in memory, computed layer by layer in the compute dtype (flux.py's helpers), except the timestep and caption
embedders, which diffusers marks precision-sensitive (`_skip_layerwise_casting_patterns`) and whose forward reads its
weight's dtype: they are kept in the compute dtype.

Every use of `diffusers.loaders.single_file_utils` for Z-Image is in this file (its original->diffusers converter);
tests/test_zimage_files.py checks it against our inverse (`diffusers_to_comfy`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from diffusers import AutoencoderKL, ZImageTransformer2DModel
from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers
from transformers import Qwen3Config, Qwen3Model

from .architecture import CheckpointFormatError
from .flux import (FLUX_LATENT_CHANNELS, _assign, _build, _build_vae, _count, _dequantize_scaled, _plan_dtypes,
                   _store_fp8, _vae_layout)
from .loader import _empty_module
from .transformer_files import (FP8_DTYPES, PartsModules, find_prefix, for_inference, load_part, packed_transformer,
                                pipeline_class, split_packed, strip_prefix, vae_dtype)

ZIMAGE_LATENT_CHANNELS = FLUX_LATENT_CHANNELS  # FLUX.1's AE, with FLUX.1's scaling 0.3611 and shift 0.1159
ZIMAGE_SHIFT = 3.0  # Z-Image-Turbo's scheduler_config.json: shift 3, no dynamic shifting
CAPTION_WIDTH = 2560  # Qwen3-4B's hidden size = the transformer's cap_feat_dim
QWEN3_HEAD_DIM = 128  # Qwen3's attention heads (files without q/k norms do not show it)
QWEN3_ROPE_THETA = 1_000_000.0  # Qwen3-4B's config.json
QWEN3_RMS_EPS = 1e-6
QWEN3_MAX_POSITIONS = 40960

COMFY_PREFIX = "model.diffusion_model."
QWEN3_PREFIX = "text_encoders.qwen3_4b."
VAE_PREFIXES = ("vae.", "first_stage_model.")
DIFFUSERS_PREFIXES = ("", "transformer.", COMFY_PREFIX)
DIFFUSERS_PART_PREFIXES = {"vae": "vae.", "qwen3": "text_encoder."}

_BLOCK_MARK = "layers.0.adaLN_modulation.0.weight"  # Z-Image's blocks; Lumina 2's are adaLN_modulation.1 (SiLU first)
_COMFY_MARKS = (_BLOCK_MARK, "layers.0.attention.qkv.weight", "x_embedder.weight", "cap_embedder.1.weight")
_DIFFUSERS_MARKS = (_BLOCK_MARK, "layers.0.attention.to_q.weight", "all_x_embedder.2-1.weight",
                    "cap_embedder.1.weight")
# diffusers' own names for the embedders it keeps out of layerwise casting (ZImageTransformer2DModel)
_KEEP_COMPUTE = tuple(ZImageTransformer2DModel._skip_layerwise_casting_patterns)
_PATCH_KEY = re.compile(r"all_x_embedder\.(\d+)-(\d+)\.weight")


# --- recognising Z-Image files -------------------------------------------------------------------------------------

def _comfy_prefix(state: Mapping) -> str | None:
    return find_prefix(state, (COMFY_PREFIX, ""), _COMFY_MARKS)


def _diffusers_prefix(state: Mapping) -> str | None:
    return find_prefix(state, DIFFUSERS_PREFIXES, _DIFFUSERS_MARKS)


def zimage_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """"ComfyUI" (the original names, bare or under `model.diffusion_model.`) or "diffusers" when the tensors hold a
    Z-Image transformer (alone or packed with its AE and Qwen3 text encoder); None for anything else."""
    if _comfy_prefix(state) is not None:
        return "ComfyUI"
    if _diffusers_prefix(state) is not None:
        return "diffusers"
    return None


# --- the transformer -----------------------------------------------------------------------------------------------

def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Z-Image's rotary axes (frame/caption position, row, column) for a head size: (32, 48, 48) for its 128."""
    if head_dim % 8:
        raise CheckpointFormatError(f"attention head size {head_dim} has no Z-Image rotary split")
    return head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8


def zimage_config(weights: Mapping[str, torch.Tensor]) -> dict:
    """ZImageTransformer2DModel config from its tensors in diffusers' names."""
    patches = [m.groups() for k in weights if (m := _PATCH_KEY.fullmatch(k))]
    if len(patches) != 1:
        raise CheckpointFormatError("the Z-Image transformer has no single patch embedding (all_x_embedder.P-F)")
    patch, frames = (int(x) for x in patches[0])
    try:
        dim, patch_width = (int(x) for x in weights[f"all_x_embedder.{patch}-{frames}.weight"].shape)
        cap_feat_dim = int(weights["cap_embedder.0.weight"].shape[0])
        q_rows = int(weights["layers.0.attention.to_q.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointFormatError(f"the Z-Image transformer tensor {exc.args[0]} is missing") from None
    except ValueError:
        raise CheckpointFormatError("the Z-Image patch embedding is not a matrix") from None
    norm_q = weights.get("layers.0.attention.norm_q.weight")
    head_dim = int(norm_q.shape[0]) if norm_q is not None else QWEN3_HEAD_DIM
    if dim % head_dim or q_rows != dim:
        raise CheckpointFormatError(f"Z-Image transformer width {dim} does not fit its attention ({q_rows} query "
                                    f"rows, heads of {head_dim})")
    if patch_width % (patch * patch * frames):
        raise CheckpointFormatError(f"the Z-Image patch embedding takes {patch_width} values, not whole channels")
    siglip = weights.get("siglip_embedder.0.weight")
    return {"all_patch_size": (patch,), "all_f_patch_size": (frames,),
            "in_channels": patch_width // (patch * patch * frames), "dim": dim,
            "n_layers": _count(weights, r"layers\.(\d+)\."),
            "n_refiner_layers": _count(weights, r"noise_refiner\.(\d+)\."),
            "n_heads": dim // head_dim, "n_kv_heads": dim // head_dim, "norm_eps": 1e-5, "qk_norm": norm_q is not None,
            "cap_feat_dim": cap_feat_dim, "siglip_feat_dim": int(siglip.shape[0]) if siglip is not None else None,
            "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": list(rope_axes(head_dim)),
            "axes_lens": [1536, 512, 512]}


def comfy_to_diffusers(comfy: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Original / ComfyUI transformer names (no prefix) to diffusers', by diffusers' own converter (it renames, drops
    ComfyUI's unused `norm_final.weight` and splits the fused q/k/v into row views: no copies)."""
    bad = [k for k, v in comfy.items() if k.endswith(".attention.qkv.weight") and v.shape[0] % 3]
    if bad:
        raise CheckpointFormatError(f"{name}: {bad[0]} has {comfy[bad[0]].shape[0]} rows, not three equal q, k, v "
                                    "parts")
    try:
        return convert_z_image_transformer_checkpoint_to_diffusers(dict(comfy))
    except (IndexError, KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointFormatError(f"{name}: the Z-Image transformer tensors do not fit its layout ({exc})") \
            from None


def diffusers_to_comfy(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `comfy_to_diffusers` (a test and benchmark tool: writes files in ComfyUI's names). Every tensor
    must find its place, so a layout change in diffusers shows up as a KeyError here."""
    w = dict(weights)
    out: dict[str, torch.Tensor] = {}
    renames = ((r"all_x_embedder\.2-1\.(.*)", r"x_embedder.\1"), (r"all_final_layer\.2-1\.(.*)", r"final_layer.\1"),
               (r"(.*)\.attention\.to_out\.0\.(.*)", r"\1.attention.out.\2"),
               (r"(.*)\.attention\.norm_q\.weight", r"\1.attention.q_norm.weight"),
               (r"(.*)\.attention\.norm_k\.weight", r"\1.attention.k_norm.weight"))
    for key in [k for k in w if k.endswith(".attention.to_q.weight")]:
        base = key[: -len("to_q.weight")]
        out[base + "qkv.weight"] = torch.cat([w.pop(base + n + ".weight") for n in ("to_q", "to_k", "to_v")], dim=0)
    known = re.compile(r"(layers|noise_refiner|context_refiner|siglip_refiner)\.\d+\.(attention_norm[12]|ffn_norm[12]|"
                       r"adaLN_modulation\.0|feed_forward\.w[123])\.(weight|bias)|(t_embedder\.mlp\.[02]|"
                       r"(cap|siglip)_embedder\.[01])\.(weight|bias)|(x|cap|siglip)_pad_token")
    for key in list(w):
        for pattern, repl in renames:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = w.pop(key)
                break
        else:
            if known.fullmatch(key):
                out[key] = w.pop(key)
    if w:
        raise KeyError(f"no ComfyUI name for {sorted(w)[:3]}")
    return out


def build_transformer(weights: dict, name: str, dtype: torch.dtype) -> ZImageTransformer2DModel:
    """ZImageTransformer2DModel from tensors in diffusers' names (float8 ones stay float8, but for the timestep and
    caption embedders)."""
    try:
        config = zimage_config(weights)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{name}: {exc}") from None
    for key, value in weights.items():
        if key.startswith(_KEEP_COMPUTE) and value.dtype in FP8_DTYPES:
            weights[key] = value.to(dtype)
    return _build(ZImageTransformer2DModel, config, weights, "Z-Image transformer", name, dtype)


# --- the Qwen3 text encoder ----------------------------------------------------------------------------------------

def _qwen3_weights(state: Mapping) -> dict:
    """Qwen3Model names: without ComfyUI's `transformer.` and the causal LM's `model.`, without `lm_head`."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("transformer.")
        if key == "lm_head.weight" or key.endswith("rotary_emb.inv_freq"):
            continue
        out[key.removeprefix("model.")] = value
    return out


def qwen3_config(weights: Mapping[str, torch.Tensor]) -> Qwen3Config:
    """Qwen3 config from its tensors (head size from the q norm; RMS eps, rope theta and positions as Qwen3-4B)."""
    try:
        vocab, hidden = (int(x) for x in weights["embed_tokens.weight"].shape)
        q = weights["layers.0.self_attn.q_proj.weight"]
        k = weights["layers.0.self_attn.k_proj.weight"]
        intermediate = int(weights["layers.0.mlp.gate_proj.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointFormatError(f"the Qwen3 text encoder tensor {exc.args[0]} is missing") from None
    except ValueError:
        raise CheckpointFormatError("the Qwen3 token embedding is not a matrix") from None
    norm = weights.get("layers.0.self_attn.q_norm.weight")
    head_dim = int(norm.shape[0]) if norm is not None else QWEN3_HEAD_DIM
    if q.shape[0] % head_dim or k.shape[0] % head_dim or (q.shape[0] // head_dim) % max(1, k.shape[0] // head_dim):
        raise CheckpointFormatError(f"the Qwen3 attention ({q.shape[0]} query, {k.shape[0]} key rows) does not fit "
                                    f"heads of {head_dim}")
    return Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=_count(weights, r"layers\.(\d+)\."),
                       num_attention_heads=int(q.shape[0]) // head_dim, num_key_value_heads=int(k.shape[0]) // head_dim,
                       head_dim=head_dim, hidden_act="silu", max_position_embeddings=QWEN3_MAX_POSITIONS,
                       rms_norm_eps=QWEN3_RMS_EPS,
                       rope_parameters={"rope_type": "default", "rope_theta": QWEN3_ROPE_THETA},
                       attention_bias="layers.0.self_attn.q_proj.bias" in weights, tie_word_embeddings=True,
                       use_cache=False)


def _build_qwen3(state: Mapping, name: str, dtype: torch.dtype) -> Qwen3Model:
    weights = _qwen3_weights(state)
    try:
        config = qwen3_config(weights)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{name}: {exc}") from None
    module = _empty_module(Qwen3Model, config)
    units = _plan_dtypes(module, weights, dtype)
    module = _assign(module, weights, "Qwen3 text encoder", name)
    _store_fp8(units, dtype)
    return module


def read_qwen3_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) -> Qwen3Model:
    """Qwen3-4B from ComfyUI's `qwen_3_4b.safetensors` (`model.layers.N.*`; bf16, fp16, fp8 or ComfyUI's scaled
    fp8), bare Qwen3Model names, or under `text_encoders.qwen3_4b.transformer.` / `text_encoder.`. Float8 files stay
    float8 in memory, computed in `dtype`."""
    return _build_qwen3(strip_prefix(_dequantize_scaled(state, dtype), (QWEN3_PREFIX, "text_encoder.")), name,
                        dtype)


def read_zimage_vae_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) \
        -> AutoencoderKL:
    """The AE (FLUX.1's `ae.safetensors`: LDM or diffusers names, bare or under `vae.` / `first_stage_model.`)."""
    return _build_vae(strip_prefix(state, VAE_PREFIXES), name, dtype)


def zimage_part_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """Sort a file from models/VAE or models/text_encoder for Z-Image: "vae" (a 16-channel AE) or "qwen3" (a Qwen3
    text model: q/k norms, which Qwen2.5 lacks); None otherwise."""
    vae = strip_prefix(state, VAE_PREFIXES)
    if _vae_layout(vae) is not None:
        conv = vae.get("decoder.conv_in.weight")
        return "vae" if conv is not None and conv.shape[1] == ZIMAGE_LATENT_CHANNELS else None
    qwen = _qwen3_weights(strip_prefix(state, (QWEN3_PREFIX, "text_encoder.")))
    if "embed_tokens.weight" in qwen and "layers.0.self_attn.q_norm.weight" in qwen \
            and "layers.0.mlp.gate_proj.weight" in qwen:
        return "qwen3"
    return None


def check_text_encoder(transformer: ZImageTransformer2DModel, text_encoder: Qwen3Model | None, name: str) -> None:
    """A text encoder must be as wide as the transformer's caption input (Qwen3-4B's 2560 for Z-Image; Qwen3-8B's
    4096, as FLUX.2 klein 9B takes, does not fit)."""
    if text_encoder is None:
        return
    width, wanted = int(text_encoder.config.hidden_size), int(transformer.config.cap_feat_dim)
    if width != wanted:
        raise CheckpointFormatError(f"{name}: its Qwen3 text encoder is {width} wide; this Z-Image transformer takes "
                                    f"{wanted}-wide captions (Qwen3-4B)")


# --- whole files ---------------------------------------------------------------------------------------------------

@dataclass
class ZImageParts(PartsModules):
    """What one Z-Image file holds, as modules. `storage_dtype`: the transformer's weight dtype in memory (float8 for
    float8 files, else the compute dtype). Turbo and the base model share the architecture: `variant` is "z-image"
    ("omni" when the file has the SigLIP image-prompt inputs)."""

    transformer: ZImageTransformer2DModel
    variant: str
    layout: str
    storage_dtype: torch.dtype
    compute_dtype: torch.dtype
    vae: AutoencoderKL | None = None
    text_encoder: Qwen3Model | None = None
    warnings: list[str] = field(default_factory=list)


def variant_of(config: Mapping) -> str:
    return "omni" if config.get("siglip_feat_dim") else "z-image"


def _split_packed(state: Mapping, layout: str, name: str) -> tuple[dict, dict[str, dict]]:
    """(transformer tensors with the layout's prefix removed, {part: its tensors with the part's prefix removed})."""
    prefix = (_comfy_prefix(state) if layout == "ComfyUI" else _diffusers_prefix(state)) or ""
    part_prefixes = {"vae": VAE_PREFIXES, "qwen3": (QWEN3_PREFIX, DIFFUSERS_PART_PREFIXES["qwen3"])}
    return split_packed(state, prefix, part_prefixes, name, "a Z-Image model")


def read_zimage_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) \
        -> ZImageParts:
    """A Z-Image single file (either layout, alone or packed with its AE / Qwen3-4B) as modules computed in `dtype`;
    float8 tensors stay float8. Raises CheckpointFormatError (naming the file and the problem) for other files."""
    layout = zimage_layout(state)
    if layout is None:
        raise CheckpointFormatError(f"{name}: not a Z-Image model (no Z-Image transformer tensors)")
    state = _dequantize_scaled(state, dtype)
    transformer, storage, parts = packed_transformer(state, layout, name, dtype, _split_packed,
                                                     comfy_to_diffusers if layout == "ComfyUI" else None,
                                                     build_transformer)
    result = ZImageParts(transformer, variant_of(transformer.config), layout, storage, dtype)
    if "vae" in parts:
        result.vae = _build_vae(parts["vae"], name, vae_dtype(dtype))
    if "qwen3" in parts:
        result.text_encoder = _build_qwen3(parts["qwen3"], name, dtype)
    check_text_encoder(transformer, result.text_encoder, name)
    return result


# --- diffusers folders ---------------------------------------------------------------------------------------------

def zimage_folder_class(folder: Path) -> str | None:
    """The pipeline class of a diffusers folder when it is a Z-Image one (ZImagePipeline, ZImageImg2ImgPipeline...)."""
    return pipeline_class(folder, r"ZImage[A-Za-z0-9]*Pipeline")


def read_zimage_folder(folder: Path, dtype: torch.dtype = torch.bfloat16) -> ZImageParts:
    """A Z-Image diffusers folder (transformer/, vae/, text_encoder/ = Qwen3; tokenizer/ is read by the prompt
    encoder's tokenizer, not here), offline."""
    folder = Path(folder)
    name = folder.name
    if zimage_folder_class(folder) is None:
        raise CheckpointFormatError(f"{name}: not a Z-Image diffusers folder (model_index.json names no Z-Image "
                                    "pipeline)")
    try:
        transformer = load_part(folder, ZImageTransformer2DModel, "transformer", torch_dtype=dtype)
        vae = load_part(folder, AutoencoderKL, "vae", torch_dtype=vae_dtype(dtype))
        text_encoder = load_part(folder, Qwen3Model, "text_encoder", dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{name}: could not load the Z-Image diffusers folder ({exc})") from None
    if transformer is None:
        raise CheckpointFormatError(f"{name}: the Z-Image diffusers folder has no transformer/ folder")
    for_inference(transformer, vae, text_encoder)
    check_text_encoder(transformer, text_encoder, name)
    return ZImageParts(transformer, variant_of(transformer.config), "diffusers folder", dtype, dtype, vae,
                       text_encoder)
