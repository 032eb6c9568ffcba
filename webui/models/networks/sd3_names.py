"""SD3 / SD3.5 LoRA files named after Stability's (SAI) MMDiT modules, renamed to diffusers' module names.

kohya sd-scripts saves SD3 LoRAs as `lora_unet_joint_blocks_N_x_block_attn_qkv.lora_down.weight` (+ `.alpha`), and
ComfyUI's spelling is the same names with dots under `diffusion_model.`: Stability's module names, where our model
is diffusers' SD3Transformer2DModel. diffusers 0.42 has no converter for SD3 LoRAs (`SD3LoraLoaderMixin` takes
diffusers / PEFT names only), so the renaming is here, by the layout of diffusers' own single-file converter
(`convert_sd3_transformer_checkpoint_to_diffusers`, used for checkpoints in `sd3.py`; tests/test_sd3_lora.py checks
every rule against it on a LoRA change written in SAI names):

- a fused `attn.qkv` / `attn2.qkv` (x stream: `to_q`, `to_k`, `to_v`; context stream: `add_q_proj`, ...) is split by
  output rows into three equal parts: `lora_up` rows (and a full `diff`'s rows) per part, `lora_down` and `.alpha`
  shared;
- `final_layer.adaLN_modulation.1` and the last block's context `adaLN_modulation.1` (2 x width rows: shift, scale)
  have their halves swapped (diffusers' order is scale, shift);
- everything else is a plain rename (`attn.proj` -> `attn.to_out.0`, `context_block.attn.proj` ->
  `attn.to_add_out`, `mlp.fc1` -> `ff.net.0.proj`, `x_embedder.proj` -> `pos_embed.proj`, ...), whatever the kind.

A split or swapped module of a kind that cannot be split by rows (LoHa, LoKr, DoRA magnitudes) is left out with a
note, which the caller reports as not understood. The text encoders (`lora_te1_` CLIP-L, `lora_te2_` CLIP-G,
`lora_te3_` T5) pass through: the key table resolves them.
"""
from __future__ import annotations

import re

import torch

from .row_renames import convert, split_key

# SAI module names with kohya's underscores (dots are turned into underscores before matching)
_BLOCK = re.compile(r"joint_blocks_(\d+)_(x_block|context_block)_"
                    r"(attn2?_qkv|attn2?_proj|adaLN_modulation_1|mlp_fc[12])")
_PLAIN = {"x_embedder_proj": "pos_embed.proj", "context_embedder": "context_embedder",
          "t_embedder_mlp_0": "time_text_embed.timestep_embedder.linear_1",
          "t_embedder_mlp_2": "time_text_embed.timestep_embedder.linear_2",
          "y_embedder_mlp_0": "time_text_embed.text_embedder.linear_1",
          "y_embedder_mlp_2": "time_text_embed.text_embedder.linear_2", "final_layer_linear": "proj_out"}
_FINAL_MODULATION = "final_layer_adaLN_modulation_1"
_QKV = {("x_block", "attn_qkv"): ("attn.to_q", "attn.to_k", "attn.to_v"),
        ("context_block", "attn_qkv"): ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
        ("x_block", "attn2_qkv"): ("attn2.to_q", "attn2.to_k", "attn2.to_v")}
_RENAMED = {("x_block", "attn_proj"): "attn.to_out.0", ("context_block", "attn_proj"): "attn.to_add_out",
            ("x_block", "attn2_proj"): "attn2.to_out.0", ("x_block", "adaLN_modulation_1"): "norm1.linear",
            ("context_block", "adaLN_modulation_1"): "norm1_context.linear",
            ("x_block", "mlp_fc1"): "ff.net.0.proj", ("x_block", "mlp_fc2"): "ff.net.2",
            ("context_block", "mlp_fc1"): "ff_context.net.0.proj", ("context_block", "mlp_fc2"): "ff_context.net.2"}
_MARK = re.compile(r"(^|[._])joint_blocks[._]\d+[._](x_block|context_block)[._]")


def has_sai_names(keys) -> bool:
    """Whether a LoRA file names SD3 MMDiT modules as Stability does (kohya sd-scripts, ComfyUI)."""
    return any(_MARK.search(k) for k in keys)


def _is_sai_module(module: str) -> bool:
    return bool(_BLOCK.fullmatch(module)) or module in _PLAIN or module == _FINAL_MODULATION


def _split(key: str) -> tuple[str, str] | None:
    """(SAI module name with underscores, tensor ending), or None for a key that is not an SAI MMDiT module's."""
    return split_key(key, _is_sai_module)


def _plan(module: str, found: dict[str, torch.Tensor]) -> tuple[str, list[str]]:
    """("qkv" | "swap" | "rename", diffusers module names) for one SAI module."""
    if module in _PLAIN:
        return "rename", [_PLAIN[module]]
    if module == _FINAL_MODULATION:
        return "swap", ["norm_out.linear"]
    block, stream, part = _BLOCK.fullmatch(module).groups()
    base = f"transformer_blocks.{block}."
    if (stream, part) in _QKV:
        return "qkv", [base + name for name in _QKV[stream, part]]
    if (stream, part) == ("context_block", "adaLN_modulation_1") and _is_last_context_modulation(found):
        return "swap", [base + _RENAMED[stream, part]]  # swapped in the last block only (2 x width rows)
    return "rename", [base + _RENAMED[stream, part]]


def _is_last_context_modulation(found: dict[str, torch.Tensor]) -> bool:
    """The last block's context modulation has 2 x width rows (shift, scale); the others 6 x width."""
    down = found.get(".lora_down.weight", found.get(".lora_A.weight"))
    up = found.get(".lora_up.weight", found.get(".lora_B.weight"))
    if down is not None and up is not None and down.ndim == 2:
        return up.shape[0] == 2 * down.shape[1]
    diff = found.get(".diff")
    return diff is not None and diff.ndim == 2 and diff.shape[0] == 2 * diff.shape[1]


def convert_sai_names(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the tensors with SAI-named MMDiT modules renamed to diffusers' names under `transformer.`, the keys left
    out). Other tensors (text encoders, unknown names) pass through unchanged; this never raises."""
    return convert(tensors, _split, _plan)
