"""FLUX.1 files (dev, schnell, Fill, Depth/Canny, fine-tunes) into diffusers/transformers modules, offline.

Flux files come in three layouts, told apart by their tensor names (never the file name):

- "BFL": black-forest-labs' originals (`flux1-dev.safetensors`): the transformer alone, `double_blocks.N.img_attn.qkv`,
  `single_blocks.N.linear1`, `img_in`, `txt_in`, `time_in`, `vector_in`, `guidance_in` (dev only), `final_layer`.
- "ComfyUI": the same names under `model.diffusion_model.`, often packed (ComfyUI's and Forge's all-in-one
  checkpoints) with CLIP-L under `text_encoders.clip_l.transformer.`, T5-XXL under `text_encoders.t5xxl.transformer.`
  (transformers' names) and the AE under `vae.` (LDM names, as in BFL's `ae.safetensors`).
- "diffusers": diffusers' names (`transformer_blocks.N.attn.to_q`, `single_transformer_blocks.N`, `x_embedder`,
  `time_text_embed`), bare or under `transformer.` / `model.diffusion_model.`; packed parts then sit under `vae.`
  (diffusers names), `text_encoder.` (CLIP-L) and `text_encoder_2.` (T5).

Such files carry no config: every size is read from the tensors. Modules are built empty and the file's tensors
assigned, as `loader` does for Stable Diffusion. Tensors stored in float8 stay float8 in memory and are computed in
the compute dtype, layer by layer, by diffusers' layerwise-casting hook (`diffusers.hooks.apply_layerwise_casting`).

Every use of `diffusers.loaders.single_file_utils` is in this file (the BFL->diffusers transformer converter and the
LDM->diffusers VAE converter); tests/test_flux_files.py checks both against our inverse.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from diffusers.hooks import apply_layerwise_casting
from diffusers.loaders.single_file_utils import (convert_flux_transformer_checkpoint_to_diffusers,
                                                 convert_ldm_vae_checkpoint)
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from . import nf4
from .architecture import CheckpointFormatError
from .loader import _clip_config, _empty_module
from .transformer_files import (PartsModules, Renaming, assign_checked, convert_split_fused, find_prefix, for_inference,
                                load_part, packed_transformer, pipeline_class, split_packed, strip_prefix,
                                swap_halves, vae_dtype)
from .transformer_files import fp8_dtype as _fp8_dtype

FLUX_VAE_SCALING = 0.3611  # diffusers' FLUX.1 vae/config.json scaling_factor
FLUX_VAE_SHIFT = 0.1159  # ... and shift_factor
FLUX_LATENT_CHANNELS = 16
T5_VOCAB = 32128  # T5 v1.1's vocabulary (what the T5 tokenizer yields)

COMFY_PREFIX = "model.diffusion_model."
COMFY_CLIP_PREFIX = "text_encoders.clip_l."
COMFY_T5_PREFIX = "text_encoders.t5xxl."
VAE_PREFIXES = ("vae.", "first_stage_model.")
DIFFUSERS_PREFIXES = ("", "transformer.", COMFY_PREFIX)
DIFFUSERS_PART_PREFIXES = {"clip": "text_encoder.", "t5": "text_encoder_2."}

_BFL_MARK = "double_blocks.0.img_attn.qkv.weight"
_DIFFUSERS_MARK = "single_transformer_blocks.0.attn.to_q.weight"
_DIFFUSERS_X = "x_embedder.weight"
_CONVERTER_WIDTH = 3072  # diffusers' converter splits single_blocks.N.linear1 for this width only (all FLUX.1 models)


# --- other families (so users get "this is an SD3 checkpoint", not "not a checkpoint") ---------------------------

# (family, marker names): a family matches when one of its markers is in the file, bare or under one of the
# prefixes below. Markers were checked against diffusers 0.42's CHECKPOINT_KEY_NAMES / infer_diffusers_model_type,
# its model classes' parameter names (diffusers layouts) and ComfyUI's model_detection (original layouts).
_FAMILY_PREFIXES = ("", COMFY_PREFIX, "transformer.", "diffusion_model.", "model.", "net.")
_OTHER_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Flux.2", ("single_stream_modulation.lin.weight", "double_stream_modulation_img.lin.weight",
                "double_stream_modulation_img.linear.weight", "single_stream_modulation.linear.weight")),
    ("Chroma", ("distilled_guidance_layer.in_proj.weight", "distilled_guidance_layer.in_proj.bias")),
    ("SD3 / SD3.5", ("joint_blocks.0.context_block.adaLN_modulation.1.bias",
                     "joint_blocks.0.x_block.attn.qkv.weight")),
    ("AuraFlow", ("double_layers.0.attn.w1q.weight", "cond_seq_linear.weight",
                  "joint_transformer_blocks.0.attn.add_q_proj.weight")),
    ("Qwen-Image", ("txt_norm.weight", "txt_in.text_norm.weight")),
    ("Z-Image", ("layers.0.adaLN_modulation.0.weight", "all_x_embedder.2-1.weight")),
    ("Lumina 2", ("cap_embedder.0.weight",)),
    ("HunyuanDiT", ("mlp_t5.0.weight",)),
    ("HunyuanVideo", ("txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias",
                      "txt_in.individual_token_refiner.blocks.0.norm1.weight")),
    ("Sana", ("blocks.0.mlp.inverted_conv.conv.weight", "transformer_blocks.0.ff.conv_inverted.weight")),
    ("PixArt", ("t_block.1.weight", "blocks.0.cross_attn.q_linear.weight", "adaln_single.linear.weight")),
    ("Stable Cascade", ("clip_txt_mapper.weight", "clf.1.weight", "down_blocks.1.0.channelwise.0.weight")),
    ("Wan (video)", ("head.modulation",)),
    ("LTX-Video", ("patchify_proj.weight",)),
    ("Mochi (video)", ("blocks.0.attn.qkv_x.weight",)),
    ("HiDream", ("double_stream_blocks.0.block.adaLN_modulation.1.bias",)),
    ("Cosmos", ("x_embedder.proj.1.weight",)),
)


def _has(state: Mapping, name: str, prefixes: Iterable[str] = _FAMILY_PREFIXES) -> str | None:
    """The prefix under which `name` is in state, or None."""
    for prefix in prefixes:
        if prefix + name in state:
            return prefix
    return None


def other_family(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of a known model family we do not run (yet), recognised from its tensors; None otherwise."""
    from .sd3 import sd3_layout  # (sd3 and zimage build on this module)
    from .zimage import zimage_layout
    if sd3_layout(state) is not None or zimage_layout(state) is not None:  # families we run: not "other"
        return None
    for family, markers in _OTHER_FAMILIES:
        if any(_has(state, marker) is not None for marker in markers):
            return family
    # SD3 in diffusers' names: joint blocks with added projections and a patch embedding, no Flux x_embedder
    prefix = _has(state, "transformer_blocks.0.attn.add_q_proj.weight")
    if prefix is not None and prefix + "pos_embed.proj.weight" in state and prefix + _DIFFUSERS_X not in state:
        return "SD3 / SD3.5"
    # Kolors: an SDXL UNet fed by ChatGLM3 (4096 wide), diffusers' names
    hid = _has(state, "encoder_hid_proj.weight", ("", "unet.", COMFY_PREFIX))
    if hid is not None and state[hid + "encoder_hid_proj.weight"].shape[-1] == 4096:
        return "Kolors"
    return None


def flux_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """"BFL", "ComfyUI" or "diffusers" when the tensors are a FLUX.1 transformer (alone or packed); else None."""
    if other_family(state) is not None:
        return None
    if _BFL_MARK in state and "img_in.weight" in state:
        return "BFL"
    if COMFY_PREFIX + _BFL_MARK in state and COMFY_PREFIX + "img_in.weight" in state:
        return "ComfyUI"
    if _diffusers_prefix(state) is not None:
        return "diffusers"
    return None


def _diffusers_prefix(state: Mapping) -> str | None:
    return find_prefix(state, DIFFUSERS_PREFIXES,
                       (_DIFFUSERS_MARK, _DIFFUSERS_X, "time_text_embed.timestep_embedder.linear_1.weight"))


# --- the transformer -----------------------------------------------------------------------------------------------

def _count(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary axes for a head size: (16, 56, 56) for FLUX.1's 128; each even, summing to head_dim."""
    a = head_dim // 8
    b = (head_dim - a) // 2
    axes = (a, b, head_dim - a - b)
    if any(x % 2 for x in axes) or sum(axes) != head_dim:
        raise CheckpointFormatError(f"attention head size {head_dim} has no rotary split into even axes")
    return axes


def flux_config(weights: Mapping[str, torch.Tensor]) -> dict:
    """FluxTransformer2DModel config from its tensors in diffusers' names."""
    try:
        head_dim = int(weights["transformer_blocks.0.attn.norm_q.weight"].shape[0])
        hidden, in_channels = (int(x) for x in weights["x_embedder.weight"].shape)
        config = {
            "patch_size": 1,
            "in_channels": in_channels,
            "out_channels": int(weights["proj_out.weight"].shape[0]),
            "num_layers": _count(weights, r"transformer_blocks\.(\d+)\."),
            "num_single_layers": _count(weights, r"single_transformer_blocks\.(\d+)\."),
            "attention_head_dim": head_dim,
            "num_attention_heads": hidden // head_dim,
            "joint_attention_dim": int(weights["context_embedder.weight"].shape[1]),
            "pooled_projection_dim": int(weights["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
            "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in weights,
            "axes_dims_rope": rope_axes(head_dim),
        }
    except KeyError as exc:
        raise CheckpointFormatError(f"the Flux transformer tensor {exc.args[0]} is missing") from None
    if hidden % head_dim:
        raise CheckpointFormatError(f"Flux transformer width {hidden} is not a multiple of its head size {head_dim}")
    return config


def variant_of(config: Mapping) -> str:
    """"fill" (384 input channels: image, masked image, mask), "control" (128: FLUX.1 Depth/Canny),
    "dev" (guidance embedding: dev, Kontext and most fine-tunes) or "schnell" (none)."""
    if config["in_channels"] == 384:
        return "fill"
    if config["in_channels"] == 128:
        return "control"
    return "dev" if config["guidance_embeds"] else "schnell"


def scheduler_config(variant: str) -> dict:
    """FlowMatchEulerDiscreteScheduler config of the published FLUX.1 repositories (schnell: no shift)."""
    if variant == "schnell":
        return {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
    return {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
            "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


_FUSED = re.compile(r"(double_blocks\.(\d+)\.(img|txt)_attn\.qkv|single_blocks\.(\d+)\.linear1)\.(weight|bias)")


def _split_fused(key: str, value: torch.Tensor, hidden: int) -> dict[str, torch.Tensor]:
    """diffusers' names and row views for one fused BFL projection (no copy: rows of a contiguous tensor)."""
    m = _FUSED.fullmatch(key)
    _, double, stream, single, kind = m.groups()
    if double is not None:
        base = f"transformer_blocks.{double}.attn."
        names = ["to_q", "to_k", "to_v"] if stream == "img" else ["add_q_proj", "add_k_proj", "add_v_proj"]
        if value.shape[0] % 3:
            raise CheckpointFormatError(f"{key} has {value.shape[0]} rows, not three equal q, k, v parts")
        pieces = value.chunk(3, dim=0)
        return {f"{base}{n}.{kind}": t for n, t in zip(names, pieces)}
    mlp = value.shape[0] - 3 * hidden
    if mlp <= 0:
        raise CheckpointFormatError(f"{key} has {value.shape[0]} rows, too few for width {hidden}")
    base = f"single_transformer_blocks.{single}."
    pieces = torch.split(value, (hidden, hidden, hidden, mlp), dim=0)
    return {f"{base}{n}.{kind}": t for n, t in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), pieces)}


def bfl_to_diffusers(bfl: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """BFL transformer names (no prefix) to diffusers', by diffusers' own converter.

    The converter names every tensor. The fused projections (`double_blocks.N.*_attn.qkv`, `single_blocks.N.linear1`)
    reach it as shape-only stand-ins and are split here, by the same rule, into row views: the converter copies
    them (3.6 billion parameters for FLUX.1, 7 GB in bf16, on top of the file during the load) and splits linear1
    for FLUX.1's width (3072) only. tests/test_flux_files.py checks our split against the converter's own."""
    try:
        hidden = int(bfl["img_in.weight"].shape[0])
    except KeyError:
        raise CheckpointFormatError(f"{name}: the Flux transformer has no img_in.weight") from None
    return convert_split_fused(bfl, name, "Flux transformer", "FLUX.1's layout",
                               convert_flux_transformer_checkpoint_to_diffusers, _FUSED,
                               lambda key, value: _split_fused(key, value, hidden),
                               lambda key, value: 7 * _CONVERTER_WIDTH if key.startswith("single_blocks.")
                               else value.shape[0])


def diffusers_to_bfl(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `bfl_to_diffusers` (a test and benchmark tool: writes files in BFL's layout). Every tensor must
    find its place, so a layout change in diffusers shows up as a KeyError here."""
    renaming = Renaming(weights)
    w, out, move, cat = renaming.w, renaming.out, renaming.move, renaming.cat

    for src, dst in (("time_text_embed.timestep_embedder", "time_in"), ("time_text_embed.text_embedder", "vector_in"),
                     ("time_text_embed.guidance_embedder", "guidance_in")):
        move(f"{src}.linear_1", f"{dst}.in_layer")
        move(f"{src}.linear_2", f"{dst}.out_layer")
    move("context_embedder", "txt_in")
    move("x_embedder", "img_in")
    for i in range(_count(w, r"transformer_blocks\.(\d+)\.")):
        s, d = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        move(s + "norm1.linear", d + "img_mod.lin")
        move(s + "norm1_context.linear", d + "txt_mod.lin")
        cat([s + "attn.to_q", s + "attn.to_k", s + "attn.to_v"], d + "img_attn.qkv")
        cat([s + "attn.add_q_proj", s + "attn.add_k_proj", s + "attn.add_v_proj"], d + "txt_attn.qkv")
        for src, dst in (("norm_q", "img_attn.norm.query_norm"), ("norm_k", "img_attn.norm.key_norm"),
                         ("norm_added_q", "txt_attn.norm.query_norm"), ("norm_added_k", "txt_attn.norm.key_norm")):
            out[f"{d}{dst}.scale"] = w.pop(f"{s}attn.{src}.weight")
        move(s + "ff.net.0.proj", d + "img_mlp.0")
        move(s + "ff.net.2", d + "img_mlp.2")
        move(s + "ff_context.net.0.proj", d + "txt_mlp.0")
        move(s + "ff_context.net.2", d + "txt_mlp.2")
        move(s + "attn.to_out.0", d + "img_attn.proj")
        move(s + "attn.to_add_out", d + "txt_attn.proj")
    for i in range(_count(w, r"single_transformer_blocks\.(\d+)\.")):
        s, d = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        move(s + "norm.linear", d + "modulation.lin")
        cat([s + "attn.to_q", s + "attn.to_k", s + "attn.to_v", s + "proj_mlp"], d + "linear1")
        out[d + "norm.query_norm.scale"] = w.pop(s + "attn.norm_q.weight")
        out[d + "norm.key_norm.scale"] = w.pop(s + "attn.norm_k.weight")
        move(s + "proj_out", d + "linear2")
    move("proj_out", "final_layer.linear")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_halves(w.pop(f"norm_out.linear.{kind}"))
    if w:
        raise KeyError(f"no BFL name for {sorted(w)[:3]}")
    return out


# --- building modules: empty, then the file's tensors assigned ----------------------------------------------------

def _assign(module: torch.nn.Module, weights: dict, what: str, name: str) -> torch.nn.Module:
    """`assign_checked`, text encoders' `position_ids` buffers allowed to be absent from the file."""
    return assign_checked(module, weights, what, name, lambda key: key.endswith("position_ids"))


def _storage_units(module: torch.nn.Module, t5: bool, dtype: torch.dtype) -> list[tuple[str, torch.nn.Module]]:
    """The modules that are cast to the compute dtype as one piece in each forward: leaf Linear/Embedding layers,
    except T5's feed-forward (it compares its input with `wo`'s dtype before calling `wo`, so it is cast whole).
    With float16 compute, T5's `wo` stays out (transformers keeps it in float32: T5 overflows float16 there)."""
    units, inside = [], set()
    for unit_name, sub in module.named_modules():
        if t5 and type(sub).__name__ in ("T5DenseGatedActDense", "T5DenseActDense") and dtype != torch.float16:
            units.append((unit_name, sub))
            inside.update(f"{unit_name}.{child}" for child, _ in sub.named_modules() if child)
        elif isinstance(sub, (torch.nn.Linear, torch.nn.Embedding)) and unit_name not in inside:
            if not (t5 and dtype == torch.float16 and unit_name.endswith(".wo")):
                units.append((unit_name, sub))
    return units


def _plan_dtypes(module: torch.nn.Module, weights: dict, dtype: torch.dtype, t5: bool = False) -> list:
    """Cast `weights` in place for `module` (still empty): units whose file tensors are float8 stay float8 (their
    other tensors, biases, join them: a unit has one storage dtype); everything else goes to the compute `dtype`
    (float32 for T5's `wo` under float16). Returns [(unit, storage dtype)] for the float8 units."""
    fp8_units, kept = [], set()
    for unit_name, unit in _storage_units(module, t5, dtype):
        prefix = f"{unit_name}." if unit_name else ""
        names = [prefix + n for n, _ in unit.named_parameters()]
        storage = _fp8_dtype(weights[n] for n in names if n in weights)
        if storage is None:
            continue
        for n in names:
            if n in weights and weights[n].dtype != storage:
                weights[n] = weights[n].to(storage)
            kept.add(n)
        fp8_units.append((unit, storage))
    for key, value in weights.items():
        if key in kept or not value.is_floating_point():
            continue
        target = torch.float32 if t5 and dtype == torch.float16 and key.endswith(".wo.weight") else dtype
        if value.dtype != target:
            weights[key] = value.to(target)
    return fp8_units


def _store_fp8(units: list, dtype: torch.dtype) -> None:
    """diffusers' layerwise casting, one hook per unit: weights stay float8 between calls, cast for each call."""
    for unit, storage in units:
        apply_layerwise_casting(unit, storage_dtype=storage, compute_dtype=dtype, skip_modules_pattern=None,
                                skip_modules_classes=None)


def _build(cls, config, weights: dict, what: str, name: str, dtype: torch.dtype, t5: bool = False):
    module = _empty_module(cls, config)
    units = _plan_dtypes(module, weights, dtype, t5)
    module = _assign(module, weights, what, name)
    _store_fp8(units, dtype)
    return module


def build_transformer(weights: dict, name: str, dtype: torch.dtype) -> FluxTransformer2DModel:
    """FluxTransformer2DModel from tensors in diffusers' names (float8 ones stay float8)."""
    config = flux_config(weights)
    return _build(FluxTransformer2DModel, config, weights, "Flux transformer", name, dtype)


# --- the AE (VAE) ------------------------------------------------------------------------------------------------

def _vae_layout(vae: Mapping) -> str | None:
    if "encoder.down.0.block.0.conv1.weight" in vae:
        return "ldm"
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in vae:
        return "diffusers"
    return None


def _vae_config(vae: Mapping, layout: str, name: str) -> dict:
    try:
        if layout == "ldm":
            levels = _count(vae, r"encoder\.down\.(\d+)\.")
            block_out = [int(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)]
            per_level = _count(vae, r"encoder\.down\.0\.block\.(\d+)\.")
            attention = "encoder.mid.attn_1.q.weight" in vae
        else:
            levels = _count(vae, r"encoder\.down_blocks\.(\d+)\.")
            block_out = [int(vae[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
            per_level = _count(vae, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")
            attention = "encoder.mid_block.attentions.0.to_q.weight" in vae
        latent = int(vae["decoder.conv_in.weight"].shape[1])
        in_channels = int(vae["encoder.conv_in.weight"].shape[1])
        out_channels = int(vae["decoder.conv_out.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: the VAE tensor {exc.args[0]} is missing") from None
    if latent != FLUX_LATENT_CHANNELS:
        raise CheckpointFormatError(f"{name}: a VAE with {latent} latent channels; Flux needs its own 16-channel AE "
                                    "(ae.safetensors)")
    return {"in_channels": in_channels, "out_channels": out_channels, "latent_channels": latent,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": block_out, "layers_per_block": per_level, "norm_num_groups": 32,
            "mid_block_add_attention": attention, "use_quant_conv": "quant_conv.weight" in vae,
            "use_post_quant_conv": "post_quant_conv.weight" in vae, "sample_size": 1024, "force_upcast": True,
            "scaling_factor": FLUX_VAE_SCALING, "shift_factor": FLUX_VAE_SHIFT}


def _build_vae(vae: dict, name: str, dtype: torch.dtype) -> AutoencoderKL:
    layout = _vae_layout(vae)
    if layout is None:
        raise CheckpointFormatError(f"{name}: no VAE encoder/decoder tensors (expected encoder.down.0... or "
                                    "encoder.down_blocks.0...)")
    config = _vae_config(vae, layout, name)
    weights = convert_ldm_vae_checkpoint(vae, config) if layout == "ldm" else dict(vae)
    if layout == "ldm":
        _check_leftovers(vae, weights, name)
    weights = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in weights.items()}
    module = _empty_module(AutoencoderKL, config)
    return _assign(module, weights, "VAE", name)


def _check_leftovers(ldm: Mapping, converted: Mapping, name: str) -> None:
    """diffusers' VAE converter silently skips names it does not know; count them as unexpected. (It passes tensors
    through as they are, or as views of them, so a tensor is used when its storage start is among the results.)"""
    used = {(v.data_ptr(), v.dtype) for v in converted.values()}
    left = [k for k, v in ldm.items() if (v.data_ptr(), v.dtype) not in used]
    if left:
        raise CheckpointFormatError(f"{name}: the VAE has {len(left)} unexpected tensors (e.g. {', '.join(left[:3])})")


def read_vae_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """The FLUX.1 AE from its own file (BFL's `ae.safetensors`, LDM names; or diffusers names), also under `vae.`."""
    return _build_vae(strip_prefix(state, VAE_PREFIXES), name, dtype)


# --- text encoders -------------------------------------------------------------------------------------------------

_CLIP_EXTRAS = ("text_projection.weight", "logit_scale")  # in some CLIP-L files; CLIPTextModel has no use for them


def _clip_weights(state: Mapping) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("transformer."):
            key = key[len("transformer."):]
        if key.endswith("position_ids") or key in _CLIP_EXTRAS:
            continue
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


def _build_clip(state: Mapping, name: str, dtype: torch.dtype) -> CLIPTextModel:
    weights = _clip_weights(state)
    try:
        config = _clip_config(weights, "quick_gelu", None)  # OpenAI CLIP ViT-L/14: quick GELU
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: the CLIP-L tensor {exc.args[0]} is missing") from None
    module = _empty_module(CLIPTextModel, config)
    if not any(k.startswith("text_model.") for k in module.state_dict()):
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    units = _plan_dtypes(module, weights, dtype)
    module = _assign(module, weights, "CLIP-L text encoder", name)
    _store_fp8(units, dtype)
    return module


def read_clip_l_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.float32) \
        -> CLIPTextModel:
    """CLIP-L from `clip_l.safetensors` (transformers' names, with or without `text_model.`)."""
    return _build_clip(strip_prefix(state, (COMFY_CLIP_PREFIX,)), name, dtype)


def t5_config(weights: Mapping[str, torch.Tensor]) -> T5Config:
    """T5 encoder config from the tensors (T5 v1.1: gated GELU, relative attention over 128 positions)."""
    embed = weights.get("shared.weight", weights.get("encoder.embed_tokens.weight"))
    if embed is None:
        raise CheckpointFormatError("the T5 token embedding (shared.weight) is missing")
    try:
        bias = weights["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        heads = int(bias.shape[1])
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in weights
        ff = weights["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
        q = weights["encoder.block.0.layer.0.SelfAttention.q.weight"]
    except KeyError as exc:
        raise CheckpointFormatError(f"the T5 tensor {exc.args[0]} is missing") from None
    vocab, d_model = (int(x) for x in embed.shape)
    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=int(q.shape[0]) // heads, d_ff=int(ff.shape[0]),
                    num_layers=_count(weights, r"encoder\.block\.(\d+)\."), num_heads=heads,
                    relative_attention_num_buckets=int(bias.shape[0]), relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu" if gated else "relu", layer_norm_epsilon=1e-6,
                    tie_word_embeddings=False, is_encoder_decoder=False, use_cache=False)


def _build_t5(state: Mapping, name: str, dtype: torch.dtype) -> T5EncoderModel:
    weights = {k.removeprefix("transformer."): v for k, v in state.items() if k != "logit_scale"}
    # files hold the embedding once, as `shared` (or, in some, only `encoder.embed_tokens`): the module ties both
    embed = weights.get("shared.weight", weights.get("encoder.embed_tokens.weight"))
    try:
        config = t5_config(weights)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{name}: {exc}") from None
    if embed is not None:
        weights["shared.weight"] = weights["encoder.embed_tokens.weight"] = embed
    module = _empty_module(T5EncoderModel, config)
    units = _plan_dtypes(module, weights, dtype, t5=True)
    module = _assign(module, weights, "T5 text encoder", name)
    module.encoder.embed_tokens.weight = module.shared.weight  # one tensor, as transformers ties them
    _store_fp8([(u, s) for u, s in units if u is not module.shared], dtype)  # the encoder calls embed_tokens only
    return module


def read_t5_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) \
        -> T5EncoderModel:
    """T5-XXL encoder from `t5xxl_fp16.safetensors` / `t5xxl_fp8_e4m3fn.safetensors` (transformers' names). Float8
    files stay float8 in memory, computed in `dtype`."""
    return _build_t5(strip_prefix(_dequantize_scaled(state, dtype), (COMFY_T5_PREFIX,)), name, dtype)


def is_t5_state(state: Mapping[str, torch.Tensor], prefix: str) -> bool:
    """Whether `state` (bare or under `prefix`) is a T5 encoder with T5 v1.1's vocabulary (how the families sort
    text encoder files)."""
    t5 = {k.removeprefix("transformer."): v for k, v in strip_prefix(state, (prefix,)).items()}
    embed = t5.get("shared.weight", t5.get("encoder.embed_tokens.weight"))
    return "encoder.block.0.layer.0.SelfAttention.q.weight" in t5 and embed is not None and embed.shape[0] == T5_VOCAB


def part_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """Sort a file from models/VAE or models/text_encoder: "vae" (a 16-channel Flux AE), "clip_l" (a CLIP text
    encoder narrower than OpenCLIP G's 1280), "t5" (a T5 encoder with T5 v1.1's vocabulary) or None."""
    vae = strip_prefix(state, VAE_PREFIXES)
    if _vae_layout(vae) is not None:
        conv = vae.get("decoder.conv_in.weight")
        return "vae" if conv is not None and conv.shape[1] == FLUX_LATENT_CHANNELS else None
    clip = _clip_weights(strip_prefix(state, (COMFY_CLIP_PREFIX,)))
    token = clip.get("text_model.embeddings.token_embedding.weight")
    if token is not None and "text_model.encoder.layers.0.self_attn.q_proj.weight" in clip:
        return "clip_l" if token.shape[1] != 1280 else None
    return "t5" if is_t5_state(state, COMFY_T5_PREFIX) else None


# --- ComfyUI's scaled float8 ---------------------------------------------------------------------------------------

def _dequantize_scaled(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> Mapping[str, torch.Tensor]:
    """ComfyUI's "scaled fp8" files (a `scaled_fp8` marker, `W.scale_weight` per float8 weight) hold weight /
    scale: they are multiplied back into `dtype` here (our float8 storage has no per-tensor scale)."""
    if not any(k.endswith("scaled_fp8") for k in state):
        return state
    out = {}
    for key, value in state.items():
        if key.endswith(("scaled_fp8", ".scale_weight", ".scale_input")):
            continue
        scale = state.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
        out[key] = (value.to(torch.float32) * scale.to(torch.float32)).to(dtype) if scale is not None else value
    return out


# --- whole files ---------------------------------------------------------------------------------------------------

@dataclass
class FluxParts(PartsModules):
    """What one Flux file holds, as modules. `storage_dtype`: the transformer's weight dtype in memory (float8 for
    float8 files, else the compute dtype); `variant`: "dev" | "schnell" | "fill" | "control"."""

    transformer: FluxTransformer2DModel
    variant: str
    layout: str
    storage_dtype: torch.dtype
    compute_dtype: torch.dtype
    vae: AutoencoderKL | None = None
    clip: CLIPTextModel | None = None
    t5: T5EncoderModel | None = None
    warnings: list[str] = field(default_factory=list)


def _split_packed(state: Mapping, layout: str, name: str) -> tuple[dict, dict[str, dict]]:
    """(transformer tensors with the layout's prefix removed, {part: its tensors with the part's prefix removed})."""
    prefix = {"BFL": "", "ComfyUI": COMFY_PREFIX}.get(layout)
    if prefix is None:
        prefix = _diffusers_prefix(state) or ""
    part_prefixes = {"vae": VAE_PREFIXES, "clip": (COMFY_CLIP_PREFIX, DIFFUSERS_PART_PREFIXES["clip"]),
                     "t5": (COMFY_T5_PREFIX, DIFFUSERS_PART_PREFIXES["t5"])}
    return split_packed(state, prefix, part_prefixes, name, "a Flux model")


def _nf4_transformer(state: Mapping, layout: str, name: str, dtype: torch.dtype):
    """(the transformer with its NF4 linear weights kept 4-bit in `nf4.NF4Linear` layers, {packed part: tensors})."""
    from .gguf_files import build_quantized, logical_shapes

    rows, code, blocksize = nf4.to_rows(state, name)
    transformer_sd, parts = _split_packed(rows, layout, name)
    for part, tensors in parts.items():
        if any(value.dtype == torch.uint8 and value.ndim == 2 for value in tensors.values()):
            label = {"t5": "T5", "clip": "CLIP-L", "vae": "VAE"}.get(part, part)
            raise CheckpointFormatError(f"{name}: its {label} is NF4-quantised; only a FLUX.1 transformer's weights "
                                        "may be NF4 (the VAE and text encoders in bf16, fp16 or fp8)")
    weights = dict(transformer_sd) if layout == "diffusers" else bfl_to_diffusers(transformer_sd, name)
    weights = {key: nf4.quantized_parameter(value, code, blocksize) if value.dtype == torch.uint8 else value
               for key, value in weights.items()}
    config = flux_config(logical_shapes(weights))
    return build_quantized(FluxTransformer2DModel, config, weights, "Flux transformer", name, dtype,
                           nf4.NF4Linear), parts


def read_flux_file(state: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype = torch.bfloat16) -> FluxParts:
    """A Flux single file (any layout, alone or packed with its VAE / CLIP-L / T5) as modules computed in `dtype`;
    float8 tensors stay float8. Raises CheckpointFormatError (naming the file and the problem) for other files."""
    layout = flux_layout(state)
    if layout is None:
        family = other_family(state)
        if family is not None:
            raise CheckpointFormatError(f"{name}: this is a {family} model; it is not supported yet")
        raise CheckpointFormatError(f"{name}: not a FLUX.1 model (no Flux transformer tensors)")
    if nf4.is_fp4_file(state):
        raise CheckpointFormatError(f"{name}: a bitsandbytes FP4-quantised Flux file; NF4 files (as Forge's "
                                    "flux1-dev-bnb-nf4) run, FP4 ones do not: use an NF4, GGUF, fp8 or bf16 file")
    if nf4.is_nf4_file(state):
        transformer, parts = _nf4_transformer(state, layout, name, dtype)
        result = FluxParts(transformer, variant_of(transformer.config), f"{layout}, NF4", torch.uint8, dtype)
    else:
        state = _dequantize_scaled(state, dtype)
        transformer, storage, parts = packed_transformer(state, layout, name, dtype, _split_packed,
                                                         None if layout == "diffusers" else bfl_to_diffusers,
                                                         build_transformer)
        result = FluxParts(transformer, variant_of(transformer.config), layout, storage, dtype)
    if "vae" in parts:
        result.vae = _build_vae(parts["vae"], name, vae_dtype(dtype))
    if "clip" in parts:
        result.clip = _build_clip(parts["clip"], name, dtype)
    if "t5" in parts:
        result.t5 = _build_t5(parts["t5"], name, dtype)
    return result


# --- diffusers folders ---------------------------------------------------------------------------------------------

def flux_folder_class(folder: Path) -> str | None:
    """The pipeline class of a diffusers folder when it is a FLUX.1 one (FluxPipeline, FluxFillPipeline, ...)."""
    return pipeline_class(folder, r"Flux[A-Za-z]*Pipeline")


def read_flux_folder(folder: Path, dtype: torch.dtype = torch.bfloat16) -> FluxParts:
    """A FLUX.1 diffusers folder (transformer/, vae/, text_encoder/ = CLIP-L, text_encoder_2/ = T5), offline."""
    folder = Path(folder)
    name = folder.name
    if flux_folder_class(folder) is None:
        raise CheckpointFormatError(f"{name}: not a FLUX.1 diffusers folder (model_index.json names no Flux pipeline)")
    try:
        transformer = FluxTransformer2DModel.from_pretrained(folder / "transformer", local_files_only=True,
                                                             torch_dtype=dtype)
        vae = load_part(folder, AutoencoderKL, "vae", torch_dtype=dtype)
        clip = load_part(folder, CLIPTextModel, "text_encoder", dtype=dtype)
        t5 = load_part(folder, T5EncoderModel, "text_encoder_2", dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{name}: could not load the Flux diffusers folder ({exc})") from None
    for_inference(transformer, vae, clip, t5)
    return FluxParts(transformer, variant_of(transformer.config), "diffusers folder", dtype, dtype, vae, clip, t5)
