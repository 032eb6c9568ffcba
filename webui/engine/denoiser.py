"""The model the samplers see: A1111's CFG denoiser around the UNet, for one batch.

Every sampler evaluates the model through here, so ControlNet, the extensions' cfg_denoiser hook, prompt editing
(which counts model evaluations), AND (composable diffusion), the 9-channel inpainting input, the inpainting mask
blend, Interrupt / Skip and live previews work the same with all of them.

- k-diffusion samplers (and LCM) call `denoiser(x, sigma)` and get the denoised latents (x0): the UNet sees x scaled
  by 1/sqrt(sigma^2 + 1) at the continuous timestep of sigma (A1111's CompVisDenoiser / CompVisVDenoiser; LCM's own
  table and scalings).
- Timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) call `denoiser.eps_model()` (x, t) and get the noise
  prediction at timestep t (a v-prediction converted to eps).
CFG is A1111's: uncond + sum of (cond_i - uncond) x weight_i x scale (the same in x0 and in eps space). With a mask
(inpainting), the kept part is the init latents: blended into each prediction (k-diffusion), or into x before each
evaluation (timestep samplers), as A1111 does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


class Interrupted(Exception):
    """Interrupt or Skip was pressed: the sampler stops and the batch keeps its last denoised latents."""


@dataclass
class UNetCall:
    """What one model evaluation needs besides x and t (built by the engine for a batch)."""
    unet: Callable  # (x_rows, c_in, t, evaluation index, hook_t) -> (raw UNet output rows, the x rows it was given:
    #                 an extension's cfg_denoiser hook may replace them, and x0 is then computed from those, as A1111)
    copies: int  # rows per image: the uncond (when CFG runs) and each AND sub-prompt
    combine: Callable  # (rows, cfg scale multiplier) -> the CFG-combined prediction [batch]
    batch: int
    uncond_rows: bool  # the first `batch` rows are the unconditional ones


class Denoiser:
    """`levels` turns sigmas into the UNet's input scale and timestep and its output into x0 (`unet_input`,
    `denoised`); `alphas_cumprod` / `prediction` serve the timestep samplers."""

    def __init__(self, call: UNetCall, levels, alphas_cumprod: torch.Tensor, prediction: str, control, *,
                 mask: torch.Tensor | None = None, init_latent: torch.Tensor | None = None):
        self.call, self.levels, self.control = call, levels, control
        self.mask, self.init_latent = mask, init_latent  # mask: 1 where the picture is regenerated
        self.prediction = prediction
        self.evaluations = 0
        self.last = None  # A1111's last_latent: what an interrupted batch is decoded from
        self.cond_scale_multiplier = 1.0  # DDIM CFG++ (timestep_samplers.CFGPPModel)
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None
        # called with the evaluation's sigma (timestep samplers: t) before the model runs: the refiner's switch
        # (refiner.py), which may replace `levels` and `prediction` for the evaluations that follow
        self.before_evaluation: Callable[[torch.Tensor], None] | None = None
        self._alphas = alphas_cumprod.to(torch.float32)
        self._on_device: dict = {}  # device -> (alphas, sqrt alphas, sqrt(1 - alphas)) there, made once

    # --- k-diffusion samplers ----------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._check_stop()
        if self.before_evaluation is not None:
            self.before_evaluation(sigma)
        c_in, t = self.levels.unet_input(sigma)
        rows, x_rows = self._evaluate(x, c_in, t, sigma)
        denoised_rows = self.levels.denoised(x_rows, sigma.repeat(self.call.copies), rows)
        denoised = self._combine(denoised_rows)
        if self.mask is not None:
            denoised = self.init_latent * (1 - self.mask) + self.mask * denoised
        self.last = self._first_cond(denoised_rows)
        return denoised

    # --- timestep samplers -------------------------------------------------------------------------------------
    def eps_model(self) -> "EpsModel":
        return EpsModel(self)

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_stop()
        if self.before_evaluation is not None:
            self.before_evaluation(t)
        if self.mask is not None:  # A1111 blends before the evaluation for these samplers
            x = self.init_latent * (1 - self.mask) + self.mask * x
        alphas, sqrt_alphas, sqrt_one_minus = self._tables(x.device)
        step = t.reshape(-1)[:1].to(device=x.device, dtype=torch.int64)  # A1111 truncates UniPC's fractional t
        ones = torch.ones(1, 1, 1, 1, dtype=x.dtype, device=x.device)
        rows, x_rows = self._evaluate(x, ones, t.reshape(-1)[0], t)
        if self.prediction == "v_prediction":
            rows = sqrt_alphas[step].view(-1, 1, 1, 1) * rows + sqrt_one_minus[step].view(-1, 1, 1, 1) * x_rows
        eps = self._combine(rows)
        a_t = alphas[step].view(-1, 1, 1, 1)
        self.last = (self._first_cond(x_rows) - (1 - a_t).sqrt() * self._first_cond(rows)) / a_t.sqrt()
        return eps

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            alphas = self._alphas
            self._on_device[device] = (alphas.to(device), alphas.double().sqrt().float().to(device),
                                       (1 - alphas.double()).sqrt().float().to(device))
        return self._on_device[device]

    # --- shared ------------------------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.control.interrupted or self.control.skip_requested:
            raise Interrupted()

    def _evaluate(self, x: torch.Tensor, c_in: torch.Tensor, t: torch.Tensor, hook_t: torch.Tensor):
        """(the UNet's output rows in x's dtype, the x rows it was given)."""
        copies = self.call.copies
        hook_rows = hook_t.reshape(-1).repeat(copies) if hook_t.dim() else hook_t
        rows, x_rows = self.call.unet(torch.cat([x] * copies),
                                      c_in.repeat(copies, 1, 1, 1) if c_in.shape[0] > 1 else c_in, t,
                                      self.evaluations, hook_rows)
        self.evaluations += 1
        return rows.to(x.dtype), x_rows

    def _combine(self, rows: torch.Tensor) -> torch.Tensor:
        if self.need_last_noise_uncond:
            self.last_noise_uncond = (rows[:self.call.batch] if self.call.uncond_rows else self._first_cond(rows)).clone()
        return self.call.combine(rows, self.cond_scale_multiplier)

    def _first_cond(self, rows: torch.Tensor) -> torch.Tensor:
        start = self.call.batch if self.call.uncond_rows else 0
        return rows[start:start + self.call.batch]


class EpsModel:
    """The denoiser as timestep samplers call it: (x, t) -> eps, with DDIM CFG++'s switches passed through."""

    _SHARED = ("cond_scale_multiplier", "need_last_noise_uncond", "last_noise_uncond")

    def __init__(self, denoiser: Denoiser):
        object.__setattr__(self, "_denoiser", denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._denoiser.eps(x, t)

    def __getattr__(self, name: str):
        if name in EpsModel._SHARED:
            return getattr(self._denoiser, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value) -> None:
        if name not in EpsModel._SHARED:
            raise AttributeError(name)
        setattr(self._denoiser, name, value)


class LCMParameterization:
    """LCM's table (`sampling.lcm.LCMNoiseLevels`) as the denoiser reads it: integer timesteps, eps output."""

    def __init__(self, table):
        self.table = table

    def unet_input(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_in = (1 / (sigma ** 2 + 1.) ** 0.5)[:, None, None, None]
        return c_in, self.table.sigma_to_t(sigma[:1])[0]

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.table.denoised(x, sigma, output)
