"""Heavy tails of SGD on linear regression: the recursion, its theoretical tail index, and a tail-index estimator.

Online SGD on least squares with Gaussian inputs ``a ~ N(0, I_d)``, targets ``y ~ N(0, sigma^2)`` and batch size ``b``
is the random linear recursion (Gurbuzbalaban, Simsekli & Zhu 2021)

    x_{k+1} = (I - (eta / b) sum_{i in B_k} a_i a_i^T) x_k + (eta / b) sum_{i in B_k} a_i y_i = M_k x_k + q_k.

By Kesten's theorem its stationary law has power-law tails ``P(|x_1| > t) ~ c t^-alpha``, with ``alpha`` the positive
root of ``h(alpha) = E ||M e_1||^alpha = 1`` (rotational invariance makes ``e_1`` any unit vector). The second moment
is finite iff ``eta < eta_c = 2 b / (b + d + 1)``, where ``h(2) = 1 - 2 eta + eta^2 (b + d + 1) / b`` crosses 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm

from dynbook_lib.core.seeding import make_generator

BLOCK_SIZES: tuple[int, ...] = (2, 5, 10, 20, 40, 50, 100)


def critical_step(d: int, b: int) -> float:
    """``eta_c = 2 b / (b + d + 1)``: the largest step with a finite stationary variance (Gaussian inputs).

    Example:
        >>> round(critical_step(100, 1), 4)
        0.0196
    """
    if d < 1 or b < 1:
        raise ValueError(f"need d >= 1 and b >= 1, got d={d}, b={b}")
    return 2 * b / (b + d + 1)


def second_moment_factor(eta: float, d: int, b: int) -> float:
    """``h(2) = E ||M e_1||^2 = 1 - 2 eta + eta^2 (b + d + 1) / b`` in closed form."""
    return 1 - 2 * eta + eta**2 * (b + d + 1) / b


def tail_index_estimator(samples: torch.Tensor | np.ndarray, block_sizes: Sequence[int] = BLOCK_SIZES) -> float:
    """Tail index of a symmetric heavy-tailed sample by block sums (Mohammadi, Mohammadpour & Ogata 2015, Cor. 2.4).

    For an alpha-stable sample, a sum of ``m`` independent copies has the law of ``m^(1/alpha)`` times one copy, so
    ``E log|block sum| - E log|X| = log(m) / alpha``. For each block size ``m`` the ``K = K1 m`` first samples are
    cut into ``K1`` blocks and ``1/alpha_m = (mean log|block sums| - mean log|X|) / log m``; the estimate is the
    median of ``alpha_m`` over ``block_sizes``. It cannot see past ``alpha ~ 2`` (a light tail looks Gaussian to
    it) and on SGD iterates (dependent samples) it reads low just below 2 (about 1.36 for a theoretical 1.55 in
    chapter 10's calibration) and high below about 1.1.

    Args:
        samples: one-dimensional sample, centred (symmetric law).
        block_sizes: the values of ``m``; each needs at least two blocks.
    """
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float64).ravel()
    estimates = []
    for m in block_sizes:
        k1 = len(x) // m
        if k1 < 2:
            raise ValueError(f"block size {m} needs at least {2 * m} samples, got {len(x)}")
        used = x[: k1 * m]
        block_sums = used.reshape(k1, m).sum(1)
        inv_alpha = (np.mean(np.log(np.abs(block_sums))) - np.mean(np.log(np.abs(used)))) / math.log(m)
        estimates.append(1 / inv_alpha)
    return float(np.median(estimates))


def _log_norms(eta: float, d: int, b: int, n_samples: int, seed: int) -> np.ndarray:
    """``log ||M e_1||`` on ``n_samples`` draws of ``M = I - (eta/b) sum_i a_i a_i^T``."""
    gen = make_generator(seed)
    a = torch.randn(n_samples, b, d, generator=gen, dtype=torch.float64)
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1
    vec = e1 - (eta / b) * (a * a[:, :, :1]).sum(1)  # M e_1 = e_1 - (eta/b) sum_i a_i a_i1
    return torch.log(torch.linalg.vector_norm(vec, dim=1)).numpy()


def log_moment_drift(eta: float, d: int, b: int, *, n_samples: int = 100_000, seed: int = 0) -> float:
    """``E log ||M e_1||`` by Monte Carlo: negative exactly when the recursion has a stationary law (Kesten); at or
    above 0 the iterates wander off (their log-norm is a random walk without negative drift).

    Example:
        >>> log_moment_drift(0.5, 1, 1) < 0 < log_moment_drift(3.0, 1, 1)
        True
    """
    if d < 1 or b < 1 or eta <= 0:
        raise ValueError(f"need eta > 0, d >= 1 and b >= 1, got eta={eta}, d={d}, b={b}")
    return float(_log_norms(eta, d, b, n_samples, seed).mean())


def theoretical_tail_index(
    eta: float, d: int, b: int, *, n_samples: int = 200_000, seed: int = 0, alpha_max: float = 50.0
) -> float:
    """The positive root ``alpha`` of ``E ||(I - (eta/b) sum_i a_i a_i^T) e_1||^alpha = 1``, by Monte Carlo.

    The expectation is estimated once on ``n_samples`` draws (common random numbers, so ``h`` is a smooth convex
    function of ``alpha``) and the root is found by Brent's method on ``log h``. ``h(0) = 1`` and ``h'(0) =
    E log ||M e_1||``, which must be negative for a stationary law.

    Raises:
        ValueError: when ``E log ||M e_1|| >= 0`` (no stationary law: the iterates diverge).
    """
    return _root_of_log_moment(_log_norms(eta, d, b, n_samples, seed), alpha_max)


def _root_of_log_moment(log_norm: np.ndarray, alpha_max: float) -> float:
    drift = float(log_norm.mean())
    if drift >= 0:
        raise ValueError(f"E log||M e_1|| = {drift:.3g} >= 0: the recursion has no stationary law at this step size")
    top = log_norm.max()

    def log_h(alpha: float) -> float:  # log mean exp(alpha * log_norm), stably
        return alpha * top + math.log(np.mean(np.exp(alpha * (log_norm - top))))

    hi = 1.0
    while log_h(hi) < 0:
        hi *= 2
        if hi > alpha_max:
            return math.inf
    return float(brentq(log_h, 1e-6, hi, xtol=1e-10))


def tail_index_1d(eta: float) -> float:
    """Exact tail index for ``d = b = 1``: the root of ``E|1 - eta a^2|^alpha = 1`` with ``a ~ N(0, 1)``, by
    quadrature (an independent check of :func:`theoretical_tail_index`)."""
    kink = 1 / math.sqrt(eta)

    def expect(g) -> float:  # E g(|1 - eta a^2|) over a ~ N(0, 1), split at the zero of 1 - eta a^2
        f = lambda x: g(abs(1 - eta * x * x)) * 2 * norm.pdf(x)  # noqa: E731
        return quad(f, 0, kink, limit=200)[0] + quad(f, kink, np.inf, limit=200)[0]

    def h(alpha: float) -> float:
        return expect(lambda m: m**alpha)

    drift = expect(math.log)
    if drift >= 0:
        raise ValueError(f"E log|1 - eta a^2| = {drift:.3g} >= 0 at eta = {eta}: no stationary law")
    hi = 1.0
    while h(hi) < 1:
        hi *= 2
    return float(brentq(lambda al: h(al) - 1, 1e-6, hi, xtol=1e-12))


def sgd_linear_regression(
    etas: torch.Tensor,
    *,
    d: int,
    batch_size: int,
    n_runs: int,
    n_steps: int,
    seed: int,
    noise: float = 1.0,
    device: torch.device | str = "cpu",
    unstable: str = "raise",
    stability_samples: int = 200_000,
    stability_seed: int = 0,
) -> torch.Tensor:
    """Independent chains of online SGD on Gaussian least squares, all step sizes at once.

    Every step of every chain draws a fresh batch ``a_i ~ N(0, I_d)``, ``y_i ~ N(0, noise^2)`` and applies
    ``x <- x - (eta/b) sum_i a_i (a_i^T x - y_i)`` from ``x_0 = 0``.

    Args:
        etas: step sizes, shape ``(E,)``.
        d, batch_size: dimension and batch size ``b``.
        n_runs: chains per step size.
        n_steps: iterations (the returned iterates are the last ones).
        seed: seed of the generator on ``device``.
        unstable: what to do with a step size that has no stationary law (``E log ||M e_1|| >= 0``, by
            :func:`log_moment_drift`): ``"raise"`` (default), or ``"nan"`` to return NaN chains for it. Its chains
            would diverge, and a tail index estimated from them would be a meaningless number.
        stability_samples, stability_seed: the draws of that test; the defaults are those of
            :func:`theoretical_tail_index`, so that both decide alike near the boundary.

    Returns:
        The final iterates, shape ``(E, n_runs, d)``, float64.

    Raises:
        ValueError: a step size without a stationary law, when ``unstable="raise"``.
    """
    if unstable not in ("raise", "nan"):
        raise ValueError(f"unstable must be 'raise' or 'nan', got {unstable!r}")
    stable = []
    for eta in torch.as_tensor(etas, dtype=torch.float64).reshape(-1).tolist():
        drift = log_moment_drift(eta, d, batch_size, n_samples=stability_samples, seed=stability_seed)
        if drift >= 0 and unstable == "raise":
            raise ValueError(f"eta = {eta:g} (d = {d}, b = {batch_size}) has no stationary law: E log||M e_1|| = "
                             f"{drift:.3g} >= 0, so its chains diverge; use a smaller step")
        stable.append(drift < 0)
    gen = make_generator(seed, device)
    etas = torch.as_tensor(etas, dtype=torch.float64, device=device).reshape(-1, 1, 1)
    E = etas.shape[0]
    x = torch.zeros(E, n_runs, d, dtype=torch.float64, device=device)
    for _ in range(n_steps):
        a = torch.randn(E, n_runs, batch_size, d, generator=gen, dtype=torch.float64, device=device)
        y = noise * torch.randn(E, n_runs, batch_size, generator=gen, dtype=torch.float64, device=device)
        resid = (a @ x[..., None])[..., 0] - y  # (E, R, b)
        x = x - (etas / batch_size) * (resid[..., None] * a).sum(2)
    # unstable step sizes were run all the same, so that every other step size draws the same random stream
    x[~torch.tensor(stable, device=x.device)] = math.nan
    return x


def survival(samples: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical survival function of ``|samples|``: sorted values ``t`` and ``P(|X| > t)`` (for log-log tail plots)."""
    x = np.sort(np.abs(np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples,
                                  dtype=np.float64).ravel()))
    return x, 1 - np.arange(1, len(x) + 1) / (len(x) + 1)


@dataclass(frozen=True)
class HeavyTailsConfig:
    """Sizes of the chapter "Heavy tails of SGD".

    Attributes:
        calib_ratios: ``eta / eta_c`` of the one-dimensional calibration (``d = b = 1``).
        n_runs, n_steps: chains per step size and iterations per chain.
        sweep_d: dimension of the step/batch sweep; sweep_etas and sweep_batches its grid.
        mc_samples: Monte-Carlo draws for the theoretical tail index.
        dim_eta, dim_batch, dims: the dimension sweep at a fixed step and batch size (the stationary window above
            ``eta_c`` closes within a few dimensions at a fixed step, so the sweep is short).
    """

    calib_ratios: tuple[float, ...]
    n_runs: int
    n_steps: int
    sweep_d: int
    sweep_etas: tuple[float, ...]
    sweep_batches: tuple[int, ...]
    mc_samples: int
    dim_eta: float
    dim_batch: int
    dims: tuple[int, ...]


HEAVY_TAILS_FAST = HeavyTailsConfig(
    calib_ratios=(1.2, 1.5, 2.0, 2.5, 3.0), n_runs=4000, n_steps=2000, sweep_d=2, sweep_etas=(1.0, 1.25, 1.5),
    sweep_batches=(2, 3, 4, 6), mc_samples=200_000, dim_eta=1.2, dim_batch=4, dims=(1, 2, 3),
)
HEAVY_TAILS_FULL = HeavyTailsConfig(
    calib_ratios=(1.1, 1.2, 1.5, 2.0, 2.5, 3.0), n_runs=20_000, n_steps=5000, sweep_d=5, sweep_etas=(0.6, 0.7, 0.8, 0.9),
    sweep_batches=(2, 3, 4, 5, 6, 8), mc_samples=1_000_000, dim_eta=1.2, dim_batch=4, dims=(1, 2, 3),
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
HEAVY_TAILS_SMOKE = replace(HEAVY_TAILS_FULL, n_runs=200, n_steps=50, mc_samples=2000)
