"""Float8-stored layers under a LoRA: held in the compute dtype while patched, float8 again when restored.

FLUX.1 fp8 files keep their layers in float8 between calls; diffusers' layerwise-casting hook casts each layer to the
compute dtype before its forward and back to float8 after it. Fusing a LoRA change into such a weight in float8 would
round the patched weight to float8's 3-bit mantissa (a relative step of 1/8): most of a LoRA's change would vanish
or be quantised. So a float8 layer that a LoRA patches is held in the compute dtype (bfloat16, float16 or float32)
while patched: its tensors are cast up (float8 values are exact in each of these), the patched weight is written in
that dtype, and its casting hook's storage dtype is set to the compute dtype, so the hook keeps it there instead of
casting it back to float8 after each call. Restoring puts the original values back (the patcher's CPU copy, bit for
bit) and returns the layer and its hook to float8 storage; float8 -> compute dtype -> float8 is exact, so the layer
ends bit for bit as it was. The cost is the patched layers only, at the compute dtype's width, while a LoRA is active.
"""
from __future__ import annotations

import torch

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def casting_hook(module: torch.nn.Module):
    """The module's own layerwise-casting hook (diffusers' `apply_layerwise_casting`), or None."""
    registry = getattr(module, "_diffusers_hook", None)
    for hook in (getattr(registry, "hooks", None) or {}).values():
        if hasattr(hook, "storage_dtype") and hasattr(hook, "compute_dtype"):
            return hook
    return None


def hold_dtype(module: torch.nn.Module, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype to hold a layer in while a LoRA patches it: its hook's compute dtype when the weight is stored in
    float8 by that hook; None when the layer needs no change."""
    hook = casting_hook(module)
    if weight.dtype not in FLOAT8 or hook is None or hook.storage_dtype != weight.dtype:
        return None
    return hook.compute_dtype


def hold(module: torch.nn.Module, dtype: torch.dtype) -> torch.dtype:
    """Keep the layer in `dtype` (its hook too); returns the float8 dtype it was stored in."""
    hook = casting_hook(module)
    stored = hook.storage_dtype
    hook.storage_dtype = dtype
    module.to(dtype=dtype)
    return stored


def release(module: torch.nn.Module, stored: torch.dtype) -> None:
    """Back to float8 storage (the caller has put the original values back)."""
    hook = casting_hook(module)
    if hook is not None:
        hook.storage_dtype = stored
    module.to(dtype=stored)
