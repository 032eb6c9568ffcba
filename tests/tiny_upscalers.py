"""Tiny image upscaler files in a real architecture's layout, for tests: Real-ESRGAN "compact" (SRVGGNetCompact), the
layout of `realesr-general-x4v3.pth` and the `*-compact` models, with a few features so it runs in milliseconds."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def compact_state_dict(scale: int = 2, num_feat: int = 8, num_conv: int = 2, channels: int = 3,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact's keys: `body.0` the first conv, `body.1` its PReLU, then num_conv (conv, PReLU) pairs, and
    last a conv with channels * scale^2 outputs (pixel-shuffled). Small random weights, so the output is the nearest
    upscale plus a visible residual."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    index, inputs = 0, channels
    for _ in range(num_conv + 1):
        state[f"body.{index}.weight"] = torch.randn(num_feat, inputs, 3, 3, generator=generator) * 0.15
        state[f"body.{index}.bias"] = torch.randn(num_feat, generator=generator) * 0.02
        state[f"body.{index + 1}.weight"] = torch.full((num_feat,), 0.25)
        index, inputs = index + 2, num_feat
    outputs = channels * scale * scale
    state[f"body.{index}.weight"] = torch.randn(outputs, num_feat, 3, 3, generator=generator) * 0.15
    state[f"body.{index}.bias"] = torch.randn(outputs, generator=generator) * 0.02
    return state


def write_compact(path: Path, scale: int = 2, seed: int = 0, **kwargs) -> Path:
    """Write a tiny compact upscaler as `.pth` (a pickled state dict) or `.safetensors`, by the path's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = compact_state_dict(scale=scale, seed=seed, **kwargs)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
