"""Renaming a LoRA's modules from a model's original names to diffusers' module names, fused layers split by rows.

Stability's SD3 MMDiT and Z-Image's original module tree fuse q, k and v into one `qkv` layer where diffusers has
three; some modulation layers hold (shift, scale) where diffusers holds (scale, shift). A LoRA trained on the original
tree (kohya sd-scripts, musubi-tuner, ComfyUI's spelling) is mapped here: a family's `split` picks its modules out of
the file (module name with underscores, tensor ending) and its `plan` says, per module, how it maps:

- "rename": the same tensors under diffusers' name, whatever the kind;
- "qkv": split by output rows into three equal parts, `lora_up` rows (and a full `diff`'s rows) per part,
  `lora_down` and `.alpha` shared;
- "swap": the halves of the output rows swapped.

A split or swapped module of a kind that cannot be split by rows (LoHa, LoKr, DoRA magnitudes) is left out with a
note, which the caller reports as not understood. Tensors `split` does not claim pass through unchanged.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

# LoRA-file module prefixes of a diffusion transformer: kohya, ComfyUI, PEFT, diffusers
PREFIX = re.compile(r"^(lora_unet_|model\.diffusion_model\.|diffusion_model\.|base_model\.model\.|transformer\.)")
SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".lora_mid.weight",
            ".alpha", ".dora_scale", ".diff", ".diff_b", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b",
            ".hada_t1", ".hada_t2", ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a",
            ".lokr_w2_b", ".lokr_t2", ".w_norm", ".b_norm")
_BY_LENGTH = sorted(SUFFIXES, key=len, reverse=True)
ROWS = {".lora_up.weight", ".lora_B.weight", ".diff", ".diff_b"}  # tensors whose first axis is the output rows
SHARED = {".lora_down.weight", ".lora_A.weight", ".alpha"}  # the same for every part


def split_key(key: str, known: Callable[[str], bool]) -> tuple[str, str] | None:
    """(module name with underscores, tensor ending) when `known(module)` claims the module; else None."""
    head = PREFIX.match(key)
    rest = key[head.end():] if head else key
    for suffix in _BY_LENGTH:
        if rest.endswith(suffix):
            module = rest[:-len(suffix)].replace(".", "_")
            return (module, suffix) if known(module) else None
    return None


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def convert(tensors: dict[str, torch.Tensor], split: Callable, plan: Callable) -> tuple[dict[str, torch.Tensor],
                                                                                       list[str]]:
    """(the tensors with the modules `split` claims renamed under `transformer.` by `plan(module, tensors) -> (how,
    diffusers names)`, the keys left out). Never raises."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        found = split(key)
        if found is None:
            out[key] = value
        else:
            modules.setdefault(found[0], {})[found[1]] = value
    left_out: list[str] = []
    for module, found in modules.items():
        how, names = plan(module, found)
        if how == "rename":
            out.update({f"transformer.{names[0]}{suffix}": value for suffix, value in found.items()})
            continue
        if any(s not in ROWS and s not in SHARED for s in found):  # LoHa, LoKr, DoRA: not split by rows
            left_out.extend(f"{module}{suffix}" for suffix in found)
            continue
        for suffix, value in found.items():
            if suffix in SHARED:
                parts = [value] * len(names)
            elif how == "swap":
                parts = [swap_halves(value)]
            elif value.shape[0] % 3:
                left_out.append(f"{module}{suffix}")  # not three equal q, k, v parts
                break
            else:
                parts = list(value.chunk(3, dim=0))
            for name, part in zip(names, parts):
                out[f"transformer.{name}{suffix}"] = part.contiguous()
        else:
            continue
        for name in names:  # an unsplittable fused module: none of its parts
            for suffix in found:
                out.pop(f"transformer.{name}{suffix}", None)
    return out, sorted(left_out)
