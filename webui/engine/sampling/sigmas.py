"""The discrete noise levels of an SD checkpoint, as A1111 sees them (k-diffusion's CompVis denoiser).

A1111 computes the checkpoint's alphas_cumprod from its beta schedule in float64 and keeps them in float32; the
1000 sigmas are sqrt((1 - a) / a). A continuous timestep t maps to a sigma by interpolating log sigma between the
neighbouring integer timesteps, and back the same way; the UNet receives the continuous t.
"""
from __future__ import annotations

import math

import torch


def alphas_cumprod_for(config: dict) -> torch.Tensor:
    """alphas_cumprod [num_train_timesteps] (float32) for a diffusers scheduler config, computed like the LDM code
    A1111 runs: betas in float64 (scaled_linear = squares of a linspace of square roots), cumulative product, then
    float32."""
    steps = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = torch.linspace(math.sqrt(start), math.sqrt(end), steps, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta schedule {kind!r}")
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class SigmaTable:
    """A table of noise levels (ascending, float32) and their logs; log sigma interpolates between entries."""

    def __init__(self, sigmas: torch.Tensor):
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()
        self._log_sigmas_on: dict = {}  # device -> log_sigmas there (copied once, not at every evaluation)

    def _log_sigmas(self, device) -> torch.Tensor:
        if device not in self._log_sigmas_on:
            self._log_sigmas_on[device] = self.log_sigmas.to(device)
        return self._log_sigmas_on[device]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def _sigma_at(self, position: torch.Tensor) -> torch.Tensor:
        """The level at a fractional table position: log sigma linear between the entries around it."""
        log_sigmas = self._log_sigmas(position.device)
        low, high, w = position.floor().long(), position.ceil().long(), position.frac()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


class NoiseLevels(SigmaTable):
    """sigmas [1000] ascending (float32) with k-diffusion's t <-> sigma interpolation."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str = "epsilon"):
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        super().__init__(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
        self.prediction = prediction  # "epsilon" or "v_prediction"

    @classmethod
    def from_config(cls, config: dict) -> "NoiseLevels":
        return cls(alphas_cumprod_for(config), config.get("prediction_type", "epsilon"))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep(s) for sigma(s): linear in log sigma between the two integer timesteps around it."""
        log_sigma = sigma.log()
        log_sigmas = self._log_sigmas(sigma.device)
        above = (log_sigma - log_sigmas[:, None]) >= 0  # [1000, n]: table entries at or below each sigma
        low = above.cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high = low + 1
        lo, hi = log_sigmas[low], log_sigmas[high]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * high).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self._sigma_at(t.float())

    def uniform(self, n: int) -> torch.Tensor:
        """n sigmas at t = linspace(999, 0, n), then 0: the denoiser's own ("Uniform") schedule."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])

    def unet_input(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_in [batch, 1, 1, 1], the continuous timestep of the batch's sigma): the UNet sees x * c_in at t."""
        return self.scalings(sigma)[2], self.sigma_to_t(sigma[:1])[0]

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """x0 from the UNet's output for x at sigma ([batch]): x + eps x c_out, or v x c_out + x x c_skip."""
        c_skip, c_out, _ = self.scalings(sigma)
        if self.prediction == "v_prediction":
            return output * c_out + x * c_skip
        return x + output * c_out

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in), each shaped [batch, 1, 1, 1]: denoised = c_skip * x + c_out * model(c_in * x)."""
        sigma = sigma[:, None, None, None]
        if self.prediction == "v_prediction":
            c_skip = 1 / (sigma ** 2 + 1)
            c_out = -sigma / (sigma ** 2 + 1) ** 0.5
        else:
            c_skip, c_out = torch.ones_like(sigma), -sigma
        return c_skip, c_out, 1 / (sigma ** 2 + 1) ** 0.5
