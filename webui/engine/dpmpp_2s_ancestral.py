"""DPM++ 2S a: the second-order single-step DPM-Solver++ with ancestral noise (k-diffusion's dpmpp_2s_ancestral).

diffusers has no ancestral single-step solver, so this is one, in diffusers' scheduler protocol. It reuses
Euler's sigma schedules (uniform, Karras, exponential, trailing) and evaluates the model twice per step: at the
step's sigma and at the log-midpoint towards the ancestral target sigma.
"""
from __future__ import annotations

import math

import torch
from diffusers import EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor


class DPMPP2SAncestralScheduler(EulerDiscreteScheduler):
    order = 1

    def set_timesteps(self, num_inference_steps: int, device=None, **kwargs):
        super().set_timesteps(num_inference_steps, device=device, **kwargs)
        self._device = device
        self._plan(0)

    def _plan(self, first_step: int) -> None:
        """The list of model evaluations: (sigma, stage, step) from step `first_step` on."""
        sigmas = self.sigmas.tolist()
        log_sigmas = torch.log(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()
        evals = []
        for i in range(first_step, len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            evals.append((sigma, 0, i))
            if self._ancestral(sigma, sigma_next)[0] > 0:
                evals.append((math.sqrt(sigma * self._ancestral(sigma, sigma_next)[0]), 1, i))
        self._evals = evals
        self._cursor = 0
        ts = [float(self._sigma_to_t(torch.tensor(s).numpy(), log_sigmas)) for s, _, _ in evals]
        self.timesteps = torch.tensor(ts, dtype=torch.float32, device=self._device)
        self._first_step = first_step

    @staticmethod
    def _ancestral(sigma: float, sigma_next: float) -> tuple[float, float]:
        if sigma_next == 0:
            return 0.0, 0.0
        up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
        return math.sqrt(sigma_next ** 2 - up ** 2), up

    def start_at_step(self, step: int) -> None:
        """img2img: run only the schedule's steps from `step` on."""
        self._plan(step)

    @property
    def init_noise_sigma(self):
        sigma = self._evals[0][0] if getattr(self, "_evals", None) else float(self.sigmas.max())
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return sigma
        return (sigma ** 2 + 1) ** 0.5

    def add_noise(self, original_samples, noise, timesteps):
        """Noise to the level of the next model evaluation (the first one before sampling starts)."""
        return original_samples + noise * self._evals[min(self._cursor, len(self._evals) - 1)][0]

    def scale_model_input(self, sample, timestep=None):
        sigma = self._evals[self._cursor][0]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    def _denoised(self, model_output, sample, sigma):
        if self.config.prediction_type == "v_prediction":
            return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
        return sample - sigma * model_output

    def step(self, model_output, timestep, sample, generator=None, return_dict=True, **kwargs):
        sigma_eval, stage, i = self._evals[self._cursor]
        self._cursor += 1
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        sigma_down, sigma_up = self._ancestral(sigma, sigma_next)
        denoised = self._denoised(model_output.float(), sample.float(), sigma_eval)
        if stage == 0 and sigma_down == 0:  # last step: straight to the denoised image
            x = denoised
        elif stage == 0:  # first half: move to the midpoint, where the model is evaluated next
            self._step_start = sample.float()
            h = math.log(sigma) - math.log(sigma_down)
            x = (sigma_eval and math.sqrt(sigma * sigma_down) / sigma) * sample.float() - math.expm1(-h / 2) * denoised
        else:
            h = math.log(sigma) - math.log(sigma_down)
            x = (sigma_down / sigma) * self._step_start - math.expm1(-h) * denoised
        if (stage == 1 or sigma_down == 0) and sigma_next > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=torch.float32)
            x = x + noise * sigma_up
        x = x.to(model_output.dtype)
        if not return_dict:
            return (x,)
        from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
        return EulerDiscreteSchedulerOutput(prev_sample=x, pred_original_sample=denoised)
