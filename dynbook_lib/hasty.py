"""Lazy vs hasty: the analytical model of George, Lajoie & Baratin (2022), in closed form and by gradient descent.

Least squares on a diagonalised design: with ``X = U M V^T`` and coordinates in the singular bases, the loss is
``L(theta) = (1/2) sum_l (sqrt(mu_l) theta_l - y_l)^2`` with minimiser ``theta*_l = y_l / sqrt(mu_l)``. Two
parametrisations of ``theta`` by weights ``w``:

* **quadratic** ``theta_l = w_l^2 / 2`` (the non-linear, "hasty" model). Gradient flow gives
  ``d theta / dt = -2 theta mu (theta - theta*)``, a logistic equation:
  ``theta_l(t) = theta*_l / (1 + (theta*_l / theta0 - 1) exp(-2 y~_l t))`` with ``y~_l = sqrt(mu_l) y_l``;
* **linear**, its linearisation at ``theta0``: ``theta = theta0 + w0 (w - w0)``, ``w0 = sqrt(2 theta0)``, so
  ``d theta / dt = -2 theta0 mu (theta - theta*)`` and ``theta_l(t) = theta*_l + exp(-2 mu_l theta0 t)(theta0 - theta*_l)``.

The linear model learns the coordinates in the order of ``mu_l`` (the kernel's eigenvalues); the quadratic model in
the order of ``y~_l`` (how much of the target lies along them). With ``mu = (9, 8, 7, 6, 5)`` and
``y = reversed(mu) / sqrt(mu)`` the two orders are reversed. Half-times: the first time ``theta_l`` is halfway from
``theta0`` to ``theta*_l``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.stats import spearmanr

Regime = Literal["linear", "quadratic"]
_REGIMES = ("linear", "quadratic")


def _check_regime(regime: str) -> None:
    if regime not in _REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected linear or quadratic")


def closed_form(mu: torch.Tensor, y: torch.Tensor, theta0: float, t: torch.Tensor, regime: Regime) -> torch.Tensor:
    """``theta(t)`` of gradient flow, shape ``(T, L)`` for times ``t`` ``(T,)`` and coordinates ``(L,)``.

    Example:
        >>> mu, y = torch.tensor([4.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
        >>> float(closed_form(mu, y, 0.1, torch.tensor([1e3], dtype=torch.float64), "quadratic")[0, 0])  # theta* = 1
        1.0
    """
    _check_regime(regime)
    star = y / mu.sqrt()
    t = t[:, None]
    if regime == "linear":
        return star + torch.exp(-2 * mu * theta0 * t) * (theta0 - star)
    return star / (1 + (star / theta0 - 1) * torch.exp(-2 * mu.sqrt() * y * t))


def half_times_closed_form(mu: torch.Tensor, y: torch.Tensor, theta0: float, regime: Regime) -> torch.Tensor:
    """Time at which each ``theta_l`` is halfway from ``theta0`` to ``theta*_l`` (needs ``theta*_l > theta0 > 0`` for
    the quadratic model)."""
    _check_regime(regime)
    star = y / mu.sqrt()
    if regime == "linear":
        return torch.full_like(mu, np.log(2.0)) / (2 * mu * theta0)
    middle = (theta0 + star) / 2
    return -torch.log((star / middle - 1) / (star / theta0 - 1)) / (2 * mu.sqrt() * y)


def gradient_descent(mu: torch.Tensor, y: torch.Tensor, theta0: float, lr: float, steps: int,
                     regime: Regime) -> torch.Tensor:
    """Gradient descent on the weights ``w`` (not on ``theta``), from ``w0 = sqrt(2 theta0)``; returns ``theta`` at
    every step, shape ``(steps + 1, L)``. With step ``lr`` the iterate ``k`` approximates the flow at ``t = k lr``."""
    _check_regime(regime)
    w0 = torch.full_like(mu, (2 * theta0) ** 0.5)
    w = w0.clone()
    out = []
    for _ in range(steps + 1):
        theta = w**2 / 2 if regime == "quadratic" else theta0 + w0 * (w - w0)
        out.append(theta)
        residual = mu.sqrt() * theta - y  # dL/dtheta = sqrt(mu) residual
        dtheta_dw = w if regime == "quadratic" else w0
        w = w - lr * dtheta_dw * mu.sqrt() * residual
    return torch.stack(out)


def half_times(theta: torch.Tensor, times: torch.Tensor, theta0: float, star: torch.Tensor) -> torch.Tensor:
    """First time each coordinate of a trajectory ``(T, L)`` is halfway to ``star`` (``inf`` if never)."""
    crossed = (theta - theta0) / (star - theta0) >= 0.5
    first = crossed.float().argmax(0)
    return torch.where(crossed.any(0), times[first], torch.full_like(star, float("inf")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two vectors."""
    return float(spearmanr(np.asarray(a.cpu()), np.asarray(b.cpu())).statistic)


def reversed_example(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's example: ``mu = (9, 8, 7, 6, 5)``, ``y = reversed(mu) / sqrt(mu)``, so ``y~ = (5, 6, 7, 8, 9)``."""
    mu = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0], dtype=dtype)
    return mu, mu.flip(0) / mu.sqrt()
