"""A1111's timestep samplers over integer timesteps: DDIM, DDIM CFG++ and PLMS (UniPC lives in `unipc.py`).

What A1111 1.10 does, and this module repeats:

- The schedule is `a1111_timesteps(steps)`: every `1000 // steps`-th integer timestep from 0, plus one, clipped to
  [0, 999] (steps + 1 when "discard penultimate sigma" is on). It is ascending; the samplers walk it from the top and
  take `len(timesteps) - 1` steps, each from `timesteps[k]` to `timesteps[k - 1]` (k = len - 1 ... 1). The lowest
  entry is never given to the model: the last step lands on the noise level of `timesteps[0]` (timestep 1). When
  1000 is not a multiple of `steps` the list has one more entry than `steps` (6 steps: 1, 167, ..., 997: 6 sampler
  steps; 4 steps: 1, 251, 501, 751: only 3).
- `model(x, t)` returns the noise prediction eps (CFG already combined) for the batch `x` at `t`: a tensor [batch]
  in x's dtype holding the integer timestep (`timestep * x.new_ones(batch)`).
- DDIM's step: x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t);
  x' = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z, with
  sigma = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)). `noise(x)` (z) is drawn at every step with eta
  above 0, as A1111 calls `torch.randn_like` there; at eta 0 A1111's draw is multiplied by 0 and nothing else reads
  the stream, so it is not made.
- The per-step constants come from `alphas_cumprod` (float32, as the checkpoint holds them): a_t and sqrt(1 - a_t)
  in float32, a_prev in float64 (float32 on MPS and XPU) and sigma in float64; each is then taken as a Python float
  and broadcast in x's dtype, so the arithmetic on latents is in x's dtype.

The callback gets A1111's dict once per step: {'x': the new latent, 'i': the step index from 0, 'sigma': 0,
'sigma_hat': 0, 'denoised': the step's x0 prediction}.

img2img (A1111's `CompVisSampler.sample_img2img`, t_enc = int(min(denoising, 0.999) x steps)): the sampler gets the
first t_enc entries of `a1111_timesteps(steps)` and starts from the init latents noised to the level of entry t_enc,
one above the first timestep the model sees (A1111's off-by-one, kept). The engine sets this up (`plan_pass` in
webui/engine/samplers.py gives the slice and that timestep; engine.py noises the latents).
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, Union

import torch

__all__ = ["CFGPPModel", "a1111_timesteps", "ddim", "ddim_cfgpp", "plms", "CFGPP_SCALE_MULTIPLIER"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]
Timesteps = Union[torch.Tensor, Sequence[int]]

CFGPP_SCALE_MULTIPLIER = 1 / 12.5
"""DDIM CFG++ multiplies the CFG scale by this (maps a CFG of 0..12.5 to CFG++'s 0..1)."""


class CFGPPModel(Protocol):
    """What `ddim_cfgpp` needs from the engine's model wrapper, besides `__call__(x, t) -> eps`.

    - `cond_scale_multiplier`: the wrapper combines its predictions as
      uncond + (cond - uncond) * (weight * (cfg_scale * cond_scale_multiplier)) (A1111 multiplies the CFG scale
      before handing it to its combine; 1.0 normally; the Image CFG of an edit model's combine is not scaled; a
      step that skips the uncond pass combines with scale 1.0 as usual).
    - `need_last_noise_uncond`: when true the wrapper keeps, on every call, a copy of the unconditional eps of the
      batch (the uncond rows of the UNet output, after any cfg_denoised hooks, before the combine; on a step that
      skipped the uncond pass, the cond rows that stand in for it) in `last_noise_uncond`.
    `ddim_cfgpp` sets the two switches before its first call and puts their old values back when it ends.
    """

    cond_scale_multiplier: float
    need_last_noise_uncond: bool
    last_noise_uncond: Optional[torch.Tensor]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def a1111_timesteps(steps: int, discard_penultimate: bool = False, device=None) -> torch.Tensor:
    """A1111's timestep list for `steps` (int64, ascending): clip(range(0, 1000, 1000 // steps) + 1, 0, 999)."""
    steps = int(steps) + (1 if discard_penultimate else 0)
    if steps < 1 or steps > 1000:
        raise ValueError(f"timestep samplers take 1 to 1000 steps (999 when discarding the penultimate); got {steps}")
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps)), device=device) + 1, 0, 999)


def _wide_float(x: torch.Tensor) -> torch.dtype:
    """The dtype A1111 keeps a_prev in: float64, except where the device has none."""
    return torch.float32 if x.device.type in ("mps", "xpu") else torch.float64


class _Schedule:
    """The per-step constants of DDIM and PLMS for one timestep list, looked up by list index."""

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float = 0.0):
        self.timesteps = timesteps
        index = timesteps.to(alphas_cumprod.device)
        previous = torch.cat([index.new_zeros(1), index[:-1]])  # the list shifted up by one, timestep 0 first
        self.a = alphas_cumprod[index]
        self.a_prev = alphas_cumprod[previous].to(_wide_float(x))
        self.sqrt_one_minus_a = torch.sqrt(1 - self.a)
        self.sigma = None
        if eta is not None:
            a, a_prev = self.a.cpu(), self.a_prev.cpu()
            # A1111 mixes numpy and torch here; these are the dtypes and operations that mix works out to
            # ((1 - a) is inverted in float32 before the float64 product).
            ratio = torch.reciprocal(1 - a) * (1 - a_prev)
            self.sigma = eta * torch.sqrt(ratio * (1 - a / a_prev))
        self.ones_x = x.new_ones((x.shape[0],) + (1,) * (x.dim() - 1))
        self.ones_t = x.new_ones((x.shape[0],))

    def t(self, index: int) -> torch.Tensor:
        return self.timesteps[index].item() * self.ones_t

    def constants(self, index: int):
        """(a_t, a_prev, sqrt(1 - a_t)), each [batch, 1, ...] in x's dtype."""
        return (self.a[index].item() * self.ones_x, self.a_prev[index].item() * self.ones_x,
                self.sqrt_one_minus_a[index].item() * self.ones_x)

    def sigma_at(self, index: int) -> torch.Tensor:
        return self.sigma[index].item() * self.ones_x


def _as_timesteps(timesteps: Timesteps, x: torch.Tensor) -> torch.Tensor:
    if isinstance(timesteps, torch.Tensor):
        return timesteps.to(dtype=torch.int64)
    return torch.as_tensor(list(timesteps), dtype=torch.int64, device=x.device)


def _report(callback: Optional[Callback], i: int, x: torch.Tensor, denoised: Optional[torch.Tensor]) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": denoised})


def _ddim_loop(model, x, timesteps, alphas_cumprod, noise, callback, eta, direction_from):
    timesteps = _as_timesteps(timesteps, x)
    schedule = _Schedule(alphas_cumprod, timesteps, x, eta)
    last = len(timesteps) - 1
    for i in range(last):
        index = last - i
        eps = model(x, schedule.t(index))
        direction = direction_from(eps)
        a_t, a_prev, sqrt_one_minus_a_t = schedule.constants(index)
        sigma_t = schedule.sigma_at(index)

        x0 = (x - sqrt_one_minus_a_t * eps) / a_t.sqrt()
        towards_x = (1. - a_prev - sigma_t ** 2).sqrt() * direction
        x = a_prev.sqrt() * x0 + towards_x
        if eta != 0:  # at eta 0 (the default) the draw A1111 makes is multiplied by 0: it is not made
            x = x + sigma_t * noise(x)
        _report(callback, i, x, x0)
    return x


@torch.no_grad()
def ddim(model: EpsModel, x: torch.Tensor, timesteps: Timesteps, *, alphas_cumprod: torch.Tensor, noise: NoiseFn,
         callback: Optional[Callback] = None, eta: float = 0.0) -> torch.Tensor:
    """A1111's DDIM over `timesteps` (ascending, as `a1111_timesteps` gives): len(timesteps) - 1 steps, one model
    call each; `noise(x)` once per step (none at eta 0). eta is A1111's "eta_ddim" option (default 0)."""
    return _ddim_loop(model, x, timesteps, alphas_cumprod, noise, callback, eta, lambda eps: eps)


@torch.no_grad()
def ddim_cfgpp(model: CFGPPModel, x: torch.Tensor, timesteps: Timesteps, *, alphas_cumprod: torch.Tensor,
               noise: NoiseFn, callback: Optional[Callback] = None, eta: float = 0.0) -> torch.Tensor:
    """A1111's DDIM CFG++: DDIM whose x0 comes from the CFG eps (with the CFG scale multiplied by 1/12.5) and whose
    direction towards x_t uses the unconditional eps. `model` follows `CFGPPModel`."""
    saved = (model.cond_scale_multiplier, model.need_last_noise_uncond)
    model.cond_scale_multiplier = CFGPP_SCALE_MULTIPLIER
    model.need_last_noise_uncond = True
    try:
        return _ddim_loop(model, x, timesteps, alphas_cumprod, noise, callback, eta,
                          lambda eps: model.last_noise_uncond)
    finally:
        model.cond_scale_multiplier, model.need_last_noise_uncond = saved


def _adams_bashforth(eps: torch.Tensor, history: list) -> torch.Tensor:
    """PLMS's combination of the current eps with up to three earlier ones (newest last in `history`)."""
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


@torch.no_grad()
def plms(model: EpsModel, x: torch.Tensor, timesteps: Timesteps, *, alphas_cumprod: torch.Tensor,
         callback: Optional[Callback] = None) -> torch.Tensor:
    """A1111's PLMS: len(timesteps) - 1 steps. The first is a pseudo improved-Euler step (a second model call at the
    next timestep on the DDIM-predicted latent, and the mean of the two eps); later steps combine the eps of the
    last 2, 3, then 4 steps with the Adams-Bashforth weights. len(timesteps) model calls in all."""
    timesteps = _as_timesteps(timesteps, x)
    schedule = _Schedule(alphas_cumprod, timesteps, x, eta=None)

    def ddim_step(latent, eps, index):
        a_t, a_prev, sqrt_one_minus_a_t = schedule.constants(index)
        x0 = (latent - sqrt_one_minus_a_t * eps) / a_t.sqrt()
        return a_prev.sqrt() * x0 + (1. - a_prev).sqrt() * eps, x0

    history: list = []
    last = len(timesteps) - 1
    for i in range(last):
        index = last - i
        eps = model(x, schedule.t(index))
        if not history:
            guess, _ = ddim_step(x, eps, index)
            eps_next = model(guess, schedule.t(max(index - 1, 0)))
            combined = (eps + eps_next) / 2
        else:
            combined = _adams_bashforth(eps, history)
        x, x0 = ddim_step(x, combined, index)
        history = (history + [eps])[-3:]
        _report(callback, i, x, x0)
    return x
