"""A1111 1.10's schedule types (webui/engine/sampling/schedules.py).

Karras, Exponential, Polyexponential and Uniform are checked against k-diffusion 0.0.16 itself (the code A1111 runs,
so bit for bit); A1111's own types against small computations written here from their published definitions.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from tests.k_diffusion_reference import load
from webui.core.samplers import SCHEDULE_TYPES, schedule_listing
from webui.engine.sampling.schedules import find_schedule, make_sigmas
from webui.engine.sampling.sigmas import NoiseLevels

sampling, external = load()

STEPS = (1, 4, 6, 20)
REL = 1e-6


@pytest.fixture(scope="module")
def levels() -> NoiseLevels:
    return NoiseLevels.from_config({})  # SD 1.x / 2.x: scaled_linear 0.00085 .. 0.012, 1000 steps


@pytest.fixture(scope="module")
def denoiser(levels):
    """k-diffusion's CompVis denoiser over the same alphas_cumprod (what A1111 wraps the checkpoint in)."""
    return external.CompVisDenoiser(SimpleNamespace(alphas_cumprod=levels.alphas_cumprod))


def assert_close(ours: torch.Tensor, expected, rel: float = REL):
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float64))
    assert ours.shape == expected.shape, (ours, expected)
    assert torch.allclose(ours.double(), expected, rtol=rel, atol=0), (ours, expected)


def assert_schedule_shape(sigmas: torch.Tensor, length: int, ends_in_zero: bool = True):
    assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu"
    assert sigmas.shape == (length,)
    assert bool((sigmas[:-1] >= sigmas[1:]).all()), sigmas  # descending
    assert (sigmas[-1].item() == 0.0) == ends_in_zero


# --- the table -------------------------------------------------------------------------------------------------------

A1111_TABLE = [  # A1111 1.10's modules/sd_schedulers.py: (name, label, default_rho, need_inner_model)
    ("automatic", "Automatic", -1, False),
    ("uniform", "Uniform", -1, True),
    ("karras", "Karras", 7, False),
    ("exponential", "Exponential", -1, False),
    ("polyexponential", "Polyexponential", 1, False),
    ("sgm_uniform", "SGM Uniform", -1, True),
    ("kl_optimal", "KL Optimal", -1, False),
    ("align_your_steps", "Align Your Steps", -1, False),
    ("simple", "Simple", -1, True),
    ("normal", "Normal", -1, True),
    ("ddim", "DDIM", -1, True),
    ("beta", "Beta", -1, True),
]


def test_table_is_a1111s_in_order():
    """One table (webui/core/samplers.py) feeds the engine's lookup and the /sdapi/v1/schedulers listing."""
    rows = [(s.name, s.label, s.default_rho, s.need_inner_model) for s in SCHEDULE_TYPES]
    assert rows == A1111_TABLE
    assert [s.aliases for s in SCHEDULE_TYPES if s.aliases] == [("SGMUniform",)]
    listing = schedule_listing()
    assert [(e["name"], e["label"], e["default_rho"], e["need_inner_model"]) for e in listing] == A1111_TABLE
    assert [e["aliases"] for e in listing] == [["SGMUniform"] if e["name"] == "sgm_uniform" else None
                                               for e in listing]  # as A1111 lists them
    assert [type(e["default_rho"]) for e in listing[:3]] == [int, int, float]  # JSON -1 and 7.0, as before
    for schedule in SCHEDULE_TYPES:
        assert find_schedule(schedule.name) is find_schedule(schedule.label) is schedule


def test_lookup_by_name_label_and_alias():
    assert find_schedule("karras") is find_schedule("Karras")
    assert find_schedule("SGMUniform") is find_schedule("sgm_uniform") is find_schedule("SGM Uniform")
    assert find_schedule("nope") is None
    with pytest.raises(ValueError):
        make_sigmas("nope", 4, NoiseLevels.from_config({}))


def test_rejects_zero_steps(levels):
    with pytest.raises(ValueError):
        make_sigmas("Karras", 0, levels)


# --- k-diffusion's schedules: bit for bit ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", STEPS)
def test_karras(levels, n):
    ours = make_sigmas("Karras", n, levels)
    assert torch.equal(ours, sampling.get_sigmas_karras(n, levels.sigma_min, levels.sigma_max))  # rho 7
    assert_schedule_shape(ours, n + 1)
    custom = make_sigmas("karras", n, levels, sigma_min=0.1, sigma_max=10.0, rho=5.5)
    assert torch.equal(custom, sampling.get_sigmas_karras(n, 0.1, 10.0, rho=5.5))


@pytest.mark.parametrize("n", STEPS)
def test_exponential(levels, n):
    ours = make_sigmas("Exponential", n, levels)
    assert torch.equal(ours, sampling.get_sigmas_exponential(n, levels.sigma_min, levels.sigma_max))
    assert_schedule_shape(ours, n + 1)
    assert torch.equal(make_sigmas("Exponential", n, levels, sigma_min=0.05, sigma_max=12.0, rho=3.0),
                       sampling.get_sigmas_exponential(n, 0.05, 12.0))  # rho is not for this type


@pytest.mark.parametrize("n", STEPS)
def test_polyexponential(levels, n):
    ours = make_sigmas("Polyexponential", n, levels)
    assert torch.equal(ours, sampling.get_sigmas_polyexponential(n, levels.sigma_min, levels.sigma_max))  # rho 1
    assert_schedule_shape(ours, n + 1)
    assert torch.equal(make_sigmas("polyexponential", n, levels, sigma_min=0.1, sigma_max=10.0, rho=2.5),
                       sampling.get_sigmas_polyexponential(n, 0.1, 10.0, rho=2.5))


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("label", ["Uniform", "Automatic"])
def test_uniform_is_the_denoisers_own(levels, denoiser, n, label):
    ours = make_sigmas(label, n, levels, sigma_min=0.5, sigma_max=5.0)  # this type ignores the range
    assert torch.equal(ours, denoiser.get_sigmas(n))
    assert_schedule_shape(ours, n + 1)


def test_model_range_is_the_default(levels):
    assert torch.equal(make_sigmas("Karras", 8, levels),
                       make_sigmas("Karras", 8, levels, sigma_min=levels.sigma_min, sigma_max=levels.sigma_max, rho=7))


# --- A1111's own schedules, from their definitions -----------------------------------------------------------------

def _continuous_range(denoiser, sigma_min, sigma_max):
    start = denoiser.sigma_to_t(torch.tensor(sigma_max, dtype=torch.float32))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min, dtype=torch.float32))
    return float(start), float(end)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("bounds", [None, (0.1, 10.0)])
def test_sgm_uniform(levels, denoiser, n, bounds):
    """n timesteps evenly spaced from t(sigma_max) towards t(sigma_min), the end point left out, then 0."""
    sigma_min, sigma_max = bounds or (levels.sigma_min, levels.sigma_max)
    start, end = _continuous_range(denoiser, sigma_min, sigma_max)
    timesteps = [start + (end - start) * i / n for i in range(n)]
    expected = [float(denoiser.t_to_sigma(torch.tensor(timesteps))[i]) for i in range(n)] + [0.0]
    kwargs = {} if bounds is None else {"sigma_min": sigma_min, "sigma_max": sigma_max}
    ours = make_sigmas("SGM Uniform", n, levels, **kwargs)
    assert_close(ours, expected)
    assert_schedule_shape(ours, n + 1)
    if bounds is None:
        assert ours[0].item() == pytest.approx(levels.sigma_max, rel=REL)  # exp(log sigma) at t = 999


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("bounds", [None, (0.1, 10.0)])
def test_normal(levels, denoiser, n, bounds):
    """n timesteps evenly spaced from t(sigma_max) to t(sigma_min), both ends included, then 0."""
    sigma_min, sigma_max = bounds or (levels.sigma_min, levels.sigma_max)
    start, end = _continuous_range(denoiser, sigma_min, sigma_max)
    timesteps = [start + (end - start) * i / max(n - 1, 1) for i in range(n)]
    expected = denoiser.t_to_sigma(torch.tensor(timesteps)).tolist() + [0.0]
    kwargs = {} if bounds is None else {"sigma_min": sigma_min, "sigma_max": sigma_max}
    ours = make_sigmas("Normal", n, levels, **kwargs)
    assert_close(ours, expected)
    assert_schedule_shape(ours, n + 1)
    if bounds is None and n > 1:
        assert ours[n - 1].item() == pytest.approx(levels.sigma_min, rel=REL)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("bounds", [None, (0.1, 10.0)])
def test_kl_optimal(levels, n, bounds):
    """arctan(sigma) falls linearly from arctan(sigma_max) to arctan(sigma_min) over n steps (Sabour et al. 2024).

    A1111 appends no 0: the n + 1 values end at sigma_min. Compared in arctan space, where float32 rounding of the
    angles stays at ~1e-7 (tan near pi/2 multiplies it by up to sigma_max)."""
    sigma_min, sigma_max = bounds or (levels.sigma_min, levels.sigma_max)
    kwargs = {} if bounds is None else {"sigma_min": sigma_min, "sigma_max": sigma_max}
    ours = make_sigmas("KL Optimal", n, levels, **kwargs)
    assert_schedule_shape(ours, n + 1, ends_in_zero=False)
    a_min, a_max = math.atan(np.float32(sigma_min)), math.atan(np.float32(sigma_max))
    angles = [(1 - i / n) * a_max + (i / n) * a_min for i in range(n + 1)]
    assert np.allclose(np.arctan(ours.double().numpy()), angles, rtol=REL, atol=0)
    assert ours[-1].item() == pytest.approx(sigma_min, rel=REL)
    assert ours[0].item() == pytest.approx(sigma_max, rel=1e-5)


# Align Your Steps' 10-step schedules as NVIDIA publishes them (research.nvidia.com/labs/toronto-ai/AlignYourSteps,
# "How to use"): 11 sigmas from 14.615 down to 0.029.
AYS_PUBLISHED = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def _ays_reference(table: list[float], n: int) -> list[float]:
    """n sigmas spread evenly over the table's positions, linear in log sigma, then 0 (the table itself for n = 11).

    Positions run from the table's smallest value, so a 1-step schedule is that smallest value."""
    if n == len(table):
        return table + [0.0]
    rising = [math.log(s) for s in reversed(table)]
    out = []
    for j in range(n):
        position = (j / (n - 1) if n > 1 else 0.0) * (len(table) - 1)
        k = min(int(position), len(table) - 2)
        frac = position - k
        out.append(math.exp(rising[k] + (rising[k + 1] - rising[k]) * frac))
    return out[::-1] + [0.0]


@pytest.mark.parametrize("n", (*STEPS, 10, 11))
@pytest.mark.parametrize("family, table", [("sd1", "sd15"), ("sd2", "sd15"), ("sdxl", "sdxl")])
def test_align_your_steps(levels, n, family, table):
    ours = make_sigmas("Align Your Steps", n, levels, family=family, sigma_min=0.5, sigma_max=5.0)  # range ignored
    assert_close(ours, _ays_reference(AYS_PUBLISHED[table], n))
    assert_schedule_shape(ours, n + 1)
    if n == 11:
        assert torch.equal(ours, torch.tensor(AYS_PUBLISHED[table] + [0.0], dtype=torch.float32))


def test_align_your_steps_tables_differ(levels):
    assert not torch.equal(make_sigmas("Align Your Steps", 11, levels, family="sd1"),
                           make_sigmas("Align Your Steps", 11, levels, family="sdxl"))


@pytest.mark.parametrize("n", (*STEPS, 3, 7, 30))
def test_simple(levels, n):
    """Every (1000 / n)-th trained sigma counted from the largest, then 0."""
    trained = levels.sigmas.tolist()
    expected = [trained[999 - (i * 1000) // n] for i in range(n)] + [0.0]
    ours = make_sigmas("Simple", n, levels)
    assert ours.tolist() == expected  # picked table entries: exact
    assert_schedule_shape(ours, n + 1)


def test_simple_truncates_a_float_stride_like_a1111(levels):
    """A1111 truncates i * (1000 / n) computed in doubles: for n = 38, 19 * (1000 / 38) is 499.99999999999994, so
    step 19 takes the trained sigma at timestep 500 (the exact quotient 500 would give timestep 499)."""
    ours = make_sigmas("Simple", 38, levels)
    assert ours[19].item() == levels.sigmas[500].item() != levels.sigmas[499].item()


@pytest.mark.parametrize("n, length", [(1, 1), (4, 4), (6, 7), (7, 8), (20, 20), (3, 3)])
def test_ddim(levels, n, length):
    """Trained sigmas at timesteps 1, 1 + s, ... below 1000 with s = 1000 // n, largest first, then 0.

    As in A1111, that is more than n sigmas when 1000 // n does not divide 999 finely enough (n = 6 gives 7)."""
    trained = levels.sigmas.tolist()
    stride = 1000 // n
    expected = [trained[t] for t in range(1, 1000, stride)][::-1] + [0.0]
    ours = make_sigmas("DDIM", n, levels)
    assert ours.tolist() == expected
    assert_schedule_shape(ours, length + 1)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("alpha, beta", [(0.6, 0.6), (0.5, 0.7)])
def test_beta(levels, n, alpha, beta):
    """sigma_min + Beta(alpha, beta) quantile of a 1 .. 0 ramp * (sigma_max - sigma_min), then 0 (Lee et al. 2024)."""
    ramp = np.array([1 - j / (n - 1) if n > 1 else 1.0 for j in range(n)])
    quantiles = stats.beta.ppf(ramp, alpha, beta)
    expected = list(levels.sigma_min + quantiles * (levels.sigma_max - levels.sigma_min)) + [0.0]
    ours = make_sigmas("Beta", n, levels, beta_alpha=alpha, beta_beta=beta)
    assert_close(ours, expected)
    assert_schedule_shape(ours, n + 1)
    assert ours[0].item() == np.float32(levels.sigma_max)
    if n > 1:
        assert ours[n - 1].item() == np.float32(levels.sigma_min)


def test_beta_uses_the_range(levels):
    ours = make_sigmas("Beta", 5, levels, sigma_min=0.1, sigma_max=10.0)
    assert ours[0].item() == pytest.approx(10.0) and ours[4].item() == pytest.approx(0.1)
