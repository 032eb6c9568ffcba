"""Z-Image LoRA files named after Z-Image's original modules, renamed to diffusers' module names.

Z-Image's own code (and ComfyUI's model, and trainers that wrap it: kohya-style `lora_unet_layers_0_attention_qkv`,
ComfyUI's `diffusion_model.layers.0.attention.qkv`) has one fused `attention.qkv` layer per block, `attention.out`,
`x_embedder` and `final_layer`; our model is diffusers' ZImageTransformer2DModel, with `attention.to_q` / `to_k` /
`to_v`, `attention.to_out.0`, `all_x_embedder.2-1` and `all_final_layer.2-1`, as diffusers' single-file converter
(`convert_z_image_transformer_checkpoint_to_diffusers`, which `zimage.py` uses for checkpoints) lays them out. Those
modules are renamed here (a fused qkv split by rows, `row_renames`); everything else Z-Image's LoRAs name
(`feed_forward.w1`, `adaLN_modulation.0`, diffusers' own names as ai-toolkit / diffusers / OneTrainer save them,
with dots or kohya's underscores) the ordinary key table resolves. tests/test_zimage_lora.py checks the result
against diffusers' own `ZImagePipeline.load_lora_weights` + `fuse_lora` for the formats diffusers reads.
"""
from __future__ import annotations

import re

import torch

from .row_renames import convert, split_key

_BLOCKS = r"(layers|noise_refiner|context_refiner)_(\d+)_attention_(qkv|out)"
_BLOCK = re.compile(_BLOCKS)
# Z-Image's patch embedding and final layer for its one patch size (2 x 2 pixels, 1 frame)
_PLAIN = {"x_embedder": "all_x_embedder.2-1", "final_layer_linear": "all_final_layer.2-1.linear",
          "final_layer_adaLN_modulation_1": "all_final_layer.2-1.adaLN_modulation.1"}
# a Z-Image transformer module as LoRA files spell it, original or diffusers names, dots or underscores
MARK = re.compile(r"(^|[._])(layers|noise_refiner|context_refiner)[._]\d+[._](attention|feed_forward|adaLN_modulation)"
                  r"[._]|(^|[._])(all_x_embedder|all_final_layer|cap_embedder)[._]")


def has_zimage_names(keys) -> bool:
    """Whether a LoRA file is a Z-Image transformer's (either naming): its original module names, where it has them,
    are renamed (a file may hold `x_embedder` / `final_layer` without any attention module)."""
    return any(MARK.search(k) for k in keys)


def _is_original_module(module: str) -> bool:
    return bool(_BLOCK.fullmatch(module)) or module in _PLAIN


def _split(key: str) -> tuple[str, str] | None:
    return split_key(key, _is_original_module)


def _plan(module: str, found: dict[str, torch.Tensor]) -> tuple[str, list[str]]:
    if module in _PLAIN:
        return "rename", [_PLAIN[module]]
    block, index, part = _BLOCK.fullmatch(module).groups()
    base = f"{block}.{index}.attention."
    if part == "qkv":
        return "qkv", [base + "to_q", base + "to_k", base + "to_v"]
    return "rename", [base + "to_out.0"]


def convert_zimage_names(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the tensors with Z-Image's original module names renamed to diffusers' under `transformer.`, the keys left
    out). Other tensors pass through unchanged; this never raises."""
    return convert(tensors, _split, _plan)
