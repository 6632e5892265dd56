"""Dynamics of diagonal linear networks beyond the flow's limit: effective scales, saddle-to-saddle, momentum, grokking.

The network, potential, solvers and the (S)GD loop are those of :mod:`dynbook_lib.diagonal`; this module adds the
objects that describe *how* training gets to its solution:

* the exact gradient flow from scale ``alpha`` in rescaled time (an implicit ODE solve, valid down to alpha = 1e-150),
  and how fast it approaches the saddle-to-saddle path over many random instances;
* the per-coordinate gain ``ln(alpha / alpha_inf)`` of (S)GD (Even, Pesme, Gunasekar & Flammarion 2023);
* the saddle-to-saddle path of vanishing initialisation (Pesme & Flammarion 2023), computed exactly by a
  Lasso-homotopy-like algorithm, and the tools to compare it with a simulated trajectory;
* the momentum pairs of equal ``lambda = gamma / (1 - mu)^2`` (Papazov, Pesme & Flammarion 2024);
* first-crossing times of a curve (the late test-error drop under weight decay, Boursier, Pesme & Dragomir 2025).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import lsq_linear


def coordinate_gain(alpha: float, log_alpha_eff_sq: torch.Tensor) -> torch.Tensor:
    """``ln(alpha / alpha_inf)`` per coordinate: how much (S)GD shrank the effective initialisation scale.

    Args:
        alpha: the initialisation scale.
        log_alpha_eff_sq: ``log alpha_inf^2`` as returned by ``gd_diagonal`` (any shape).

    Example:
        >>> float(coordinate_gain(0.5, torch.tensor(math.log(0.25))))
        0.0
    """
    return math.log(alpha) - 0.5 * log_alpha_eff_sq


@dataclass(frozen=True)
class SaddleToSaddle:
    """The limit path of gradient flow as ``alpha -> 0`` in rescaled time ``t~ = t / ln(1/alpha)``.

    Attributes:
        times: ``(K + 1,)`` the start of each plateau; ``times[0] = 0``.
        betas: ``(K + 1, d)`` the value of ``beta`` on each plateau; ``betas[0] = 0`` and ``betas[-1]`` interpolates.
        signs: ``(K + 1, d)`` the sign pattern ``s`` (in ``{-1, 0, 1}``) of the coordinates allowed to be non-zero.
    """

    times: torch.Tensor
    betas: torch.Tensor
    signs: torch.Tensor

    def at(self, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The piecewise-constant path evaluated at rescaled times ``t``, shape ``(len(t), d)``."""
        idx = np.searchsorted(self.times.cpu().numpy(), np.asarray(t), side="right") - 1
        return self.betas[torch.as_tensor(np.clip(idx, 0, len(self.times) - 1))]


def saddle_to_saddle(X: torch.Tensor, y: torch.Tensor, *, tol: float = 1e-10, max_jumps: int = 1000) -> SaddleToSaddle:
    """The saddle-to-saddle path of a diagonal linear network at vanishing initialisation (Pesme & Flammarion 2023).

    With ``t~ = t / ln(1/alpha)``, gradient flow from ``alpha -> 0`` stays on plateaus (saddles) and jumps between
    them. The plateaus and jump times follow from ``s(t~) = -int g`` (``g = grad L(beta)``): a coordinate may be
    non-zero only once ``|s_i| = 1``, with the sign of ``s_i``. Starting from ``beta = 0``, ``s = 0``, ``t~ = 0``:

    1. ``g = X^T (X beta - y) / n``; stop when ``g = 0``.
    2. On a plateau ``g`` is constant, so ``s`` moves linearly: the next coordinate to reach the boundary does so after
       ``Delta = min_i (1 - sign(-g_i) s_i) / |g_i|`` over coordinates with ``g_i != 0``.
    3. ``s <- s - Delta g``, ``t~ <- t~ + Delta``.
    4. ``beta = argmin L`` subject to ``beta_i >= 0`` where ``s_i = 1``, ``beta_i <= 0`` where ``s_i = -1`` and
       ``beta_i = 0`` elsewhere (bounded least squares).

    The last plateau is the minimum-l1 interpolator (when it is unique).

    Args:
        X: design ``(n, d)``; y: targets ``(n,)``.
        tol: gradients below this are zero; ``|s_i|`` within ``tol`` of 1 is on the boundary.
        max_jumps: safety cap on the number of plateaus.
    """
    Xn, yn = X.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    n, d = Xn.shape
    beta, s, t = np.zeros(d), np.zeros(d), 0.0
    times, betas, signs = [0.0], [beta.copy()], [np.zeros(d)]
    for _ in range(max_jumps):
        g = Xn.T @ (Xn @ beta - yn) / n
        if np.abs(g).max() <= tol:
            break
        moving = np.abs(g) > tol
        delta = np.full(d, np.inf)
        delta[moving] = (1 - np.sign(-g[moving]) * s[moving]) / np.abs(g[moving])
        delta[delta <= tol] = np.inf  # already on the boundary it moves towards: active, not a new event
        step = delta.min()
        if not np.isfinite(step):
            raise RuntimeError("saddle-to-saddle: no coordinate reaches the boundary although the gradient is not 0")
        s = np.clip(s - step * g, -1.0, 1.0)
        s[np.abs(np.abs(s) - 1) <= tol] = np.sign(s[np.abs(np.abs(s) - 1) <= tol])
        t += step
        active = np.abs(s) == 1
        beta = np.zeros(d)
        if active.any():
            lower = np.where(s[active] > 0, 0.0, -np.inf)
            upper = np.where(s[active] > 0, np.inf, 0.0)
            sol = lsq_linear(Xn[:, active], yn, bounds=(lower, upper), method="bvls", tol=1e-14)
            beta[active] = sol.x
        times.append(t)
        betas.append(beta.copy())
        signs.append(np.where(active, np.sign(s), 0.0))
    else:
        raise RuntimeError(f"saddle-to-saddle did not end within {max_jumps} plateaus")
    as_t = dict(dtype=X.dtype, device=X.device)
    return SaddleToSaddle(torch.tensor(times, **as_t), torch.tensor(np.array(betas), **as_t),
                          torch.tensor(np.array(signs), **as_t))


def simulated_jump_times(path: SaddleToSaddle, times: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """When a simulated trajectory makes each jump of ``path``.

    The ``k``-th jump (from plateau ``k - 1`` to plateau ``k``) happens at the first recorded time, after the previous
    jump, at which ``beta(t~)`` is closer to plateau ``k`` than to plateau ``k - 1``; the time is interpolated
    linearly between the two records that bracket the crossing.

    Args:
        path: the predicted path.
        times: ``(S,)`` rescaled times of the records, increasing.
        betas: ``(S, d)`` the simulated ``beta`` at those times.

    Returns:
        ``(K,)`` the simulated jump times (NaN for a jump never made).
    """
    out = torch.full((len(path.times) - 1,), math.nan, dtype=times.dtype)
    start = 0
    for k in range(1, len(path.times)):
        prev, nxt = path.betas[k - 1], path.betas[k]
        margin = (torch.linalg.vector_norm(betas - prev, dim=1) - torch.linalg.vector_norm(betas - nxt, dim=1)).cpu()
        after = torch.nonzero(margin[start:] > 0)
        if len(after) == 0:
            break
        j = start + int(after[0])
        if j == 0:
            out[k - 1] = float(times[0])
        else:
            m0, m1 = float(margin[j - 1]), float(margin[j])
            w = -m0 / (m1 - m0)
            out[k - 1] = float(times[j - 1] + w * (times[j] - times[j - 1]))
        start = j
    return out


def plateau_errors(path: SaddleToSaddle, times: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """Relative error of a simulated trajectory at the midpoint of each intermediate plateau of ``path``.

    Plateau ``k`` (``1 <= k < K``, i.e. every saddle visited on the way, not the start at 0 nor the limit) spans
    ``[t_k, t_{k+1})``; the trajectory is read at the record nearest to ``(t_k + t_{k+1}) / 2``.

    Returns:
        ``(K - 1,)`` values ``||beta(t_mid) - beta_k|| / ||beta_k||``.
    """
    errors = []
    for k in range(1, len(path.times) - 1):
        mid = 0.5 * float(path.times[k] + path.times[k + 1])
        j = int(torch.argmin((times - mid).abs()))
        errors.append(float(torch.linalg.vector_norm(betas[j] - path.betas[k]) / torch.linalg.vector_norm(path.betas[k])))
    return torch.tensor(errors, dtype=times.dtype)


def exact_flow(
    X: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    times: torch.Tensor | np.ndarray,
    *,
    method: str = "LSODA",
    rtol: float = 1e-8,
) -> torch.Tensor:
    """Gradient flow of the diagonal network ``beta = u * v`` from ``u = sqrt(2) alpha, v = 0`` on
    ``L(beta) = ||X beta - y||^2 / (2n)``, solved as an ODE in rescaled time ``t~ = t / ln(1/alpha)``.

    With ``s(t~) = -int_0^t~ grad L(beta)``, the flow is ``beta = alpha^2 sinh(ln(1/alpha^2) s)`` exactly (``u^2 - v^2``
    is conserved), so ``ds/dt~ = -grad L(alpha^2 sinh(ln(1/alpha^2) s))``. This ODE is stiff once a coordinate is
    macroscopic (its Jacobian ``-H diag(dbeta/ds)`` grows like ``ln(1/alpha) |beta|``), so it is solved by an implicit
    method with the exact Jacobian. Unlike u * v gradient descent in float64, nothing is lost at tiny ``alpha``:
    ``beta`` is evaluated from ``s`` in log space.

    Args:
        X: ``(n, d)`` inputs.
        y: ``(n,)`` targets.
        alpha: the initialisation scale, in ``[1e-150, 1)``.
        times: increasing rescaled times ``t~ >= 0`` at which to report ``beta``.
        method: ``"LSODA"``, ``"Radau"`` or ``"BDF"`` (scipy's stiff solvers).
        rtol: relative tolerance of the solver (absolute tolerance ``1e-12`` on ``s``).

    Returns:
        ``(len(times), d)`` the flow's ``beta`` (float64, on ``X``'s device).

    Example:
        >>> X, y = torch.eye(2, dtype=torch.float64), torch.tensor([1.0, -0.5], dtype=torch.float64)
        >>> [round(b, 6) for b in exact_flow(X, y, 1e-3, [0.0, 20.0])[-1].tolist()]
        [1.0, -0.5]
    """
    if not 1e-150 <= alpha < 1:
        raise ValueError(f"exact_flow needs alpha in [1e-150, 1), got {alpha}")
    if method not in ("LSODA", "Radau", "BDF"):
        raise ValueError(f"method must be one of 'LSODA', 'Radau', 'BDF' (stiff solvers), got {method!r}")
    t = np.asarray(torch.as_tensor(times, dtype=torch.float64).cpu())
    if t.ndim != 1 or len(t) == 0 or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError("times must be a non-empty increasing 1-D sequence of rescaled times >= 0")
    Xn, yn = X.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    n = Xn.shape[0]
    H, b = Xn.T @ Xn / n, Xn.T @ yn / n
    gain = 2 * math.log(1 / alpha)
    log_half = 2 * math.log(alpha) - math.log(2)  # log(alpha^2 / 2)
    cap = 700 - log_half  # keeps exp finite during rejected trial steps; real paths stay far below it

    def beta(s: np.ndarray) -> np.ndarray:
        a = np.minimum(gain * np.abs(s), cap)
        return np.sign(s) * (np.exp(log_half + a) - np.exp(log_half - a))

    def dbeta(s: np.ndarray) -> np.ndarray:
        a = np.minimum(gain * np.abs(s), cap)
        return gain * (np.exp(log_half + a) + np.exp(log_half - a))

    with np.errstate(over="ignore", invalid="ignore"):
        sol = solve_ivp(lambda _, s: b - H @ beta(s), (0.0, float(t[-1])), np.zeros(Xn.shape[1]), method=method,
                        jac=lambda _, s: -H * dbeta(s)[None, :], t_eval=t, rtol=rtol, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"the flow's ODE solver failed at alpha = {alpha:g}: {sol.message}")
    return torch.tensor(np.array([beta(s) for s in sol.y.T]), dtype=torch.float64, device=X.device)


@dataclass(frozen=True)
class PathConvergence:
    """How close the exact flow at each scale comes to the saddle-to-saddle path, over random instances.

    Attributes:
        alphas: the scales, largest first.
        jump_error: ``(instances, len(alphas))`` the largest jump-time error of each instance, in rescaled time
            (``inf`` where the flow skips a jump of the path: a plateau too short to be visited at that scale).
        plateau_error: per instance, ``(plateaus, len(alphas))`` the relative error at the middle of each
            intermediate plateau.
        plateau_length: per instance, ``(plateaus,)`` each intermediate plateau's length in rescaled time.
    """

    alphas: tuple[float, ...]
    jump_error: np.ndarray
    plateau_error: list[np.ndarray]
    plateau_length: list[np.ndarray]

    def scaled_jump_error(self) -> np.ndarray:
        """``jump_error * ln(1/alpha)``: bounded in ``alpha`` if the jump times converge like ``1/ln(1/alpha)``."""
        return self.jump_error * np.log(1 / np.asarray(self.alphas))[None, :]

    def plateaus_within(self, tol: float, min_length: float, reference_alpha: float | None = None) -> np.ndarray:
        """At each scale, the share of intermediate plateaus whose middle lies within ``tol`` (relative) of the
        predicted saddle, among those longer than ``min_length / ln(1/reference_alpha)``: long enough to have a middle
        at the reference scale (by default the smallest), since a jump lasts about ``1 / ln(1/alpha)``."""
        reference = min(self.alphas) if reference_alpha is None else reference_alpha
        long_enough = min_length / math.log(1 / reference)
        errs = [e[lengths > long_enough] for e, lengths in zip(self.plateau_error, self.plateau_length)]
        errs = np.concatenate(errs) if errs else np.zeros((0, len(self.alphas)))
        if len(errs) == 0:
            raise ValueError(f"no plateau is longer than {long_enough:.3g} in rescaled time")
        return (errs < tol).mean(axis=0)

    def column(self, alpha: float) -> int:
        """The index of scale ``alpha`` in ``alphas``."""
        if alpha not in self.alphas:
            raise ValueError(f"alpha = {alpha:g} was not run; the scales are {self.alphas}")
        return self.alphas.index(alpha)


def path_convergence(
    instances: Iterable[tuple[torch.Tensor, torch.Tensor]],
    alphas: Sequence[float],
    *,
    points: int = 4001,
    after: float = 0.5,
) -> PathConvergence:
    """Run the exact flow of every instance ``(X, y)`` at every scale and compare it with its saddle-to-saddle path.

    Each flow is reported at ``points`` rescaled times from 0 to ``after`` past the path's last jump; jump times and
    plateau errors are read with :func:`simulated_jump_times` and :func:`plateau_errors`.
    """
    alphas = tuple(sorted(alphas, reverse=True))
    jumps, plateaus, lengths = [], [], []
    for X, y in instances:
        found = saddle_to_saddle(X, y)
        path = SaddleToSaddle(found.times.cpu(), found.betas.cpu(), found.signs.cpu())
        t = torch.linspace(0, float(path.times[-1]) + after, points, dtype=torch.float64)
        worst, errs = [], []
        for alpha in alphas:
            betas = exact_flow(X, y, alpha, t).cpu()
            err = (simulated_jump_times(path, t, betas) - path.times[1:]).abs()
            worst.append(math.inf if bool(err.isnan().any()) else float(err.max()))
            errs.append(plateau_errors(path, t, betas).numpy())
        jumps.append(worst)
        plateaus.append(np.stack(errs, axis=1) if errs[0].size else np.zeros((0, len(alphas))))
        lengths.append(np.diff(path.times.numpy())[1:])
    return PathConvergence(alphas, np.array(jumps), plateaus, lengths)


def momentum_pairs(lam: float, momenta: tuple[float, ...]) -> list[tuple[float, float]]:
    """Step sizes and momenta ``(gamma, mu)`` with the same ``lambda = gamma / (1 - mu)^2``.

    Example:
        >>> [(round(gamma, 12), mu) for gamma, mu in momentum_pairs(2.0, (0.9,))]
        [(0.02, 0.9)]
    """
    if lam <= 0 or not all(0 <= mu < 1 for mu in momenta):
        raise ValueError(f"need lambda > 0 and momenta in [0, 1); got {lam}, {momenta}")
    return [(lam * (1 - mu) ** 2, mu) for mu in momenta]


def equal_step_pairs(step: float, lambdas: tuple[float, ...]) -> list[tuple[float, float]]:
    """Step sizes and momenta ``(gamma, mu)`` with the same ``gamma / (1 - mu) = step`` (heavy ball's effective step)
    but ``lambda = gamma / (1 - mu)^2`` in ``lambdas``: the control of the claim that only ``lambda`` matters.

    Example:
        >>> [(round(g, 12), round(mu, 12)) for g, mu in equal_step_pairs(0.05, (0.5, 1.0))]
        [(0.005, 0.9), (0.0025, 0.95)]
    """
    if step <= 0 or not all(lam >= step for lam in lambdas):
        raise ValueError(f"need step > 0 and every lambda >= step (so that mu = 1 - step / lambda is in [0, 1)); "
                         f"got step={step}, lambdas={lambdas}")
    return [(step**2 / lam, 1 - step / lam) for lam in lambdas]


def first_crossing(times: torch.Tensor, values: torch.Tensor, level: float) -> float:
    """The first time at which ``values`` falls below ``level``, interpolated linearly; NaN if it never does.

    Example:
        >>> first_crossing(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([4.0, 2.0, 0.0]), 1.0)
        1.5
    """
    below = torch.nonzero(values < level)
    if len(below) == 0:
        return math.nan
    j = int(below[0])
    if j == 0:
        return float(times[0])
    v0, v1 = float(values[j - 1]), float(values[j])
    return float(times[j - 1] + (v0 - level) / (v0 - v1) * (times[j] - times[j - 1]))


def step_scale(X: torch.Tensor, batch_size: int | None = None) -> float:
    """The natural unit of step size for (S)GD on ``L(beta) = ||X beta - y||^2 / (2n)``:
    ``min(b / tr(H), 1 / lambda_max(H))`` with ``H = X^T X / n`` and ``b`` the batch size (``n`` when ``None``).

    Full-batch GD is limited by ``1 / lambda_max(H)``; SGD with ``b = 1`` by ``1 / ||x_i||^2 ~ 1 / tr(H)``. A step
    ``factor * step_scale`` puts runs with different batch sizes on one axis.
    """
    n = X.shape[0]
    b = n if batch_size is None else batch_size
    H = X.T @ X / n
    return min(b / float(torch.trace(H)), 1 / float(torch.linalg.eigvalsh(H)[-1]))


@dataclass(frozen=True)
class DynamicsConfig:
    """Sizes of the chapter "Diagonal linear networks II" (one instance per profile).

    (a) SGD and large steps on sparse regression ``(n, d, k)`` at scale ``alpha_sgd``: a small-step GD reference,
    GD with step ``gd_factor * step_scale(X)`` and SGD (batch 1) with steps ``sgd_factors * step_scale(X, 1)``.
    (b) saddle-to-saddle on ``(n_s2s, d_s2s, k_s2s)``: gradient descent on one instance at the scales
    ``alphas_s2s`` (the figures), and the exact flow on ``flow_instances`` random instances at ``flow_alphas`` (the
    claims: how fast the flow approaches the limit path), each flow reported at ``flow_points`` times.
    (c) heavy-ball momentum at scale ``alpha_sgd`` with ``lambda = gamma / (1 - mu)^2`` in ``lambdas`` and three
    momenta each, and the control: three pairs with the same ``gamma / (1 - mu) = control_step`` and ``lambda`` in
    ``control_lambdas``. (d) weight decay ``weight_decays`` from scale ``alpha_decay``, run to
    ``lambda t = lambda_t_max``. The solver settings (step caps, loss tolerances, recording intervals) have the
    defaults both profiles use.
    """

    n: int
    d: int
    k: int
    n_test: int
    alpha_sgd: float
    gd_factor: float
    sgd_factors: tuple[float, ...]
    gd_steps: int
    sgd_steps: int
    n_s2s: int
    d_s2s: int
    k_s2s: int
    alphas_s2s: tuple[float, ...]
    flow_alphas: tuple[float, ...]
    flow_instances: int
    flow_points: int
    lambdas: tuple[float, ...]
    momenta: tuple[float, ...]
    control_step: float
    control_lambdas: tuple[float, ...]
    momentum_steps: int
    alpha_decay: float
    weight_decays: tuple[float, ...]
    lambda_t_max: float
    decay_steps: int
    seeds: tuple[int, ...]
    small_step: float = 5e-3  # max_grad_step of small-step GD (sections a, b)
    loss_tol: float = 1e-26  # section (a) stops below this train loss
    s2s_max_steps: int = 2_000_000  # gradient descent of section (b)
    s2s_record_every: int = 5
    momentum_loss_tol: float = 1e-24
    decay_grad_step: float = 0.02  # max_grad_step of section (d)
    decay_record_every: int = 20


DYNAMICS_FAST = DynamicsConfig(
    n=40, d=100, k=5, n_test=1000, alpha_sgd=0.2, gd_factor=0.9, sgd_factors=(1.5, 2.5), gd_steps=40_000,
    sgd_steps=40_000, n_s2s=20, d_s2s=30, k_s2s=4, alphas_s2s=(1e-4, 1e-8, 1e-16, 1e-30),
    flow_alphas=(1e-8, 1e-16, 1e-30, 1e-100), flow_instances=20, flow_points=4001, lambdas=(0.05, 0.5, 2.0),
    momenta=(0.9, 0.95, 0.975), control_step=0.05,
    control_lambdas=(0.5, 1.0, 2.0), momentum_steps=100_000, alpha_decay=1.0, weight_decays=(4e-3, 2e-3, 1e-3),
    lambda_t_max=5.0, decay_steps=120_000, seeds=(0,),
)
# The full profile of (b) keeps the specification's problem class and goes to far smaller scales, since the
# saddle-to-saddle picture is exact only as ln(1/alpha) -> infinity. alpha^2 = 1e-200 is representable in float64,
# but u * v gradient descent loses u^2 - v^2 once a coordinate has grown (see gd_diagonal's ``parametrization``):
# tiny scales need parametrization="pm" or the exact flow.
DYNAMICS_FULL = DynamicsConfig(
    n=200, d=1000, k=20, n_test=5000, alpha_sgd=0.2, gd_factor=0.9, sgd_factors=(1.5, 2.5), gd_steps=400_000,
    sgd_steps=400_000, n_s2s=20, d_s2s=30, k_s2s=4, alphas_s2s=(1e-4, 1e-16, 1e-30, 1e-60, 1e-100),
    flow_alphas=(1e-8, 1e-16, 1e-30, 1e-60, 1e-100, 1e-150), flow_instances=100, flow_points=8001,
    lambdas=(0.05, 0.5, 2.0), momenta=(0.9, 0.95, 0.975), control_step=0.05,
    control_lambdas=(0.5, 1.0, 2.0), momentum_steps=1_000_000, alpha_decay=1.0,
    weight_decays=(4e-3, 2e-3, 1e-3), lambda_t_max=5.0, decay_steps=1_000_000, seeds=(0, 1, 2, 3, 4),
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
DYNAMICS_SMOKE = replace(DYNAMICS_FULL, n_test=200, gd_steps=200, sgd_steps=200, flow_instances=2, flow_points=101,
                         momentum_steps=200, decay_steps=200, seeds=(0, 1), s2s_max_steps=2000)
