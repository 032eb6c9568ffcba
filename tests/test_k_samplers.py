"""Our k-diffusion samplers against k-diffusion 0.0.16 itself (what A1111 1.10 runs), on a small nonlinear denoiser.

Both sides get the same noise, the way A1111 gives it: k-diffusion's `torch` is replaced by an object whose
`randn_like` hands out prepared draws in order (A1111's TorchHijack), and ours gets a noise_sampler handing out the
same draws; both must use the same number of them. The SDE samplers are also run on Brownian trees (k-diffusion's
BrownianTreeNoiseSampler vs our BrownianNoise). Results must agree to TOLERANCE (max abs difference), callbacks must
come as often, with the same 'i' and the same values. Restart and LCM, A1111's own, are checked against a short
re-derivation from A1111's description.
"""
from __future__ import annotations

import contextlib
import functools
import inspect

import pytest
import torch

from tests.k_diffusion_reference import load
from webui.core.samplers import SAMPLER_NAMES
from webui.engine.sampling import k_samplers as ks
from webui.engine.sampling.brownian import BrownianNoise
from webui.engine.sampling.lcm import LCMNoiseLevels
from webui.engine.sampling.sigmas import alphas_cumprod_for

sampling, external = load()

TOLERANCE = 1e-5  # max abs difference between our result and k-diffusion's (float32)
SHAPE = (2, 4, 8, 8)  # batch 2
SEEDS = [1234, 987654321]

ALPHAS_CUMPROD = alphas_cumprod_for({})  # SD 1.x: scaled_linear 0.00085 .. 0.012
TABLE = external.DiscreteSchedule(((1 - ALPHAS_CUMPROD) / ALPHAS_CUMPROD) ** 0.5, quantize=False)
SIGMA_MIN, SIGMA_MAX = TABLE.sigma_min.item(), TABLE.sigma_max.item()


def karras(n):
    return sampling.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX)


def uniform(n):
    return TABLE.get_sigmas(n)


SCHEDULES = {"karras": karras, "uniform": uniform}


# --- deterministic noise, shared by both sides ---------------------------------------------------------------------

class NoiseTape:
    """Draw k is a fixed function of k: two tapes with the same seed give the same sequence."""

    def __init__(self, seed=7):
        self.seed, self.used = seed, 0

    def next(self):
        generator = torch.Generator().manual_seed(self.seed * 100_000 + self.used)
        self.used += 1
        return torch.randn(SHAPE, generator=generator)

    def sampler(self, sigma, sigma_next):
        return self.next()


class TorchWithTape:
    """k-diffusion's `torch`, except that randn_like returns the tape's next draw (what A1111 does)."""

    def __init__(self, tape):
        self._tape = tape

    def randn_like(self, x):
        assert tuple(x.shape) == SHAPE
        return self._tape.next()

    def __getattr__(self, name):
        return getattr(torch, name)


@contextlib.contextmanager
def randn_from(tape):
    real = sampling.torch
    sampling.torch = TorchWithTape(tape)
    try:
        yield
    finally:
        sampling.torch = real


# --- a small nonlinear denoiser ------------------------------------------------------------------------------------

def make_model():
    """x0 = x - sigma * tanh(mix(x * c_in) + 0.2 log(1 + sigma)), mix a fixed random channel mixing plus a
    neighbour term (a cheap stand-in for a convolution, kept off the thread pool); records its sigmas."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=generator)[None, :, :, None, None] * 0.3
    bias = torch.randn(4, generator=generator)[None, :, None, None] * 0.1

    def model(x, sigma):
        assert sigma.shape == (x.shape[0],)
        model.sigmas.append(sigma.clone())
        s = sigma[:, None, None, None]
        scaled = x / (s ** 2 + 1) ** 0.5
        mixed = (weight * scaled[:, None]).sum(2) + 0.5 * scaled.roll(1, dims=-1) + bias
        return x - s * torch.tanh(mixed + 0.2 * torch.log1p(s))

    model.sigmas = []
    return model


def start_latent(sigma_max):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(42)) * sigma_max


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def assert_same_callbacks(ours, theirs):
    assert len(ours) == len(theirs) > 0
    assert [c['i'] for c in ours] == [c['i'] for c in theirs]
    for mine, reference in zip(ours, theirs):
        assert mine.keys() == reference.keys()
        for key, value in reference.items():
            if isinstance(value, torch.Tensor):
                assert max_diff(torch.as_tensor(mine[key]), value) <= TOLERANCE, key
            else:
                assert mine[key] == pytest.approx(value, rel=1e-6), key


def assert_same_model_calls(ours, theirs):
    assert len(ours.sigmas) == len(theirs.sigmas)
    for mine, reference in zip(ours.sigmas, theirs.sigmas):
        assert max_diff(mine, reference) <= TOLERANCE


def compare(name, reference, run_reference, run_ours, skips_unused_draws=False):
    """Runs k-diffusion's `reference` through run_reference(fn, model, callback) under the randn tape and ours through
    run_ours(fn, model, noise_sampler, callback); checks result, draw count (ours makes none when
    `skips_unused_draws`: draws k-diffusion makes and never uses), callbacks and model calls."""
    their_tape, our_tape = NoiseTape(), NoiseTape()
    their_model, our_model = make_model(), make_model()
    their_calls, our_calls = [], []
    with randn_from(their_tape):
        expected = run_reference(reference, their_model, their_calls.append, their_tape)
    got = run_ours(ks.SAMPLERS[name], our_model, our_tape.sampler, our_calls.append)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert max_diff(got, expected) <= TOLERANCE
    assert our_tape.used == (0 if skips_unused_draws else their_tape.used)
    assert_same_callbacks(our_calls, their_calls)
    assert_same_model_calls(our_model, their_model)
    return our_tape.used


# --- the schedule samplers -----------------------------------------------------------------------------------------

CHURN = {"s_churn": 2.0, "s_tmin": 0.2, "s_tmax": 8.0, "s_noise": 1.05}
ANCESTRAL = {"eta": 0.5, "s_noise": 1.05}
DETERMINISTIC_ANCESTRAL = {"eta": 0.}

SCHEDULE_SAMPLERS = {
    "Euler": (sampling.sample_euler, [{}, CHURN]),
    "Heun": (sampling.sample_heun, [{}, CHURN]),
    "DPM2": (sampling.sample_dpm_2, [{}, CHURN]),
    "LMS": (sampling.sample_lms, [{}]),
    "Euler a": (sampling.sample_euler_ancestral, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
    "DPM2 a": (sampling.sample_dpm_2_ancestral, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
    "DPM++ 2S a": (sampling.sample_dpmpp_2s_ancestral, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
    "DPM++ 2M": (sampling.sample_dpmpp_2m, [{}]),
    "DPM++ SDE": (sampling.sample_dpmpp_sde, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
    "DPM++ 2M SDE": (sampling.sample_dpmpp_2m_sde, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
    "DPM++ 2M SDE Heun": (functools.partial(sampling.sample_dpmpp_2m_sde, solver_type='heun'), [{}, ANCESTRAL]),
    "DPM++ 3M SDE": (sampling.sample_dpmpp_3m_sde, [{}, ANCESTRAL, DETERMINISTIC_ANCESTRAL]),
}
SDE = {"DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}

SCHEDULE_CASES = [
    pytest.param(name, options, schedule, steps, id=f"{name}-{schedule}-{steps}-{'-'.join(options) or 'defaults'}")
    for name, (_, option_sets) in SCHEDULE_SAMPLERS.items()
    for options in option_sets
    for schedule in SCHEDULES
    for steps in (3, 10)
]


@pytest.mark.parametrize("name, options, schedule, steps", SCHEDULE_CASES)
def test_matches_k_diffusion_with_a1111_noise(name, options, schedule, steps):
    sigmas = SCHEDULES[schedule](steps)
    x = start_latent(sigmas[0])
    reference, _ = SCHEDULE_SAMPLERS[name]

    def run_reference(fn, model, callback, tape):
        # the SDE samplers' default is a random Brownian tree; give them the tape (A1111's ancestral ones use randn)
        extra = {"noise_sampler": tape.sampler} if name in SDE else {}
        return fn(model, x.clone(), sigmas, callback=callback, disable=True, **options, **extra)

    def run_ours(fn, model, noise_sampler, callback):
        return fn(model, x.clone(), sigmas, noise_sampler=noise_sampler, callback=callback, **options)

    churn = name in {"Euler", "Heun", "DPM2"}
    used = compare(name, reference, run_reference, run_ours, skips_unused_draws=churn and not options.get("s_churn"))
    if churn and options.get("s_churn"):
        assert used == steps  # with churn on, noise is drawn every step, used or not, as k-diffusion does
    if name in {"LMS", "DPM++ 2M"}:
        assert used == 0


@pytest.mark.parametrize("name", sorted(SDE))
@pytest.mark.parametrize("options", [{}, ANCESTRAL], ids=["defaults", "eta-s_noise"])
@pytest.mark.parametrize("schedule, steps", [("karras", 4), ("uniform", 9)])
def test_sde_samplers_match_on_brownian_trees(name, options, schedule, steps):
    sigmas = SCHEDULES[schedule](steps)
    x = start_latent(sigmas[0])
    low, high = sigmas[sigmas > 0].min(), sigmas.max()  # as A1111's create_noise_sampler
    reference, _ = SCHEDULE_SAMPLERS[name]

    def run_reference(fn, model, callback, tape):
        trees = sampling.BrownianTreeNoiseSampler(x, low, high, seed=list(SEEDS))
        return fn(model, x.clone(), sigmas, callback=callback, disable=True, noise_sampler=trees, **options)

    def run_ours(fn, model, noise_sampler, callback):
        return fn(model, x.clone(), sigmas, noise_sampler=BrownianNoise(x, low, high, SEEDS), callback=callback,
                  **options)

    assert compare(name, reference, run_reference, run_ours) == 0


@pytest.mark.parametrize("name", ["DPM++ 2M SDE", "DPM++ 3M SDE"])
def test_one_step_sde_returns_the_prediction(name):
    """k-diffusion 0.0.16 fails on a one-step schedule here (UnboundLocalError: h); ours returns the prediction."""
    sigmas = karras(1)
    x = start_latent(sigmas[0])
    reference, _ = SCHEDULE_SAMPLERS[name]
    with pytest.raises(UnboundLocalError):
        reference(make_model(), x.clone(), sigmas, disable=True, noise_sampler=NoiseTape().sampler)
    tape = NoiseTape()
    got = ks.SAMPLERS[name](make_model(), x.clone(), sigmas, noise_sampler=tape.sampler)
    assert torch.equal(got, make_model()(x.clone(), sigmas[:1].repeat(2)))
    assert tape.used == 0


# --- Brownian noise on its own -------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_tensors", [True, False], ids=["tensor-levels", "float-levels"])
def test_brownian_noise_matches_k_diffusion_tree(as_tensors):
    x = start_latent(1.)
    sigmas = karras(8)
    low, high = sigmas[sigmas > 0].min(), sigmas.max()
    if not as_tensors:
        low, high = low.item(), high.item()
    theirs = sampling.BrownianTreeNoiseSampler(x, low, high, seed=list(SEEDS))
    ours = BrownianNoise(x, low, high, SEEDS)
    pairs = [(sigmas[i], sigmas[i + 1]) for i in range(len(sigmas) - 2)]
    pairs += [(sigmas[5], sigmas[2]), (sigmas[0], sigmas[-2]), (3.0, 1.5), (0.5, 0.7)]  # upward and floats too
    for sigma, sigma_next in pairs:
        expected = theirs(sigma, sigma_next)
        got = ours(sigma, sigma_next)
        assert got.shape == x.shape
        assert max_diff(got, expected) <= TOLERANCE


def test_brownian_noise_is_per_image_and_reversed_when_going_up():
    x = start_latent(1.)
    both = BrownianNoise(x, 0.03, 14.6, SEEDS)
    first_alone = BrownianNoise(x[:1], 0.03, 14.6, SEEDS[:1])
    second_alone = BrownianNoise(x[1:], 14.6, 0.03, SEEDS[1:])  # a range given high first flips the sign
    down = both(5.0, 2.0)
    assert torch.equal(down[:1], first_alone(5.0, 2.0))
    assert torch.equal(down[1:], -second_alone(5.0, 2.0))
    assert torch.equal(both(2.0, 5.0), -down)
    assert 0.7 < down.std().item() < 1.3  # unit variance
    with pytest.raises(ValueError):
        BrownianNoise(x, 0.03, 14.6, SEEDS[:1])


# --- DPM fast / DPM adaptive ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 7, 10])
@pytest.mark.parametrize("options", [{}, ANCESTRAL, {"eta": 1.0}], ids=["eta0", "eta0.5-s_noise", "eta1"])
@pytest.mark.parametrize("range_kind", ["floats", "tensors"])
def test_dpm_fast_matches_k_diffusion(n, options, range_kind):
    if range_kind == "floats":  # txt2img: the denoiser's whole range
        sigma_min, sigma_max = SIGMA_MIN, SIGMA_MAX
    else:  # img2img: the schedule's last nonzero level and first level, as tensors
        sched = karras(12)[5:]
        sigma_min, sigma_max = sched[-2], sched[0]
    x = start_latent(float(sigma_max))

    def run_reference(fn, model, callback, tape):
        return fn(model, x.clone(), sigma_min, sigma_max, n, callback=callback, disable=True, **options)

    def run_ours(fn, model, noise_sampler, callback):
        return fn(model, x.clone(), sigma_min, sigma_max, n, noise_sampler=noise_sampler, callback=callback, **options)

    used = compare("DPM fast", sampling.sample_dpm_fast, run_reference, run_ours)
    assert used == n // 3 + 1  # one draw per step, also at eta 0


@pytest.mark.parametrize("options", [{}, ANCESTRAL, {"order": 2}, {"rtol": 0.02, "atol": 0.002}],
                         ids=["defaults", "eta0.5-s_noise", "order2", "tight"])
def test_dpm_adaptive_matches_k_diffusion(options):
    x = start_latent(SIGMA_MAX)

    def run_reference(fn, model, callback, tape):
        return fn(model, x.clone(), SIGMA_MIN, SIGMA_MAX, callback=callback, disable=True, **options)

    def run_ours(fn, model, noise_sampler, callback):
        return fn(model, x.clone(), SIGMA_MIN, SIGMA_MAX, noise_sampler=noise_sampler, callback=callback, **options)

    assert compare("DPM adaptive", sampling.sample_dpm_adaptive, run_reference, run_ours) > 0


def test_dpm_fast_and_adaptive_reject_a_zero_level():
    x = start_latent(1.)
    tape = NoiseTape()
    with pytest.raises(ValueError):
        ks.dpm_fast(make_model(), x, 0., SIGMA_MAX, 5, noise_sampler=tape.sampler)
    with pytest.raises(ValueError):
        ks.dpm_adaptive(make_model(), x, 0., SIGMA_MAX, noise_sampler=tape.sampler)


# --- Restart (A1111's own) -----------------------------------------------------------------------------------------

def restart_reference(model, x, sigmas, tape, s_noise=1.):
    """Restart as A1111 describes it, rebuilt from k-diffusion's pieces: from 20 steps, a Karras schedule of
    steps - K * T steps between the given schedule's last nonzero and first level (K = 9, T = 1; from 36 steps
    K = steps // 4, T = 2); after arriving at the level nearest 0.1, T times: jump with fresh noise to the level
    nearest 2 and come back down along K + 1 Karras levels; every step a Heun step (Euler to 0); a jump up from
    level a to b adds noise * s_noise * sqrt(b^2 - a^2)."""
    steps = len(sigmas) - 1
    if steps >= 20:
        k, times = (steps // 4, 2) if steps >= 36 else (9, 1)
        base = sampling.get_sigmas_karras(steps - k * times, sigmas[-2].item(), sigmas[0].item())
        low, high = int((base - 0.1).abs().argmin()), int((base - 2).abs().argmin())
        assert high < low
        loop = sampling.get_sigmas_karras(k + 1, base[low].item(), base[high].item())[:-1]
        runs = [base[:low + 1]] + [loop] * times + [base[low:]]
    else:
        runs = [sigmas]
    legs = [(run[j], run[j + 1]) for run in runs for j in range(len(run) - 1)]
    level = legs[0][0]
    with randn_from(NoiseTape(seed=99)):  # Heun's churn draw, unused at s_churn 0
        for a, b in legs:
            if a > level:
                x = x + tape.next() * s_noise * (a ** 2 - level ** 2) ** 0.5
            x = sampling.sample_heun(model, x, torch.stack([a, b]), disable=True)
            level = b
    return x, legs


@pytest.mark.parametrize("steps", [8, 19, 20, 27, 36, 41])
@pytest.mark.parametrize("schedule", ["karras", "uniform"])
def test_restart_matches_its_description(steps, schedule):
    sigmas = SCHEDULES[schedule](steps)
    x = start_latent(sigmas[0])
    their_tape, our_tape = NoiseTape(), NoiseTape()
    s_noise = 1.05 if steps == 27 else 1.
    expected, legs = restart_reference(make_model(), x.clone(), sigmas, their_tape, s_noise)
    calls = []
    got = ks.restart(make_model(), x.clone(), sigmas, noise_sampler=our_tape.sampler, callback=calls.append,
                     s_noise=s_noise)
    assert max_diff(got, expected) <= TOLERANCE
    assert our_tape.used == their_tape.used
    assert len(calls) == len(legs) == steps  # A1111's restart budget keeps the step count
    assert [c['i'] for c in calls] == list(range(steps))
    for call, (a, b) in zip(calls, legs):
        assert call['sigma_hat'] == pytest.approx(a.item()) and call['sigma'] == pytest.approx(b.item())
    if steps < 20:
        assert our_tape.used == 0
    else:
        assert our_tape.used >= (2 if steps >= 36 else 1)
    again = ks.restart(make_model(), x.clone(), sigmas, noise_sampler=NoiseTape().sampler, s_noise=s_noise)
    assert torch.equal(again, got)  # deterministic given its noise


def test_restart_under_20_steps_is_heun():
    sigmas = karras(12)
    x = start_latent(sigmas[0])
    with randn_from(NoiseTape()):
        expected = sampling.sample_heun(make_model(), x.clone(), sigmas, disable=True)
    got = ks.restart(make_model(), x.clone(), sigmas, noise_sampler=NoiseTape().sampler)
    assert max_diff(got, expected) <= TOLERANCE


# --- LCM (A1111's own) --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 4, 8])
def test_lcm_sampler_jumps_to_the_prediction_and_renoises(steps):
    levels = LCMNoiseLevels(ALPHAS_CUMPROD)
    sigmas = levels.uniform(steps)
    x = start_latent(sigmas[0])
    model, tape, reference_tape = make_model(), NoiseTape(), NoiseTape()
    expected = x.clone()
    for i in range(steps):  # x <- x0(x); x <- x0 + next sigma * fresh noise, except at the end
        expected = model(expected, sigmas[i].repeat(2))
        if sigmas[i + 1] > 0:
            expected = expected + sigmas[i + 1] * reference_tape.next()
    calls = []
    got = ks.lcm(make_model(), x.clone(), sigmas, noise_sampler=tape.sampler, callback=calls.append)
    assert max_diff(got, expected) <= TOLERANCE
    assert tape.used == reference_tape.used == steps - 1
    assert [c['i'] for c in calls] == list(range(steps))
    assert all(c['sigma'] == c['sigma_hat'] for c in calls)
    assert torch.equal(ks.lcm(make_model(), x.clone(), sigmas, noise_sampler=NoiseTape().sampler), got)


def test_lcm_noise_levels_follow_a1111s_lcm_denoiser():
    """A1111's LCM denoiser is k-diffusion's discrete eps denoiser over alphas_cumprod[19::20] with nearest-level
    timesteps (20 k + 19), an interpolating inverse, and consistency-model output scalings (sigma_data 0.5,
    timestep * 10)."""
    levels = LCMNoiseLevels(ALPHAS_CUMPROD)
    table = ALPHAS_CUMPROD[19::20]
    assert len(table) == 50

    def unet(x_in, timesteps):  # stands for the UNet: an eps depending on the input and the integer timestep
        return torch.sin(x_in * 1.3 + timesteps[:, None, None, None].float() / 200)

    reference = external.DiscreteEpsDDPMDenoiser(lambda x_in, k: unet(x_in, k * 20 + 19), table, quantize=True)
    assert torch.equal(levels.sigmas, reference.sigmas)
    assert levels.sigma_min == reference.sigma_min.item() and levels.sigma_max == reference.sigma_max.item()
    assert torch.equal(levels.sigma_to_t(levels.sigmas), torch.arange(50) * 20 + 19)

    for n in (1, 2, 4, 7, 50):
        positions = (torch.linspace(999, 19, n) - 19) / 20
        expected = torch.cat([reference.t_to_sigma(positions), torch.zeros(1)])
        assert max_diff(levels.uniform(n), expected) <= 1e-6
    # 50 steps visit every table level from the top (timesteps 999, 979, ..., 19), then 0
    assert max_diff(levels.uniform(50), sampling.append_zero(reference.sigmas.flip(0))) <= 1e-6

    x = start_latent(3.)
    sigma = torch.tensor([3.0, 0.2])
    # the UNet gets x * c_in and the integer timestep of the nearest level (the engine's LCMParameterization)
    x_in, timesteps = x * (1 / (sigma ** 2 + 1.) ** 0.5)[:, None, None, None], levels.sigma_to_t(sigma)
    assert timesteps.dtype == torch.int64
    assert torch.equal(timesteps, reference.sigma_to_t(sigma) * 20 + 19)
    x0 = reference(x, sigma)
    scaled = (timesteps * 10.0)[:, None, None, None]
    expected = scaled / (scaled ** 2 + 0.25) ** 0.5 * x0 + 0.25 / (scaled ** 2 + 0.25) * x
    assert max_diff(levels.denoised(x, sigma, unet(x_in, timesteps)), expected) <= TOLERANCE


# --- the table -----------------------------------------------------------------------------------------------------

def accepted_options(name):
    """The user options (eta, the sigma options, solver_type, r) the sampler's function takes, off its signature."""
    options = {"eta", "s_churn", "s_tmin", "s_tmax", "s_noise", "solver_type", "r"}
    return {p for p in inspect.signature(ks.SAMPLERS[name]).parameters if p in options}


def test_sampler_table():
    assert set(ks.SAMPLERS) == {
        "Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "LMS", "DPM fast", "DPM adaptive", "DPM++ 2S a", "DPM++ SDE",
        "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "Restart", "LCM"}
    assert accepted_options("Euler") == {"s_churn", "s_tmin", "s_tmax", "s_noise"}
    assert accepted_options("Euler a") == {"eta", "s_noise"}
    assert accepted_options("DPM++ SDE") == {"eta", "s_noise", "r"}
    assert accepted_options("DPM++ 2M SDE") == {"eta", "s_noise", "solver_type"}
    assert accepted_options("DPM++ 2M SDE Heun") == {"eta", "s_noise"}
    assert accepted_options("DPM++ 2M") == accepted_options("LMS") == accepted_options("LCM") == set()
    assert accepted_options("DPM fast") == accepted_options("DPM adaptive") == {"eta", "s_noise"}
    assert accepted_options("Restart") == {"s_noise"}
    assert set(ks.A1111_OPTIONS) == set(ks.SAMPLERS)
    for name in ks.SAMPLERS:
        assert ks.A1111_OPTIONS[name] <= accepted_options(name), name
    # the Brownian-tree samplers are the "brownian_noise" flag of the name table (A1111's sampler option)
    assert {s.name for s in SAMPLER_NAMES if "brownian_noise" in s.flags} == SDE


def test_brownian_trees_draw_from_the_given_source_only_inside_their_calls():
    """A1111 makes the Brownian trees draw their normals from the run's random source (CPU / GPU / NV): with a source
    of zeros every increment is zero; without one, torchsde's own draws are used, inside and outside our calls."""
    import torchsde
    from torchsde._brownian import brownian_interval

    from webui.engine.sampling import brownian

    assert brownian_interval._randn is brownian._randn  # the hook is in place (a torchsde upgrade would show here)
    x = torch.zeros(2, 4, 8, 8)
    zeros = BrownianNoise(x, 0.1, 10.0, [5, 6], randn=lambda seed, shape: torch.zeros(shape))
    assert torch.count_nonzero(zeros(torch.tensor(10.0), torch.tensor(3.0))) == 0
    own = BrownianNoise(x, 0.1, 10.0, [5, 6])
    drawn = own(torch.tensor(10.0), torch.tensor(3.0))
    assert drawn.std() > 0.5
    outside = torchsde.BrownianTree(torch.tensor(0.1), torch.zeros(4, 8, 8), torch.tensor(10.0), entropy=5)
    assert outside(torch.tensor(0.1), torch.tensor(10.0)).std() > 0.5  # other torchsde users are untouched
    seeded = BrownianNoise(x, 0.1, 10.0, [5, 6],
                           randn=lambda seed, shape: torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(seeded(torch.tensor(10.0), torch.tensor(3.0)), drawn)  # = torchsde's own CPU draws
