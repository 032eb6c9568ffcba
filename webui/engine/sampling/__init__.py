"""A1111's samplers, written for this project: the k-diffusion algorithms A1111 1.10 runs (k-diffusion 0.0.16,
the commit it pins), its schedule types, its timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC), LCM, and its noise.

- `sigmas.py`: the checkpoint's noise levels (CompVis denoiser: t <-> sigma, the UNet's input scaling).
- `schedules.py`: the schedule types (Uniform, Karras, ..., Beta) -> sigmas.
- `k_samplers.py`: `fn(model, x, sigmas, *, noise_sampler, callback, **options)`; `model(x, sigma)` returns the
  denoised x0; `noise_sampler(sigma, sigma_next)` gives every random draw (the per-image generators, or for the SDE
  samplers a Brownian tree, `brownian.py`); `callback(dict)` as k-diffusion calls it. DPM fast / adaptive take
  (sigma_min, sigma_max[, n]) instead of sigmas.
- `timestep_samplers.py`, `unipc.py`: `fn(model, x, timesteps, *, alphas_cumprod, [noise], callback, ...)`;
  `model(x, t)` returns the noise prediction (eps).
- `lcm.py`: LCM's 50-level table and output scalings.
- `noise.py`: A1111's per-image noise (CPU / GPU / NV sources, variation seeds, resize seed from, ENSD);
  `rng_philox.py`: NVIDIA's Philox generator on the CPU (the NV source).
The engine (`webui/engine/samplers.py` plans a pass, `denoiser.py` wraps the UNet with CFG, hooks, ControlNet and
masks) drives them.
"""
