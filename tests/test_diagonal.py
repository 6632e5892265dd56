"""Diagonal linear networks: the potential, its minimiser, the interpolators and gradient descent, in float64."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize

from dynbook_lib.data import sparse_regression
from dynbook_lib.diagonal import (
    DIAGONAL_FAST,
    DIAGONAL_FULL,
    gd_diagonal,
    hyperbolic_entropy,
    hyperbolic_entropy_grad,
    min_l1_by_enumeration,
    min_l1_interpolator,
    min_l2_interpolator,
    potential_minimizer,
    potential_minimizers,
    relative_error,
)
from helpers import assert_close

F64 = torch.float64


def gaussian_problem(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=F64)
    y = torch.randn(n, generator=gen, dtype=F64)
    return X, y


def row_space_residual(X, vec):
    """Distance from ``vec`` to the row space of X, relative to ||vec||."""
    coef = torch.linalg.lstsq(X.T, vec[:, None]).solution
    return float(torch.linalg.vector_norm(X.T @ coef[:, 0] - vec) / torch.linalg.vector_norm(vec))


# --- the potential --------------------------------------------------------------------------------------------------


def test_potential_closed_form_value():
    beta = torch.tensor([0.0, 1.0, -2.0], dtype=F64)
    expected = (math.asinh(1) - math.sqrt(2) + 1) + (2 * math.asinh(2) - math.sqrt(5) + 1)
    assert float(hyperbolic_entropy(beta, 1.0)) == pytest.approx(expected, rel=1e-14)
    assert float(hyperbolic_entropy(torch.zeros(4, dtype=F64), 0.3)) == 0.0


def test_potential_gradient_matches_autograd():
    beta = torch.tensor([0.3, -1.2, 2.5, 0.0], dtype=F64, requires_grad=True)
    alpha = torch.tensor([0.5, 1.0, 0.1, 2.0], dtype=F64)
    (grad,) = torch.autograd.grad(hyperbolic_entropy(beta, alpha), beta)
    assert_close(hyperbolic_entropy_grad(beta.detach(), alpha), grad)


def test_potential_small_alpha_is_l1_up_to_a_known_constant():
    # psi_alpha(b) = ||b||_1 ln(1/alpha^2) + sum |b_i| (ln(2 |b_i|) - 1) + O(alpha^2) for b_i != 0
    beta = torch.tensor([1.5, -0.5, 3.0], dtype=F64)
    for alpha in (1e-4, 1e-6, 1e-8):
        psi = float(hyperbolic_entropy(beta, alpha))
        expected = float(beta.abs().sum()) * math.log(alpha**-2) + float((beta.abs() * (torch.log(2 * beta.abs()) - 1)).sum())
        assert psi == pytest.approx(expected, abs=10 * alpha**2 + 1e-14 * abs(expected))


def test_potential_large_alpha_is_half_squared_l2():
    # alpha^2 psi_alpha(b) = ||b||^2 / 2 - sum b^4 / (24 alpha^4) + O(alpha^-8)
    beta = torch.tensor([1.5, -0.5, 3.0], dtype=F64)
    for alpha in (10.0, 30.0, 100.0):
        value = alpha**2 * float(hyperbolic_entropy(beta, alpha))
        expected = 0.5 * float(beta @ beta) - float((beta**4).sum()) / (24 * alpha**4)
        assert value == pytest.approx(expected, rel=1e-3 * alpha**-4 + 1e-13)


# --- the potential's minimiser ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 1.0, 10.0])
def test_minimizer_satisfies_optimality_conditions(alpha):
    X, y = gaussian_problem(5, 12, seed=1)
    sol = potential_minimizer(X, y, alpha)
    assert_close(X @ sol.beta, y, scale=100)
    assert row_space_residual(X, hyperbolic_entropy_grad(sol.beta, alpha)) < 1e-10


def test_minimizer_with_one_alpha_per_coordinate():
    X, y = gaussian_problem(4, 9, seed=2)
    alpha = torch.linspace(0.05, 2.0, 9, dtype=F64)
    sol = potential_minimizer(X, y, alpha)
    assert_close(X @ sol.beta, y, scale=100)
    assert row_space_residual(X, hyperbolic_entropy_grad(sol.beta, alpha)) < 1e-10


def test_minimizer_single_constraint_matches_scalar_root_finding():
    # n = 1: beta_i = a_i sinh(x_i nu) with sum_i x_i a_i sinh(x_i nu) = y, one monotone equation in nu.
    x = np.array([2.0, -1.0, 0.5])
    a = np.array([0.3, 1.0, 0.05]) ** 2
    y = 3.0
    nu = brentq(lambda t: float(np.sum(x * a * np.sinh(x * t))) - y, -50, 50, xtol=1e-15)
    expected = torch.tensor(a * np.sinh(x * nu), dtype=F64)
    sol = potential_minimizer(torch.tensor(x[None], dtype=F64), torch.tensor([y], dtype=F64),
                              torch.tensor(np.sqrt(a), dtype=F64))
    assert_close(sol.beta, expected, scale=100)


def test_minimizer_matches_a_generic_constrained_solver():
    X, y = gaussian_problem(3, 6, seed=3)
    alpha = 0.7
    sol = potential_minimizer(X, y, alpha)
    Xn, yn = X.numpy(), y.numpy()
    res = minimize(lambda b: float(hyperbolic_entropy(torch.tensor(b), alpha)), np.zeros(6),
                   jac=lambda b: hyperbolic_entropy_grad(torch.tensor(b), alpha).numpy(), method="SLSQP",
                   constraints={"type": "eq", "fun": lambda b: Xn @ b - yn, "jac": lambda b: Xn},
                   options={"ftol": 1e-15, "maxiter": 500})
    assert res.success
    np.testing.assert_allclose(sol.beta.numpy(), res.x, rtol=1e-6, atol=1e-7)


def test_minimizer_tends_to_min_l2_and_min_l1():
    data = sparse_regression(20, 40, 3, seed=4)
    big = potential_minimizer(data.X, data.y, 1e3).beta
    assert float(relative_error(big, min_l2_interpolator(data.X, data.y))) < 1e-6
    errs = [float(relative_error(potential_minimizer(data.X, data.y, a).beta, data.beta_star)) for a in (1e-2, 1e-5, 1e-30)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3  # min-l1 = beta_star here (exact sparse recovery)


def test_minimizer_warm_start_gives_the_same_solution():
    X, y = gaussian_problem(6, 15, seed=5)
    cold = potential_minimizer(X, y, 1e-3)
    warm = potential_minimizer(X, y, 1e-3, nu0=cold.nu * 0.9)
    assert_close(warm.beta, cold.beta, scale=1e3)


def test_minimizer_raises_when_out_of_iterations():
    X, y = gaussian_problem(6, 15, seed=5)
    with pytest.raises(RuntimeError, match="did not reach|stalled"):
        potential_minimizer(X, y, 1e-6, max_iter=2)


# --- the interpolators --------------------------------------------------------------------------------------------------


def test_min_l2_interpolator_closed_form():
    X, y = gaussian_problem(5, 11, seed=6)
    beta = min_l2_interpolator(X, y)
    assert_close(beta, torch.linalg.pinv(X) @ y, scale=100)
    assert_close(X @ beta, y, scale=100)
    assert row_space_residual(X, beta) < 1e-12


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_min_l1_interpolator_matches_vertex_enumeration(seed):
    X, y = gaussian_problem(3, 7, seed=seed)
    lp, brute = min_l1_interpolator(X, y), min_l1_by_enumeration(X, y)
    assert float(lp.abs().sum()) == pytest.approx(float(brute.abs().sum()), rel=1e-9)
    torch.testing.assert_close(lp, brute, rtol=1e-7, atol=1e-8)


def test_min_l1_interpolator_recovers_a_sparse_vector():
    data = sparse_regression(40, 100, 5, seed=0)
    torch.testing.assert_close(min_l1_interpolator(data.X, data.y), data.beta_star, rtol=1e-7, atol=1e-8)


# --- gradient descent ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [None, 0.05])
def test_gd_keeps_the_exact_discrete_invariant(lr):
    # u^2 - v^2 = 2 alpha^2 prod_k (1 - gamma_k^2 g_k^2), recorded as log_alpha_eff_sq
    data = sparse_regression(10, 20, 2, seed=10)
    alphas = torch.tensor([0.01, 0.3, 1.0], dtype=F64)
    run = gd_diagonal(data.X, data.y, alphas, max_steps=2000, lr=lr, max_grad_step=0.05)
    assert_close(run.u**2 - run.v**2, 2 * torch.exp(run.log_alpha_eff_sq), scale=1e2)
    assert bool((run.log_alpha_eff_sq < torch.log(alphas[:, None] ** 2)).all())


@pytest.mark.parametrize("lr", [None, 0.02])
def test_gd_pm_parametrization_gives_the_same_iterates(lr):
    data = sparse_regression(10, 20, 2, seed=11)
    alphas = torch.tensor([0.05, 2.0], dtype=F64)
    uv = gd_diagonal(data.X, data.y, alphas, max_steps=500, lr=lr, record_every=50)
    pm = gd_diagonal(data.X, data.y, alphas, max_steps=500, lr=lr, record_every=50, parametrization="pm")
    assert_close(pm.history_beta, uv.history_beta, scale=1e3)
    assert_close(pm.beta, uv.beta, scale=1e3)


def test_gd_batched_runs_equal_single_runs():
    data = sparse_regression(10, 20, 2, seed=12)
    alphas = torch.tensor([0.01, 0.5, 3.0], dtype=F64)
    batched = gd_diagonal(data.X, data.y, alphas, max_steps=300, loss_tol=0.0)
    for i, a in enumerate(alphas):
        single = gd_diagonal(data.X, data.y, a[None], max_steps=300, loss_tol=0.0)
        assert_close(batched.beta[i], single.beta[0])


def test_gd_converges_to_the_potential_minimizer_and_the_error_is_first_order_in_the_step():
    data = sparse_regression(8, 16, 2, seed=13)
    alpha = torch.tensor([0.2], dtype=F64)
    target = potential_minimizer(data.X, data.y, alpha).beta
    errors = []
    for step in (4e-2, 2e-2, 1e-2):
        run = gd_diagonal(data.X, data.y, alpha, max_steps=200_000, max_grad_step=step, loss_tol=1e-26)
        assert float(run.train_loss[0]) < 1e-20
        errors.append(float(relative_error(run.beta[0], target)))
        # the discrete iterates follow the mirror flow of psi for the effective scale alpha_inf: far closer
        eff = potential_minimizer(data.X, data.y, torch.exp(0.5 * run.log_alpha_eff_sq[0])).beta
        assert float(relative_error(run.beta[0], eff)) < 0.1 * errors[-1]
    assert errors[-1] < 1e-2
    for coarse, fine in zip(errors, errors[1:]):
        assert 0.35 < fine / coarse < 0.65  # halving the step halves the error


def test_sparse_regression_is_deterministic_and_seeded():
    a, b = sparse_regression(10, 30, 3, seed=5), sparse_regression(10, 30, 3, seed=5)
    c = sparse_regression(10, 30, 3, seed=6)
    assert torch.equal(a.X, b.X) and torch.equal(a.beta_star, b.beta_star)
    assert not torch.equal(a.X, c.X)
    assert int((a.beta_star != 0).sum()) == 3
    assert bool(((a.beta_star.abs() >= 1) | (a.beta_star == 0)).all())
    assert_close(a.y, a.X @ a.beta_star)
    assert float(a.test_mse(a.beta_star)) == 0.0
    with pytest.raises(ValueError, match="0 < k <= d"):
        sparse_regression(10, 5, 6, seed=0)


def test_full_profile_builds_and_steps_on_cpu():
    """The full profile is sized for a GPU; here its data, solvers and a few steps run at full size."""
    cfg = DIAGONAL_FULL
    data = sparse_regression(cfg.n, cfg.d, cfg.k, n_test=cfg.n_test, seed=cfg.seeds[-1])
    assert data.X.shape == (cfg.n, cfg.d) and data.X_test.shape == (cfg.n_test, cfg.d)
    alphas = torch.tensor([10.0**e for e in cfg.log10_alphas], dtype=F64)
    run = gd_diagonal(data.X, data.y, alphas, max_steps=20, max_grad_step=cfg.max_grad_step)
    assert run.beta.shape == (len(alphas), cfg.d) and bool(torch.isfinite(run.beta).all())
    smallest = potential_minimizer(data.X, data.y, float(alphas[0]))  # alpha = 1e-30 in float64
    assert_close(data.X @ smallest.beta, data.y, scale=1e3)
    assert float(relative_error(smallest.beta, data.beta_star)) < 1e-2
    assert len(DIAGONAL_FAST.log10_alphas) >= 9 and DIAGONAL_FAST.log10_alphas[0] == -3


def test_continuation_over_scales_equals_independent_solves():
    data = sparse_regression(30, 80, 4, seed=14)
    alphas = torch.tensor([1.0, 1e-30, 1e-3, 10.0, 1e-12], dtype=F64)
    together = potential_minimizers(data.X, data.y, alphas)
    for i, a in enumerate(alphas):
        torch.testing.assert_close(together[i], potential_minimizer(data.X, data.y, float(a)).beta, rtol=1e-9, atol=1e-10)


def test_uv_loses_the_invariant_at_tiny_alpha_and_pm_keeps_it():
    """Regression (u * v in float64): a coordinate that grows first and must later change sign. At alpha = 1e-60 its
    integrated gradient passes 138, |u_1| and |v_1| become equal to machine precision, and u * v stays >= 0 forever;
    the w_plus/w_minus parametrisation crosses zero, as the exact flow does. At alpha = 1e-6 both cross."""
    X = torch.tensor([[1.0, 0.8], [0.6, 0.3]], dtype=torch.float64)  # x_1 has the larger correlation with y ...
    y = X @ torch.tensor([-0.5, 1.0], dtype=torch.float64)  # ... but the interpolator has beta_1 < 0
    alphas = torch.tensor([1e-60, 1e-6], dtype=torch.float64)
    runs = {p: gd_diagonal(X, y, alphas, max_steps=14_000, max_grad_step=0.05, loss_tol=0.0, parametrization=p,
                           record_every=500) for p in ("uv", "pm")}
    for run in runs.values():
        assert float(run.history_beta[:, 0, 0].max()) > 0.2  # coordinate 1 grew first, positive
    assert float(runs["pm"].beta[0, 0]) < 0 and float(runs["uv"].beta[0, 0]) > 0
    assert float(runs["uv"].beta[1, 0]) == pytest.approx(-0.5, rel=1e-6) and float(runs["pm"].beta[1, 0]) < 0


def test_unknown_parametrization_is_refused():
    X, y = torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="parametrization must be one of 'uv', 'pm'; got 'w'"):
        gd_diagonal(X, y, 0.1, max_steps=1, lr=0.01, parametrization="w")
