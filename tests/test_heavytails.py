"""Heavy tails of SGD: the estimator on laws of known index, the theoretical index against independent solvers,
and the batched SGD chains against the recursion written out."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable

from dynbook_lib.heavytails import (
    HEAVY_TAILS_FULL,
    critical_step,
    log_moment_drift,
    second_moment_factor,
    sgd_linear_regression,
    survival,
    tail_index_1d,
    tail_index_estimator,
    theoretical_tail_index,
)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 1.8])
def test_estimator_recovers_the_index_of_stable_laws(alpha):
    n = 20_000
    sample = levy_stable.rvs(alpha, 0.0, size=n, random_state=np.random.default_rng(7))
    # sampling error of the median block estimate at n = 2e4 is a few hundredths; 0.1 leaves room for the bias near 2
    assert tail_index_estimator(sample) == pytest.approx(alpha, abs=0.1)


def test_estimator_on_cauchy_and_gaussian():
    gen = torch.Generator().manual_seed(3)
    uniform = torch.rand(20_000, generator=gen, dtype=torch.float64)
    cauchy = torch.tan(math.pi * (uniform - 0.5))  # inverse CDF of the Cauchy law: alpha = 1 exactly
    assert tail_index_estimator(cauchy) == pytest.approx(1.0, abs=0.08)
    gauss = torch.randn(20_000, generator=gen, dtype=torch.float64)  # the stable law with alpha = 2
    assert tail_index_estimator(gauss) == pytest.approx(2.0, abs=0.1)


def test_estimator_rejects_samples_too_small_for_its_blocks():
    with pytest.raises(ValueError, match="block size 100"):
        tail_index_estimator(np.ones(150))


def test_critical_step_and_second_moment_closed_form():
    assert critical_step(100, 1) == pytest.approx(2 / 102)
    for d, b in [(1, 1), (5, 2), (100, 20)]:
        assert second_moment_factor(critical_step(d, b), d, b) == pytest.approx(1.0, abs=1e-14)
    # h(2) = E||M e1||^2 against Monte Carlo
    gen = torch.Generator().manual_seed(0)
    d, b, eta = 4, 3, 0.3
    a = torch.randn(400_000, b, d, generator=gen, dtype=torch.float64)
    vec = -(eta / b) * (a * a[:, :, :1]).sum(1)
    vec[:, 0] += 1
    mc = float((vec**2).sum(1).mean())
    assert mc == pytest.approx(second_moment_factor(eta, d, b), rel=5e-3)
    with pytest.raises(ValueError):
        critical_step(0, 1)


@pytest.mark.parametrize("ratio", [1.2, 2.0, 3.0])
def test_monte_carlo_tail_index_matches_quadrature_in_one_dimension(ratio):
    eta = ratio * critical_step(1, 1)
    assert theoretical_tail_index(eta, 1, 1, n_samples=400_000, seed=1) == pytest.approx(tail_index_1d(eta), abs=0.02)


def test_tail_index_is_two_at_the_critical_step_by_quadrature():
    assert tail_index_1d(critical_step(1, 1)) == pytest.approx(2.0, abs=1e-8)


def test_non_stationary_step_is_a_clear_error():
    with pytest.raises(ValueError, match="no stationary law"):
        theoretical_tail_index(3.0, 1, 1, n_samples=10_000)
    with pytest.raises(ValueError, match="no stationary law"):
        tail_index_1d(3.0)


def test_sgd_chains_follow_the_recursion_written_out():
    etas = torch.tensor([0.1, 0.4], dtype=torch.float64)
    out = sgd_linear_regression(etas, d=3, batch_size=2, n_runs=5, n_steps=4, seed=11)
    gen = torch.Generator().manual_seed(11)
    x = torch.zeros(2, 5, 3, dtype=torch.float64)
    for _ in range(4):
        a = torch.randn(2, 5, 2, 3, generator=gen, dtype=torch.float64)
        y = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64)
        for e in range(2):
            for r in range(5):
                grad = sum(a[e, r, i] * (a[e, r, i] @ x[e, r] - y[e, r, i]) for i in range(2)) / 2
                x[e, r] = x[e, r] - etas[e] * grad
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


def test_sgd_chains_below_the_critical_step_have_the_stationary_variance():
    # below eta_c the stationary second moment is finite: E x^2 = E q^2 / (1 - h(2)), with E q^2 = eta^2 d / b (d = 1)
    eta = 0.3
    x = sgd_linear_regression(torch.tensor([eta]), d=1, batch_size=1, n_runs=40_000, n_steps=300, seed=2)[0, :, 0]
    expected = eta**2 / (1 - second_moment_factor(eta, 1, 1))
    assert float((x**2).mean()) == pytest.approx(expected, rel=0.05)


def test_survival_function():
    t, p = survival(np.array([3.0, -1.0, 2.0]))
    assert t.tolist() == [1.0, 2.0, 3.0] and p.tolist() == pytest.approx([0.75, 0.5, 0.25])


def test_full_profile_builds_on_cpu():
    cfg = HEAVY_TAILS_FULL
    x = sgd_linear_regression(torch.tensor(cfg.sweep_etas), d=cfg.sweep_d, batch_size=cfg.sweep_batches[-1],
                              n_runs=8, n_steps=3, seed=0)
    assert x.shape == (len(cfg.sweep_etas), 8, cfg.sweep_d) and bool(torch.isfinite(x).all())
    assert math.isfinite(theoretical_tail_index(cfg.sweep_etas[-1], cfg.sweep_d, cfg.sweep_batches[-1],
                                                n_samples=20_000))


def test_chains_without_a_stationary_law_are_refused_or_flagged():
    """eta = 3 at d = b = 1: E log|1 - 3 a^2| > 0, the chains diverge and an estimated tail index would be noise."""
    assert log_moment_drift(3.0, 1, 1) > 0 > log_moment_drift(1.0, 1, 1)
    with pytest.raises(ValueError, match="no stationary law"):
        sgd_linear_regression(torch.tensor([1.0, 3.0]), d=1, batch_size=1, n_runs=10, n_steps=5, seed=0)
    out = sgd_linear_regression(torch.tensor([1.0, 3.0]), d=1, batch_size=1, n_runs=10, n_steps=5, seed=0,
                                unstable="nan")
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()
    with pytest.raises(ValueError, match="unstable must be"):
        sgd_linear_regression(torch.tensor([1.0]), d=1, batch_size=1, n_runs=2, n_steps=1, seed=0, unstable="skip")


def test_log_moment_drift_against_quadrature_in_one_dimension():
    """d = b = 1: E log|1 - eta a^2| with a ~ N(0, 1), by quadrature split at the kink."""
    from scipy.integrate import quad
    from scipy.stats import norm

    eta = 1.5
    kink = 1 / math.sqrt(eta)
    f = lambda x: math.log(abs(1 - eta * x * x)) * 2 * norm.pdf(x)  # noqa: E731
    exact = quad(f, 0, kink, limit=200)[0] + quad(f, kink, np.inf, limit=200)[0]
    assert abs(log_moment_drift(eta, 1, 1, n_samples=400_000) - exact) < 0.01
