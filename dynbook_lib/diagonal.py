"""Diagonal linear networks: gradient descent on ``beta = u * v`` and the hyperbolic-entropy potential.

Conventions (Woodworth et al. 2020, "Kernel and rich regimes in overparametrized models"; Pesme et al. 2021):

* the network is ``beta = u * v`` (elementwise), initialised at ``u0 = sqrt(2) alpha``, ``v0 = 0`` so ``beta0 = 0``;
  the equivalent ``beta = w_plus**2 - w_minus**2`` has ``w_pm = (u +- v) / 2`` and ``w_pm(0) = alpha / sqrt(2)``;
* the loss is ``L(beta) = ||X beta - y||^2 / (2 n)`` (mean over examples, with the 1/2);
* the potential is ``psi_alpha(beta) = sum_i beta_i asinh(beta_i / alpha_i^2) - sqrt(beta_i^2 + alpha_i^4) + alpha_i^2``
  with ``grad psi_alpha(beta) = asinh(beta / alpha^2)``.

Gradient flow keeps ``u^2 - v^2 = 2 alpha^2`` and gives ``beta(t) = alpha^2 sinh(X^T nu(t))`` for some ``nu(t)``: it is
mirror flow for ``psi_alpha``, so its limit is ``argmin psi_alpha(beta)`` subject to ``X beta = y``. Gradient descent
with step ``gamma_k`` keeps the exact discrete relation ``u^2 - v^2 = 2 alpha^2 prod_k (1 - gamma_k^2 g_k^2)``
(``g_k = grad L(beta_k)``): small steps stay close to the flow.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch
from scipy.optimize import linprog

Parametrization = Literal["uv", "pm"]


def _alpha_sq(alpha: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(alpha, dtype=like.dtype, device=like.device) ** 2


def hyperbolic_entropy(beta: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """The potential ``psi_alpha(beta)``, summed over the last dimension.

    Args:
        beta: shape ``(..., d)``.
        alpha: init scale, a scalar or broadcastable to ``beta`` (one ``alpha_i`` per coordinate).

    Example:
        >>> b = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> round(float(hyperbolic_entropy(b, 1.0)), 6)  # asinh(1) - sqrt(2) + 1
        0.46716
    """
    a2 = _alpha_sq(alpha, beta)
    # sqrt(b^2 + a^4) - a^2 = b^2 / (sqrt(b^2 + a^4) + a^2), without cancellation when alpha is large
    return (beta * torch.asinh(beta / a2) - beta**2 / (torch.sqrt(beta**2 + a2**2) + a2)).sum(-1)


def hyperbolic_entropy_grad(beta: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``grad psi_alpha(beta) = asinh(beta / alpha^2)``, shape of ``beta``."""
    return torch.asinh(beta / _alpha_sq(alpha, beta))


@dataclass(frozen=True)
class PotentialMinimizer:
    """Result of :func:`potential_minimizer`: ``beta = alpha^2 sinh(X^T nu)`` with ``X beta = y``."""

    beta: torch.Tensor
    nu: torch.Tensor
    iterations: int
    residual: float


def _scaled_sinh_cosh(z: torch.Tensor, log_a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha^2 sinh(z)`` and ``alpha^2 cosh(z)`` without overflow for tiny alpha and large z, nor cancellation
    for large alpha and tiny z."""
    big = torch.exp(z.abs() + log_a2) / 2
    small = torch.exp(-2 * z.abs())
    return torch.sign(z) * big * -torch.expm1(-2 * z.abs()), big * (1 + small)


def potential_minimizer(
    X: torch.Tensor,
    y: torch.Tensor,
    alpha: torch.Tensor | float,
    *,
    nu0: torch.Tensor | None = None,
    tol: float = 1e-12,
    max_iter: int = 2000,
    max_dz: float = 2.0,
) -> PotentialMinimizer:
    """``argmin psi_alpha(beta)`` subject to ``X beta = y``, by Newton's method on the dual.

    The minimiser is ``beta = alpha^2 sinh(X^T nu)`` where ``nu`` minimises the smooth, strictly convex dual
    ``D(nu) = sum_i alpha_i^2 cosh((X^T nu)_i) - y^T nu`` (``grad D = X beta - y``,
    ``hess D = X diag(alpha^2 cosh(X^T nu)) X^T``). Each Newton step is shortened so that no ``(X^T nu)_i`` moves by
    more than ``max_dz`` (``cosh`` changes by at most ``e^max_dz``), then backtracked until ``D`` or the residual
    decreases: this converges from ``nu = 0`` even for ``alpha = 1e-30``. Work in float64.

    Args:
        X: design, shape ``(n, d)`` with full row rank.
        y: targets, shape ``(n,)``.
        alpha: scalar or shape ``(d,)``.
        nu0: warm start for the dual variable, shape ``(n,)``.
        tol: stop when ``||X beta - y||_inf <= tol * max(1, ||y||_inf)``.
        max_iter: Newton iterations before giving up.
        max_dz: the largest move of any ``(X^T nu)_i`` in one step.

    Raises:
        RuntimeError: when the tolerance is not reached.
    """
    log_a2 = torch.log(_alpha_sq(alpha, X)).expand(X.shape[1])
    nu = torch.zeros_like(y) if nu0 is None else nu0.clone()
    scale = max(1.0, float(y.abs().max()))

    def evaluate(nu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        beta, weights = _scaled_sinh_cosh(X.T @ nu, log_a2)
        grad = X @ beta - y
        return beta, weights, grad, float(weights.sum() - y @ nu)

    beta, weights, grad, value = evaluate(nu)
    for it in range(max_iter + 1):
        residual = float(grad.abs().max())
        if residual <= tol * scale:
            return PotentialMinimizer(beta, nu, it, residual)
        hess = (X * weights) @ X.T
        # a relative ridge keeps the step finite when tiny alpha leaves directions with no curvature at all
        ridge = 1e-12 * float(hess.diagonal().max()) * torch.eye(len(y), dtype=X.dtype, device=X.device)
        step = -torch.linalg.solve(hess + ridge, grad)
        step = step * min(1.0, max_dz / float((X.T @ step).abs().max()))
        slope = float(grad @ step)
        # Armijo backtracking on D; near the optimum D's decrease falls below rounding, so a step that reduces the
        # residual ||X beta - y|| is accepted too (Newton on the optimality condition).
        t = 1.0
        while True:
            trial = evaluate(nu + t * step)
            if trial[3] <= value + 0.25 * t * slope or float(trial[2].abs().max()) < (1 - 0.1 * t) * residual:
                break
            t *= 0.5
            if t < 1e-12:
                raise RuntimeError(f"dual Newton stalled at residual {residual:.2e} (tol={tol})")
        nu = nu + t * step
        beta, weights, grad, value = trial
    raise RuntimeError(f"dual Newton did not reach tol={tol} in {max_iter} iterations (residual {residual:.2e})")


def potential_minimizers(
    X: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor, *, tol: float = 1e-12
) -> torch.Tensor:
    """:func:`potential_minimizer` for each scalar in ``alphas``, by continuation from the largest to the smallest.

    For small ``alpha`` the dual solution grows like ``ln(1/alpha^2)`` times a fixed certificate, so each solve starts
    from the previous ``nu`` rescaled by the ratio of the logarithms: a few Newton steps per scale, down to 1e-30.

    Returns:
        The minimisers, shape ``(len(alphas), d)``, in the order of ``alphas``.
    """
    order = torch.argsort(alphas.cpu(), descending=True).tolist()
    out = torch.empty(len(alphas), X.shape[1], dtype=X.dtype, device=X.device)
    nu, prev = None, None
    for i in order:
        a = float(alphas[i])
        if nu is not None and prev < 0.5 and a < prev:
            nu = nu * math.log(a**-2) / math.log(prev**-2)
        sol = potential_minimizer(X, y, a, nu0=nu, tol=tol)
        out[i], nu, prev = sol.beta, sol.nu, a
    return out


def min_l2_interpolator(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The minimum-l2-norm solution of ``X beta = y``: ``X^T (X X^T)^{-1} y`` (``X`` of full row rank)."""
    return X.T @ torch.linalg.solve(X @ X.T, y)


def min_l1_interpolator(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The minimum-l1-norm solution of ``X beta = y`` by linear programming (HiGHS).

    Writes ``beta = p - m`` with ``p, m >= 0`` and minimises ``sum(p + m)`` under ``X (p - m) = y``.
    """
    Xn = X.detach().cpu().double().numpy()
    yn = y.detach().cpu().double().numpy()
    d = Xn.shape[1]
    res = linprog(np.ones(2 * d), A_eq=np.hstack([Xn, -Xn]), b_eq=yn, bounds=(0, None), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise RuntimeError(f"linear programme failed: {res.message}")
    beta = res.x[:d] - res.x[d:]
    return torch.as_tensor(beta, dtype=X.dtype, device=X.device)


def min_l1_by_enumeration(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference minimum-l1 interpolator for tiny problems: the best basic solution over all supports of size n.

    A linear programme attains its optimum at a vertex, i.e. a solution supported on ``n`` columns; this tries them
    all (``C(d, n)`` solves), so it only serves to test :func:`min_l1_interpolator`.
    """
    n, d = X.shape
    best, best_norm = None, math.inf
    for support in itertools.combinations(range(d), n):
        cols = X[:, list(support)]
        if abs(float(torch.linalg.det(cols))) < 1e-12:
            continue
        beta = torch.zeros(d, dtype=X.dtype)
        beta[list(support)] = torch.linalg.solve(cols, y)
        if float(beta.abs().sum()) < best_norm:
            best, best_norm = beta, float(beta.abs().sum())
    if best is None:
        raise ValueError("X has no invertible n x n submatrix")
    return best


@dataclass(frozen=True)
class DiagonalGD:
    """Result of :func:`gd_diagonal`, batched over ``A`` initialisations.

    Attributes:
        beta: the last iterate ``u * v``, shape ``(A, d)``.
        u, v: the last weights, shape ``(A, d)`` (for ``"pm"``, ``u = w_plus + w_minus``, ``v = w_plus - w_minus``).
        log_alpha_eff_sq: ``log alpha_inf^2 = log alpha^2 + sum_k log|1 - gamma_k^2 g_k^2|``, shape ``(A, d)``: the
            init scale of the potential whose mirror flow the discrete iterates follow (``u^2 - v^2 = 2 alpha_inf^2``);
            NaN with momentum, which keeps no such relation.
        times: elapsed gradient-flow time ``sum_k gamma_k`` per run, shape ``(A,)``.
        train_loss: ``L(beta)`` at the end, shape ``(A,)``.
        steps: number of steps taken (all runs advance together until every loss is below ``loss_tol``).
        history_times, history_beta: snapshots ``(S, A)`` and ``(S, A, d)`` when ``record_every`` was given.
    """

    beta: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    log_alpha_eff_sq: torch.Tensor
    times: torch.Tensor
    train_loss: torch.Tensor
    steps: int
    history_times: torch.Tensor | None = None
    history_beta: torch.Tensor | None = None


def gd_diagonal(
    X: torch.Tensor,
    y: torch.Tensor,
    alpha: torch.Tensor | float,
    *,
    max_steps: int,
    lr: torch.Tensor | float | None = None,
    max_grad_step: float = 1e-3,
    max_curvature_step: float = 1.0,
    batch_size: int | None = None,
    momentum: torch.Tensor | float = 0.0,
    weight_decay: torch.Tensor | float = 0.0,
    generator: torch.Generator | None = None,
    loss_tol: float = 1e-24,
    max_time: float = math.inf,
    parametrization: Parametrization = "uv",
    record_every: int | None = None,
) -> DiagonalGD:
    """(Stochastic) gradient descent on the diagonal network, for several runs at once (one row each).

    Each run starts from ``u0 = sqrt(2) alpha``, ``v0 = 0`` and follows ``u <- u - gamma (g v + lam u)``,
    ``v <- v - gamma (g u + lam v)`` with ``g = X_B^T (X_B u v - y_B) / |B|`` (the whole data set, or a minibatch ``B``
    of ``batch_size`` examples drawn uniformly with replacement for each step and run) and weight decay ``lam``
    (the penalty ``lam (||u||^2 + ||v||^2) / 2``). With ``momentum`` ``mu`` the update is heavy ball:
    ``m <- mu m + grad``, ``(u, v) <- (u, v) - gamma m``.

    With ``lr=None`` (full batch, no momentum) the step is chosen at every iteration as the largest that keeps
    ``gamma max|g| <= max_grad_step`` (so ``alpha_inf`` stays close to ``alpha``) and
    ``gamma (lambda_max(X^T X / n) max(u^2 + v^2) + lam) <= max_curvature_step`` (stability): a step-size schedule,
    still plain gradient descent, that lets one call cover ``alpha`` from 1e-30 to 10.

    Without momentum the iterates keep the exact relation
    ``u^2 - v^2 = 2 alpha^2 prod_k |(1 - gamma_k lam)^2 - gamma_k^2 g_k^2|`` (Even et al. 2023), returned as
    ``log_alpha_eff_sq``. All runs stop when every full-data loss is below ``loss_tol``, or every run has reached the
    gradient-flow time ``max_time = sum_k gamma_k`` (both checked every ``record_every`` or 100 steps), or after
    ``max_steps``.

    With ``parametrization="pm"`` (plain (S)GD only) the same iterates are computed through
    ``beta = w_plus^2 - w_minus^2``, on which gradient descent with step ``gamma / 2`` is the image of the ``u, v``
    iteration with step ``gamma``.

    Args:
        X: design ``(n, d)``; y: targets ``(n,)``.
        alpha: init scale: scalar, ``(A,)`` (one run per value) or ``(A, d)``.
        max_steps: iteration cap.
        lr: a fixed step (scalar or ``(A,)``); ``None`` for the schedule above.
        max_grad_step, max_curvature_step: bounds of the schedule.
        batch_size: minibatch size for SGD (``None``: full batch); needs ``generator``.
        momentum: heavy-ball coefficient, scalar or ``(A,)``.
        weight_decay: ``lam``, scalar or ``(A,)``.
        generator: the source of minibatch indices.
        loss_tol: full-data loss below which every run has converged.
        max_time: gradient-flow time after which every run stops.
        parametrization: ``"uv"`` or ``"pm"``. Use ``"pm"`` at tiny ``alpha``: once the integrated gradient
            ``|sum_k gamma_k g_k,i|`` exceeds about 18 (``ln(2^53) / 2``), ``|u_i|`` and ``|v_i|`` agree to machine
            precision and ``u_i^2 - v_i^2`` is rounding noise, so a coordinate that grew and must later change sign
            cannot (a coordinate's integrated gradient reaches ``ln(1/alpha)`` before it grows: 37 at 1e-16, 138 at
            1e-60); ``"pm"`` keeps the invariant as the product ``w_plus w_minus``, which float64 holds to relative
            precision.
        record_every: keep ``beta`` every so many steps (for trajectory plots).
    """
    n, d = X.shape
    opts = dict(dtype=X.dtype, device=X.device)
    alpha_t = torch.as_tensor(alpha, **opts)
    alpha_t = alpha_t.reshape(-1, 1) if alpha_t.dim() <= 1 else alpha_t
    A = alpha_t.shape[0]
    alpha_t = alpha_t.expand(A, d)

    def per_run(value: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(value, **opts).reshape(-1, 1).expand(A, 1)

    mu, lam = per_run(momentum), per_run(weight_decay)
    heavy_ball, decay = bool((mu != 0).any()), bool((lam != 0).any())
    if lr is None and (batch_size is not None or heavy_ball):
        raise ValueError("lr=None (the adaptive schedule) needs full batch and no momentum; give a fixed lr")
    if batch_size is not None and (generator is None or not 0 < batch_size <= n):
        raise ValueError(f"SGD needs a generator and 0 < batch_size <= n={n}; got batch_size={batch_size}")
    if parametrization not in get_args(Parametrization):
        raise ValueError(f"parametrization must be one of {', '.join(map(repr, get_args(Parametrization)))}; "
                         f"got {parametrization!r}")
    if parametrization == "pm" and (heavy_ball or decay):
        raise ValueError('parametrization="pm" supports plain (S)GD only (no momentum, no weight decay)')
    Xn = X / n
    lam_max = float(torch.linalg.eigvalsh(X.T @ Xn)[-1])
    fixed = None if lr is None else per_run(lr)

    u = math.sqrt(2) * alpha_t.clone()
    v = torch.zeros_like(u)
    wp, wm = (u + v) / 2, (u - v) / 2
    mom_u, mom_v = torch.zeros_like(u), torch.zeros_like(u)
    log_a2 = torch.log(alpha_t**2)
    times = torch.zeros(A, 1, **opts)
    hist_t, hist_b = [], []
    check_every = record_every or 100

    k = 0
    for k in range(max_steps + 1):
        beta = u * v if parametrization == "uv" else wp**2 - wm**2
        check = k % check_every == 0 or k == max_steps
        full_resid = beta @ X.T - y if check or batch_size is None else None
        if check:
            if record_every and k % record_every == 0:
                hist_t.append(times[:, 0].clone())
                hist_b.append(beta.clone())
            converged = float((full_resid**2).sum(1).max()) / (2 * n) <= loss_tol
            if converged or float(times.min()) >= max_time or k == max_steps:
                break
        if batch_size is None:
            g = full_resid @ Xn
        else:
            idx = torch.randint(n, (A, batch_size), generator=generator, device=generator.device).to(X.device)
            xb = X[idx]  # (A, b, d)
            resid = (xb @ beta[:, :, None])[..., 0] - y[idx]
            g = (resid[..., None] * xb).mean(1)
        if fixed is None:
            size = u * u + v * v if parametrization == "uv" else 2 * (wp * wp + wm * wm)
            gamma = torch.minimum(max_grad_step / g.abs().amax(1, keepdim=True).clamp_min(1e-300),
                                  max_curvature_step / (lam_max * size.amax(1, keepdim=True) + lam))
        else:
            gamma = fixed
        gg = gamma * g
        if parametrization == "pm":  # d/dw_plus = 2 w_plus g and d/dw_minus = -2 w_minus g, with step gamma / 2
            log_a2 = log_a2 + torch.log(torch.abs(1 - gg * gg))
            wp, wm = wp - gg * wp, wm + gg * wm
            u, v = wp + wm, wp - wm
        elif heavy_ball:
            mom_u, mom_v = mu * mom_u + g * v + lam * u, mu * mom_v + g * u + lam * v
            u, v = u - gamma * mom_u, v - gamma * mom_v
        else:
            shrink = 1 - gamma * lam
            log_a2 = log_a2 + torch.log(torch.abs(shrink * shrink - gg * gg))
            u, v = shrink * u - gg * v, shrink * v - gg * u
        times = times + gamma

    beta = u * v if parametrization == "uv" else wp**2 - wm**2
    loss = ((beta @ X.T - y) ** 2).sum(1) / (2 * n)
    return DiagonalGD(beta, u, v, torch.full_like(log_a2, math.nan) if heavy_ball else log_a2, times[:, 0], loss, k,
                      torch.stack(hist_t) if hist_t else None, torch.stack(hist_b) if hist_b else None)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a - b|| / ||b||`` over the last dimension."""
    return torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1)


@dataclass(frozen=True)
class DiagonalNetworksConfig:
    """Sizes of the chapter "Diagonal linear networks I" (Woodworth et al. 2020, sparse regression).

    Attributes:
        n, d, k: training points, dimension, non-zeros of the planted vector.
        n_test: test points.
        log10_alphas: the init scales of the sweep, as powers of ten.
        seeds: data seeds (the error bars of the full profile); the run's seed is added to each.
        max_steps, max_grad_step, max_curvature_step: gradient-descent budget and step schedule (see gd_diagonal).
        transition_ns: training-set sizes of the transition figure (test error of argmin psi_alpha against alpha).
    """

    n: int
    d: int
    k: int
    n_test: int
    log10_alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    max_steps: int
    max_grad_step: float
    transition_ns: tuple[int, ...]
    max_curvature_step: float = 1.0


DIAGONAL_FAST = DiagonalNetworksConfig(
    n=40, d=100, k=5, n_test=1000, log10_alphas=tuple(-3 + i / 3 for i in range(13)), seeds=(0,),
    max_steps=40_000, max_grad_step=5e-3, transition_ns=(20, 30, 40, 60, 80),
)
DIAGONAL_FULL = DiagonalNetworksConfig(
    n=200, d=1000, k=20, n_test=5000, log10_alphas=tuple(float(e) for e in range(-30, 2)), seeds=(0, 1, 2, 3, 4),
    max_steps=400_000, max_grad_step=2e-3, transition_ns=(100, 150, 200, 300, 400, 600),
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
DIAGONAL_SMOKE = replace(DIAGONAL_FULL, n_test=200, seeds=(0, 1), max_steps=200)
