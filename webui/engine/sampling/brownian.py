"""Brownian-tree noise for the SDE samplers (DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE), as A1111 1.10 makes it.

A1111 gives those samplers k-diffusion's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)` with the
seeds of the images in the batch: one torchsde Brownian tree per image, so an image's noise depends only on its own
seed (and not on the batch it is generated in). `BrownianNoise` is the same construction, written for this project:
a draw for the step sigma -> sigma_next is the tree's increment W(sigma_next) - W(sigma), scaled to unit variance.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Sequence

import torch
import torchsde
from torchsde._brownian import brownian_interval  # private: the one place the trees draw their normals

# The trees are queried at sigmas that float rounding puts a hair outside [sigma_min, sigma_max] (DPM++ SDE's
# exp(-(-log sigma)), the float32 ends); torchsde warns at every such step, in A1111 too. Harmless: not shown.
warnings.filterwarnings("ignore", message=r"Should have (ta>=t0|tb<=t1)", category=UserWarning, module="torchsde")


# A1111 makes the trees draw their normals from the run's random source (CPU, GPU or NV): it replaces torchsde's
# module-level `_randn(size, dtype, device, seed)`. We do the same, but only inside `BrownianNoise`'s own calls
# (a context variable, so other threads and other torchsde users keep torchsde's own draws). tests/test_k_samplers.py
# checks the hook still reaches torchsde's draws, so a torchsde upgrade that renames it fails a test, not a picture.
_SOURCE: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("brownian_randn", default=None)
_TORCHSDE_RANDN = brownian_interval._randn


def _randn(size, dtype, device, seed):
    source = _SOURCE.get()
    if source is None:
        return _TORCHSDE_RANDN(size, dtype, device, seed)
    return source(int(seed), tuple(size)).to(device=device, dtype=dtype)


brownian_interval._randn = _randn


@contextlib.contextmanager
def _drawing_from(source: Callable | None):
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


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

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: Sequence[int],
                 randn: Callable[[int, tuple], torch.Tensor] | None = None):
        """`randn(seed, shape)`: where the trees' normals come from (A1111: the run's random source); None:
        torchsde's own (a torch generator on x's device)."""
        self._randn = randn
        seeds = list(seeds)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"BrownianNoise needs one seed per image: {len(seeds)} seeds for a batch of {x.shape[0]}")
        low, high, self._orientation = _ascending(torch.as_tensor(sigma_min), torch.as_tensor(sigma_max))
        start = torch.zeros_like(x)[0]  # the value of every tree at `low`: one image's shape, dtype and device
        with _drawing_from(self._randn):
            self._trees = [torchsde.BrownianTree(low, start, high, entropy=seed) for seed in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, orientation = _ascending(sigma, sigma_next)
        with _drawing_from(self._randn):
            increments = torch.stack([tree(low, high) for tree in self._trees]) * (self._orientation * orientation)
        return increments / (sigma_next - sigma).abs().sqrt()
