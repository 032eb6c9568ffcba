"""LoRA on GGUF-quantised and streamed layers: added beside the weight at each call, never fused into it.

A quantised weight (diffusers' `GGUFParameter` in a `QuantizedLinear`) is dequantised from its 4-8 bit blocks at every
call; writing a LoRA's change into it would mean re-quantising the patched weight, which rounds most of the change
away and cannot be undone exactly. So such a layer keeps its weight and gets a forward hook adding the LoRAs' output:
for a plain LoRA, x -> up(down(x)) x multiplier x alpha / rank with the low-rank factors kept as they are (a few MB,
not a dense copy of the weight); for the other kinds (LoHa, LoKr, full diffs, DoRA) the dense change, summed once per
layer. Everything runs in the layer's compute dtype on the weight's device. Removing the hook restores the layer
exactly: the weight was never touched. Forge and ComfyUI apply LoRAs to GGUF files the same way (at run time).

A transformer streamed from RAM (diffusers' group offloading, `models/streaming.py`) is patched the same way: the
offloading keeps its own copies of the weights and copies them to the GPU block by block, so a change written into
a weight would be lost; the hook's small tensors follow the layer's output to its device instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .deltas import add_weight_delta_, bias_delta, scale
from .formats import NetworkModule
from .fp8_layers import FLOAT8, casting_hook

_ATTRIBUTE = "_runtime_lora"


def is_quantized_layer(module: torch.nn.Module) -> bool:
    """A layer whose weight is stored quantised (GGUF): its LoRAs are applied at run time."""
    weight = getattr(module, "weight", None)
    return getattr(weight, "quant_type", None) is not None and hasattr(weight, "quant_shape")


def can_patch_at_run_time(module: torch.nn.Module) -> bool:
    """Linear layers (quantised or not) take a run-time change; convolutions and norms do not."""
    return isinstance(module, torch.nn.Linear)


@dataclass
class RuntimePatch:
    """What a layer adds to its output: low-rank pairs (down [rank, in], up [out, rank] already scaled), a dense
    change [out, in] and a bias change, in the compute dtype."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    dense: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    handle: object = None

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        held = [t for t in (*(t for pair in self.pairs for t in pair[:1]), self.dense, self.bias) if t is not None]
        if held and (held[0].device != output.device or held[0].dtype != output.dtype):
            self.to(output.device, output.dtype)  # the model was moved (offloaded, or back): the changes follow
        x = inputs.to(output.dtype)
        for down, up in self.pairs:
            output = output + F.linear(F.linear(x, down), up)
        if self.dense is not None:
            output = output + F.linear(x, self.dense)
        if self.bias is not None:
            output = output + self.bias
        return output


    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.pairs = [(down.to(device, dtype), up.to(device, dtype)) for down, up in self.pairs]
        self.dense = self.dense.to(device, dtype) if self.dense is not None else None
        self.bias = self.bias.to(device, dtype) if self.bias is not None else None


def _hook(module: torch.nn.Module, args, output):
    patch = getattr(module, _ATTRIBUTE, None)
    return patch.output(args[0], output) if patch is not None else output


def _is_plain_lora(module: NetworkModule, weight_shape: tuple[int, ...]) -> bool:
    t = module.tensors
    return (module.kind == "lora" and "mid" not in t and module.dora_scale is None and len(weight_shape) == 2
            and t["down"].flatten(1).shape[1] == weight_shape[1] and t["up"].flatten(1).shape[0] == weight_shape[0])


def set_patch(layer: torch.nn.Module, contributions: list[tuple[NetworkModule, float]], dequantize) -> None:
    """Make `contributions` ((network module, multiplier) pairs) the layer's run-time LoRA change, replacing any
    earlier one. `dequantize(weight) -> float32 tensor`: the weight's values, read only when DoRA needs them."""
    weight = layer.weight
    quantized = is_quantized_layer(layer)
    shape = tuple(weight.quant_shape) if quantized else tuple(weight.shape)
    device = weight.device if weight.device.type != "meta" else torch.device("cpu")
    hook = casting_hook(layer)  # a float8-stored layer computes in its hook's dtype
    dtype = (getattr(layer, "compute_dtype", None) or (hook.compute_dtype if hook is not None else None)
             or (weight.dtype if weight.dtype.is_floating_point and weight.dtype not in FLOAT8 else torch.float32))
    patch = RuntimePatch()
    dense = None
    for module, multiplier in contributions:
        if _is_plain_lora(module, shape):
            down = module.tensors["down"].flatten(1).to(device, torch.float32)
            up = module.tensors["up"].flatten(1).to(device, torch.float32) * (multiplier * scale(module))
            patch.pairs.append((down.to(dtype), up.to(dtype)))
        else:
            if dense is None:
                dense = torch.zeros(shape, device=device, dtype=torch.float32)
            original = None
            if module.dora_scale is not None:
                original = (dequantize(weight) if quantized else weight.detach()).to(device, torch.float32)
            add_weight_delta_(dense, original, module, multiplier)
        change = bias_delta(module, device)
        if change is not None:
            change = change.reshape(shape[0]) * multiplier
            patch.bias = change if patch.bias is None else patch.bias + change
    patch.dense = dense.to(dtype) if dense is not None else None
    patch.bias = patch.bias.to(dtype) if patch.bias is not None else None
    clear_patch(layer)
    patch.handle = layer.register_forward_hook(_hook)
    setattr(layer, _ATTRIBUTE, patch)


def clear_patch(layer: torch.nn.Module) -> None:
    """Remove the layer's run-time LoRA change (the layer is then exactly as loaded)."""
    patch = getattr(layer, _ATTRIBUTE, None)
    if patch is not None:
        patch.handle.remove()
        delattr(layer, _ATTRIBUTE)
