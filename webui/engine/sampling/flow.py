"""Rectified-flow noise levels (FLUX.1 and other flow-matching families) in k-diffusion's terms.

A latent at noise level sigma in (0, 1] is x = (1 - sigma) * x0 + sigma * noise; the network predicts the velocity
v = noise - x0 at its timestep sigma, so x0 = x - sigma * v. k-diffusion's deterministic samplers then integrate
dx/dsigma = (x - x0) / sigma = v unchanged: Euler on this parameterization is exactly the flow-matching Euler step.

The schedule types read a 1000-entry table of shifted sigmas (sigma(t) for t = 1/1000 ... 1), like the DDPM table
of the SD families; "Simple" is computed exactly, sigma(1 - i / n), what FluxPipeline and BFL's reference sampler
walk. The model's own schedule ("Uniform", what Automatic gives) is its diffusers pipeline's: Simple for FLUX.1,
and for SD3 the flow-matching scheduler's default, sigma(t) for t evenly from 1 down to the table's smallest
shifted sigma (diffusers' StableDiffusion3Pipeline).
"""
from __future__ import annotations

import math

import torch

from ...models.families import FlowShift
from .sigmas import SigmaTable


def shift_for(spec: FlowShift, width: int, height: int) -> float:
    """The multiplicative shift s for an image of width x height pixels (latents 1/8, tokens of 2x2 latents)."""
    if not spec.dynamic:
        return float(spec.shift)
    tokens = (height // 16) * (width // 16)
    slope = (spec.max_shift - spec.base_shift) / (spec.max_seq_len - spec.base_seq_len)
    mu = tokens * slope + (spec.base_shift - slope * spec.base_seq_len)
    return math.exp(mu)


class FlowLevels(SigmaTable):
    """The noise levels of a flow model under shift `shift` (the levels object the denoiser and schedules use)."""

    prediction = "flow"

    def __init__(self, shift: float = 1.0, table_size: int = 1000, own: str = "Simple"):
        self.shift = float(shift)
        self.own = own  # the family's own schedule: "Simple" (FLUX.1) or "Uniform" (diffusers' scheduler default)
        t = torch.arange(1, table_size + 1, dtype=torch.float64) / table_size
        super().__init__(self._shifted(t).to(torch.float32))
        self.alphas_cumprod = (1 - self.sigmas) ** 2 / ((1 - self.sigmas) ** 2 + self.sigmas ** 2)  # unused: no
        # timestep sampler runs a flow model; kept so code that reads it sees a well-formed table

    def _shifted(self, t):
        s = self.shift
        return s * t / (1 + (s - 1) * t)

    def _unshifted(self, sigma: torch.Tensor) -> torch.Tensor:
        s = self.shift
        return sigma / (s - (s - 1) * sigma)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The table position (0 ... 999) of sigma, continuous."""
        return self._unshifted(sigma.double()).to(sigma.dtype) * len(self.sigmas) - 1

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self._shifted((t.double() + 1) / len(self.sigmas)).to(torch.float32)

    def uniform(self, n: int) -> torch.Tensor:
        if self.own == "Simple":
            return self.simple(n)
        t = torch.linspace(1.0, float(self.sigmas[0]), n, dtype=torch.float64)
        return torch.cat([self._shifted(t).to(torch.float32), torch.zeros(1)])

    def simple(self, n: int) -> torch.Tensor:
        """sigma(1 - i / n) for i = 0 ... n - 1, then 0 (computed in float64, stored as float32, as diffusers)."""
        t = 1.0 - torch.arange(n, dtype=torch.float64) / n
        return torch.cat([self._shifted(t).to(torch.float32), torch.zeros(1)])

    def unet_input(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network sees x itself at timestep sigma."""
        return torch.ones_like(sigma)[:, None, None, None], sigma[:1].reshape(())

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return x - output.to(x.dtype) * sigma[:, None, None, None].to(x.dtype)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
        """x0 brought to noise level sigma (img2img's start)."""
        return x0 * (1 - sigma) + noise * sigma


@torch.no_grad()
def euler_ancestral_flow(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """Euler a for rectified flow: a deterministic step down to sigma_down = sigma_next * (1 - eta * (1 -
    sigma_next / sigma)), then the latent is scaled and fresh noise added so it lies exactly at sigma_next again
    (x = (1 - s) x0 + s n has signal weight 1 - s and noise weight s; rescaling the signal weight from 1 - sigma_down
    to 1 - sigma_next leaves noise a * sigma_down, topped up to sigma_next by independent noise)."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
            continue
        sigma_down = sigma_next * (1 - eta * (1 - sigma_next / sigma))
        ratio = sigma_down / sigma
        x = x * ratio + denoised * (1 - ratio)  # the ODE's exact step for a constant x0 prediction
        if eta > 0:
            scale = (1 - sigma_next) / (1 - sigma_down)
            top_up = (sigma_next ** 2 - (scale * sigma_down) ** 2).clamp(min=0) ** 0.5
            x = x * scale + noise_sampler(sigma, sigma_next) * s_noise * top_up
    return x
