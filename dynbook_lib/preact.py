"""Gaussian pre-activations at finite width (Wolinski & Arbel 2025): Weibull weights and the matching activations.

With weights ``W`` drawn from the symmetric Weibull law of shape ``theta`` (``|W|^theta ~ Exp(1)``, random sign) and an
activation ``phi_theta`` built so that ``W * phi_theta(X) ~ N(0, 1)`` whenever ``X ~ N(0, 1)``, a network whose units
receive independent inputs keeps *exactly* standard Gaussian pre-activations at every depth; at small widths it stays
close to it, with the variance preserved exactly. Standard initialisations (ReLU with ``sigma_w = sqrt 2``, tanh at the
edge of chaos) do not give Gaussian pre-activations at finite width.

The law of ``Y = phi(X)`` follows from ``log|W| + log|Y| = log|Z|`` (independent): characteristic functions divide,

    E|Y|^{it} = E|Z|^{it} / E|W|^{it} = 2^{it/2} Gamma((1 + it)/2) / (sqrt(pi) Gamma(1 + it/theta)),

which decays for ``theta > 2``; the distribution function of ``log|Y|`` is recovered by the Gil-Pelaez inversion
formula, then ``phi(x) = sign(x) F_|Y|^{-1}(2 Phi(|x|) - 1)`` (odd) or ``phi(x) = F_|Y|^{-1}(Phi(x))`` (positive).
For ``theta = 2`` there is a closed form (Box-Muller): ``|W| = sqrt(Exp(1))`` and ``phi(x) = sqrt 2 sin(pi (Phi(x) - 1/2))``.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from scipy.optimize import curve_fit
from scipy.special import loggamma, ndtr, ndtri

Family = Literal["odd", "positive"]


def sample_weibull(theta: float, shape: tuple[int, ...], *, generator: torch.Generator,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Symmetric Weibull weights: ``|W|^theta ~ Exp(1)`` with a random sign (``P(|W| > t) = exp(-t^theta)``).

    Example:
        >>> w = sample_weibull(2.0, (100_000,), generator=torch.Generator().manual_seed(0))
        >>> round(float((w**2).mean()), 1)  # E W^2 = Gamma(1 + 2/theta) = 1 for theta = 2
        1.0
    """
    u = torch.rand(shape, generator=generator, dtype=dtype, device=generator.device)
    sign = torch.randint(0, 2, shape, generator=generator, dtype=dtype, device=generator.device) * 2 - 1
    return sign * (-torch.log1p(-u)) ** (1 / theta)


def log_abs_y_characteristic(t: np.ndarray, theta: float) -> np.ndarray:
    """``E|Y|^{it}`` for the activation output of shape ``theta`` (complex array)."""
    log_num = 0.5j * t * math.log(2) + loggamma((1 + 1j * t) / 2) - 0.5 * math.log(math.pi)
    return np.exp(log_num - loggamma(1 + 1j * t / theta))


@dataclass(frozen=True)
class ActivationTable:
    """The exact activation ``phi_theta`` tabulated on quantiles of ``|Y|`` and interpolated (monotone in ``|x|``)."""

    theta: float
    family: Family
    log_y: np.ndarray  # grid of log|y|
    cdf: np.ndarray  # F_{log|Y|} on that grid, increasing

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xn = x.detach().cpu().double().numpy()
        p = 2 * ndtr(np.abs(xn)) - 1 if self.family == "odd" else ndtr(xn)
        y = np.exp(np.interp(p, self.cdf, self.log_y))
        y = np.sign(xn) * y if self.family == "odd" else y
        return torch.as_tensor(y, dtype=x.dtype, device=x.device)


def exact_activation(theta: float, family: Family = "odd", *, t_max: float | None = None,
                     points: int = 1201) -> ActivationTable | None:
    """``phi_theta`` such that ``W * phi_theta(X) ~ N(0, 1)``, built from the law of ``log|Y|`` by Gil-Pelaez inversion
    ``F(l) = 1/2 - (1/pi) int_0^inf Im(e^{-itl} E|Y|^{it}) / t dt`` (trapezoidal rule; the integrand decays like
    ``exp(-pi t (1/4 - 1/(2 theta)))``). For ``theta = 2`` use :func:`activation` (closed form).

    Args:
        theta: Weibull shape, ``> 2``.
        family: ``"odd"`` or ``"positive"``.
        t_max: integration cut-off (default: where the integrand falls below 1e-13).
        points: grid size in ``log|y|``.
    """
    if theta <= 2:
        raise ValueError(f"the inversion needs theta > 2 (theta = 2 has a closed form); got {theta}")
    if family not in ("odd", "positive"):
        raise ValueError(f"family must be 'odd' or 'positive', got {family!r}")
    log_y, cdf = _log_abs_y_cdf(float(theta), t_max, points)
    return ActivationTable(theta, family, log_y, cdf)


@functools.lru_cache(maxsize=16)
def _log_abs_y_cdf(theta: float, t_max: float | None, points: int) -> tuple[np.ndarray, np.ndarray]:
    """The distribution function of ``log|Y|`` on a grid, computed once per ``theta`` (both families share it) and in
    blocks of the grid, so that memory stays near 100 MB even when ``theta`` is close to 2 (the integrand decays
    slowly there: about 1.6e5 nodes at theta = 2.05, a 3 GB matrix if done at once)."""
    rate = math.pi * (0.25 - 0.5 / theta)
    t_max = t_max or 30.0 / rate
    t = np.linspace(1e-9, t_max, int(t_max / 0.01) + 1)
    cf = log_abs_y_characteristic(t, theta)
    log_y = np.linspace(-12, 3, points)
    block = max(1, int(5e6 // len(t)))
    integral = np.concatenate([
        np.trapezoid(np.imag(np.exp(-1j * np.outer(log_y[i:i + block], t)) * cf) / t, t, axis=1)
        for i in range(0, points, block)])
    cdf = np.maximum.accumulate(np.clip(0.5 - integral / math.pi, 0, 1))  # monotone against quadrature noise
    log_y.setflags(write=False)
    cdf.setflags(write=False)
    return log_y, cdf


def activation(theta: float, family: Family = "odd"):
    """The activation of shape ``theta``: the Box-Muller closed form at ``theta = 2``, the exact table above 2."""
    if theta == 2:
        if family == "odd":
            return lambda x: math.sqrt(2) * torch.sin(math.pi * (torch.special.ndtr(x) - 0.5))
        return lambda x: math.sqrt(2) * torch.sin(math.pi * torch.special.ndtr(x) / 2)
    return exact_activation(theta, family)


def fitted_form(x: np.ndarray, a: float, b: float, c: float, d: float, f: float, g: float, theta: float) -> np.ndarray:
    """The paper's closed-form family ``a tanh(b x) ((|x| + c)^(1 - 2/theta) + d) (log(|x| + f) + g)``."""
    ax = np.abs(x)
    return a * np.tanh(b * x) * ((ax + c) ** (1 - 2 / theta) + d) * (np.log(ax + f) + g)


def fit_closed_form(table: ActivationTable, *, x_max: float = 4.0) -> tuple[np.ndarray, float]:
    """Least-squares fit of :func:`fitted_form` to an odd exact activation on ``[-x_max, x_max]``.

    ``c`` and ``f`` are searched in ``(0, 10]`` and usually end at 10: the family is flat in that direction (for large
    ``c`` and ``f`` its last two factors are nearly affine in ``|x|`` on the interval, and ``a, d, g`` compensate), so
    the unbounded optimum is at infinity and the bound picks a point of the ridge. The fit error is the meaningful
    output.

    Returns:
        The six constants ``(a, b, c, d, f, g)`` and the largest absolute difference on the fit interval.
    """
    x = np.linspace(-x_max, x_max, 801)
    y = table(torch.as_tensor(x)).numpy()
    model = lambda x, a, b, c, d, f, g: fitted_form(x, a, b, c, d, f, g, table.theta)  # noqa: E731
    params, _ = curve_fit(model, x, y, p0=(1.0, 1.0, 0.5, 0.0, 1.5, 1.0), bounds=([0, 0, 1e-3, -5, 1.0 + 1e-6, -5],
                                                                                  [10, 20, 10, 5, 10, 10]), maxfev=20_000)
    return params, float(np.abs(model(x, *params) - y).max())


Kind = Literal["weibull-odd", "weibull-positive", "relu", "tanh"]


def propagate(
    kind: Kind, *, width: int, depth: int, n_networks: int, seed: int, theta: float = 3.0,
    sigma_w: float | None = None, sigma_b: float = 0.0, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Pre-activations of ``n_networks`` independent networks on the input ``x = 1``, batched as one tensor.

    Layer 1 is Gaussian: ``h_1 = W_1 * 1`` with ``W_1 ~ N(0, 1)`` (``width`` units). Then, for ``l = 2..depth``,
    ``h_l = W_l phi(h_{l-1}) / sqrt(width) + b_l`` with

    * ``weibull-odd`` / ``weibull-positive``: ``W`` symmetric Weibull(``theta``), ``phi = phi_theta``, no bias;
    * ``relu``: ``W ~ N(0, sigma_w^2)`` (default ``sigma_w = sqrt 2``), ``phi = relu``;
    * ``tanh``: ``W ~ N(0, sigma_w^2)`` (default 1.2083), ``b ~ N(0, sigma_b^2)``, ``phi = tanh``.

    All draws come from one generator on ``device`` (the exact activation's quantile map is evaluated on the CPU).

    Returns:
        ``(depth, n_networks, width)`` pre-activations, float64, on ``device``.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    if kind.startswith("weibull"):
        phi = activation(theta, "odd" if kind == "weibull-odd" else "positive")
    elif kind == "relu":
        phi, sigma_w = torch.relu, sigma_w or math.sqrt(2)
    elif kind == "tanh":
        phi, sigma_w = torch.tanh, sigma_w or 1.2083
    else:
        raise ValueError(f"unknown network kind {kind!r}; choose weibull-odd, weibull-positive, relu or tanh")
    on = dict(generator=gen, dtype=torch.float64, device=gen.device)
    h = torch.randn(n_networks, width, **on)
    out = [h]
    for _ in range(depth - 1):
        if kind.startswith("weibull"):
            w = sample_weibull(theta, (n_networks, width, width), generator=gen)
            bias = 0.0
        else:
            w = sigma_w * torch.randn(n_networks, width, width, **on)
            bias = sigma_b * torch.randn(n_networks, width, **on)
        h = (w @ phi(h)[..., None])[..., 0] / math.sqrt(width) + bias
        out.append(h)
    return torch.stack(out)


def ks_statistic(samples: torch.Tensor, *, standardise: bool = False) -> float:
    """Kolmogorov-Smirnov distance between the sample and ``N(0, 1)`` (or ``N(0, sample variance)``)."""
    x = np.sort(samples.detach().cpu().double().numpy().ravel())
    if standardise:
        x = x / math.sqrt(np.mean(x**2))
    n = len(x)
    cdf = ndtr(x)
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def ks_union_level(tests: int, n: int, p: float = 1e-3) -> float:
    """The KS distance that exact ``N(0, 1)`` samples of size ``n`` exceed in any of ``tests`` tests with probability
    at most ``p``: the Dvoretzky-Kiefer-Wolfowitz bound ``P(KS > t) <= 2 exp(-2 n t^2)`` with a union bound.

    Example:
        >>> round(ks_union_level(32, 10_000), 4)
        0.0235
    """
    if tests < 1 or n < 1 or not 0 < p < 1:
        raise ValueError(f"need tests >= 1, n >= 1 and 0 < p < 1, got {tests}, {n}, {p}")
    return math.sqrt(math.log(2 * tests / p) / (2 * n))


def normal_union_level(tests: int, p: float = 1e-3) -> float:
    """The two-sided standard-normal level that any of ``tests`` normal statistics exceeds with probability at most
    ``p`` (a union bound): ``Phi^-1(1 - p / (2 tests))``.

    Example:
        >>> round(normal_union_level(64), 2)
        4.32
    """
    if tests < 1 or not 0 < p < 1:
        raise ValueError(f"need tests >= 1 and 0 < p < 1, got {tests}, {p}")
    return NormalDist().inv_cdf(1 - p / (2 * tests))


def edge_of_chaos_variances(depth: int, sigma_w: float = 1.2083, sigma_b: float = 0.114, q1: float = 1.0,
                            nodes: int = 100) -> np.ndarray:
    """The infinite-width variance map ``q <- sigma_w^2 E[tanh(sqrt(q) Z)^2] + sigma_b^2`` from ``q_1``
    (Poole et al. 2016), by Gauss-Hermite quadrature; ``depth`` values."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    q = [q1]
    for _ in range(depth - 1):
        q.append(sigma_w**2 * float(np.sum(w * np.tanh(math.sqrt(q[-1]) * z) ** 2)) + sigma_b**2)
    return np.array(q)


@dataclass(frozen=True)
class PreactConfig:
    """Sizes of the chapter "Gaussian pre-activations"."""

    widths: tuple[int, ...]
    thetas: tuple[float, ...]
    depth: int
    n_networks: int


PREACT_FAST = PreactConfig(widths=(1, 2, 4), thetas=(2.0, 3.0), depth=8, n_networks=10_000)
PREACT_FULL = PreactConfig(widths=tuple(range(1, 11)), thetas=(2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0), depth=20,
                           n_networks=200_000)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
PREACT_SMOKE = replace(PREACT_FULL, n_networks=500)


class MatchedActivation(torch.nn.Module):
    """``phi_theta`` as a module, to pair with :func:`weibull_init_` in an ``nn.Sequential`` (forward only: the exact
    activation is a tabulated quantile map, meant for studies of the initialisation)."""

    def __init__(self, theta: float, family: Family = "positive"):
        super().__init__()
        self.theta, self.family = theta, family
        self.phi = activation(theta, family)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)


@torch.no_grad()
def weibull_init_(layer: torch.nn.Linear, theta: float, *, generator: torch.Generator) -> torch.nn.Linear:
    """Initialise ``layer`` in place for the Weibull pairs: ``weight = W / sqrt(fan_in)`` with ``W`` symmetric
    Weibull(``theta``), zero bias. Followed by :class:`MatchedActivation`, a unit whose inputs are independent
    ``N(0, 1)`` gets an exactly ``N(0, 1)`` pre-activation."""
    fan_out, fan_in = layer.weight.shape
    w = sample_weibull(theta, (fan_out, fan_in), generator=generator, dtype=layer.weight.dtype)
    layer.weight.copy_(w / math.sqrt(fan_in))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer
