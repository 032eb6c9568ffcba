"""A1111's noise for one batch: initial noise and every random draw a sampler makes, image by image.

Each image has its own stream seeded with its seed, so an image does not depend on the batch it was made in. The
first draw is the initial noise (with the variation seed slerped in, and "resize seed from" pasted into the
centre); later draws (ancestral samplers, churn, DDIM's eta) continue the same stream, or a stream reseeded with
seed + ENSD (`eta_noise_seed_delta`) when that option is set. Sources: "CPU" (torch's CPU generator: the same
numbers on every machine), "GPU" (the CUDA generator when there is one, else the CPU's) and "NV" (NVIDIA's Philox
generator computed on the CPU, so GPU-made A1111 pictures reproduce anywhere).
"""
from __future__ import annotations

import numpy as np
import torch

SOURCES = ("GPU", "CPU", "NV")


class _Stream:
    """One image's random stream in the chosen source."""

    def __init__(self, seed: int, source: str, device: torch.device):
        self.device = device
        if source == "NV":
            from .rng_philox import PhiloxGenerator
            self.philox, self.generator = PhiloxGenerator(int(seed)), None
        else:
            where = device if source == "GPU" and device.type == "cuda" else torch.device("cpu")
            self.philox, self.generator = None, torch.Generator(device=where).manual_seed(int(seed))

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.philox is not None:
            return torch.from_numpy(np.ascontiguousarray(self.philox.randn(shape), dtype=np.float32))
        return torch.randn(shape, generator=self.generator, device=self.generator.device)


def seeded_randn(seed: int, shape: tuple[int, ...], source: str, device: torch.device) -> torch.Tensor:
    """The first draw of a stream seeded with `seed` (A1111's randn_local), on `device`."""
    return _Stream(seed, source, device).randn(tuple(shape)).to(device)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend of one image's [C, H, W] noises: normalised along dim 1 (the height axis, as
    A1111 does on the unbatched tensor); nearly parallel noises are mixed linearly, with A1111's weights."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return ((torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low
            + (torch.sin(strength * omega) / so).unsqueeze(1) * high)


class BatchNoise:
    """A1111's ImageRNG: `next()` gives [batch, C, H, W]; the first call is the initial noise."""

    def __init__(self, shape: tuple[int, int, int], seeds: list[int], subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, resize_from: tuple[int, int] = (0, 0), source: str = "CPU",
                 device: torch.device = torch.device("cpu"), ensd: int = 0, vae_scale: int = 8):
        self.shape = tuple(int(n) for n in shape)
        self.seeds, self.subseeds = [int(s) for s in seeds], list(subseeds or [])
        self.subseed_strength, self.resize_from = float(subseed_strength), resize_from
        self.source, self.device, self.ensd, self.vae_scale = source, device, int(ensd or 0), vae_scale
        self.streams = [_Stream(seed, source, device) for seed in self.seeds]
        self.draws = 0  # how many times next() was called

    def _fresh(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        return _Stream(seed, self.source, self.device).randn(shape)

    def _first(self) -> torch.Tensor:
        channels, height, width = self.shape
        resize_w, resize_h = self.resize_from
        resized = resize_w > 0 and resize_h > 0
        noise_shape = (channels, int(resize_h) // self.vae_scale, int(resize_w) // self.vae_scale) if resized \
            else self.shape
        images = []
        for i, (seed, stream) in enumerate(zip(self.seeds, self.streams)):
            subnoise = None
            if self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                subnoise = self._fresh(subseed, noise_shape)
            noise = self._fresh(seed, noise_shape) if noise_shape != self.shape else stream.randn(self.shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise.to(noise.device))
            if noise_shape != self.shape:  # "resize seed from": the noise found at that size, in the centre
                canvas = stream.randn(self.shape)
                dx, dy = (width - noise_shape[2]) // 2, (height - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
                canvas[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
                noise = canvas
            images.append(noise)
        if self.ensd:  # later draws come from streams reseeded with seed + ENSD
            self.streams = [_Stream(seed + self.ensd, self.source, self.device) for seed in self.seeds]
        return torch.stack(images).to(self.device)

    def next(self) -> torch.Tensor:
        self.draws += 1
        if self.draws == 1:
            return self._first()
        return torch.stack([stream.randn(self.shape) for stream in self.streams]).to(self.device)

    def sampler(self, *_ignored) -> torch.Tensor:
        """As a k-diffusion noise sampler (`noise_sampler(sigma, sigma_next)`): the next draw."""
        return self.next()
