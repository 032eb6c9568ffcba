"""The weight change each kind of network module makes, in float32: LoRA / LoCon (with the optional CP `lora_mid`),
LoHa, LoKr, full diffs and norm diffs, scaled by alpha / rank; DoRA rescales the merged weight.

A1111 and LyCORIS define these formulas; this is our own implementation of them."""
from __future__ import annotations

import math

import torch

from .formats import NetworkModule


def _f32(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.float32)


def _tucker(core: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Rebuild a (out, in, kh, kw) kernel from a CP/Tucker core (r_out, r_in, kh, kw), `down` (r_in, in) and
    `up` (out, r_out): W[p, q] = sum_ab up[p, a] core[a, b] down[b, q]."""
    return torch.einsum("pa,abhw,bq->pqhw", up, core, down)


def rank(module: NetworkModule) -> int | None:
    t = module.tensors
    if module.kind == "lora":
        return int(t["down"].shape[0])
    if module.kind == "loha":
        return int(t["hada_w1_b"].shape[0])
    if module.kind == "lokr":
        if "lokr_w1_b" in t:
            return int(t["lokr_w1_b"].shape[0])
        if "lokr_w2_b" in t:
            return int(t["lokr_w2_b"].shape[0])
    return None


def scale(module: NetworkModule) -> float:
    """alpha / rank (alpha / sqrt(rank) for rank-stabilised PEFT); 1 without an alpha or a rank."""
    r = rank(module)
    if module.alpha is None or not r:
        return 1.0
    return module.alpha / (math.sqrt(r) if module.rank_stabilised else r)


def delta_size(module: NetworkModule) -> tuple[int, int]:
    """(output channels, element count) of the weight change, from shapes alone (to check the fit cheaply)."""
    t = module.tensors
    if module.kind == "lora":
        down, up = t["down"], t["up"]
        kernel = math.prod(t["mid"].shape[2:]) if "mid" in t else math.prod(down.shape[2:])
        return int(up.shape[0]), int(up.shape[0] * down.shape[1] * kernel)
    if module.kind == "loha":
        tucker = "hada_t1" in t  # then hada_w1_a is (rank, out)
        out = int(t["hada_w1_a"].shape[1] if tucker else t["hada_w1_a"].shape[0])
        inner = int(t["hada_w1_b"].shape[1]) * (math.prod(t["hada_t1"].shape[2:]) if tucker else 1)
        return out, out * inner
    if module.kind == "lokr":
        w1 = (t["lokr_w1"].shape if "lokr_w1" in t else (t["lokr_w1_a"].shape[0], t["lokr_w1_b"].shape[1]))
        if "lokr_w2" in t:
            w2 = tuple(t["lokr_w2"].shape)
        elif "lokr_t2" in t:
            w2 = (t["lokr_w2_a"].shape[1], t["lokr_w2_b"].shape[1], *t["lokr_t2"].shape[2:])
        else:
            w2 = (t["lokr_w2_a"].shape[0], t["lokr_w2_b"].shape[1])
        return int(w1[0] * w2[0]), int(math.prod(w1) * math.prod(w2))
    weight = t["diff"] if module.kind == "full" else t["w_norm"]
    return int(weight.shape[0]) if weight.ndim else 1, int(weight.numel())


def _raw_delta(module: NetworkModule, device: torch.device) -> torch.Tensor:
    """The unscaled weight change, in whatever shape the factors give."""
    t = {role: _f32(v, device) for role, v in module.tensors.items() if role not in ("dora_scale", "magnitude")}
    if module.kind == "lora":
        down, up = t["down"].flatten(1), t["up"].flatten(1)
        if "mid" in t:
            return _tucker(t["mid"], down, up)
        return (up @ down).reshape(up.shape[0], *t["down"].shape[1:])
    if module.kind == "loha":
        # with a Tucker core (conv), the `_a` factors are stored (rank, out)
        w1 = (_tucker(t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"].T) if "hada_t1" in t
              else t["hada_w1_a"] @ t["hada_w1_b"])
        w2 = (_tucker(t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"].T) if "hada_t2" in t
              else t["hada_w2_a"] @ t["hada_w2_b"])
        return w1 * w2
    if module.kind == "lokr":
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        if "lokr_w2" in t:
            w2 = t["lokr_w2"]
        elif "lokr_t2" in t:
            w2 = _tucker(t["lokr_t2"], t["lokr_w2_b"], t["lokr_w2_a"].T)  # lokr_w2_a is (rank, out) here
        else:
            w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
        while w1.ndim < w2.ndim:
            w1 = w1.unsqueeze(-1)
        return torch.kron(w1.contiguous(), w2.contiguous())
    return t["diff"] if module.kind == "full" else t["w_norm"]


def weight_delta(module: NetworkModule, weight_shape: torch.Size, device: torch.device) -> torch.Tensor:
    """The scaled float32 weight change, shaped like the weight (before any multiplier and DoRA)."""
    delta = _raw_delta(module, device)
    if tuple(delta.shape) != tuple(weight_shape):
        if delta.numel() != math.prod(weight_shape):
            raise ValueError(f"{module.key}: change of shape {list(delta.shape)} does not fit weight "
                             f"{list(weight_shape)}")
        delta = delta.reshape(weight_shape)
    s = scale(module)
    return delta.mul_(s) if s != 1.0 else delta


def bias_delta(module: NetworkModule, device: torch.device) -> torch.Tensor | None:
    role = {"full": "diff_b", "norm": "b_norm"}.get(module.kind)
    tensor = module.tensors.get(role) if role else None
    return _f32(tensor, device) if tensor is not None else None


def dora_delta(original: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor,
               per_output: bool) -> torch.Tensor:
    """DoRA: the merged weight W + dW gets the learned norms (per output or per input channel); returns the change
    from W."""
    merged = original + delta
    magnitude = magnitude.to(device=merged.device, dtype=torch.float32)
    out_channels, in_channels = merged.shape[0], merged.shape[1] if merged.ndim > 1 else 1
    if per_output:
        norm = merged.reshape(out_channels, -1).norm(dim=1)
        shape = (out_channels,) + (1,) * (merged.ndim - 1)
    else:
        norm = merged.transpose(0, 1).reshape(in_channels, -1).norm(dim=1)
        shape = (1, in_channels) + (1,) * (merged.ndim - 2)
    if magnitude.numel() != norm.numel():
        raise ValueError(f"DoRA magnitudes of shape {list(magnitude.shape)} do not fit weight {list(merged.shape)}")
    return merged * (magnitude.reshape(shape) / norm.reshape(shape)) - original


def add_weight_delta_(target: torch.Tensor, original: torch.Tensor, module: NetworkModule,
                      multiplier: float) -> None:
    """target += multiplier * (this module's weight change), all float32 on target's device. `original` is the
    unpatched weight (float32, same device), which DoRA needs."""
    t = module.tensors
    if module.kind == "lora" and "mid" not in t and module.dora_scale is None:
        down = _f32(t["down"], target.device).flatten(1)
        up = _f32(t["up"], target.device).flatten(1)
        if target.numel() == up.shape[0] * down.shape[1] and target.shape[0] == up.shape[0]:
            target.view(up.shape[0], -1).addmm_(up, down, alpha=multiplier * scale(module))  # fused, no temporary
            return
    delta = weight_delta(module, target.shape, target.device)
    if module.dora_scale is not None:
        delta = dora_delta(original, delta, module.dora_scale, module.dora_per_output)
    target.add_(delta, alpha=multiplier)
