"""LoRA on GGUF / NF4-quantised and streamed layers: added beside the weight at each call, never fused into it.

A quantised weight (diffusers' `GGUFParameter` in a `QuantizedLinear`, NF4 rows in an `NF4Linear`) is dequantised
from its 4-8 bit blocks at every call; writing a LoRA's change into it would mean re-quantising the patched weight,
which rounds most of the change away and cannot be undone exactly. So such a layer keeps its weight and gets a
forward hook adding the LoRAs' output: for a plain LoRA, x -> up(down(x)) x multiplier x alpha / rank with the
low-rank factors kept as they are (a few MB, not a dense copy of the weight); for the other kinds (LoHa, LoKr, full
diffs, DoRA) the change is rebuilt from the file's own factors at each call and dropped after it, so no dense copy
of the weight is kept (it costs time instead: about one extra layer-sized product per call). Removing the hook
restores the layer exactly: the weight was never touched. Forge and ComfyUI apply LoRAs to GGUF files the same way
(at run time).

A transformer streamed from RAM (diffusers' group offloading, `models/streaming.py`) is patched the same way: the
offloading keeps its own copies of the weights and copies them to the GPU block by block, so a change written into
a weight would be lost. There the factors stay in (pinned) CPU memory and are copied with the layer's call, so the
LoRA does not take the VRAM the streaming frees.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    """What a layer adds to its output: low-rank pairs (down [rank, in], up [out, rank], already scaled) in the
    compute dtype, the other kinds' modules with their multipliers (their change is rebuilt at each call, so no
    dense copy of the weight is kept), and a bias change. `streamed`: the layer's weights are streamed from RAM, so
    the pairs stay in (pinned) CPU memory too and are copied to the device at each call, as the weights are;
    otherwise they live on the weight's device and follow it when the model is moved."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    others: list[tuple[NetworkModule, float]] = field(default_factory=list)
    bias: torch.Tensor | None = None
    streamed: bool = False
    layer_shape: tuple[int, ...] = ()
    original: object = None  # () -> the layer's float32 weight values (DoRA rebuilds against them)
    handle: object = None

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        device, dtype = output.device, output.dtype
        if not self.streamed and self._out_of_place(device, dtype):
            self._move(device, dtype)  # the model was moved (or runs in another dtype): the changes follow
        x = inputs.to(dtype)
        for down, up in self.pairs:
            down, up = down.to(device, dtype, non_blocking=True), up.to(device, dtype, non_blocking=True)
            output = output + F.linear(F.linear(x, down), up)
        if self.others:
            dense = torch.zeros(self.layer_shape, device=device, dtype=torch.float32)
            original = self.original().to(device, torch.float32) if any(
                module.dora_scale is not None for module, _ in self.others) else None
            for module, multiplier in self.others:
                add_weight_delta_(dense, original, module, multiplier)
            output = output + F.linear(x, dense.to(dtype))
            del dense
        if self.bias is not None:
            output = output + self.bias.to(device, dtype, non_blocking=True)
        return output

    def _out_of_place(self, device: torch.device, dtype: torch.dtype) -> bool:
        """The held tensors are elsewhere than the layer's output (the pairs and bias also in another dtype; the
        other kinds' factors keep the file's dtype)."""
        computed = [pair[0] for pair in self.pairs] + ([self.bias] if self.bias is not None else [])
        if computed and (computed[0].device != device or computed[0].dtype != dtype):
            return True
        factors = [t for module, _ in self.others[:1] for t in list(module.tensors.values())[:1]]
        return bool(factors) and factors[0].device != device

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.pairs = [(down.to(device, dtype), up.to(device, dtype)) for down, up in self.pairs]
        self.bias = self.bias.to(device, dtype) if self.bias is not None else None
        self.others = [(_on(module, device), multiplier) for module, multiplier in self.others]


def _on(module: NetworkModule, device: torch.device) -> NetworkModule:
    """A copy of the file's module with its tensors on `device` (the parsed file itself stays as it is)."""
    return replace(module, tensors={role: t.to(device) for role, t in module.tensors.items()})


def _hook(module: torch.nn.Module, args, output):
    patch = getattr(module, _ATTRIBUTE, None)
    return patch.output(args[0], output) if patch is not None else output


def _is_plain_lora(module: NetworkModule, weight_shape: tuple[int, ...]) -> bool:
    t = module.tensors
    return (module.kind == "lora" and "mid" not in t and module.dora_scale is None and len(weight_shape) == 2
            and t["down"].flatten(1).shape[1] == weight_shape[1] and t["up"].flatten(1).shape[0] == weight_shape[0])


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """CPU memory a GPU copies from without stalling (page-locked), where there is a GPU."""
    return tensor.pin_memory() if torch.cuda.is_available() else tensor


def set_patch(layer: torch.nn.Module, contributions: list[tuple[NetworkModule, float]], dequantize,
              streamed: bool = False) -> None:
    """Make `contributions` ((network module, multiplier) pairs) the layer's run-time LoRA change, replacing any
    earlier one. `dequantize(weight) -> float32 tensor`: the weight's values, read only when DoRA needs them.
    `streamed`: the layer's weights are streamed from RAM (see RuntimePatch)."""
    weight = layer.weight
    quantized = is_quantized_layer(layer)
    shape = tuple(weight.quant_shape) if quantized else tuple(weight.shape)
    device = torch.device("cpu") if streamed or weight.device.type == "meta" else weight.device
    hook = casting_hook(layer)  # a float8-stored layer computes in its hook's dtype
    dtype = (getattr(layer, "compute_dtype", None) or (hook.compute_dtype if hook is not None else None)
             or (weight.dtype if weight.dtype.is_floating_point and weight.dtype not in FLOAT8 else torch.float32))
    patch = RuntimePatch(streamed=streamed, layer_shape=shape,
                         original=lambda: dequantize(layer.weight) if quantized else layer.weight.detach())
    for module, multiplier in contributions:
        if _is_plain_lora(module, shape):
            down = module.tensors["down"].flatten(1).to(device, torch.float32)
            up = module.tensors["up"].flatten(1).to(device, torch.float32) * (multiplier * scale(module))
            patch.pairs.append((down.to(dtype), up.to(dtype)))
        else:  # its own factors, on the weight's device (streamed: in RAM, moved with each call)
            patch.others.append((module if streamed else _on(module, device), multiplier))
        change = bias_delta(module, device)
        if change is not None:
            change = change.reshape(shape[0]) * multiplier
            patch.bias = change if patch.bias is None else patch.bias + change
    patch.bias = patch.bias.to(dtype) if patch.bias is not None else None
    if streamed:
        patch.pairs = [(_pinned(down), _pinned(up)) for down, up in patch.pairs]
        patch.bias = _pinned(patch.bias) if patch.bias is not None else None
    clear_patch(layer)
    patch.handle = layer.register_forward_hook(_hook)
    setattr(layer, _ATTRIBUTE, patch)


def clear_patch(layer: torch.nn.Module) -> None:
    """Remove the layer's run-time LoRA change (the layer is then exactly as loaded)."""
    patch = getattr(layer, _ATTRIBUTE, None)
    if patch is not None:
        patch.handle.remove()
        delattr(layer, _ATTRIBUTE)
