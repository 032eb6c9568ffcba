"""Brownian-tree noise for the SDE samplers (DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE), as A1111 1.10 makes it.

A1111 gives those samplers k-diffusion's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)` with the
seeds of the images in the batch: one torchsde Brownian tree per image, so an image's noise depends only on its own
seed (and not on the batch it is generated in). `BrownianNoise` is the same construction, written for this project:
a draw for the step sigma -> sigma_next is the tree's increment W(sigma_next) - W(sigma), scaled to unit variance.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torchsde

# The trees are queried at sigmas that float rounding puts a hair outside [sigma_min, sigma_max] (DPM++ SDE's
# exp(-(-log sigma)), the float32 ends); torchsde warns at every such step, in A1111 too. Harmless: not shown.
warnings.filterwarnings("ignore", message=r"Should have (ta>=t0|tb<=t1)", category=UserWarning, module="torchsde")


def _ascending(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(low, high, +1) when a < b, else (b, a, -1): a tree is queried on an increasing interval."""
    if a < b:
        return a, b, 1
    return b, a, -1


class BrownianNoise:
    """Unit-variance Brownian increments, one torchsde `BrownianTree` per image of the batch `x`, each seeded with
    that image's seed and spanning [sigma_min, sigma_max] (either order).

    `noise(sigma, sigma_next)` returns a tensor shaped like `x`: per image the increment of its tree between the two
    noise levels, divided by sqrt(|sigma_next - sigma|). Going down in sigma (the usual direction) flips the sign of
    the increment, exactly as k-diffusion's `BrownianTreeNoiseSampler` with a list of seeds does.
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: Sequence[int]):
        seeds = list(seeds)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"BrownianNoise needs one seed per image: {len(seeds)} seeds for a batch of {x.shape[0]}")
        low, high, self._orientation = _ascending(torch.as_tensor(sigma_min), torch.as_tensor(sigma_max))
        start = torch.zeros_like(x)[0]  # the value of every tree at `low`: one image's shape, dtype and device
        self._trees = [torchsde.BrownianTree(low, start, high, entropy=seed) for seed in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, orientation = _ascending(sigma, sigma_next)
        increments = torch.stack([tree(low, high) for tree in self._trees]) * (self._orientation * orientation)
        return increments / (sigma_next - sigma).abs().sqrt()
