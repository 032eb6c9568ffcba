"""Seeds and initial noise, as A1111 makes them.

Every image has its own generator seeded with its own seed, so an image can be reproduced alone from its infotext
whatever the batch it was made in. The same generator then supplies that image's ancestral/SDE step noise.
"""
from __future__ import annotations

import random

import torch

MAX_SEED = 4294967294


def fix_seed(seed: int | None) -> int:
    """-1 (or None) means a random seed, as A1111."""
    if seed is None or int(seed) == -1:
        return random.randrange(MAX_SEED)
    return int(seed)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (A1111's variation-seed blend)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - t) + high * t
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def rng_device(source: str, device: torch.device) -> torch.device:
    """"GPU" draws on the CUDA device when there is one; "CPU" always on the CPU (same numbers on every machine)."""
    return device if source == "GPU" and device.type == "cuda" else torch.device("cpu")


def image_noise(generators: list[torch.Generator], subseeds: list[int], subseed_strength: float,
                shape: tuple[int, int, int], seed_resize_from: tuple[int, int] | None, source: str,
                device: torch.device, vae_scale: int = 8) -> torch.Tensor:
    """Initial noise [batch, C, H, W], image i drawn from generators[i] (seeded with its seed).

    With a variation strength, each image's noise is slerped towards noise from its subseed. `seed_resize_from` is
    (width, height) in pixels: the noise is drawn at that size and pasted into the centre of noise drawn at the real
    size, so a composition found at one size survives at another.
    """
    where = rng_device(source, device)
    channels, height, width = shape
    from_shape = shape
    if seed_resize_from and seed_resize_from[0] > 0 and seed_resize_from[1] > 0:
        from_shape = (channels, seed_resize_from[1] // vae_scale, seed_resize_from[0] // vae_scale)
    noises = []
    for i, generator in enumerate(generators):
        subnoise = None
        if subseed_strength > 0:
            subnoise = torch.randn(from_shape, generator=_generator(subseeds[i], where), device=where)
        noise = torch.randn(from_shape, generator=generator, device=where)
        if subnoise is not None:
            noise = slerp(subseed_strength, noise.unsqueeze(0), subnoise.unsqueeze(0))[0]
        if from_shape != shape:
            canvas = torch.randn(shape, generator=generator, device=where)
            dx, dy = (width - from_shape[2]) // 2, (height - from_shape[1]) // 2
            w, h = min(width, from_shape[2]), min(height, from_shape[1])
            tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
            canvas[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
            noise = canvas
        noises.append(noise)
    return torch.stack(noises).to(device)


def make_generators(seeds: list[int], source: str, device: torch.device) -> list[torch.Generator]:
    where = rng_device(source, device)
    return [_generator(s, where) for s in seeds]
