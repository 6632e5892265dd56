"""Penalties as priors in Gaussian variational inference (Wolinski, Charpiat & Ollivier 2020).

For a one-dimensional Gaussian ``q = N(mu, sigma^2)`` and a prior density ``alpha``,

    KL(q || alpha) = -1/2 ln(2 pi e sigma^2) - E_q[log alpha(theta)],

so a penalty ``r(mu, sigma)`` is such a KL up to an additive constant exactly when ``f = -r - ln sigma`` is the
Gaussian smoothing of a function, ``f(., sigma) = (log alpha) * N(0, sigma^2) + C``. Gaussian smoothing at variance
``s = sigma^2`` solves ``df/ds = 1/2 d2f/dmu2``, i.e. ``df/dsigma = sigma d2f/dmu2`` (the heat equation in ``sigma``),
and the prior is read back as ``log alpha(theta) = lim_{sigma -> 0} f(theta, sigma) + C`` or, from any ``sigma_0``, by
undoing the smoothing in Fourier space. Penalties are written as torch functions ``r(mu, sigma)`` that broadcast.

Conventions: a factorised posterior adds the per-coordinate penalties; "up to a constant" everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- penalties of the chapter -----------------------------------------------------------------------------------------


def gaussian_prior_penalty(s: float = 1.0) -> Penalty:
    """Bayes-by-backprop / L2: ``(mu^2 + sigma^2) / (2 s^2) - ln sigma``, the KL to ``N(0, s^2)``."""
    return lambda mu, sigma: (mu**2 + sigma**2) / (2 * s**2) - torch.log(sigma)


def weight_decay_penalty(lam: float = 1.0) -> Penalty:
    """Weight decay alone: ``lam mu^2 - ln sigma``. Not a KL: its heat residual is ``2 lam sigma``."""
    return lambda mu, sigma: lam * mu**2 - torch.log(sigma)


def l1_penalty(lam: float = 1.0) -> Penalty:
    """Plain L1: ``lam |mu| - ln sigma``. Not a KL: ``|mu|`` is not the Gaussian smoothing of anything at sigma > 0."""
    return lambda mu, sigma: lam * mu.abs() - torch.log(sigma)


def smoothed_l1_penalty(lam: float = 1.0) -> Penalty:
    """The admissible L1, ``lam E_q|theta| - ln sigma`` with
    ``E|theta| = sigma sqrt(2/pi) exp(-mu^2 / (2 sigma^2)) + mu (1 - 2 Phi(-mu / sigma))``: the KL to a Laplace prior."""

    def r(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        phi = 0.5 * torch.erfc(mu / (sigma * math.sqrt(2)))  # Phi(-mu / sigma)
        mean_abs = sigma * math.sqrt(2 / math.pi) * torch.exp(-(mu**2) / (2 * sigma**2)) + mu * (1 - 2 * phi)
        return lam * mean_abs - torch.log(sigma)

    return r


def cosine_penalty(s: float = 1.0, c: float = 1.0) -> Penalty:
    """A non-trivial admissible penalty: ``(mu^2 + sigma^2) / (2 s^2) - c cos(mu) exp(-sigma^2 / 2) - ln sigma``,
    the KL to the prior ``alpha(theta) ~ exp(-theta^2 / (2 s^2) + c cos theta)``."""
    return lambda mu, sigma: (mu**2 + sigma**2) / (2 * s**2) - c * torch.cos(mu) * torch.exp(-(sigma**2) / 2) - torch.log(sigma)


def cosine_log_prior(s: float = 1.0, c: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unnormalised log density ``-theta^2 / (2 s^2) + c cos theta`` of the cosine penalty's prior."""
    return lambda theta: -(theta**2) / (2 * s**2) + c * torch.cos(theta)


# --- the heat-equation criterion --------------------------------------------------------------------------------------


def heat_potential(r: Penalty, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``f = -r(mu, sigma) - ln sigma``: the Gaussian smoothing of ``log alpha`` (up to a constant) when ``r`` is a KL."""
    return -r(mu, sigma) - torch.log(sigma)


def heat_residual(r: Penalty, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Pointwise residual ``df/dsigma - sigma d2f/dmu2`` of ``f = -r - ln sigma``, by automatic differentiation.

    Zero everywhere exactly for penalties that are a KL to some prior (where ``r`` is twice differentiable; a kink such
    as ``|mu|`` at 0 escapes a pointwise test, see :func:`semigroup_residual`).
    """
    mu = mu.detach().clone().requires_grad_(True)
    sigma = sigma.detach().clone().requires_grad_(True)
    f = heat_potential(r, mu, sigma)
    df_dmu, df_dsigma = torch.autograd.grad(f.sum(), (mu, sigma), create_graph=True)
    (d2f,) = torch.autograd.grad(df_dmu.sum(), mu)
    return (df_dsigma - sigma * d2f).detach()


def semigroup_residual(r: Penalty, mu: torch.Tensor, sigma0: float, sigma1: float, *, nodes: int = 120) -> torch.Tensor:
    """Integral form of the criterion: ``f(mu, sigma1) - E_Z f(mu + sqrt(sigma1^2 - sigma0^2) Z, sigma0)``.

    Gaussian smoothings compose (``N(0, s0) * N(0, s1 - s0) = N(0, s1)``), so for an admissible penalty the smoothing of
    ``f(., sigma0)`` by the extra variance gives ``f(., sigma1)`` exactly. Unlike :func:`heat_residual` this sees kinks
    (plain L1). The expectation uses Gauss-Hermite quadrature with ``nodes`` points.
    """
    if not 0 < sigma0 < sigma1:
        raise ValueError(f"need 0 < sigma0 < sigma1, got {sigma0}, {sigma1}")
    x, w = _gaussian_nodes(nodes, mu)
    s0 = torch.full_like(mu, sigma0)
    shift = math.sqrt(sigma1**2 - sigma0**2)
    smoothed = (w * heat_potential(r, mu[:, None] + shift * x, s0[:, None])).sum(-1)
    return heat_potential(r, mu, torch.full_like(mu, sigma1)) - smoothed


# --- recovering the prior ------------------------------------------------------------------------------------------------


def prior_by_limit(r: Penalty, theta: torch.Tensor, *, sigma: float = 1e-6) -> torch.Tensor:
    """``log alpha(theta) = lim_{sigma -> 0} (-r(theta, sigma) - ln sigma)`` (up to a constant), read at a tiny sigma."""
    return heat_potential(r, theta, torch.full_like(theta, sigma))


def inverse_smoothing_of_polynomial(coefficients: np.ndarray, sigma: float) -> np.ndarray:
    """The polynomial ``P`` whose Gaussian smoothing ``E P(t + sigma Z)`` is the polynomial with ``coefficients``
    (lowest degree first): ``P = sum_k (-sigma^2 / 2)^k / k! Q^(2k)``, a finite sum, exact.

    Example:
        >>> inverse_smoothing_of_polynomial(np.array([0.0, 0.0, 1.0]), 0.5).tolist()  # t^2 -> t^2 - sigma^2
        [-0.25, 0.0, 1.0]
    """
    q = np.polynomial.Polynomial(coefficients)
    out, term, k = q, q, 0
    while term.degree() >= 2 and np.any(term.coef != 0):
        k += 1
        term = term.deriv(2) * (-(sigma**2) / 2) / k
        out = out + term
    return np.pad(out.coef, (0, max(0, len(coefficients) - len(out.coef))))


def prior_by_fourier(
    r: Penalty, sigma0: float, *, half_width: float = 4 * math.pi, points: int = 2048, max_gain: float = 100.0,
    degree: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log alpha`` from the penalty at one ``sigma0``, by undoing the Gaussian smoothing.

    ``f(., sigma0) = log alpha * N(0, sigma0^2)``. A polynomial of ``degree`` fitted by least squares is removed first
    and un-smoothed exactly (:func:`inverse_smoothing_of_polynomial`): a polynomial log-prior of degree at most
    ``degree`` is recovered exactly (by construction), and for others what is left is smaller; a log-prior that
    grows faster than the fitted degree is not recovered. The remainder, on the periodic grid ``[-half_width, half_width)``
    (a multiple of ``pi`` suits ``2 pi``-periodic terms) with a cosine taper over the outer fifth, is divided by
    ``exp(-sigma0^2 xi^2 / 2)`` in Fourier space, keeping the frequencies whose gain is below ``max_gain``. Undoing a
    smoothing is ill-posed: the band limit is the regularisation, so any part of ``log alpha`` at frequencies above
    ``sqrt(2 ln max_gain) / sigma0`` (6.1 for ``sigma0 = 0.5``) is lost, and a larger ``max_gain`` amplifies the grid's
    edge effects without bound.

    Returns:
        ``(theta, log_alpha)`` on the grid (float64); trust it away from the tapered edges.
    """
    if degree < 0 or sigma0 <= 0:
        raise ValueError(f"need degree >= 0 and sigma0 > 0, got degree={degree}, sigma0={sigma0}")
    theta = torch.linspace(-half_width, half_width, points + 1, dtype=torch.float64)[:-1]
    f = heat_potential(r, theta, torch.full_like(theta, sigma0)).numpy()
    t = theta.numpy()
    fitted = np.polynomial.Polynomial.fit(t, f, degree).convert()
    remainder = f - fitted(t)
    edge = np.clip((half_width - np.abs(t)) / (0.2 * half_width), 0, 1)
    taper = 0.5 - 0.5 * np.cos(np.pi * edge)
    spectrum = np.fft.rfft(remainder * taper)
    xi = 2 * np.pi * np.fft.rfftfreq(points, d=float(t[1] - t[0]))
    keep = sigma0**2 * xi**2 / 2 < math.log(max_gain)
    spectrum = np.where(keep, spectrum * np.exp(np.where(keep, sigma0**2 * xi**2 / 2, 0.0)), 0.0)
    polynomial = np.polynomial.Polynomial(inverse_smoothing_of_polynomial(fitted.coef, sigma0))
    log_alpha = np.fft.irfft(spectrum, n=points) + polynomial(t)
    return theta, torch.as_tensor(log_alpha)


def _gaussian_nodes(nodes: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Hermite nodes and weights for ``E f(Z)``, ``Z ~ N(0, 1)`` (weights sum to 1), as ``like``'s dtype and
    device."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x^2 / 2)
    as_like = dict(dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, **as_like), torch.as_tensor(w / math.sqrt(2 * math.pi), **as_like)


def penalty_from_prior(log_density: Callable[[torch.Tensor], torch.Tensor], *, nodes: int = 80) -> Penalty:
    """The penalty ``r(mu, sigma) = KL(N(mu, sigma^2) || alpha)`` of a prior, up to a constant:
    ``-ln sigma - E log alpha(mu + sigma Z)`` by Gauss-Hermite quadrature (exact for polynomial log densities of
    degree below ``2 nodes``). For testing the routes back from a penalty to its prior on priors of known form.

    Example:
        >>> r = penalty_from_prior(lambda t: -t**2 / 2)
        >>> one = torch.tensor(1.0, dtype=torch.float64)
        >>> round(float(r(one, one)), 12)  # (mu^2 + sigma^2) / 2 - ln sigma
        1.0
    """
    def r(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xs, ws = _gaussian_nodes(nodes, mu)
        mu_, sigma_ = torch.broadcast_tensors(mu, sigma)
        return -torch.log(sigma_) - (ws * log_density(mu_[..., None] + sigma_[..., None] * xs)).sum(-1)

    return r


def max_error_up_to_constant(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b - mean(a - b)|``: the distance between two log densities known up to constants."""
    diff = a - b
    return float((diff - diff.mean()).abs().max())


def log_normaliser(log_density: Callable[[torch.Tensor], torch.Tensor], *, half_width: float = 40.0,
                   points: int = 400_001) -> float:
    """``ln int exp(log_density)`` by the trapezoidal rule on ``[-half_width, half_width]`` (densities with light tails)."""
    theta = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    values = log_density(theta)
    top = float(values.max())
    return top + math.log(float(torch.trapezoid(torch.exp(values - top), theta)))


def monte_carlo_kl(
    log_density: Callable[[torch.Tensor], torch.Tensor], mu: float, sigma: float, *, samples: int, seed: int,
    log_z: float
) -> float:
    """``KL(N(mu, sigma^2) || alpha)`` by Monte Carlo, with ``alpha = exp(log_density) / exp(log_z)``."""
    gen = torch.Generator().manual_seed(seed)
    theta = mu + sigma * torch.randn(samples, generator=gen, dtype=torch.float64)
    log_q = -0.5 * ((theta - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return float((log_q - (log_density(theta) - log_z)).mean())


def quadrature_kl(
    log_density: Callable[[torch.Tensor], torch.Tensor], mu: float, sigma: float, *, log_z: float, nodes: int = 200
) -> float:
    """``KL(N(mu, sigma^2) || alpha)`` by Gauss-Hermite quadrature (deterministic; exact to rounding for smooth log
    densities), with ``alpha = exp(log_density) / exp(log_z)``: :func:`penalty_from_prior` on ``nodes`` nodes plus the
    constants it leaves out, ``ln Z - ln(2 pi e) / 2``.

    Example:
        >>> gauss = lambda t: -t**2 / 2  # N(0, 1), whose log normaliser is ln sqrt(2 pi)
        >>> round(quadrature_kl(gauss, 1.0, 1.0, log_z=0.5 * math.log(2 * math.pi)), 12)  # KL = mu^2 / 2
        0.5
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = penalty_from_prior(log_density, nodes=nodes)
    as_tensor = dict(dtype=torch.float64)
    return float(r(torch.tensor(mu, **as_tensor), torch.tensor(sigma, **as_tensor))) + log_z - 0.5 * math.log(
        2 * math.pi * math.e)


# --- variational inference on Bayesian linear regression ------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianPosterior:
    """A Gaussian (approximate) posterior: its mean and its per-coordinate variances (the diagonal)."""

    mean: torch.Tensor
    variance: torch.Tensor


def exact_posterior(X: torch.Tensor, y: torch.Tensor, noise_std: float, prior_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayesian linear regression ``y = X theta + N(0, noise^2)``, ``theta ~ N(0, prior^2 I)``: mean and precision."""
    precision = X.T @ X / noise_std**2 + torch.eye(X.shape[1], dtype=X.dtype) / prior_std**2
    return torch.linalg.solve(precision, X.T @ y / noise_std**2), precision


def mean_field_vi(
    X: torch.Tensor, y: torch.Tensor, noise_std: float, prior_std: float, *, kl_factor: float, max_iter: int = 500
) -> GaussianPosterior:
    """Mean-field Gaussian VI minimising the per-sample objective
    ``(1/N) sum_i E_q[-log p(y_i | theta)] + kl_factor * KL(q || prior)`` by L-BFGS (float64).

    The expected negative log-likelihood is exact: ``E_q ||y - X theta||^2 = ||y - X mu||^2 + sum_j sigma_j^2 ||X_j||^2``.
    With ``kl_factor = 1/N`` this is the ELBO divided by ``N``, whose optimum has the exact posterior mean and
    ``sigma_j^2 = 1 / Lambda_jj``; any other factor tempers the posterior.
    """
    n, d = X.shape
    mu = torch.zeros(d, dtype=X.dtype, requires_grad=True)
    log_sigma = torch.full((d,), -1.0, dtype=X.dtype, requires_grad=True)
    col_sq = (X**2).sum(0)
    opt = torch.optim.LBFGS([mu, log_sigma], lr=1, max_iter=max_iter, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        var = torch.exp(2 * log_sigma)
        nll = (((y - X @ mu) ** 2).sum() + (var * col_sq).sum()) / (2 * noise_std**2)
        kl = 0.5 * ((var + mu**2) / prior_std**2 - 1 - 2 * log_sigma + 2 * math.log(prior_std)).sum()
        loss = nll / n + kl_factor * kl
        loss.backward()
        return loss

    opt.step(objective)
    return GaussianPosterior(mu.detach(), torch.exp(2 * log_sigma.detach()))


def tempered_optimum(X: torch.Tensor, y: torch.Tensor, noise_std: float, prior_std: float, c: float) -> GaussianPosterior:
    """Closed-form optimum of :func:`mean_field_vi` with ``kl_factor = c / N``: mean
    ``(X^T X / noise^2 + c I / prior^2)^-1 X^T y / noise^2`` and variances ``c / (||X_j||^2 / noise^2 + c / prior^2)``."""
    A = X.T @ X / noise_std**2 + c * torch.eye(X.shape[1], dtype=X.dtype) / prior_std**2
    mean = torch.linalg.solve(A, X.T @ y / noise_std**2)
    return GaussianPosterior(mean, c / ((X**2).sum(0) / noise_std**2 + c / prior_std**2))


# --- a small Bayesian neural network trained by variational inference -----------------------------------------------------


class MeanFieldMLP(torch.nn.Module):
    """A ReLU perceptron whose weights have a factorised Gaussian posterior ``N(mu, sigma^2)``, sampled at each forward.

    The prior of each layer is ``N(0, 1 / fan_in)`` on weights and ``N(0, 1)`` on biases, so that the KL term is the
    Bayesian counterpart of weight decay: at ``sigma -> 0`` it reads ``fan_in mu^2 / 2``, i.e. weight decay
    ``lambda = fan_in / (2 N)`` once divided by the number of samples ``N``.

    Args:
        sizes: layer widths, e.g. ``(64, 32, 10)``.
        generator: the source of the weight noise (explicit randomness); the parameters live on its device.
        init_log_sigma: initial ``log sigma`` of every weight.
    """

    def __init__(self, sizes: tuple[int, ...], *, generator: torch.Generator, init_log_sigma: float = -4.0):
        super().__init__()
        self.generator = generator
        self.mus = torch.nn.ParameterList()
        self.log_sigmas = torch.nn.ParameterList()
        self.prior_stds: list[torch.Tensor] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = torch.randn(fan_out, fan_in + 1, generator=generator, dtype=torch.float64,
                            device=generator.device) / math.sqrt(fan_in)
            w[:, -1] = 0.0  # the last column is the bias
            self.mus.append(torch.nn.Parameter(w))
            self.log_sigmas.append(torch.nn.Parameter(torch.full_like(w, init_log_sigma)))
            std = torch.full_like(w, 1 / math.sqrt(fan_in))
            std[:, -1] = 1.0
            self.prior_stds.append(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (mu, log_sigma) in enumerate(zip(self.mus, self.log_sigmas)):
            eps = torch.randn(mu.shape, generator=self.generator, dtype=mu.dtype, device=mu.device)
            w = mu + torch.exp(log_sigma) * eps
            x = x @ w[:, :-1].T + w[:, -1]
            if i < len(self.mus) - 1:
                x = torch.relu(x)
        return x

    def kl(self) -> torch.Tensor:
        """``KL(q || prior)`` summed over every weight, in closed form."""
        total = torch.zeros((), dtype=torch.float64, device=self.mus[0].device)
        for mu, log_sigma, std in zip(self.mus, self.log_sigmas, self.prior_stds):
            var = torch.exp(2 * log_sigma)
            total = total + 0.5 * ((var + mu**2) / std**2 - 1 - 2 * log_sigma + 2 * torch.log(std)).sum()
        return total


def train_mean_field_mlp(
    X: torch.Tensor, y: torch.Tensor, *, sizes: tuple[int, ...], kl_factor: float, steps: int, lr: float, seed: int
) -> MeanFieldMLP:
    """Variational inference on ``(1/N) sum_i E_q[-log p(y_i | x_i, w)] + kl_factor * KL(q || prior)`` with Adam,
    full batch, one weight sample per step (``kl_factor = 1/N`` is the ELBO per sample). The model and its noise live
    on ``X``'s device."""
    model = MeanFieldMLP(sizes, generator=torch.Generator(device=X.device).manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y) + kl_factor * model.kl()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def predictive_nll(model: MeanFieldMLP, X: torch.Tensor, y: torch.Tensor, *, samples: int = 32) -> tuple[float, float]:
    """Test negative log-likelihood and accuracy of the posterior predictive (probabilities averaged over samples)."""
    probs = torch.stack([torch.softmax(model(X), -1) for _ in range(samples)]).mean(0)
    nll = float(-torch.log(probs[torch.arange(len(y), device=probs.device), y].clamp_min(1e-300)).mean())
    return nll, float((probs.argmax(-1) == y).double().mean())


@dataclass(frozen=True)
class PenaltyPriorConfig:
    """Sizes of the chapter "A penalty as a Bayesian prior"."""

    sigma0: float
    regression_n: int
    regression_d: int
    factors: tuple[float, ...]
    mlp_sizes: tuple[int, ...]
    mlp_train: int
    mlp_factors: tuple[float, ...]
    mlp_steps: int
    mlp_seeds: tuple[int, ...]


PENALTY_PRIOR_FAST = PenaltyPriorConfig(
    sigma0=0.5, regression_n=200, regression_d=10, factors=(0.1, 1.0, 10.0), mlp_sizes=(64, 32, 10),
    mlp_train=1000, mlp_factors=(0.01, 0.1, 1.0, 10.0, 100.0), mlp_steps=1500, mlp_seeds=(0,),
)
PENALTY_PRIOR_FULL = PenaltyPriorConfig(
    sigma0=0.5, regression_n=2000, regression_d=50, factors=(0.01, 0.1, 1.0, 10.0, 100.0),
    mlp_sizes=(64, 256, 256, 10), mlp_train=1200, mlp_factors=(0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0),
    mlp_steps=20_000, mlp_seeds=(0, 1, 2, 3, 4),
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
PENALTY_PRIOR_SMOKE = replace(PENALTY_PRIOR_FULL, regression_n=100, mlp_train=100, mlp_steps=20, mlp_seeds=(0, 1))


def heat_residual_grid(r: Penalty, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``df/dsigma - sigma d2f/dmu2`` by centred finite differences on the grid ``mu x sigma`` (shape
    ``(len(sigma) - 2, len(mu) - 2)``, interior points): unlike autograd it shows a kink such as ``|mu|`` at 0 as a
    spike of height ``~ 2 lam sigma / h``."""
    M, S = torch.meshgrid(mu, sigma, indexing="xy")
    f = heat_potential(r, M, S)
    h_mu, h_s = float(mu[1] - mu[0]), float(sigma[1] - sigma[0])
    df_ds = (f[2:, 1:-1] - f[:-2, 1:-1]) / (2 * h_s)
    d2f = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / h_mu**2
    return df_ds - S[1:-1, 1:-1] * d2f
