"""A1111 1.10's txt2img and img2img for SD1 checkpoints, written for the tests from A1111's observable behaviour,
as the independent reference the engine's pictures are compared with (tests/test_a1111_parity.py).

It drives k-diffusion 0.0.16's own functions (the commit A1111 1.6-1.10 pins; `tests/k_diffusion_reference.py`) and
adds, written here, what A1111 does around them. Nothing here imports the engine (`webui/engine`) or the prompt code
(`webui/prompts`): only the model's modules (UNet, VAE, text encoder, tokenizer) are shared with the app.

The behaviour it encodes (A1111 1.10 with its default settings unless an `Options` field says otherwise):
- Model: k-diffusion's CompVisDenoiser over alphas_cumprod = cumprod(1 - linspace(sqrt(0.00085), sqrt(0.012),
  1000, float64)^2), stored float32; sigma -> t by interpolation in log sigma; the UNet gets the continuous t.
- CFG: one UNet batch of the cond rows then the uncond rows; denoised = uncond + (cond - uncond) * scale (x0 space
  for k-diffusion samplers, eps space for the timestep samplers; DDIM CFG++: scale / 12.5, direction from uncond).
- Schedules: Automatic = the sampler's own (the denoiser's get_sigmas for Euler, Euler a, LMS, Heun, DPM fast/adaptive,
  LCM; Karras for DPM++ 2M / SDE / 2S a, DPM2 (a), Restart; Exponential for the 2M/3M SDEs); Uniform = get_sigmas;
  Karras/Exponential/Polyexponential via k-diffusion between the model's sigma_min/max (settings sigma_min, sigma_max,
  rho override when set and different); SGM Uniform and Normal: n + 1 (minus the last) / n continuous t from
  t(sigma_max) to t(sigma_min), then 0; KL Optimal: n + 1 sigmas from sigma_max to sigma_min, no final 0; Align Your
  Steps: SD1's 11 sigmas, log-linearly resampled to n, then 0; Simple: every (1000 / n)-th table sigma from the top;
  DDIM: table sigmas 1, 1 + 1000 // n, ... reversed, then 0 (7 sigmas for 6 steps); Beta: sigma_min + ppf(1 -
  linspace(0, 1, n); 0.6, 0.6) * (sigma_max - sigma_min), then 0. DPM2, DPM2 a and DPM++ 3M SDE (or all, with
  always_discard_next_to_last_sigma) ask for steps + 1 and drop the next-to-last.
- Noise: a generator per image seeded with its seed (seed + i; with variation strength > 0 every image keeps the one
  seed and image i's subseed is subseed + i) draws [4, H/8, W/8] for the initial noise; variation: slerp(strength,
  noise(seed), noise(subseed)) on the unbatched tensor, norms along dim 1. k-diffusion's torch.randn_like is "the next
  draw of every image's generator, stacked"; with ENSD the generators are recreated with seed + ENSD right after the
  initial noise (so the sampler's first draw is that generator's first). SDE samplers (DPM++ SDE, 2M SDE (Heun),
  3M SDE) get BrownianTreeNoiseSampler(x, min positive sigma, max sigma of the full schedule, seed=the batch's seeds),
  whose torchsde draws use the RNG source too (NV: Philox). RNG "GPU" on a machine without CUDA is A1111's CPU path.
- Eta: the request's eta, else eta_ancestral (1.0) for k-diffusion functions taking eta (ancestral, SDE, DPM fast
  and adaptive), eta_ddim (0.0) for DDIM (CFG++). s_churn / s_tmin / s_tmax / s_noise: the request's values (unset:
  the settings'; s_tmax 0 = infinity) for the functions in EXTRA_PARAMS, replaced by a setting changed from its default.
- txt2img starts from noise * sigmas[0]; DPM fast/adaptive run between the model's sigma_min and sigma_max (fast: n =
  steps). img2img: t_enc = int(min(denoising, 0.999) * steps); sigmas[steps - t_enc - 1:] from init_latent + noise *
  that first sigma (noise = each image's first draw); DPM fast/adaptive between that slice's [-2] and [0] sigmas.
- Timestep samplers: timesteps range(0, 1000, 1000 // steps) + 1; DDIM / PLMS run from the last down for len - 1
  steps (DDIM draws image noise every step, times sigma_t); UniPC (bh1, order 3, time_uniform, lower order final)
  runs len(timesteps) steps over t in [1/1000, 1], the UNet getting (t - 1/1000) * 1000; img2img: x = init * sqrt(a) +
  noise * sqrt(1 - a) at a = alphas_cumprod[timesteps[t_enc]], then timesteps[:t_enc] (UniPC from t = last/1000 +
  1/1000; A1111 refuses UniPC when it would run fewer steps than its order).
- Restart: Heun steps (Euler into 0) over the schedule; from 20 steps its automatic restart list. LCM: LCM's
  denoiser over every 20th timestep, x = denoised, then + next sigma * image noise.
- Pictures: VAE decode of latents / 0.18215 one image at a time, (255 * clamp((x + 1) / 2, 0, 1)).astype(uint8)
  (truncation).

What it assumes where A1111 leaves room or cannot be reproduced:
- Text: a plain prompt (no emphasis, no embeddings) of at most 75 tokens; ids [BOS, tokens..., EOS, then EOS up to
  77] (A1111 pads SD1 chunks with the end token whatever the tokenizer's pad token), encoder output
  `last_hidden_state` (Clip skip 1) or the hidden state N layers from the end through the final layer norm.
  A1111's "Original" emphasis with all weights 1 multiplies by exactly 1, so it is left out.
- img2img's VAE posterior: its mean (A1111 samples it from torch's unseeded global RNG, which nothing can
  reproduce; the engine uses the mean too). The init image is used at the job's size (no resize).
- NV: `Philox` is written from the algorithm (Philox-4x32-10, counter (call, 0, index, 0), key = the seed's two
  words, Box-Muller of the first two words in float64, rounded to float32); it reproduces the torch CUDA numbers A1111
  documents for seed 0 to 2e-7.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from tests import k_diffusion_reference

SCALE_FACTOR = 0.18215  # SD1's latent scale (v1-inference.yaml's scale_factor)
CHUNK = 75  # tokens of one CLIP chunk, between the start and end tokens

SCHEDULE_TYPES = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                  "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")
DEFAULT_RHO = {"Karras": 7.0, "Polyexponential": 1.0}
# The k-diffusion parameters A1111 1.10 passes from the job (`sampler_extra_params`); Euler a, for one, gets no s_noise.
EXTRA_PARAMS = {
    "sample_euler": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_heun": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_dpm_2": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_dpm_fast": ("s_noise",),
    "sample_dpm_2_ancestral": ("s_noise",),
    "sample_dpmpp_2s_ancestral": ("s_noise",),
    "sample_dpmpp_sde": ("s_noise",),
    "sample_dpmpp_2m_sde": ("s_noise",),
    "sample_dpmpp_3m_sde": ("s_noise",),
}
AYS_SD1 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]


@dataclass(frozen=True)
class Sampler:
    """An A1111 sampler: what runs it and the options A1111's sampler table gives it."""
    name: str
    kind: str  # "k" (k-diffusion over sigmas), "lcm" (k-diffusion style over LCM's denoiser), "timesteps"
    function: str
    schedule: str = "Uniform"  # what "Automatic" means (Uniform: the denoiser's own get_sigmas)
    discard_penultimate: bool = False
    brownian: bool = False
    solver_type: str | None = None


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("DPM++ 2M", "k", "sample_dpmpp_2m", "Karras"),
    Sampler("DPM++ SDE", "k", "sample_dpmpp_sde", "Karras", brownian=True),
    Sampler("DPM++ 2M SDE", "k", "sample_dpmpp_2m_sde", "Exponential", brownian=True),
    Sampler("DPM++ 2M SDE Heun", "k", "sample_dpmpp_2m_sde", "Exponential", brownian=True, solver_type="heun"),
    Sampler("DPM++ 2S a", "k", "sample_dpmpp_2s_ancestral", "Karras"),
    Sampler("DPM++ 3M SDE", "k", "sample_dpmpp_3m_sde", "Exponential", discard_penultimate=True, brownian=True),
    Sampler("Euler a", "k", "sample_euler_ancestral"),
    Sampler("Euler", "k", "sample_euler"),
    Sampler("LMS", "k", "sample_lms"),
    Sampler("Heun", "k", "sample_heun"),
    Sampler("DPM2", "k", "sample_dpm_2", "Karras", discard_penultimate=True),
    Sampler("DPM2 a", "k", "sample_dpm_2_ancestral", "Karras", discard_penultimate=True),
    Sampler("DPM fast", "k", "sample_dpm_fast"),
    Sampler("DPM adaptive", "k", "sample_dpm_adaptive"),
    Sampler("Restart", "k", "restart", "Karras"),
    Sampler("DDIM", "timesteps", "ddim"),
    Sampler("DDIM CFG++", "timesteps", "ddim_cfgpp"),
    Sampler("PLMS", "timesteps", "plms"),
    Sampler("UniPC", "timesteps", "unipc"),
    Sampler("LCM", "lcm", "lcm"),
)}


@dataclass(frozen=True)
class Options:
    """The A1111 settings the reference honours (A1111's defaults)."""
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    eta_noise_seed_delta: int = 0
    randn_source: str = "CPU"  # "CPU" | "GPU" (= CPU here: no CUDA) | "NV"
    always_discard_next_to_last_sigma: bool = False
    sigma_min: float = 0.0  # 0: the model's
    sigma_max: float = 0.0
    rho: float = 0.0  # 0: the schedule's own
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True
    clip_stop_at_last_layers: int = 1
    s_churn: float = 0.0  # the sampler parameters' settings (a request's values win unless these are changed)
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0: infinity
    s_noise: float = 1.0


@dataclass
class Job:
    """One A1111 job of one batch: txt2img, or img2img when `init_image` is given."""
    prompt: str = "a red fox in the snow"
    negative_prompt: str = "blurry"
    sampler: str = "Euler"
    schedule: str = "Automatic"
    steps: int = 6
    cfg_scale: float = 7.0
    width: int = 64
    height: int = 64
    seed: int = 1234
    batch_size: int = 2
    subseed: int = 0
    subseed_strength: float = 0.0
    eta: float | None = None  # None: the eta_ancestral / eta_ddim setting
    s_churn: float | None = None  # None: the settings'
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    init_image: Image.Image | None = None
    denoising_strength: float = 0.5
    noise_nudge: float = 0.0  # added to every image's initial noise (to measure how chaotic the run is)
    options: Options = field(default_factory=Options)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + (i if self.subseed_strength == 0 else 0) for i in range(self.batch_size)]

    @property
    def subseeds(self) -> list[int]:
        return [self.subseed + i for i in range(self.batch_size)]


# --- NVIDIA's Philox, as A1111's "NV" source reproduces torch.randn on CUDA ------------------------------------

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_INV_2_32 = float(np.float32(2.3283064e-10))  # the float32 constants A1111's emulation uses
_INV_2_32_2PI = float(np.float32(2.3283064e-10 * 6.2831855))


class Philox:
    """A generator of normal numbers that gives what `torch.randn(..., device="cuda")` gives for a seed: Philox-4x32
    with 10 rounds, the counter (call number, 0, element index, 0), the key (seed low word, seed high word), and one
    Box-Muller normal from the first two output words of each counter. Each `randn` call is one call number."""

    def __init__(self, seed: int):
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.calls = 0

    def randn(self, shape) -> torch.Tensor:
        count = int(np.prod(shape))
        words = [np.full(count, self.calls & _MASK32, dtype=np.uint64), np.zeros(count, dtype=np.uint64),
                 np.arange(count, dtype=np.uint64), np.zeros(count, dtype=np.uint64)]
        self.calls += 1
        key0, key1 = self.seed & _MASK32, self.seed >> 32
        mask = np.uint64(_MASK32)
        for round_index in range(10):
            if round_index:
                key0, key1 = (key0 + _PHILOX_W[0]) & _MASK32, (key1 + _PHILOX_W[1]) & _MASK32
            product0 = words[0] * _PHILOX_M[0]
            product1 = words[2] * _PHILOX_M[1]
            words = [(product1 >> np.uint64(32)) ^ words[1] ^ np.uint64(key0), product1 & mask,
                     (product0 >> np.uint64(32)) ^ words[3] ^ np.uint64(key1), product0 & mask]
        u = words[0].astype(np.float64) * _INV_2_32 + _INV_2_32 / 2
        v = words[1].astype(np.float64) * _INV_2_32_2PI + _INV_2_32_2PI / 2
        normal = (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)
        return torch.from_numpy(normal.reshape(tuple(shape)))


# --- per-image noise (A1111's ImageRNG) -----------------------------------------------------------------------

def _generator(seed: int, source: str):
    if source == "NV":
        return Philox(seed)
    return torch.Generator("cpu").manual_seed(int(seed))


def _draw(generator, shape) -> torch.Tensor:
    if isinstance(generator, Philox):
        return generator.randn(shape)
    return torch.randn(tuple(shape), generator=generator)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation blend on one image's [C, H, W] noise: norms along dim 1 (the height axis)."""
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:  # (A1111's near-parallel fallback, with its weights as they are)
        return low * strength + high * (1 - strength)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low \
        + (torch.sin(strength * omega) / so).unsqueeze(1) * high


class ImageNoise:
    """Each image's own generator, seeded with its seed: the first draw is its initial noise (blended with its
    subseed's when variation strength > 0); every later draw (k-diffusion's `torch.randn_like`) is the next draw of
    each image's generator, stacked. With ENSD the generators are recreated with seed + ENSD right after the
    initial noise is drawn, so the sampler's first draw is the first draw of that new generator."""

    def __init__(self, job: Job, shape):
        self.job, self.shape = job, tuple(shape)
        self.source = job.options.randn_source
        self.generators = [_generator(seed, self.source) for seed in job.seeds]
        self.drawn_first = False

    def first(self) -> torch.Tensor:
        assert not self.drawn_first
        self.drawn_first = True
        job = self.job
        images = []
        for index, generator in enumerate(self.generators):
            noise = _draw(generator, self.shape)
            if job.subseed_strength != 0:
                subnoise = _draw(_generator(job.subseeds[index], self.source), self.shape)
                noise = slerp(job.subseed_strength, noise, subnoise)
            images.append(noise)
        if job.options.eta_noise_seed_delta:
            self.generators = [_generator(seed + job.options.eta_noise_seed_delta, self.source) for seed in job.seeds]
        return torch.stack(images) + job.noise_nudge

    def next(self) -> torch.Tensor:
        if not self.drawn_first:
            return self.first()
        return torch.stack([_draw(generator, self.shape) for generator in self.generators])


class _RandnShim:
    """Stands in for the `torch` module inside k_diffusion.sampling: `randn_like` is the job's image noise."""

    def __init__(self, noise: ImageNoise):
        self._noise = noise

    def randn_like(self, x, *args, **kwargs):
        drawn = self._noise.next()
        assert drawn.shape == x.shape, (drawn.shape, x.shape)
        return drawn.to(x.dtype)

    def __getattr__(self, name):
        return getattr(torch, name)


@contextlib.contextmanager
def _patched_randomness(sampling, noise: ImageNoise):
    """k-diffusion's randn_like -> the image noise; torchsde's Brownian draws -> a generator of the job's RNG source
    seeded with the seed torchsde asks for (CPU: torch's CPU generator, as torchsde itself does; NV: Philox)."""
    from torchsde._brownian import brownian_interval

    def brownian_randn(size, dtype, device, seed):  # A1111's replacement: its randn_local(seed, size)
        return _draw(_generator(seed, noise.source), size).to(device=device, dtype=dtype)

    saved_torch, saved_randn = sampling.torch, brownian_interval._randn
    sampling.torch = _RandnShim(noise)
    brownian_interval._randn = brownian_randn
    try:
        yield
    finally:
        sampling.torch, brownian_interval._randn = saved_torch, saved_randn


# --- the model as k-diffusion's CompVis wrappers see it ------------------------------------------------------

def ldm_alphas_cumprod(start: float = 0.00085, end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """LDM's "linear" schedule: betas = linspace(sqrt(start), sqrt(end))^2 in float64, cumprod, kept as float32."""
    betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)


class LatentDiffusion:
    """What k-diffusion's CompVisDenoiser reads of an LDM model: `alphas_cumprod` and `apply_model(x, t, cond)`,
    here calling the diffusers UNet with the continuous timestep."""

    def __init__(self, unet):
        self.unet = unet
        self.alphas_cumprod = ldm_alphas_cumprod()
        self.device = torch.device("cpu")

    def apply_model(self, x, t, cond):
        t = t if torch.is_tensor(t) else torch.tensor(t)
        return self.unet(x, t.float().reshape(-1).expand(x.shape[0]), encoder_hidden_states=cond).sample


class CFG:
    """A1111's CFGDenoiser: one UNet batch of the cond rows then the uncond rows; denoised = uncond +
    (cond - uncond) * scale, in the inner model's output space (x0 for k-diffusion, eps for timestep samplers)."""

    def __init__(self, inner, cond: torch.Tensor, uncond: torch.Tensor, scale: float):
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale
        self.scale_multiplier = 1.0
        self.keep_uncond = False
        self.last_uncond = None

    def __call__(self, x, sigma, **_):
        batch = x.shape[0]
        sigma = sigma if torch.is_tensor(sigma) else torch.full((batch,), float(sigma))
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        cond_in = torch.cat([self.cond.expand(batch, -1, -1), self.uncond.expand(batch, -1, -1)])
        out = self.inner(x_in, sigma_in, cond=cond_in)
        uncond_out = out[batch:]
        if self.keep_uncond:
            self.last_uncond = uncond_out.clone()
        denoised = uncond_out.clone()
        for i in range(batch):
            denoised[i] += (out[i] - uncond_out[i]) * (1.0 * self.scale * self.scale_multiplier)
        return denoised


class TimestepsDenoiser(torch.nn.Module):
    """CompVisTimestepsDenoiser: the UNet's noise prediction at the timesteps given."""

    def __init__(self, model: LatentDiffusion):
        super().__init__()
        self.inner_model = model

    def forward(self, x, t, cond):
        return self.inner_model.apply_model(x, t, cond)


def make_lcm_denoiser(external, model: LatentDiffusion):
    """A1111's LCM denoiser: k-diffusion's eps denoiser over the 50 timesteps 19, 39, ..., 999 (every 20th),
    timesteps quantized to those, and LCM's boundary condition (sigma_data 0.5, timestep scaling 10) applied to the
    k-diffusion x0 prediction and the (unscaled) input."""

    class LCMDenoiser(external.DiscreteEpsDDPMDenoiser):
        skip = 20

        def __init__(self):
            picked = torch.stack([model.alphas_cumprod[999 - i * self.skip] for i in range(50)]).flip(0)
            super().__init__(model, picked.float(), quantize=None)

        def get_sigmas(self, n=None):
            sampling = k_diffusion_reference.load()[0]
            if n is None:
                return sampling.append_zero(self.sigmas.flip(0))
            first, last = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
            return sampling.append_zero(self.t_to_sigma(torch.linspace(first, last, n)))

        def sigma_to_t(self, sigma, quantize=None):
            nearest = (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)
            return nearest * self.skip + (self.skip - 1)

        def t_to_sigma(self, t):
            index = torch.clamp(((t - (self.skip - 1)) / self.skip).float(), min=0, max=len(self.sigmas) - 1)
            return super().t_to_sigma(index)

        def get_eps(self, *args, **kwargs):
            return self.inner_model.apply_model(*args, **kwargs)

        def forward(self, input, sigma, **kwargs):
            utils = k_diffusion_reference.load()[0].utils
            c_out, c_in = [utils.append_dims(v, input.ndim) for v in self.get_scalings(sigma)]
            eps = self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs)
            x0 = input + eps * c_out
            scaled_t = utils.append_dims(self.sigma_to_t(sigma), x0.ndim) * 10.0
            c_skip = 0.5 ** 2 / (scaled_t ** 2 + 0.5 ** 2)
            c_boundary = scaled_t / (scaled_t ** 2 + 0.5 ** 2) ** 0.5
            return c_boundary * x0 + c_skip * input

    return LCMDenoiser()


# --- schedules (A1111's schedule types) ------------------------------------------------------------------------

def schedule_sigmas(schedule: str, n: int, denoiser, options: Options, sampling) -> torch.Tensor:
    """n sigmas (+ the final 0, except KL Optimal's, which ends at sigma_min) of A1111's schedule type, for the
    k-diffusion denoiser `denoiser` (its sigma range, t <-> sigma mapping)."""
    model_min, model_max = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    if schedule == "Uniform":
        return denoiser.get_sigmas(n)
    sigma_min, sigma_max = model_min, model_max
    if options.sigma_min != 0 and options.sigma_min != model_min:
        sigma_min = options.sigma_min
    if options.sigma_max != 0 and options.sigma_max != model_max:
        sigma_max = options.sigma_max
    rho = DEFAULT_RHO.get(schedule)
    if rho is not None and options.rho != 0 and options.rho != rho:
        rho = options.rho
    if schedule == "Karras":
        return sampling.get_sigmas_karras(n, sigma_min, sigma_max, rho=rho)
    if schedule == "Exponential":
        return sampling.get_sigmas_exponential(n, sigma_min, sigma_max)
    if schedule == "Polyexponential":
        return sampling.get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=rho)
    if schedule in ("SGM Uniform", "Normal"):  # n continuous timesteps from t(sigma_max) towards t(sigma_min)
        first = denoiser.sigma_to_t(torch.tensor(sigma_max))
        last = denoiser.sigma_to_t(torch.tensor(sigma_min))
        ts = torch.linspace(first, last, n + 1)[:-1] if schedule == "SGM Uniform" else torch.linspace(first, last, n)
        return torch.tensor([float(denoiser.t_to_sigma(t)) for t in ts] + [0.0], dtype=torch.float32)
    if schedule == "KL Optimal":
        angle_min = torch.arctan(torch.tensor(sigma_min))
        angle_max = torch.arctan(torch.tensor(sigma_max))
        fraction = torch.arange(n + 1) / n
        return torch.tan(fraction * angle_min + (1.0 - fraction) * angle_max)
    if schedule == "Align Your Steps":
        if n == len(AYS_SD1):
            return torch.tensor(AYS_SD1 + [0.0], dtype=torch.float32)
        xs = np.linspace(0, 1, len(AYS_SD1))
        ys = np.log(AYS_SD1[::-1])
        interpolated = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
        return torch.tensor(np.append(interpolated, [0.0]), dtype=torch.float32)
    table = denoiser.sigmas
    if schedule == "Simple":
        stride = len(table) / n
        return torch.tensor([float(table[-(1 + int(i * stride))]) for i in range(n)] + [0.0], dtype=torch.float32)
    if schedule == "DDIM":
        stride = max(len(table) // n, 1)
        picked = [float(table[i]) for i in range(1, len(table), stride)]
        return torch.tensor(picked[::-1] + [0.0], dtype=torch.float32)
    if schedule == "Beta":
        from scipy import stats
        points = [stats.beta.ppf(x, options.beta_dist_alpha, options.beta_dist_beta) for x in 1 - np.linspace(0, 1, n)]
        return torch.tensor([sigma_min + x * (sigma_max - sigma_min) for x in points] + [0.0], dtype=torch.float32)
    raise ValueError(f"unknown schedule type {schedule!r}")


def sampler_parameters(function: str, job: Job) -> dict:
    """The s_* arguments A1111 gives a k-diffusion function: the job's values (unset: the settings'; s_tmax 0 means
    infinity), then any setting changed from its default replaces the job's value."""
    options = job.options
    values = {
        "s_churn": job.s_churn if job.s_churn is not None else options.s_churn,
        "s_tmin": job.s_tmin if job.s_tmin is not None else options.s_tmin,
        "s_tmax": (job.s_tmax if job.s_tmax is not None else options.s_tmax) or float("inf"),
        "s_noise": job.s_noise if job.s_noise is not None else options.s_noise,
    }
    defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    settings = {"s_churn": options.s_churn, "s_tmin": options.s_tmin, "s_tmax": options.s_tmax or float("inf"),
                "s_noise": options.s_noise}
    chosen = {}
    for name in EXTRA_PARAMS.get(function, ()):
        chosen[name] = settings[name] if settings[name] != defaults[name] else values[name]
    return chosen


def sampler_sigmas(sampler: Sampler, schedule: str, steps: int, denoiser, options: Options, sampling) -> torch.Tensor:
    """A1111's KDiffusionSampler.get_sigmas: Automatic -> the sampler's own schedule; samplers that discard the
    penultimate sigma (or all, with the option) ask for steps + 1 and drop the next-to-last."""
    discard = sampler.discard_penultimate or options.always_discard_next_to_last_sigma
    n = steps + (1 if discard else 0)
    resolved = sampler.schedule if schedule == "Automatic" else schedule
    sigmas = schedule_sigmas(resolved, n, denoiser, options, sampling)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


# --- A1111's own samplers --------------------------------------------------------------------------------------

@torch.no_grad()
def restart_sample(sampling, model, x, sigmas, s_noise=1.0):
    """A1111's Restart sampler (Xu et al. 2023) with its automatic restart list: below 20 steps plain Heun steps
    (Euler into sigma 0); from 20 steps a Karras schedule of the remaining steps and one (two from 36 steps)
    restart from sigma 0.1 back up to sigma 2, re-noised from the image noise."""
    s_in = x.new_ones([x.shape[0]])
    steps = sigmas.shape[0] - 1
    restarts = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = sampling.get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(),
                                            sigmas[0].item(), device=sigmas.device)
        restarts = {0.1: [restart_steps + 1, restart_times, 2]}
    restarts = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restarts.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts:
            restart_steps, restart_times, restart_max = restarts[i + 1]
            low_index = i + 1
            high_index = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if high_index < low_index:
                again = sampling.get_sigmas_karras(restart_steps, sigmas[low_index].item(),
                                                   sigmas[high_index].item(), device=sigmas.device)[:-1]
                for _ in range(restart_times):
                    pairs.extend(zip(again[:-1], again[1:]))

    def to_d(x, sigma, denoised):
        return (x - denoised) / sigma

    previous = None
    for old, new in pairs:
        if previous is None:
            previous = old
        elif previous < old:
            x = x + sampling.torch.randn_like(x) * s_noise * (old ** 2 - previous ** 2) ** 0.5
        denoised = model(x, old * s_in)
        d = to_d(x, old, denoised)
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, new, model(x_2, new * s_in))
            x = x + (d + d_2) / 2 * dt
        previous = new
    return x


@torch.no_grad()
def lcm_sample(sampling, model, x, sigmas):
    """A1111's LCM sampler: jump to the denoised prediction, then re-noise to the next sigma with the image noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * sampling.torch.randn_like(x)
    return x


def a1111_timesteps(steps: int, options: Options) -> torch.Tensor:
    """range(0, 1000, 1000 // steps) + 1, clipped to 999 (steps + 1 with always-discard-penultimate)."""
    if options.always_discard_next_to_last_sigma:
        steps += 1
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def _ddim_tables(alphas_cumprod, timesteps, eta):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    a, a_prev = alphas.double().numpy(), alphas_prev.numpy()
    sigmas = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    return alphas, alphas_prev, torch.sqrt(1 - alphas), sigmas


@torch.no_grad()
def ddim_sample(sampling, model: CFG, alphas_cumprod, x, timesteps, eta=0.0, cfg_pp=False):
    """A1111's DDIM over its timesteps, from the last down for len - 1 steps (CFG in eps space); each step draws
    image noise (times sigma_t, 0 at eta 0). CFG++: the guidance scale / 12.5 and the direction term from the
    unconditional noise."""
    alphas, alphas_prev, sqrt_one_minus, sigmas = _ddim_tables(alphas_cumprod, timesteps, eta)
    if cfg_pp:
        model.scale_multiplier, model.keep_uncond = 1 / 12.5, True
    s_in = x.new_ones((x.shape[0],))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus[index].item() * s_x * e_t) / a_t.sqrt()
        direction = model.last_uncond if cfg_pp else e_t
        dir_xt = (1.0 - a_prev - sigma_t ** 2).sqrt() * direction
        noise = sigma_t * sampling.torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x


@torch.no_grad()
def plms_sample(model: CFG, alphas_cumprod, x, timesteps):
    """A1111's PLMS: a pseudo improved-Euler first step, then Adams-Bashforth of order 2, 3, 4 on the noise
    predictions, over its timesteps from the last down for len - 1 steps."""
    alphas, alphas_prev, sqrt_one_minus, _ = _ddim_tables(alphas_cumprod, timesteps, 0.0)
    s_in = x.new_ones((x.shape[0],))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    history = []

    def step(x, e_t, index):
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus[index].item() * s_x * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        if not history:
            x_next = step(x, e_t, index)
            e_next = model(x_next, timesteps[max(index - 1, 0)].item() * s_in)
            e_prime = (e_t + e_next) / 2
        elif len(history) == 1:
            e_prime = (3 * e_t - history[-1]) / 2
        elif len(history) == 2:
            e_prime = (23 * e_t - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = step(x, e_prime, index)
        history.append(e_t)
        if len(history) >= 4:
            history.pop(0)
    return x


class UniPCReference:
    """UniPC (Zhao et al. 2023) as A1111 runs it: multistep, data prediction, B(h) = h ("bh1") or e^h - 1 ("bh2"),
    over the discrete VP schedule of the model's alphas_cumprod with t_i = (i + 1) / 1000, `steps` time-uniform
    steps from t_start (1) to 1/1000, lower orders first and (option) last, no corrector after the final step; the
    model gets t_input = (t - 1/1000) * 1000 and its CFG'd noise prediction is turned into x0."""

    def __init__(self, model: CFG, alphas_cumprod, variant="bh1"):
        self.model, self.variant = model, variant
        self.total = len(alphas_cumprod)
        self.t_table = torch.linspace(0.0, 1.0, self.total + 1)[1:]
        self.log_alpha_table = 0.5 * torch.log(alphas_cumprod)

    def log_alpha(self, t):
        xp, yp = self.t_table, self.log_alpha_table
        k = torch.clamp(torch.searchsorted(xp, t.reshape(-1).contiguous(), right=True) - 1, 0, len(xp) - 2)
        return (yp[k] + (t.reshape(-1) - xp[k]) * (yp[k + 1] - yp[k]) / (xp[k + 1] - xp[k])).reshape(t.shape)

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def data_prediction(self, x, t):
        eps = self.model(x, (t - 1.0 / self.total) * 1000.0)
        return (x - self.std(t)[:, None, None, None] * eps) / torch.exp(self.log_alpha(t))[:, None, None, None]

    def update(self, x, models, times, t, order, use_corrector):
        previous_t, previous_model = times[-1], models[-1]
        lam_prev, lam_t = self.lam(previous_t), self.lam(t)
        sigma_prev, sigma_t = self.std(previous_t), self.std(t)
        alpha_t = torch.exp(self.log_alpha(t))
        h = lam_t - lam_prev
        rks, differences = [], []
        for i in range(1, order):
            rk = ((self.lam(times[-(i + 1)]) - lam_prev) / h)[0]
            rks.append(rk)
            differences.append((models[-(i + 1)] - previous_model) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, rhs, factorial = [], [], 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            rhs.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        matrix, rhs = torch.stack(rows), torch.tensor(rhs)
        stacked = torch.stack(differences, dim=1) if differences else None
        x_base = (sigma_t / sigma_prev)[:, None, None, None] * x \
            - (alpha_t * h_phi_1)[:, None, None, None] * previous_model
        scale = (alpha_t * b_h)[:, None, None, None]
        if stacked is not None:
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(matrix[:-1, :-1], rhs[:-1])
            x_t = x_base - scale * torch.einsum("k,bkchw->bchw", rhos_p, stacked)
        else:
            x_t = x_base
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(matrix, rhs)
            model_t = self.data_prediction(x_t, t)
            corrected = torch.einsum("k,bkchw->bchw", rhos_c[:-1], stacked) if stacked is not None else 0
            x_t = x_base - scale * (corrected + rhos_c[-1] * (model_t - previous_model))
        return x_t, model_t

    @torch.no_grad()
    def sample(self, x, steps, t_start=None, order=3, lower_order_final=True, skip_type="time_uniform"):
        assert steps >= order, "UniPC order must be < sampling steps"  # A1111 refuses these too
        assert skip_type == "time_uniform", "only A1111's default UniPC skip type is written here"
        t_end = 1.0 / self.total
        times_all = torch.linspace(1.0 if t_start is None else t_start, t_end, steps + 1)
        batch = x.shape[0]
        t = times_all[0].expand(batch)
        models, times = [self.data_prediction(x, t)], [t]
        for init_order in range(1, order):
            t = times_all[init_order].expand(batch)
            x, model_x = self.update(x, models, times, t, init_order, True)
            models.append(model_x)
            times.append(t)
        for step in range(order, steps + 1):
            t = times_all[step].expand(batch)
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            x, model_x = self.update(x, models, times, t, step_order, step != steps)
            times = times[1:] + [t]
            models = models[1:] + [models[-1]]
            if step < steps:
                models[-1] = model_x
        return x


# --- the pipeline ----------------------------------------------------------------------------------------------

def plain_prompt_ids(tokenizer, text: str) -> list[int]:
    """A1111's SD1 chunk for a plain prompt of at most 75 tokens: [BOS, tokens, EOS, EOS...] (77 ids)."""
    if any(c in text for c in "()[]:\\<>|") or "BREAK" in text or " AND " in text:
        raise ValueError(f"the reference handles plain prompts only: {text!r}")
    tokens = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
    if len(tokens) > CHUNK:
        raise ValueError("the reference handles one chunk (75 tokens) only")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert (bos, eos) == (49406, 49407), (bos, eos)
    return [bos] + tokens + [eos] * (CHUNK + 1 - len(tokens))


class A1111Reference:
    """A1111 1.10's pictures for jobs on one SD1 checkpoint, given its diffusers modules."""

    def __init__(self, unet, vae, text_encoder, tokenizer):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.sampling, self.external = k_diffusion_reference.load()
        self.model = LatentDiffusion(unet)
        self.denoiser = self.external.CompVisDenoiser(self.model, quantize=False)
        self._conds: dict = {}

    # text

    @torch.no_grad()
    def encode(self, text: str, clip_skip: int = 1) -> torch.Tensor:
        key = (text, clip_skip)
        if key not in self._conds:
            ids = torch.tensor([plain_prompt_ids(self.tokenizer, text)])
            out = self.text_encoder(input_ids=ids, output_hidden_states=clip_skip > 1)
            if clip_skip > 1:
                final_norm = getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm
                z = final_norm(out.hidden_states[-clip_skip])
            else:
                z = out.last_hidden_state
            self._conds[key] = z
        return self._conds[key]

    # images <-> latents

    @torch.no_grad()
    def encode_image(self, image: Image.Image, batch: int) -> torch.Tensor:
        array = np.moveaxis(np.array(image.convert("RGB")).astype(np.float32) / 255.0, 2, 0)
        pixels = torch.from_numpy(array)[None] * 2 - 1
        mean = self.vae.encode(pixels).latent_dist.mean
        return (SCALE_FACTOR * mean).repeat(batch, 1, 1, 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        images = []
        for i in range(latents.shape[0]):
            x = self.vae.decode((1.0 / SCALE_FACTOR) * latents[i:i + 1]).sample[0].float()
            x = torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)
            array = 255.0 * np.moveaxis(x.numpy(), 0, 2)
            images.append(Image.fromarray(array.astype(np.uint8)))
        return images

    # sampling

    def run(self, job: Job) -> list[Image.Image]:
        return self.decode(self.latents(job))

    @torch.no_grad()
    def latents(self, job: Job) -> torch.Tensor:
        sampler = SAMPLERS[job.sampler]
        options = job.options
        cond = self.encode(job.prompt, options.clip_stop_at_last_layers)
        uncond = self.encode(job.negative_prompt, options.clip_stop_at_last_layers)
        shape = (4, job.height // 8, job.width // 8)
        noise = ImageNoise(job, shape)
        first = noise.next()
        init = self.encode_image(job.init_image, job.batch_size) if job.init_image is not None else None
        with _patched_randomness(self.sampling, noise):
            if sampler.kind == "timesteps":
                return self._timesteps(sampler, job, cond, uncond, first, init)
            return self._k_diffusion(sampler, job, cond, uncond, first, init)

    def _img2img_steps(self, job: Job) -> tuple[int, int]:
        return job.steps, int(min(job.denoising_strength, 0.999) * job.steps)

    def _k_diffusion(self, sampler: Sampler, job: Job, cond, uncond, first, init):
        sampling, options = self.sampling, job.options
        denoiser = make_lcm_denoiser(self.external, self.model) if sampler.kind == "lcm" else self.denoiser
        model = CFG(denoiser, cond, uncond, job.cfg_scale)
        kwargs = {}
        if init is None:
            steps = job.steps
            sigmas = sampler_sigmas(sampler, job.schedule, steps, denoiser, options, sampling)
            x = first * sigmas[0]
            sigma_range = (denoiser.sigmas[0].item(), denoiser.sigmas[-1].item())
            schedule, n = sigmas, steps
            reference = x
        else:
            steps, t_enc = self._img2img_steps(job)
            sigmas = sampler_sigmas(sampler, job.schedule, steps, denoiser, options, sampling)
            schedule = sigmas[steps - t_enc - 1:]
            x = init + first * schedule[0]
            sigma_range = (float(schedule[-2]), float(schedule[0]))
            n = len(schedule) - 1
            reference = init
        eta = job.eta if job.eta is not None else options.eta_ancestral
        if sampler.brownian:
            low, high = sigmas[sigmas > 0].min(), sigmas.max()
            kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(reference, low, high, seed=job.seeds)
        if sampler.solver_type:
            kwargs["solver_type"] = sampler.solver_type
        if sampler.function == "restart":
            return restart_sample(sampling, model, x, schedule)
        if sampler.function == "lcm":
            return lcm_sample(sampling, model, x, schedule)
        function = getattr(sampling, sampler.function)
        kwargs.update(sampler_parameters(sampler.function, job))
        if sampler.function in ("sample_dpm_fast", "sample_dpm_adaptive"):
            kwargs.update(sigma_min=sigma_range[0], sigma_max=sigma_range[1], eta=eta)
            if sampler.function == "sample_dpm_fast":
                kwargs["n"] = n
            return function(model, x, disable=True, **kwargs)
        if "eta" in inspect.signature(function).parameters:
            kwargs["eta"] = eta
        return function(model, x, schedule, disable=True, **kwargs)

    def _timesteps(self, sampler: Sampler, job: Job, cond, uncond, first, init):
        options = job.options
        model = CFG(TimestepsDenoiser(self.model), cond, uncond, job.cfg_scale)
        alphas_cumprod = self.model.alphas_cumprod
        eta = job.eta if job.eta is not None else options.eta_ddim
        if init is None:
            timesteps = a1111_timesteps(job.steps, options)
            x = first
            t_start = None
        else:
            steps, t_enc = self._img2img_steps(job)
            all_timesteps = a1111_timesteps(steps, options)
            timesteps = all_timesteps[:t_enc]
            a = alphas_cumprod[all_timesteps[t_enc]]
            x = init * torch.sqrt(a) + first * torch.sqrt(1 - a)
            t_start = timesteps[-1] / 1000 + 1 / 1000
        if sampler.function in ("ddim", "ddim_cfgpp"):
            cfg_pp = sampler.function == "ddim_cfgpp"
            return ddim_sample(self.sampling, model, alphas_cumprod, x, timesteps, eta, cfg_pp)
        if sampler.function == "plms":
            return plms_sample(model, alphas_cumprod, x, timesteps)
        unipc = UniPCReference(model, alphas_cumprod, options.uni_pc_variant)
        return unipc.sample(x, len(timesteps), t_start, options.uni_pc_order, options.uni_pc_lower_order_final,
                            options.uni_pc_skip_type)


def noise_floor(reference: A1111Reference, job: Job, pictures=None, nudge: float = 1e-6) -> int:
    """How far (max |delta| in 1/255 steps) the reference's own pictures move when every initial noise value is
    nudged by `nudge`: the resolution below which a difference from the engine says nothing."""
    pictures = pictures if pictures is not None else reference.run(job)
    nudged = reference.run(replace(job, noise_nudge=job.noise_nudge + nudge))
    return max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(pictures, nudged))


def image_from_seed(seed: int, size=(64, 64)) -> Image.Image:
    """A smooth test picture for img2img (gradients and a disc, no pixel noise)."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, rng.uniform(0.15, 0.3) * width
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2).astype(np.float32)
    red = 255 * (0.2 + 0.6 * xx / width)
    green = 255 * (0.3 + 0.5 * yy / height) * (1 - 0.5 * disc)
    blue = 255 * (0.4 + 0.5 * disc)
    return Image.fromarray(np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8))
