"""A1111 1.10's schedule types ("Schedule type" in the UI and the infotext): the sigmas a k-diffusion sampler walks.
The table of types (label, API name, default rho, need_inner_model, aliases) is `webui.core.samplers.SCHEDULE_TYPES`;
`find_schedule` looks a row up by any of its spellings.

`make_sigmas(label, n, levels)` computes the schedule for n steps exactly as A1111 1.10 does for that type (same
dtypes, same operations in the same order, same element-by-element loops where A1111 loops), on the CPU.

The result is a float32 CPU tensor of n + 1 descending sigmas ending in 0, with two quirks kept from A1111:
- "KL Optimal" does not append a 0: its n + 1 values end at sigma_min, so the last step stops at sigma_min.
- "DDIM" takes every (1000 // n)-th trained sigma starting at timestep 1, which gives ceil(999 / (1000 // n)) values:
  more than n for some n (n = 6 gives 7, n = 7 gives 8), then the 0.

Which A1111 options feed which argument (the engine reads the options, resolves defaults and writes the infotext;
this module only computes):
- sigma_min / sigma_max: the model's smallest / largest trained sigma (`levels.sigma_min`, `levels.sigma_max`),
  replaced by 0.1 / 10 when "use_old_karras_scheduler_sigmas" is on, and by the "sigma_min" / "sigma_max" options
  when those are non-zero and differ from the model's value (infotext "Schedule min sigma" / "Schedule max sigma").
  Used by Karras, Exponential, Polyexponential, SGM Uniform, KL Optimal, Normal and Beta; Automatic, Uniform,
  Simple, DDIM and Align Your Steps take them and ignore them.
- rho: only for the two types with a default rho (Karras 7, Polyexponential 1): the "rho" option when it is non-zero
  and differs from that default (infotext "Schedule rho"). Ignored by every other type.
- beta_alpha / beta_beta: the "beta_dist_alpha" / "beta_dist_beta" options (both 0.6 by default), Beta only;
  A1111 writes them to the infotext ("Beta schedule alpha" / "Beta schedule beta") whenever Beta is used.
- family: Align Your Steps uses its SDXL table when A1111's `sd_model.is_sdxl` is true (SDXL base and refiner) and
  the SD 1.5 table for everything else, SD 2.x included; here "sdxl" picks the SDXL table, any other family SD 1.5.

What stays with the engine: "Automatic" first becomes the sampler's own default type (A1111's sampler option
"scheduler", e.g. Karras for the DPM++ samplers) and only falls back to the model's own schedule (the "Uniform"
computation, what `make_sigmas("Automatic", ...)` returns) when the sampler has none; a sampler that discards the
penultimate sigma (DPM2, or the "always_discard_next_to_last_sigma" option) asks for n + 1 steps and then drops
the second-to-last value; the "Schedule type" / "Hires schedule type" infotext.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...core.samplers import SCHEDULE_TYPES, ScheduleType
from .sigmas import NoiseLevels


_BY_KEY: dict[str, ScheduleType] = {}
for _schedule in SCHEDULE_TYPES:
    for _key in (_schedule.name, _schedule.label, *_schedule.aliases):
        _BY_KEY[_key] = _schedule


def find_schedule(key: str) -> ScheduleType | None:
    """The row of `webui.core.samplers.SCHEDULE_TYPES` with this API name, label or alias (exact spelling), else
    None."""
    return _BY_KEY.get(key)


# Align Your Steps' published 10-step sigmas (NVIDIA's "How to use" page for the paper), 11 values from the largest.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _as_float32(values) -> torch.Tensor:
    """A list / array of numbers as a float32 tensor (each value rounded to nearest), like torch.FloatTensor(...)."""
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values.astype(np.float32))
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


# --- k-diffusion's closed forms (ramps in float32, constants in double) ---------------------------------------------

def _karras(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    inv_rho_min = sigma_min ** (1 / rho)
    inv_rho_max = sigma_max ** (1 / rho)
    return _with_zero((inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho)


def _exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def _polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    log_min = math.log(sigma_min)
    return _with_zero(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min))


# --- A1111's own types -------------------------------------------------------------------------------------------------

def _timestep_range(levels: NoiseLevels, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """The continuous timesteps of sigma_max and sigma_min (each rounded to float32 first, as A1111's tensors)."""
    first = levels.sigma_to_t(torch.tensor(sigma_max, dtype=torch.float32))
    last = levels.sigma_to_t(torch.tensor(sigma_min, dtype=torch.float32))
    return float(first), float(last)


def _sigmas_at(levels: NoiseLevels, timesteps: torch.Tensor) -> torch.Tensor:
    """t_to_sigma one timestep at a time (A1111 loops over 0-d tensors; kept so CPU kernels see the same shapes)."""
    return _as_float32([float(levels.t_to_sigma(t)) for t in timesteps] + [0.0])


def _sgm_uniform(n: int, levels: NoiseLevels, sigma_min: float, sigma_max: float) -> torch.Tensor:
    first, last = _timestep_range(levels, sigma_min, sigma_max)
    return _sigmas_at(levels, torch.linspace(first, last, n + 1)[:-1])


def _normal(n: int, levels: NoiseLevels, sigma_min: float, sigma_max: float) -> torch.Tensor:
    first, last = _timestep_range(levels, sigma_min, sigma_max)
    return _sigmas_at(levels, torch.linspace(first, last, n))


def _kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """tan of a linear ramp between arctan(sigma_max) and arctan(sigma_min); n + 1 values, the last is sigma_min."""
    angle_min = torch.arctan(torch.tensor(sigma_min, dtype=torch.float32))
    angle_max = torch.arctan(torch.tensor(sigma_max, dtype=torch.float32))
    step = torch.arange(n + 1)
    return torch.tan(step / n * angle_min + (1.0 - step / n) * angle_max)


def _log_linear_resample(table: tuple[float, ...], count: int) -> np.ndarray:
    """`count` values spread over a descending table, interpolated linearly in log sigma (float64)."""
    log_ascending = np.log(list(reversed(table)))
    positions = np.linspace(0, 1, len(table))
    wanted = np.linspace(0, 1, count)
    return np.exp(np.interp(wanted, positions, log_ascending))[::-1].copy()


def _align_your_steps(n: int, family: str) -> torch.Tensor:
    table = AYS_SDXL if family == "sdxl" else AYS_SD15
    if n == len(table):
        return _as_float32([*table, 0.0])
    return _as_float32(np.append(_log_linear_resample(table, n), [0.0]))


def _simple(n: int, levels: NoiseLevels) -> torch.Tensor:
    """Every (1000 / n)-th trained sigma from the top (the index truncated in Python floats). A flow model's levels
    compute it exactly (sigma(1 - i / n), what diffusers' flow-matching scheduler walks)."""
    if hasattr(levels, "simple"):
        return levels.simple(n)
    trained = levels.sigmas
    stride = len(trained) / n
    return _as_float32([float(trained[-(1 + int(i * stride))]) for i in range(n)] + [0.0])


def _ddim(n: int, levels: NoiseLevels) -> torch.Tensor:
    """Trained sigmas at timesteps 1, 1 + s, 1 + 2s, ... below 1000 (s = 1000 // n), largest first."""
    trained = levels.sigmas
    stride = max(len(trained) // n, 1)
    picked = [float(trained[t]) for t in range(1, len(trained), stride)]
    return _as_float32(picked[::-1] + [0.0])


def _beta(n: int, sigma_min: float, sigma_max: float, alpha: float, beta: float) -> torch.Tensor:
    """Sigma range mapped through the Beta(alpha, beta) quantiles of a descending 1..0 ramp (Lee et al. 2024)."""
    from scipy import stats  # scipy.stats is slow to import; only this type needs it

    ramp = 1 - np.linspace(0, 1, n)
    quantiles = [stats.beta.ppf(x, alpha, beta) for x in ramp]
    return _as_float32([sigma_min + (q * (sigma_max - sigma_min)) for q in quantiles] + [0.0])


def make_sigmas(label: str, n: int, levels: NoiseLevels, *, sigma_min: float | None = None,
                sigma_max: float | None = None, rho: float | None = None, family: str = "sd1",
                beta_alpha: float = 0.6, beta_beta: float = 0.6) -> torch.Tensor:
    """The sigmas of schedule type `label` (a label, API name or alias) for `n` steps, as A1111 1.10 computes them.

    sigma_min / sigma_max default to the model's (`levels`), rho to the type's default. A float32 CPU tensor,
    descending, normally n + 1 values ending in 0 (see the module docstring for KL Optimal and DDIM).
    """
    schedule = find_schedule(label)
    if schedule is None:
        raise ValueError(f"unknown schedule type {label!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"a schedule needs at least one step, got {n}")
    low = levels.sigma_min if sigma_min is None else float(sigma_min)
    high = levels.sigma_max if sigma_max is None else float(sigma_max)
    power = schedule.default_rho if rho is None else float(rho)

    name = schedule.name
    if name in ("automatic", "uniform"):
        sigmas = levels.uniform(n)
    elif name == "karras":
        sigmas = _karras(n, low, high, power)
    elif name == "exponential":
        sigmas = _exponential(n, low, high)
    elif name == "polyexponential":
        sigmas = _polyexponential(n, low, high, power)
    elif name == "sgm_uniform":
        sigmas = _sgm_uniform(n, levels, low, high)
    elif name == "kl_optimal":
        sigmas = _kl_optimal(n, low, high)
    elif name == "align_your_steps":
        sigmas = _align_your_steps(n, family)
    elif name == "simple":
        sigmas = _simple(n, levels)
    elif name == "normal":
        sigmas = _normal(n, levels, low, high)
    elif name == "ddim":
        sigmas = _ddim(n, levels)
    else:  # beta
        sigmas = _beta(n, low, high, float(beta_alpha), float(beta_beta))
    return sigmas.to(device="cpu", dtype=torch.float32)
