"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models")
the way A1111 1.10 runs it: its multistep data-prediction solver over the checkpoint's discrete VP schedule.

The schedule. With N = len(alphas_cumprod) (1000), integer timestep n sits at continuous time t_n = (n + 1) / N, and
log alpha(t) = 0.5 log(alphas_cumprod) is piecewise linear in t between those points (extended linearly past the
ends). From it: alpha = exp(log alpha), sigma = sqrt(1 - alpha^2), lambda = log alpha - log sigma (half the log SNR),
and lambda's inverse by the same piecewise-linear table. The solver runs from t = 1 (timestep 999) to t = 1 / N
(timestep 0).

The model. `model(x, t)` returns the noise prediction eps for the batch x at `t`, a float tensor [batch] holding
the *model time* (t_continuous - 1 / N) * 1000: 999 at the start, 0 at the end, and fractional timesteps in between
(time_uniform over 20 steps: 999, 949.05, 899.1, ...). A1111 hands that fractional t to its CFG wrapper and the UNet
as it is (the UNet's timestep embedding takes floats); where it needs an integer (a v-prediction model's conversion
to eps, the preview's x0) it truncates it with `.to(int)`.

Steps. `len(timesteps)` of A1111's list (`a1111_timesteps(steps)`, which has one entry more than `steps` when 1000
is not a multiple of it) are the solver's step count; the list's values are not used, except for img2img, where the
solver starts at t = timesteps[-1] / 1000 + 1 / 1000 (the model time timesteps[-1]). The first model call is at the
start point; each step then predicts, calls the model at the prediction (skipped at the last step) and corrects with
that output, which the next step reuses: as many model calls as steps. The first `order - 1` steps use the orders
1, 2, ... the history allows; with lower_order_final the last steps lower the order so it never exceeds the number
of steps left.

Variants: "bh1" (B(h) = h), "bh2" (B(h) = e^h - 1), and "vary_coeff" (A1111's third choice; A1111 itself only runs
it at batch size 1, where this gives the same result; here each image of a larger batch gets what it would alone).
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Sequence, Union

import torch

__all__ = ["DiscreteVPSchedule", "unipc", "SKIP_TYPES", "VARIANTS"]

SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")
VARIANTS = ("bh1", "bh2", "vary_coeff")

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear function through (xp, yp) (xp ascending) at x (1-D); past the ends, the end segments
    extended. A point on a knot takes the segment to its left (the knot's value, to rounding)."""
    last_segment = xp.shape[0] - 2
    position = torch.searchsorted(xp.contiguous(), x.contiguous())  # knots strictly below x
    left = (position - 1).clamp(0, last_segment)
    x_left, x_right = xp[left], xp[left + 1]
    y_left, y_right = yp[left], yp[left + 1]
    return y_left + (x - x_left) * (y_right - y_left) / (x_right - x_left)


class DiscreteVPSchedule:
    """alpha, sigma and lambda of a discrete-time VP model over continuous time t in (0, 1] (see the module doc)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.total_n = len(alphas_cumprod)
        self.end_time = 1.
        self.time_knots = torch.linspace(0., 1., self.total_n + 1)[1:]
        self.log_alpha_knots = 0.5 * torch.log(alphas_cumprod)
        self._on_device: dict = {}  # device -> (time knots, log alpha knots): copied there once, not per call

    def _knots(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.time_knots.to(device), self.log_alpha_knots.to(device))
        return self._on_device[device]

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        times, log_alphas = self._knots(t.device)
        return _interpolate(t.reshape(-1), times, log_alphas)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1. - torch.exp(2. * self.log_alpha(t)))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1. - torch.exp(2. * log_alpha))

    def time_of(self, half_log_snr: torch.Tensor) -> torch.Tensor:
        """The t whose lambda is the given one (lambda's inverse)."""
        device = half_log_snr.device
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(device), -2. * half_log_snr)
        times, log_alphas = self._knots(device)
        return _interpolate(log_alpha.reshape(-1), torch.flip(log_alphas, [0]), torch.flip(times, [0]))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the model is given for continuous time t."""
        return (t - 1. / self.total_n) * 1000.


def _column(v: torch.Tensor, dims: int) -> torch.Tensor:
    """A [batch] vector shaped to broadcast over a batch of `dims` dimensions."""
    return v[(...,) + (None,) * (dims - 1)]


def _time_grid(schedule: DiscreteVPSchedule, skip_type: str, t_start, t_end: float, n: int, device) -> torch.Tensor:
    """n + 1 times from t_start down to t_end. t_start is a float, or a float32 scalar tensor (img2img)."""
    if skip_type == "logSNR":
        lambda_start = schedule.half_log_snr(torch.as_tensor(t_start).to(device))
        lambda_end = schedule.half_log_snr(torch.as_tensor(t_end).to(device))
        evenly = torch.linspace(lambda_start.cpu().item(), lambda_end.cpu().item(), n + 1).to(device)
        return schedule.time_of(evenly)
    if skip_type == "time_uniform":
        return torch.linspace(float(t_start), t_end, n + 1).to(device)
    if skip_type == "time_quadratic":
        root_start = t_start ** (1. / 2)
        return torch.linspace(float(root_start), t_end ** (1. / 2), n + 1).pow(2).to(device)
    raise ValueError(f"unknown UniPC skip type {skip_type!r}; expected one of {', '.join(SKIP_TYPES)}")


class _Solver:
    def __init__(self, model: EpsModel, schedule: DiscreteVPSchedule, variant: str):
        self.model = model
        self.schedule = schedule
        self.variant = variant

    def denoised(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from the model's eps at continuous time t ([batch])."""
        eps = self.model(x, self.schedule.model_time(t))
        dims = x.dim()
        alpha_t, sigma_t = self.schedule.alpha(t), self.schedule.std(t)
        return (x - _column(sigma_t, dims) * eps) / _column(alpha_t, dims)

    def step(self, x, x0_history, t_history, t, order, use_corrector):
        if self.variant == "vary_coeff":
            return self._step_vary(x, x0_history, t_history, t, order, use_corrector)
        return self._step_bh(x, x0_history, t_history, t, order, use_corrector)

    def _common(self, x0_history, t_history, t, order):
        """What both kinds of step start from: the step size h in lambda, the ratios r_k of the older points'
        lambda offsets (from the newest point) to h, and the differences D_k = (x0_k - x0_newest) / r_k."""
        ns = self.schedule
        t_prev = t_history[-1]
        lambda_prev, lambda_t = ns.half_log_snr(t_prev), ns.half_log_snr(t)
        x0_prev = x0_history[-1]
        h = lambda_t - lambda_prev
        ratios, differences = [], []
        for back in range(1, order):
            ratio = ((ns.half_log_snr(t_history[-(back + 1)]) - lambda_prev) / h)[0]
            ratios.append(ratio)
            differences.append((x0_history[-(back + 1)] - x0_prev) / ratio)
        return h, ratios, differences

    def _step_start(self, x, x0_history, t_history, t, order):
        """What both step kinds start from: (dims, x0_prev, sigma_prev, sigma_t, alpha_t, h, differences, r)."""
        ns = self.schedule
        x0_prev = x0_history[-1]
        sigma_prev, sigma_t = ns.std(t_history[-1]), ns.std(t)
        alpha_t = torch.exp(ns.log_alpha(t))
        h, ratios, differences = self._common(x0_history, t_history, t, order)
        r = torch.tensor([float(v) for v in ratios] + [1.], dtype=h.dtype, device=x.device)
        return x.dim(), x0_prev, sigma_prev, sigma_t, alpha_t, h, differences, r

    def _step_bh(self, x, x0_history, t_history, t, order, use_corrector):
        dims, x0_prev, sigma_prev, sigma_t, alpha_t, h, differences, r = self._step_start(x, x0_history, t_history,
                                                                                        t, order)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        powers, rhs = [], []
        factorial = 1
        for k in range(1, order + 1):
            powers.append(torch.pow(r, k - 1))
            rhs.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        powers = torch.stack(powers)
        rhs = torch.stack(rhs).to(x.device)

        if differences:
            differences = torch.stack(differences, dim=1)
            if order == 2:
                rho_predict = torch.tensor([0.5], dtype=h.dtype, device=x.device)
            else:
                rho_predict = torch.linalg.solve(powers[:-1, :-1], rhs[:-1])
        else:
            differences = None
        if use_corrector:
            if order == 1:
                rho_correct = torch.tensor([0.5], dtype=h.dtype, device=x.device)
            else:
                rho_correct = torch.linalg.solve(powers, rhs)

        first_order = _column(sigma_t / sigma_prev, dims) * x - _column(alpha_t * h_phi_1, dims) * x0_prev
        scale = _column(alpha_t * b_h, dims)
        predicted = first_order - scale * (_weigh(rho_predict, differences) if differences is not None else 0)
        if not use_corrector:
            return predicted, None
        x0_t = self.denoised(predicted, t)
        correction = _weigh(rho_correct[:-1], differences) if differences is not None else 0
        corrected = first_order - scale * (correction + rho_correct[-1] * (x0_t - x0_prev))
        return corrected, x0_t

    def _step_vary(self, x, x0_history, t_history, t, order, use_corrector):
        dims, x0_prev, sigma_prev, sigma_t, alpha_t, h, differences, r = self._step_start(x, x0_history, t_history,
                                                                                        t, order)
        size = len(r)

        # C[i, k] = r_i^k / (k + 1)!
        columns, column = [], torch.ones_like(r)
        for k in range(1, size + 1):
            columns.append(column)
            column = column * r / (k + 1)
        c = torch.stack(columns, dim=1)
        if differences:
            differences = torch.stack(differences, dim=1)
            predict_weights = torch.linalg.inv(c[:-1, :-1])
        if use_corrector:
            correct_weights = torch.linalg.inv(c)

        hh = -h[0]
        h_phi = [torch.expm1(hh)]
        factorial = 1
        for k in range(1, size + 1):
            h_phi.append(h_phi[-1] / hh - 1 / factorial)
            factorial *= k + 1

        first_order = _column(sigma_t / sigma_prev, dims) * x - _column(alpha_t * h_phi[0], dims) * x0_prev
        predicted = first_order
        for k in range(size - 1):
            predicted = predicted - _column(alpha_t * h_phi[k + 1], dims) * _weigh(predict_weights[k], differences)
        if not use_corrector:
            return predicted, None
        x0_t = self.denoised(predicted, t)
        corrected = first_order
        row = 0  # A1111 weighs the new difference with the last row the loop visited (row 0 when it runs none)
        for row in range(size - 1):
            corrected = corrected - _column(alpha_t * h_phi[row + 1], dims) * _weigh(
                correct_weights[row][:-1], differences)
        corrected = corrected - _column(alpha_t * h_phi[size], dims) * (
            (x0_t - x0_prev) * correct_weights[row][-1])
        return corrected, x0_t


def _weigh(weights: torch.Tensor, differences: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k] * differences[:, k]."""
    return torch.einsum("k,bk...->b...", weights, differences)


@torch.no_grad()
def unipc(model: EpsModel, x: torch.Tensor, timesteps: Union[torch.Tensor, Sequence[int]], *,
          alphas_cumprod: torch.Tensor, callback: Optional[Callback] = None, is_img2img: bool = False,
          variant: str = "bh1", order: int = 3, skip_type: str = "time_uniform",
          lower_order_final: bool = True) -> torch.Tensor:
    """A1111's UniPC sampler (`unipc` of its timestep samplers) with the settings of its UniPC options.

    `timesteps`: A1111's list for the run (its length is the step count; see the module doc), for img2img its first
    t_enc entries, with `is_img2img=True`. `model(x, t)` returns eps at model time t (fractional; module doc).
    `alphas_cumprod`: the checkpoint's [1000] float32 values. The callback gets {'x', 'i' (0 ... steps - 1),
    'sigma': 0, 'sigma_hat': 0, 'denoised'} after every step, 'denoised' being the x0 from the model call at that
    step's prediction: None at the last step, which makes no call. A1111 refuses fewer steps than `order`
    ("UniPC order must be < sampling steps"); so does this, with a ValueError.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"unknown UniPC skip type {skip_type!r}; expected one of {', '.join(SKIP_TYPES)}")
    order = int(order)
    if order < 1:
        raise ValueError(f"UniPC order must be at least 1; got {order}")
    steps = len(timesteps)
    if steps < order:
        raise ValueError(f"UniPC order must be < sampling steps: order {order} needs at least {order} steps, "
                         f"this run has {steps}")

    schedule = DiscreteVPSchedule(alphas_cumprod)
    t_end = 1. / schedule.total_n
    if is_img2img:
        last = torch.as_tensor(timesteps[-1], dtype=torch.int64)
        t_start = last / 1000 + 1 / 1000  # a float32 scalar tensor, as A1111 computes it
    else:
        t_start = schedule.end_time
    times = _time_grid(schedule, skip_type, t_start, t_end, steps, x.device)

    solver = _Solver(model, schedule, variant)
    batch = x.shape[0]
    t_now = times[0].expand(batch)
    x0_history = deque([solver.denoised(x, t_now)], maxlen=order)
    t_history = deque([t_now], maxlen=order)
    for step in range(1, steps + 1):
        t_now = times[step].expand(batch)
        if step < order:
            step_order = step  # warm-up: as high as the history allows
        elif lower_order_final:
            step_order = min(order, steps + 1 - step)
        else:
            step_order = order
        x, x0_now = solver.step(x, x0_history, t_history, t_now, step_order, use_corrector=step < steps)
        if callback is not None:
            callback({"x": x, "i": step - 1, "sigma": 0, "sigma_hat": 0, "denoised": x0_now})
        if step < steps:
            x0_history.append(x0_now)
            t_history.append(t_now)
    return x
