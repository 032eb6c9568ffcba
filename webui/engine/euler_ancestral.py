"""Euler a on any sigma schedule (Karras, exponential, beta...), which diffusers' own Euler a does not offer.

Same step as k-diffusion's euler_ancestral: an Euler step to the ancestral target sigma, then fresh noise.
"""
from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor


class EulerAncestralSigmaScheduler(EulerDiscreteScheduler):
    def step(self, model_output, timestep, sample, generator=None, return_dict=True, **kwargs):
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self.step_index].item()
        sigma_next = self.sigmas[self.step_index + 1].item()
        work = sample.float()
        if self.config.prediction_type == "v_prediction":
            denoised = model_output.float() * (-sigma / (sigma ** 2 + 1) ** 0.5) + work / (sigma ** 2 + 1)
        else:
            denoised = work - sigma * model_output.float()
        sigma_up = 0.0
        if sigma_next > 0:
            sigma_up = min(sigma_next, (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
        sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
        x = work + (work - denoised) / sigma * (sigma_down - sigma)
        if sigma_up > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=torch.float32)
            x = x + noise * sigma_up
        self._step_index += 1
        x = x.to(model_output.dtype)
        if not return_dict:
            return (x,)
        return EulerDiscreteSchedulerOutput(prev_sample=x, pred_original_sample=denoised)
