"""The noise table and output scalings A1111 1.10 uses for its LCM sampler (Latent Consistency Models, Luo et al.,
2023), written for this project.

LCM models are distilled on 50 of the 1000 training timesteps (every 20th, from 19 to 999). For the "LCM" sampler
A1111 swaps the checkpoint's usual denoiser for one over that 50-level table:
- noise level <-> timestep: a sigma maps to the integer timestep 20 k + 19 of the table level k nearest it in
  log sigma; a (continuous) timestep maps back by interpolating log sigma between table levels;
- the UNet gets x * c_in (c_in = 1 / sqrt(sigma^2 + 1)) and that integer timestep; its output is read as eps
  (for every checkpoint, v-prediction ones included), giving x0 = x - sigma * eps;
- the result is the consistency-model boundary condition with sigma_data 0.5 and the timestep scaled by 10:
  denoised = c_out * x0 + c_skip * x, c_skip = 0.25 / ((10 t)^2 + 0.25), c_out = 10 t / sqrt((10 t)^2 + 0.25).
Classifier-free guidance then combines these `denoised` outputs as for any other sampler.
The engine's `denoiser.LCMParameterization` makes the UNet input from this table (`sigma_to_t`) and reads
the output with `LCMNoiseLevels.denoised`.
"""
from __future__ import annotations

import torch

from .sigmas import SigmaTable

TRAIN_STEPS = 1000
LCM_STEPS = 50  # "LCM original timesteps"


class LCMNoiseLevels(SigmaTable):
    """The 50 LCM noise levels (ascending, float32) of a checkpoint, its timestep mapping and its output scalings.

    `alphas_cumprod` is the checkpoint's [1000] table (see `sigmas.alphas_cumprod_for`); level k uses
    alphas_cumprod[20 k + 19]."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.skip = TRAIN_STEPS // LCM_STEPS
        chosen = torch.arange(LCM_STEPS, device=alphas_cumprod.device) * self.skip + (self.skip - 1)
        alphas = alphas_cumprod.to(torch.float32)[chosen]
        super().__init__(((1 - alphas) / alphas) ** 0.5)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Integer training timesteps (int64, shaped like sigma) of the table levels nearest `sigma` in log sigma."""
        distances = (sigma.log() - self._log_sigmas(sigma.device)[:, None]).abs()
        return distances.argmin(dim=0).view(sigma.shape) * self.skip + (self.skip - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise levels of training timesteps t (any real values): table position (t - 19) / 20, clamped to the
        table, with log sigma interpolated linearly between neighbouring levels."""
        position = torch.clamp(((t - (self.skip - 1)) / self.skip).float(), min=0, max=len(self.sigmas) - 1)
        return self._sigma_at(position)

    def uniform(self, n: int, device=None) -> torch.Tensor:
        """A1111's "Automatic" schedule for LCM: n levels at timesteps linspace(999, 19, n), then 0."""
        start = self.sigma_to_t(self.sigmas[-1:])[0]
        end = self.sigma_to_t(self.sigmas[:1])[0]
        t = torch.linspace(start, end, n, device=device if device is not None else self.sigmas.device)
        levels = self.t_to_sigma(t)
        return torch.cat([levels, levels.new_zeros([1])])

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The LCM prediction for x at levels sigma ([batch]) from the UNet output eps for x * c_in
        (c_in = 1 / sqrt(sigma^2 + 1)) at the timesteps `sigma_to_t(sigma)`."""
        expand = (...,) + (None,) * (x.ndim - 1)
        x0 = x + eps * (-sigma)[expand]
        scaled_t = self.sigma_to_t(sigma)[expand] * 10.0
        c_skip = 0.5 ** 2 / (scaled_t ** 2 + 0.5 ** 2)
        c_out = scaled_t / (scaled_t ** 2 + 0.5 ** 2) ** 0.5
        return c_out * x0 + c_skip * x
