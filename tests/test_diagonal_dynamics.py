"""Diagonal networks II: SGD, weight decay and momentum in gd_diagonal; saddle-to-saddle; the helpers."""

import math

import numpy as np
import pytest
import torch

from dynbook_lib.core import make_generator
from dynbook_lib.data import sparse_regression
from dynbook_lib.diagonal import gd_diagonal, min_l1_interpolator, relative_error
from dynbook_lib.diagonal_dynamics import (
    DYNAMICS_FAST,
    DYNAMICS_FULL,
    coordinate_gain,
    exact_flow,
    first_crossing,
    momentum_pairs,
    path_convergence,
    plateau_errors,
    saddle_to_saddle,
    simulated_jump_times,
    step_scale,
)
from helpers import assert_close

F64 = torch.float64


# --- the exact flow ------------------------------------------------------------------------------------------------------


def test_exact_flow_one_coordinate_against_quadrature():
    """d = n = 1, X = 1, y = 1: ds/dt~ = 1 - alpha^2 sinh(c s) with c = ln(1/alpha^2), so the time to reach s is the
    integral of 1 / (1 - alpha^2 sinh(c u)) from 0 to s (scipy's quad, not an ODE solver)."""
    from scipy.integrate import quad

    alpha = 1e-20
    c = math.log(1 / alpha**2)
    s_star = math.asinh(1 / alpha**2) / c  # beta = 1, where the flow stops
    s_grid = [0.3, 0.9, 0.99, 0.999 * s_star]
    times = [quad(lambda u: 1 / (1 - alpha**2 * math.sinh(c * u)), 0, s, limit=200, epsabs=1e-13)[0] for s in s_grid]
    beta = exact_flow(torch.ones(1, 1, dtype=F64), torch.ones(1, dtype=F64), alpha, times, rtol=1e-10)
    expected = torch.tensor([alpha**2 * math.sinh(c * s) for s in s_grid], dtype=F64)
    torch.testing.assert_close(beta[:, 0], expected, rtol=1e-5, atol=1e-30)


def test_exact_flow_matches_small_step_gradient_descent():
    """At alpha = 1e-4, gradient descent with small steps (w_plus/w_minus form) follows the flow: beta at the same
    rescaled times agrees to the step's first-order error."""
    data = sparse_regression(10, 12, 2, n_test=5, seed=3)
    alpha = 1e-4
    path = saddle_to_saddle(data.X, data.y)
    horizon = float(path.times[-1]) + 0.3
    run = gd_diagonal(data.X, data.y, torch.tensor([alpha], dtype=F64), max_steps=400_000, max_grad_step=5e-4,
                      loss_tol=0.0, max_time=horizon * math.log(1 / alpha), record_every=50, parametrization="pm")
    t = run.history_times[:, 0] / math.log(1 / alpha)
    keep = torch.nonzero(t[1:] > t[:-1]).flatten() + 1
    flow = exact_flow(data.X, data.y, alpha, t[keep])
    gap = torch.linalg.vector_norm(flow - run.history_beta[keep, 0], dim=1).max()
    assert gap < 0.004 * torch.linalg.vector_norm(path.betas[-1])  # measured 8e-4, 3.2e-3 at a 4x larger step


def test_exact_flow_two_stiff_solvers_agree_at_alpha_1e_100():
    data = sparse_regression(20, 30, 4, n_test=5, seed=0)
    t = torch.linspace(0, 2.0, 401, dtype=F64)
    lsoda = exact_flow(data.X, data.y, 1e-100, t)
    radau = exact_flow(data.X, data.y, 1e-100, t, method="Radau")
    assert torch.isfinite(lsoda).all()
    torch.testing.assert_close(lsoda, radau, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=1.0), "alpha in"), (dict(alpha=1e-200), "alpha in"), (dict(method="RK45"), "stiff"),
    (dict(times=[0.0, 2.0, 1.0]), "increasing"), (dict(times=[-1.0, 1.0]), "increasing"),
])
def test_exact_flow_refuses_bad_input(kwargs, match):
    args = dict(X=torch.eye(2, dtype=F64), y=torch.ones(2, dtype=F64), alpha=1e-3, times=[0.0, 1.0]) | kwargs
    with pytest.raises(ValueError, match=match):
        exact_flow(**args)


def test_path_convergence_jump_error_falls_like_one_over_log():
    """Pesme & Flammarion's limit on two random instances: the jump-time error times ln(1/alpha) stays put from
    alpha = 1e-8 to 1e-60 while the error itself falls 7.5-fold, and plateau middles converge to the saddles."""
    instances = [(d.X, d.y) for d in (sparse_regression(20, 30, 4, n_test=5, seed=s) for s in (0, 1))]
    conv = path_convergence(instances, (1e-8, 1e-60), points=2001)
    scaled = conv.scaled_jump_error()
    assert np.all(np.isfinite(scaled))
    assert np.all(np.abs(scaled[:, 1] / scaled[:, 0] - 1) < 0.25)
    assert np.all(conv.jump_error[:, 1] < conv.jump_error[:, 0] / 5)
    share = conv.plateaus_within(0.02, min_length=10)
    assert share[1] == 1.0 and share[0] < 1.0


# --- saddle to saddle ----------------------------------------------------------------------------------------------------


def test_saddle_to_saddle_orthogonal_design_by_hand():
    # X = sqrt(n) I gives L = ||beta - b||^2 / 2 with b = y / sqrt(n); g = beta - b, so s_i = b_i t~ and coordinate i
    # enters at t~ = 1 / |b_i| with beta_i = b_i: entries in decreasing order of |b_i|.
    n = 3
    b = torch.tensor([2.0, -0.5, 1.0], dtype=F64)
    path = saddle_to_saddle(math.sqrt(n) * torch.eye(n, dtype=F64), math.sqrt(n) * b)
    assert_close(path.times, torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64))
    expected = torch.tensor([[0, 0, 0], [2, 0, 0], [2, 0, 1], [2, -0.5, 1]], dtype=F64)
    assert_close(path.betas, expected)
    assert_close(path.signs[-1], torch.tensor([1.0, -1.0, 1.0], dtype=F64))


def test_saddle_to_saddle_one_equation_by_hand():
    # beta_1 + 2 beta_2 = 2: g = (r, 2 r) with r = -2 at 0, so coordinate 2 enters first, at t~ = 1/4, and the
    # constrained least squares puts beta = (0, 1): the minimum-l1 solution, where the path ends.
    path = saddle_to_saddle(torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([2.0], dtype=F64))
    assert_close(path.times, torch.tensor([0.0, 0.25], dtype=F64))
    assert_close(path.betas, torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=F64))


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_saddle_to_saddle_path_is_consistent_and_ends_at_min_l1(seed):
    data = sparse_regression(20, 30, 4, seed=seed)
    path = saddle_to_saddle(data.X, data.y)
    assert bool((path.times[1:] > path.times[:-1]).all())
    assert float(relative_error(path.betas[-1], min_l1_interpolator(data.X, data.y))) < 1e-8
    for beta, sign in zip(path.betas, path.signs):
        g = data.X.T @ (data.X @ beta - data.y) / data.X.shape[0]
        on = beta != 0
        assert float(torch.cat([g[on].abs(), torch.zeros(1, dtype=F64)]).max()) < 1e-9  # LS on the active set
        assert bool((beta * sign >= 0).all()) and bool((sign[on] != 0).all())


def test_simulated_jump_times_and_plateau_errors_on_the_exact_path():
    data = sparse_regression(20, 30, 4, seed=0)
    path = saddle_to_saddle(data.X, data.y)
    grid = torch.linspace(0, float(path.times[-1]) + 0.5, 20_001, dtype=F64)
    jumps = simulated_jump_times(path, grid, path.at(grid))
    assert float((jumps - path.times[1:]).abs().max()) <= float(grid[1] - grid[0])
    assert float(plateau_errors(path, grid, path.at(grid)).max()) == 0.0


def test_gradient_descent_at_tiny_scale_follows_the_path():
    data = sparse_regression(20, 30, 4, seed=0)
    path = saddle_to_saddle(data.X, data.y)
    alpha = 1e-30
    run = gd_diagonal(data.X, data.y, torch.tensor([alpha], dtype=F64), max_steps=100_000, max_grad_step=5e-3,
                      loss_tol=0.0, max_time=(float(path.times[-1]) + 0.3) * math.log(1 / alpha), record_every=5)
    t = run.history_times[:, 0] / math.log(1 / alpha)
    assert float((simulated_jump_times(path, t, run.history_beta[:, 0]) - path.times[1:]).abs().max()) < 0.02
    assert float(plateau_errors(path, t, run.history_beta[:, 0]).max()) < 0.02


# --- (S)GD options of gd_diagonal ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 5])
def test_sgd_keeps_the_exact_invariant_and_is_reproducible(batch_size):
    data = sparse_regression(10, 20, 2, seed=20)
    alphas = torch.tensor([0.1, 0.5], dtype=F64)
    kw = dict(max_steps=3000, lr=0.01, batch_size=batch_size, loss_tol=0.0)
    a = gd_diagonal(data.X, data.y, alphas, generator=make_generator(3), **kw)
    b = gd_diagonal(data.X, data.y, alphas, generator=make_generator(3), **kw)
    c = gd_diagonal(data.X, data.y, alphas, generator=make_generator(4), **kw)
    assert torch.equal(a.beta, b.beta) and not torch.equal(a.beta, c.beta)
    assert_close(a.u**2 - a.v**2, 2 * torch.exp(a.log_alpha_eff_sq), scale=1e2)


def test_weight_decay_invariant_and_stationary_point():
    data = sparse_regression(10, 20, 2, seed=21)
    lam = 0.05
    run = gd_diagonal(data.X, data.y, torch.tensor([1.0], dtype=F64), max_steps=50_000, lr=0.02, weight_decay=lam,
                      loss_tol=0.0)
    # u^2 - v^2 = 2 alpha^2 prod |(1 - gamma lam)^2 - gamma^2 g^2|
    assert_close(run.u**2 - run.v**2, 2 * torch.exp(run.log_alpha_eff_sq), scale=1e2)
    g = data.X.T @ (data.X @ run.beta[0] - data.y) / data.X.shape[0]
    assert float((g * run.v[0] + lam * run.u[0]).abs().max()) < 1e-10
    assert float((g * run.u[0] + lam * run.v[0]).abs().max()) < 1e-10


def test_heavy_ball_matches_the_written_out_recurrence():
    data = sparse_regression(8, 12, 2, seed=22)
    X, y, n = data.X, data.y, data.X.shape[0]
    gamma, mu, lam, alpha, steps = 0.03, 0.8, 0.01, 0.4, 7
    u, v = torch.full((12,), math.sqrt(2) * alpha, dtype=F64), torch.zeros(12, dtype=F64)
    mu_u, mu_v = torch.zeros(12, dtype=F64), torch.zeros(12, dtype=F64)
    for _ in range(steps):
        g = X.T @ (X @ (u * v) - y) / n
        mu_u, mu_v = mu * mu_u + g * v + lam * u, mu * mu_v + g * u + lam * v
        u, v = u - gamma * mu_u, v - gamma * mu_v
    run = gd_diagonal(X, y, torch.tensor([alpha], dtype=F64), max_steps=steps, lr=gamma, momentum=mu,
                      weight_decay=lam, loss_tol=0.0)
    assert_close(run.beta[0], u * v)
    assert bool(torch.isnan(run.log_alpha_eff_sq).all())


def test_zero_momentum_is_plain_gd():
    data = sparse_regression(8, 12, 2, seed=23)
    alphas = torch.tensor([0.1, 1.0], dtype=F64)
    plain = gd_diagonal(data.X, data.y, alphas, max_steps=500, lr=0.05, loss_tol=0.0)
    zero = gd_diagonal(data.X, data.y, alphas, max_steps=500, lr=0.05, momentum=0.0, loss_tol=0.0)
    assert torch.equal(plain.beta, zero.beta)


def test_bad_option_combinations_are_rejected():
    data = sparse_regression(8, 12, 2, seed=24)
    X, y = data.X, data.y
    with pytest.raises(ValueError, match="lr=None"):
        gd_diagonal(X, y, 0.1, max_steps=1, momentum=0.9)
    with pytest.raises(ValueError, match="generator"):
        gd_diagonal(X, y, 0.1, max_steps=1, lr=0.01, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        gd_diagonal(X, y, 0.1, max_steps=1, lr=0.01, batch_size=99, generator=make_generator(0))
    with pytest.raises(ValueError, match="plain"):
        gd_diagonal(X, y, 0.1, max_steps=1, lr=0.01, weight_decay=0.1, parametrization="pm")


def test_max_time_stops_all_runs_once_they_reach_it():
    data = sparse_regression(8, 12, 2, seed=25)
    run = gd_diagonal(data.X, data.y, torch.tensor([0.1, 1.0], dtype=F64), max_steps=100_000, lr=0.01,
                      loss_tol=0.0, max_time=3.0)
    assert 3.0 <= float(run.times.min()) < 3.0 + 100 * 0.01 + 1e-9


# --- helpers ---------------------------------------------------------------------------------------------------------------


def test_coordinate_gain_and_momentum_pairs():
    assert_close(coordinate_gain(0.5, torch.log(torch.tensor([0.25, 0.0625], dtype=F64))),
                 torch.tensor([0.0, math.log(2)], dtype=F64))
    for gamma, mu in momentum_pairs(0.5, (0.0, 0.9, 0.99)):
        assert gamma / (1 - mu) ** 2 == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError):
        momentum_pairs(0.5, (1.0,))


def test_first_crossing():
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert first_crossing(t, torch.tensor([5.0, 3.0, 1.0, 0.5]), 2.0) == pytest.approx(1.5)
    assert first_crossing(t, torch.tensor([0.0, 3.0, 1.0, 0.5]), 2.0) == 0.0
    assert math.isnan(first_crossing(t, torch.tensor([5.0, 4.0, 3.0, 2.5]), 2.0))


def test_step_scale_closed_form():
    # X^T X / n = diag(4, 1): lambda_max = 4, trace = 5
    X = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64) * math.sqrt(2)
    assert step_scale(X) == pytest.approx(1 / 4)
    assert step_scale(X, 1) == pytest.approx(1 / 5)


def test_full_profile_builds_and_steps_on_cpu():
    """Every section of the full profile at its size: data, and a few (S)GD / momentum / decay steps."""
    cfg = DYNAMICS_FULL
    data = sparse_regression(cfg.n, cfg.d, cfg.k, n_test=cfg.n_test, seed=cfg.seeds[-1])
    alpha = torch.tensor([cfg.alpha_sgd], dtype=F64)
    sgd = gd_diagonal(data.X, data.y, alpha, max_steps=5, lr=cfg.sgd_factors[0] * step_scale(data.X, 1),
                      batch_size=1, generator=make_generator(0))
    pairs = momentum_pairs(cfg.lambdas[-1], cfg.momenta)
    mom = gd_diagonal(data.X, data.y, alpha.expand(3), max_steps=5, lr=torch.tensor([g for g, _ in pairs], dtype=F64),
                      momentum=torch.tensor([m for _, m in pairs], dtype=F64))
    decay = gd_diagonal(data.X, data.y, torch.full((3,), cfg.alpha_decay, dtype=F64), max_steps=5,
                        weight_decay=torch.tensor(cfg.weight_decays, dtype=F64))
    for run in (sgd, mom, decay):
        assert bool(torch.isfinite(run.beta).all()) and run.beta.shape[1] == cfg.d
    s2s = sparse_regression(cfg.n_s2s, cfg.d_s2s, cfg.k_s2s, seed=0)
    assert len(saddle_to_saddle(s2s.X, s2s.y).times) >= 2
    assert min(cfg.alphas_s2s) <= 1e-30 and DYNAMICS_FAST.alphas_s2s[-2] == 1e-16
