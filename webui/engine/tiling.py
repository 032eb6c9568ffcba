"""A1111's "Tiling": seamless textures, by making every convolution of the UNet and the VAE wrap around the image's
edges (circular padding) for the run."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def circular_padding(*modules: torch.nn.Module, enabled: bool = True):
    """Within the block, each Conv2d of `modules` pads circularly; afterwards each is as it was."""
    if not enabled:
        yield
        return
    changed = []
    for module in modules:
        if module is None:
            continue
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.padding_mode != "circular" and any(layer.padding):
                changed.append((layer, layer.padding_mode))
                layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in changed:
            layer.padding_mode = mode
