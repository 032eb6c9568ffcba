"""The k-diffusion samplers A1111 1.10 offers, plus A1111's own Restart and LCM samplers, written for this project.

A1111 1.10 samples with k-diffusion 0.0.16; every sampler here follows that version's algorithm with the same
floating-point operations in the same order (float32), so a run matches A1111's to rounding.

Interface (every sampler):

    sampler(model, x, sigmas, *, noise_sampler, callback=None, **options) -> x

- `model(x, sigma_batch)` returns the denoised prediction (x0) of `x` at the noise levels `sigma_batch` ([batch]).
- `sigmas` is the descending schedule, normally ending in 0; `x` is already scaled to `sigmas[0]`.
- All randomness comes from `noise_sampler(sigma, sigma_next)`, a tensor shaped like `x`. It is called exactly
  where, and as often as, k-diffusion draws noise, including the draws k-diffusion makes with `torch.randn_like`
  (churn noise of Euler/Heun/DPM2 with s_churn above 0, drawn every step even when unused; the ancestral
  samplers' default noise; DPM-Solver's noise, drawn even at eta 0): A1111 replaces that `randn_like` with the
  next draw of its per-image generators, so the engine passes a `noise_sampler` that returns those draws (ignoring
  its arguments) or, for the SDE samplers, a `brownian.BrownianNoise`. For draws k-diffusion makes with
  `randn_like` the arguments are only indicative (the step's noise levels). One exception: at s_churn 0 (the
  default) Euler/Heun/DPM2 skip k-diffusion's churn draws, which no step uses and nothing else reads (`_churn`).
- `callback(info)` receives the dict k-diffusion's callback receives, at the same points: keys 'x', 'i', 'sigma',
  'sigma_hat', 'denoised' (DPM fast / adaptive pass DPM-Solver's keys: 't', 't_up', and for adaptive 'error',
  'h', 'steps', 'nfe', 'n_accept', 'n_reject').

Two samplers take a noise-level range instead of a schedule:
    dpm_fast(model, x, sigma_min, sigma_max, n, *, noise_sampler, callback=None, eta=0., s_noise=1.)
    dpm_adaptive(model, x, sigma_min, sigma_max, *, noise_sampler, callback=None, order=3, ..., eta=0., s_noise=1.)

Tables: `SAMPLERS` maps A1111's display name to the function; `A1111_OPTIONS` the user options (eta and the
sigma options) A1111 1.10 forwards to it from the request and settings (its other keyword arguments keep their
defaults). Which samplers get a Brownian tree as noise_sampler is the "brownian_noise" flag of
`webui.core.samplers.SAMPLER_NAMES`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy import integrate

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


# --- shared pieces -------------------------------------------------------------------------------------------------

def _per_image(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """`value` with trailing singleton dimensions up to `ndim`, to broadcast over images."""
    return value[(...,) + (None,) * (ndim - value.ndim)]


def _slope(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022): (x - x0) / sigma."""
    return (x - denoised) / _per_image(sigma, x.ndim)


def _report(callback: Callback | None, x, i, sigma, sigma_hat, denoised) -> None:
    if callback is not None:
        callback({'x': x, 'i': i, 'sigma': sigma, 'sigma_hat': sigma_hat, 'denoised': denoised})


def _ancestral_step(sigma_from, sigma_to, eta=1.):
    """(sigma_down, sigma_up) of an ancestral step: go deterministically down to sigma_down, then add noise of
    standard deviation sigma_up to land at sigma_to. eta scales the fresh noise (0: a deterministic step)."""
    if not eta:
        return sigma_to, 0.
    candidate = eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
    sigma_up = candidate if candidate < sigma_to else sigma_to
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _t(sigma: torch.Tensor) -> torch.Tensor:
    """Log-SNR time of DPM-Solver: t = -log(sigma)."""
    return sigma.log().neg()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    """Noise level of log-SNR time t: sigma = exp(-t)."""
    return t.neg().exp()


def _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s stochastic "churn": raise sigmas[i] to sigma_hat = sigmas[i] * (1 + gamma) by adding noise.
    With churn on, the noise is drawn every step, used or not, as k-diffusion does (later steps depend on the stream's
    position). With s_churn 0 no step uses it and nothing else reads that stream: the draw is skipped (k-diffusion
    makes and discards it), which saves a random tensor (and a host-to-device copy) per step. Returns (x, sigma_hat)."""
    sigma = sigmas[i]
    gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.
    sigma_hat = sigma * (gamma + 1)
    if s_churn == 0:
        return x, sigma_hat
    noise = noise_sampler(sigma, sigmas[i + 1]) * s_noise
    if gamma > 0:
        x = x + noise * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7., device='cpu') -> torch.Tensor:
    """Karras et al. (2022) schedule: n levels evenly spaced in sigma^(1/rho) from sigma_max to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    levels = (high + ramp * (low - high)) ** rho
    return torch.cat([levels, levels.new_zeros([1])]).to(device)


# --- Karras et al. (2022): Euler, Heun, and the DPM-Solver-2-like "DPM2" -------------------------------------------

@torch.no_grad()
def euler(model, x, sigmas, *, noise_sampler, callback=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
    """Euler: first-order steps of the probability-flow ODE, Algorithm 2 of Karras et al. (2022) with churn."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        slope = _slope(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + slope * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def heun(model, x, sigmas, *, noise_sampler, callback=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
    """Heun: Algorithm 2 of Karras et al. (2022), second-order (trapezoidal) steps, an Euler step down to sigma 0."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        slope = _slope(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + slope * dt
        else:
            x_euler = x + slope * dt
            slope_end = _slope(x_euler, sigmas[i + 1], model(x_euler, sigmas[i + 1] * ones))
            x = x + (slope + slope_end) / 2 * dt
    return x


@torch.no_grad()
def dpm_2(model, x, sigmas, *, noise_sampler, callback=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
    """DPM2 (Katherine Crowson): a midpoint step in log sigma, after DPM-Solver-2 (Lu et al., 2022), with Karras
    et al.'s churn; an Euler step down to sigma 0."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        slope = _slope(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + slope * (sigmas[i + 1] - sigma_hat)
        else:
            x = _midpoint_step(model, x, slope, sigma_hat, sigmas[i + 1], ones)
    return x


def _midpoint_step(model, x, slope, sigma_from, sigma_to, ones):
    """DPM2's step from sigma_from to sigma_to: the slope re-evaluated at their geometric midpoint."""
    sigma_mid = sigma_from.log().lerp(sigma_to.log(), 0.5).exp()
    x_mid = x + slope * (sigma_mid - sigma_from)
    slope_mid = _slope(x_mid, sigma_mid, model(x_mid, sigma_mid * ones))
    return x + slope_mid * (sigma_to - sigma_from)


# --- ancestral samplers --------------------------------------------------------------------------------------------

@torch.no_grad()
def euler_ancestral(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """Euler a (Katherine Crowson): an Euler step down to sigma_down, then fresh noise up to the next level."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = x + _slope(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpm_2_ancestral(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """DPM2 a (Katherine Crowson): DPM2's midpoint step down to sigma_down, then fresh noise up to the next level."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        slope = _slope(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + slope * (sigma_down - sigmas[i])
        else:
            x = _midpoint_step(model, x, slope, sigmas[i], sigma_down, ones)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_2s_ancestral(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """DPM++ 2S a: DPM-Solver++(2S) (Lu et al., 2022), single-step second order in log-SNR time, made ancestral by
    Katherine Crowson; an Euler step when the step ends at sigma 0."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + _slope(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            r = 1 / 2
            h = t_next - t
            t_mid = t + r * h
            x_mid = (_sigma(t_mid) / _sigma(t)) * x - (-h * r).expm1() * denoised
            denoised_mid = model(x_mid, _sigma(t_mid) * ones)
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


# --- linear multistep ----------------------------------------------------------------------------------------------

def _adams_weight(order: int, nodes, i: int, j: int) -> float:
    """Weight of the derivative at nodes[i - j] in a linear multistep step nodes[i] -> nodes[i + 1]: the integral
    over the step of the Lagrange basis polynomial through nodes[i], ..., nodes[i - order + 1] that is 1 at
    nodes[i - j] (numerically, like k-diffusion: scipy quad, epsrel 1e-4, on the float32 nodes)."""
    def basis(tau):
        value = 1.
        for k in range(order):
            if k != j:
                value *= (tau - nodes[i - k]) / (nodes[i - j] - nodes[i - k])
        return value
    return integrate.quad(basis, nodes[i], nodes[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def lms(model, x, sigmas, *, noise_sampler, callback=None, order=4):
    """LMS (Katherine Crowson): linear multistep (Adams-Bashforth-like) integration of the probability-flow ODE in
    sigma, using up to `order` past derivatives. Deterministic: `noise_sampler` is never called."""
    ones = x.new_ones([x.shape[0]])
    nodes = sigmas.detach().cpu().numpy()
    slopes = []  # the last `order` derivatives, oldest first
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        slopes.append(_slope(x, sigmas[i], denoised))
        if len(slopes) > order:
            slopes.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        used = min(i + 1, order)
        weights = [_adams_weight(used, nodes, i, j) for j in range(used)]
        x = x + sum(weight * slope for weight, slope in zip(weights, reversed(slopes)))
    return x


# --- DPM-Solver (Lu et al., 2022): DPM fast and DPM adaptive -------------------------------------------------------

class _DPMSolver:
    """DPM-Solver-1/2/3 single steps on the noise prediction eps, in log-SNR time t = -log(sigma).

    `cache` holds, per step, the eps values already computed ('eps' at the start, 'eps_r1', 'eps_r2' at the
    intermediate points), so that a lower- and a higher-order estimate of one step share model evaluations."""

    def __init__(self, model: Model):
        self.model = model

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            sigma = _sigma(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma)) / _sigma(t)
        return cache[key]

    def first_order(self, x, t, t_next, cache):
        h = t_next - t
        eps = self.eps(cache, 'eps', x, t)
        return x - _sigma(t_next) * h.expm1() * eps

    def second_order(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, 'eps', x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, 'eps_r1', u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def third_order(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, 'eps', x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, 'eps_r1', u1, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, 'eps_r2', u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def step(self, order: int, x, t, t_next, cache):
        if order == 1:
            return self.first_order(x, t, t_next, cache)
        if order == 2:
            return self.second_order(x, t, t_next, cache)
        return self.third_order(x, t, t_next, cache)

    @staticmethod
    def ancestral_target(t, t_next, t_end, eta):
        """(t to step to, noise to add) for an ancestral step t -> t_next with eta > 0."""
        sigma_down, _ = _ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_target = torch.minimum(t_end, _t_plain(sigma_down))
        return t_target, (_sigma(t_next) ** 2 - _sigma(t_target) ** 2) ** 0.5


def _t_plain(sigma):
    """-log(sigma), written as DPM-Solver's class writes it (a negation of the log, the same value as `_t`)."""
    return -sigma.log()


def _level(sigma) -> torch.Tensor:
    """A noise level as a fresh float tensor (a float becomes float32), as `torch.tensor(sigma)` would give."""
    return sigma.detach().clone() if isinstance(sigma, torch.Tensor) else torch.tensor(sigma)


def _check_range(sigma_min, sigma_max) -> None:
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError('sigma_min and sigma_max must not be 0')


@torch.no_grad()
def dpm_fast(model, x, sigma_min, sigma_max, n, *, noise_sampler, callback=None, eta=0., s_noise=1.):
    """DPM fast: DPM-Solver-Fast (Lu et al., 2022), `n` model evaluations spent as third-order steps (the last one
    or two of lower order) evenly spaced in log-SNR time from sigma_max down to sigma_min (sampling ends at
    sigma_min, not 0). Noise is drawn after every step, also at eta 0 (it is then multiplied by 0)."""
    _check_range(sigma_min, sigma_max)
    solver = _DPMSolver(model)
    t_start, t_end = _t_plain(_level(sigma_max)), _t_plain(_level(sigma_min))
    if not t_end > t_start and eta:
        raise ValueError('eta must be 0 for reverse sampling')
    m = math.floor(n / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        if eta:
            t_target, noise_scale = solver.ancestral_target(t, t_next, t_end, eta)
        else:
            t_target, noise_scale = t_next, 0.
        eps = solver.eps(cache, 'eps', x, t)
        denoised = x - _sigma(t) * eps
        if callback is not None:
            callback({'sigma': _sigma(ts[i]), 'sigma_hat': _sigma(t),
                      'x': x, 'i': i, 't': ts[i], 't_up': t, 'denoised': denoised})
        x = solver.step(order, x, t, t_target, cache)
        x = x + noise_scale * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
    return x


class _StepSizeController:
    """PID step-size control of DPM adaptive (after Söderlind's digital filters): scales h by a limited product of
    powers of the last three inverse errors and accepts the step when that factor is at least accept_safety."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.inverse_errors = []  # [current, previous accepted, the one before]

    def propose_step(self, error) -> bool:
        inverse = 1 / (float(error) + self.eps)
        if not self.inverse_errors:
            self.inverse_errors = [inverse, inverse, inverse]
        self.inverse_errors[0] = inverse
        e0, e1, e2 = self.inverse_errors
        factor = e0 ** self.b1 * e1 ** self.b2 * e2 ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse_errors[2] = self.inverse_errors[1]
            self.inverse_errors[1] = self.inverse_errors[0]
        self.h *= factor
        return accept


@torch.no_grad()
def dpm_adaptive(model, x, sigma_min, sigma_max, *, noise_sampler, callback=None, order=3, rtol=0.05, atol=0.0078,
                 h_init=0.05, pcoeff=0., icoeff=1., dcoeff=0., accept_safety=0.81, eta=0., s_noise=1.):
    """DPM adaptive: DPM-Solver-12 / -23 (Lu et al., 2022) with adaptive step size from sigma_max down to sigma_min:
    each step compares an order-(k-1) and an order-k estimate and a PID controller picks the next step size.
    The callback is called for every attempt, rejected ones included; noise is drawn after every accepted step,
    also at eta 0 (it is then multiplied by 0)."""
    _check_range(sigma_min, sigma_max)
    solver = _DPMSolver(model)
    t_start, t_end = _t_plain(_level(sigma_max)), _t_plain(_level(sigma_min))
    if order not in {2, 3}:
        raise ValueError('order should be 2 or 3')
    forward = t_end > t_start
    if not forward and eta:
        raise ValueError('eta must be 0 for reverse sampling')
    h_init = abs(h_init) * (1 if forward else -1)
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    controller = _StepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    s, x_prev = t_start, x
    info = {'steps': 0, 'nfe': 0, 'n_accept': 0, 'n_reject': 0}
    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        cache = {}
        t = torch.minimum(t_end, s + controller.h) if forward else torch.maximum(t_end, s + controller.h)
        if eta:
            t_target, noise_scale = solver.ancestral_target(s, t, t_end, eta)
        else:
            t_target, noise_scale = t, 0.
        eps = solver.eps(cache, 'eps', x, s)
        denoised = x - _sigma(s) * eps
        if order == 2:
            x_low = solver.first_order(x, s, t_target, cache)
            x_high = solver.second_order(x, s, t_target, cache)
        else:
            x_low = solver.second_order(x, s, t_target, cache, r1=1 / 3)
            x_high = solver.third_order(x, s, t_target, cache)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose_step(error):
            x_prev = x_low
            x = x_high + noise_scale * s_noise * noise_sampler(_sigma(s), _sigma(t))
            s = t
            info['n_accept'] += 1
        else:
            info['n_reject'] += 1
        info['nfe'] += order
        info['steps'] += 1
        if callback is not None:
            callback({'sigma': _sigma(s), 'sigma_hat': _sigma(s), 'x': x, 'i': info['steps'] - 1, 't': s, 't_up': s,
                      'denoised': denoised, 'error': error, 'h': controller.h, **info})
    return x


# --- DPM-Solver++ (Lu et al., 2022) multistep and stochastic variants ----------------------------------------------

@torch.no_grad()
def dpmpp_sde(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1., r=1 / 2):
    """DPM++ SDE (Katherine Crowson): a stochastic DPM-Solver++ step in two stages, through the intermediate level
    at fraction r of the step in log-SNR time, each stage adding noise (two draws per step, also at eta 0); an
    Euler step when the step ends at sigma 0."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + _slope(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        t_mid = t + h * r
        weight = 1 / (2 * r)
        # stage 1: to the intermediate level
        sigma_down, sigma_up = _ancestral_step(_sigma(t), _sigma(t_mid), eta)
        t_down = _t(sigma_down)
        x_mid = (_sigma(t_down) / _sigma(t)) * x - (t - t_down).expm1() * denoised
        x_mid = x_mid + noise_sampler(_sigma(t), _sigma(t_mid)) * s_noise * sigma_up
        denoised_mid = model(x_mid, _sigma(t_mid) * ones)
        # stage 2: the whole step, with the blended prediction
        sigma_down, sigma_up = _ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_down = _t(sigma_down)
        blended = (1 - weight) * denoised + weight * denoised_mid
        x = (_sigma(t_down) / _sigma(t)) * x - (t - t_down).expm1() * blended
        x = x + noise_sampler(_sigma(t), _sigma(t_next)) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_2m(model, x, sigmas, *, noise_sampler, callback=None):
    """DPM++ 2M: DPM-Solver++(2M) (Lu et al., 2022), multistep second order in log-SNR time (first order on the
    first step and on the step to sigma 0). Deterministic: `noise_sampler` is never called."""
    ones = x.new_ones([x.shape[0]])
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if previous is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - _t(sigmas[i - 1])
            ratio = h_last / h
            corrected = (1 + 1 / (2 * ratio)) * denoised - (1 / (2 * ratio)) * previous
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * corrected
        previous = denoised
    return x


@torch.no_grad()
def dpmpp_2m_sde(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1., solver_type='midpoint'):
    """DPM++ 2M SDE: the stochastic DPM-Solver++(2M) (Lu et al., 2022; SDE form by Katherine Crowson), with the
    'midpoint' or 'heun' second-order correction; the last step (to sigma 0) returns the prediction itself.
    One noise draw per step except the last, none at eta 0."""
    if solver_type not in {'heun', 'midpoint'}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    ones = x.new_ones([x.shape[0]])
    previous, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if previous is not None:
                ratio = h_last / h
                if solver_type == 'heun':
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / ratio) * (denoised - previous)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / ratio) * (denoised - previous)
            if eta:
                scale = (-2 * eta_h).expm1().neg().sqrt()
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * scale * s_noise
        previous, h_last = denoised, h
    return x


@torch.no_grad()
def dpmpp_2m_sde_heun(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """DPM++ 2M SDE Heun: DPM++ 2M SDE with the 'heun' correction."""
    return dpmpp_2m_sde(model, x, sigmas, noise_sampler=noise_sampler, callback=callback, eta=eta, s_noise=s_noise,
                        solver_type='heun')


@torch.no_grad()
def dpmpp_3m_sde(model, x, sigmas, *, noise_sampler, callback=None, eta=1., s_noise=1.):
    """DPM++ 3M SDE: the stochastic DPM-Solver++(3M) (Lu et al., 2022; by Katherine Crowson), multistep third
    order (lower on the first two steps); the last step (to sigma 0) returns the prediction itself.
    One noise draw per step except the last, none at eta 0."""
    ones = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None  # the predictions of the last two steps
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                scale = (-2 * h * eta).expm1().neg().sqrt()
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * scale * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# --- A1111's own samplers ------------------------------------------------------------------------------------------

def _restart_legs(sigmas: torch.Tensor, restart_list: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma_from, sigma_to) steps Restart takes: the schedule's own steps and, after the step that arrives at
    the level nearest a restart's `min sigma` key, `times` repetitions of a Karras descent of `levels` levels
    from the schedule level nearest `max sigma` down to that level (when that level is higher)."""
    def nearest(value) -> int:
        return int(torch.argmin((sigmas - value).abs(), dim=0))

    plan = {nearest(min_sigma): spec for min_sigma, spec in restart_list.items()}
    legs = []
    for i in range(len(sigmas) - 1):
        legs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in plan:
            levels, times, max_sigma = plan[i + 1]
            top = nearest(max_sigma)
            if top < i + 1:
                descent = _karras(levels, sigmas[i + 1].item(), sigmas[top].item(), device=sigmas.device)[:-1]
                legs.extend(list(zip(descent[:-1], descent[1:])) * times)
    return legs


@torch.no_grad()
def restart(model, x, sigmas, *, noise_sampler, callback=None, s_noise=1., restart_list=None):
    """Restart (Xu et al., 2023, "Restart Sampling for Improving Generative Processes"), as A1111 implements it:
    Heun steps, and at a low noise level jumps back up with fresh noise and descends again.

    `restart_list` is {min_sigma: [levels, times, max_sigma]}. Without one, A1111's choice: under 20 steps no
    restart (plain Heun over `sigmas`); from 20 steps, with K = 9, T = 1 (from 36 steps K = steps // 4, T = 2),
    the schedule is replaced by a Karras schedule of steps - K * T steps between sigmas[-2] and sigmas[0], and
    after arriving at its level nearest 0.1 the sampler T times jumps to its level nearest 2 and comes back down
    along K + 1 Karras levels (K steps). Either way the number of steps (callbacks) is `steps`.
    Each jump up draws one noise: `noise_sampler(sigma_low, sigma_high)` (A1111 draws it with randn_like).
    Callback: 'i' counts all steps; 'sigma' is the step's target level, 'sigma_hat' its start."""
    ones = x.new_ones([x.shape[0]])
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            levels, times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = _karras(steps - levels * times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device)
            restart_list = {0.1: [levels + 1, times, 2]}
        else:
            restart_list = {}
    last_sigma = None
    for i, (sigma_from, sigma_to) in enumerate(_restart_legs(sigmas, restart_list)):
        if last_sigma is None:
            last_sigma = sigma_from
        elif last_sigma < sigma_from:
            noise = noise_sampler(last_sigma, sigma_from)
            x = x + noise * s_noise * (sigma_from ** 2 - last_sigma ** 2) ** 0.5
        denoised = model(x, sigma_from * ones)
        slope = _slope(x, sigma_from, denoised)
        _report(callback, x, i, sigma_to, sigma_from, denoised)
        dt = sigma_to - sigma_from
        if sigma_to == 0:
            x = x + slope * dt
        else:
            x_euler = x + slope * dt
            slope_end = _slope(x_euler, sigma_to, model(x_euler, sigma_to * ones))
            x = x + (slope + slope_end) / 2 * dt
        last_sigma = sigma_to
    return x


@torch.no_grad()
def lcm(model, x, sigmas, *, noise_sampler, callback=None):
    """LCM (Luo et al., 2023, "Latent Consistency Models"), as A1111 samples it: each step jumps to the model's
    prediction and re-noises it to the next level with a fresh draw (none after the last step). Use with the
    LCM noise table and consistency scalings of `lcm.LCMNoiseLevels`."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


# --- tables --------------------------------------------------------------------------------------------------------

SAMPLERS: dict[str, Callable] = {
    "DPM++ 2M": dpmpp_2m,
    "DPM++ SDE": dpmpp_sde,
    "DPM++ 2M SDE": dpmpp_2m_sde,
    "DPM++ 2M SDE Heun": dpmpp_2m_sde_heun,
    "DPM++ 2S a": dpmpp_2s_ancestral,
    "DPM++ 3M SDE": dpmpp_3m_sde,
    "Euler a": euler_ancestral,
    "Euler": euler,
    "LMS": lms,
    "Heun": heun,
    "DPM2": dpm_2,
    "DPM2 a": dpm_2_ancestral,
    "DPM fast": dpm_fast,
    "DPM adaptive": dpm_adaptive,
    "Restart": restart,
    "LCM": lcm,
}

# What A1111 1.10 forwards: eta (its "Eta for ancestral samplers" setting, default 1.0, or the request's eta) to
# every function with an eta parameter, DPM fast and DPM adaptive included; the sigma options its
# sampler_extra_params lists per k-diffusion function. Euler a's s_noise, Restart's s_noise, DPM++ SDE's r and
# solver_type (fixed by the name) keep their defaults.
_SIGMA_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
A1111_OPTIONS: dict[str, frozenset[str]] = {
    "DPM++ 2M": frozenset(),
    "DPM++ SDE": frozenset({"eta", "s_noise"}),
    "DPM++ 2M SDE": frozenset({"eta", "s_noise"}),
    "DPM++ 2M SDE Heun": frozenset({"eta", "s_noise"}),
    "DPM++ 2S a": frozenset({"eta", "s_noise"}),
    "DPM++ 3M SDE": frozenset({"eta", "s_noise"}),
    "Euler a": frozenset({"eta"}),
    "Euler": frozenset(_SIGMA_OPTIONS),
    "LMS": frozenset(),
    "Heun": frozenset(_SIGMA_OPTIONS),
    "DPM2": frozenset(_SIGMA_OPTIONS),
    "DPM2 a": frozenset({"eta", "s_noise"}),
    "DPM fast": frozenset({"eta", "s_noise"}),
    "DPM adaptive": frozenset({"eta"}),
    "Restart": frozenset(),
    "LCM": frozenset(),
}
