"""Penalties as priors: closed forms of KLs and residuals, prior recovery, VI against its closed-form optimum."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm

from dynbook_lib.priors import (
    PENALTY_PRIOR_FULL,
    MeanFieldMLP,
    cosine_log_prior,
    cosine_penalty,
    exact_posterior,
    gaussian_prior_penalty,
    heat_residual,
    heat_residual_grid,
    l1_penalty,
    log_normaliser,
    max_error_up_to_constant,
    mean_field_vi,
    monte_carlo_kl,
    predictive_nll,
    penalty_from_prior,
    prior_by_fourier,
    prior_by_limit,
    semigroup_residual,
    smoothed_l1_penalty,
    tempered_optimum,
    train_mean_field_mlp,
    weight_decay_penalty,
)
from helpers import assert_close

F64 = torch.float64
MU = torch.linspace(-3, 3, 61, dtype=F64)


def t(x):
    return torch.tensor(x, dtype=F64)


def test_gaussian_penalty_is_the_kl_up_to_a_constant():
    s = 1.7
    r = gaussian_prior_penalty(s)
    for mu, sigma in [(0.0, 0.3), (1.2, 0.9), (-2.0, 2.5)]:
        kl = math.log(s / sigma) + (sigma**2 + mu**2) / (2 * s**2) - 0.5  # KL(N(mu, sigma^2) || N(0, s^2))
        assert float(r(t(mu), t(sigma))) - kl == pytest.approx(0.5 - math.log(s), abs=1e-14)


def test_smoothed_l1_is_the_mean_absolute_value_under_q():
    r = smoothed_l1_penalty(1.0)
    for mu, sigma in [(0.0, 0.5), (0.7, 0.3), (-1.5, 2.0)]:
        expected = quad(lambda x: abs(x) * norm.pdf(x, mu, sigma), -np.inf, np.inf)[0]
        assert float(r(t(mu), t(sigma))) + math.log(sigma) == pytest.approx(expected, rel=1e-10)


def test_semigroup_residual_closed_forms():
    s0, s1, lam = 0.5, 1.0, 0.8
    for r in (gaussian_prior_penalty(1.3), smoothed_l1_penalty(0.6), cosine_penalty(1.0, 2.0)):
        assert float(semigroup_residual(r, MU, s0, s1).abs().max()) < 1e-12
    # weight decay alone: f = -lam mu^2 is smoothed into -lam (mu^2 + Delta), a residual lam * Delta everywhere
    assert_close(semigroup_residual(weight_decay_penalty(lam), MU, s0, s1), torch.full_like(MU, lam * (s1**2 - s0**2)))
    # plain L1 at 0: f = 0 there, its smoothing -lam E|sqrt(Delta) Z| = -lam sqrt(2 Delta / pi)
    at0 = float(semigroup_residual(l1_penalty(lam), t([0.0]), s0, s1)[0])
    # Gauss-Hermite converges slowly on a kink (error ~ 1/nodes): 1% at 120 nodes
    assert at0 == pytest.approx(lam * math.sqrt(2 * (s1**2 - s0**2) / math.pi), rel=1e-2)
    with pytest.raises(ValueError):
        semigroup_residual(l1_penalty(), MU, 1.0, 0.5)


def test_pointwise_residual_is_two_lambda_sigma_for_weight_decay():
    sigma = torch.linspace(0.1, 2, 61, dtype=F64)
    assert_close(heat_residual(weight_decay_penalty(0.7), MU, sigma), 2 * 0.7 * sigma)
    assert float(heat_residual(cosine_penalty(1.0, 1.5), MU, sigma).abs().max()) < 1e-12
    grid = heat_residual_grid(weight_decay_penalty(0.7), MU, sigma)  # exact on quadratics
    assert_close(grid, 2 * 0.7 * sigma[1:-1, None].expand_as(grid), scale=1e4)


def test_prior_recovery_by_limit_and_by_fourier():
    theta = torch.linspace(-4, 4, 81, dtype=F64)
    assert max_error_up_to_constant(prior_by_limit(gaussian_prior_penalty(1.5), theta), -(theta**2) / 4.5) < 1e-10
    grid, la = prior_by_fourier(gaussian_prior_penalty(1.5), 0.5)
    inner = grid.abs() <= 4
    assert max_error_up_to_constant(la[inner], -(grid[inner] ** 2) / 4.5) < 1e-8  # quadratics are inverted exactly
    grid, la = prior_by_fourier(cosine_penalty(1.0, 1.0), 0.5)
    inner = grid.abs() <= 4
    assert max_error_up_to_constant(la[inner], cosine_log_prior(1.0, 1.0)(grid[inner])) < 0.02


@pytest.mark.parametrize("name, log_alpha, degree, tolerance", [
    ("gaussian", lambda t: -(t**2) / 4.5, 4, 1e-10),
    ("quartic", lambda t: -(t**4) / 4, 4, 1e-9),  # failed with a quadratic alone: 18 nats on [-4, 4]
    ("double well", lambda t: -(t**4) / 8 + t**2 / 2, 4, 1e-9),
    ("sextic", lambda t: -(t**6) / 6, 6, 1e-8),
    ("cosine", lambda t: -(t**2) / 2 + torch.cos(t), 4, 0.02),
    ("sine 2t", lambda t: -(t**2) / 2 + 0.5 * torch.sin(2 * t), 4, 0.03),
    ("cosine 3t", lambda t: -(t**2) / 2 + 0.3 * torch.cos(3 * t), 4, 0.03),
])
def test_prior_by_fourier_recovers_a_family_of_priors(name, log_alpha, degree, tolerance):
    """Penalties built from priors of known form (Gauss-Hermite KL): polynomial priors up to the fitted degree come back
    exactly, bounded parts within the band limit up to the taper's error."""
    grid, la = prior_by_fourier(penalty_from_prior(log_alpha), 0.5, degree=degree)
    inner = grid.abs() <= 4
    assert max_error_up_to_constant(la[inner], log_alpha(grid[inner])) < tolerance


def test_prior_by_fourier_is_ill_posed_above_the_band_limit():
    """A part of log alpha at a frequency whose gain exp(sigma0^2 xi^2 / 2) exceeds max_gain is lost: cos(8 t) at
    sigma0 = 0.5 (gain e^8) comes back as nothing, an error of its full amplitude."""
    log_alpha = lambda t: -(t**2) / 2 + 0.3 * torch.cos(8 * t)  # noqa: E731
    grid, la = prior_by_fourier(penalty_from_prior(log_alpha), 0.5)
    inner = grid.abs() <= 4
    assert max_error_up_to_constant(la[inner], log_alpha(grid[inner])) > 0.25
    assert max_error_up_to_constant(la[inner], -(grid[inner] ** 2) / 2) < 0.02


def test_penalty_from_prior_is_the_closed_form_kl():
    mu, sigma = torch.linspace(-2, 2, 9, dtype=F64), torch.linspace(0.2, 2, 9, dtype=F64)
    assert_close(penalty_from_prior(cosine_log_prior(1.0, 1.0))(mu, sigma), cosine_penalty(1.0, 1.0)(mu, sigma))


def test_log_normaliser_and_monte_carlo_kl_against_the_gaussian_closed_form():
    s = 1.3
    log_density = lambda x: -(x**2) / (2 * s**2)  # noqa: E731
    log_z = log_normaliser(log_density)
    assert log_z == pytest.approx(math.log(math.sqrt(2 * math.pi) * s), abs=1e-10)
    mu, sigma = 0.4, 0.8
    kl = math.log(s / sigma) + (sigma**2 + mu**2) / (2 * s**2) - 0.5
    # the Monte-Carlo standard error at 2e5 samples is below 2e-3 here
    assert monte_carlo_kl(log_density, mu, sigma, samples=200_000, seed=1, log_z=log_z) == pytest.approx(kl, abs=6e-3)


def regression(seed=0, n=120, d=6):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=F64)
    y = X @ torch.randn(d, generator=gen, dtype=F64) + 0.3 * torch.randn(n, generator=gen, dtype=F64)
    return X, y


@pytest.mark.parametrize("c", [0.3, 1.0, 3.0])
def test_mean_field_vi_reaches_its_closed_form_optimum(c):
    X, y = regression()
    vi = mean_field_vi(X, y, 0.3, 2.0, kl_factor=c / X.shape[0])
    closed = tempered_optimum(X, y, 0.3, 2.0, c)
    torch.testing.assert_close(vi.mean, closed.mean, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(vi.variance, closed.variance, rtol=1e-5, atol=0)


def test_factor_one_over_n_gives_the_exact_mean_and_precision_diagonal():
    X, y = regression(seed=3)
    mean, precision = exact_posterior(X, y, 0.3, 2.0)
    closed = tempered_optimum(X, y, 0.3, 2.0, 1.0)
    assert_close(closed.mean, mean)
    assert_close(closed.variance, 1 / precision.diagonal())


def test_mean_field_mlp_kl_is_zero_at_the_prior_and_matches_monte_carlo():
    model = MeanFieldMLP((5, 4, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for mu, log_sigma, std in zip(model.mus, model.log_sigmas, model.prior_stds):
            mu.zero_()
            log_sigma.copy_(torch.log(std))
    assert float(model.kl().detach()) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for mu, log_sigma in zip(model.mus, model.log_sigmas):
            mu.normal_(generator=torch.Generator().manual_seed(1))
            log_sigma.fill_(-1.0)
    gen = torch.Generator().manual_seed(2)
    estimate = 0.0
    with torch.no_grad():
        estimate = monte_carlo_network_kl(model, gen)
    assert estimate == pytest.approx(float(model.kl().detach()), rel=0.02)


def monte_carlo_network_kl(model, gen):
    estimate = 0.0
    for mu, log_sigma, std in zip(model.mus, model.log_sigmas, model.prior_stds):
        sigma = torch.exp(log_sigma)
        w = mu + sigma * torch.randn((20_000, *mu.shape), generator=gen, dtype=F64)
        log_q = -0.5 * ((w - mu) / sigma) ** 2 - torch.log(sigma)
        log_p = -0.5 * (w / std) ** 2 - torch.log(std)
        estimate += float((log_q - log_p).sum((1, 2)).mean())
    return estimate


def test_mean_field_mlp_trains_and_is_reproducible():
    gen = torch.Generator().manual_seed(4)
    X = torch.randn(200, 5, generator=gen, dtype=F64)
    y = (X[:, 0] > 0).long()
    a = train_mean_field_mlp(X, y, sizes=(5, 8, 2), kl_factor=0.1 / 200, steps=300, lr=0.03, seed=5)
    b = train_mean_field_mlp(X, y, sizes=(5, 8, 2), kl_factor=0.1 / 200, steps=300, lr=0.03, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    nll, acc = predictive_nll(a, X, y)
    assert acc > 0.9 and nll < math.log(2)


def test_full_profile_network_builds():
    cfg = PENALTY_PRIOR_FULL
    model = MeanFieldMLP(cfg.mlp_sizes, generator=torch.Generator().manual_seed(0))
    out = model(torch.zeros(3, cfg.mlp_sizes[0], dtype=F64))
    assert out.shape == (3, cfg.mlp_sizes[-1]) and math.isfinite(float(model.kl().detach()))
    assert 1.0 in cfg.factors and 1.0 in cfg.mlp_factors
