"""Gaussian pre-activations: Weibull weights, matched activations, propagation; statistical checks at a fixed seed
with thresholds set by the sample size."""

import math

import numpy as np
import pytest
import torch
from scipy.special import gamma
from scipy.stats import kstest

from dynbook_lib.preact import (
    PREACT_FULL,
    MatchedActivation,
    activation,
    edge_of_chaos_variances,
    exact_activation,
    ks_statistic,
    ks_union_level,
    log_abs_y_characteristic,
    normal_union_level,
    propagate,
    sample_weibull,
    weibull_init_,
)

N = 200_000
KS_LIMIT = 1.95 / math.sqrt(N)  # the 0.1% quantile of the KS distance under the null, at N samples


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("theta", [2.0, 3.0, 5.0])
def test_weibull_sampler_has_the_right_law(theta):
    w = sample_weibull(theta, (N,), generator=gen(1))
    # P(|W| <= t) = 1 - exp(-t^theta), symmetric sign
    assert kstest(w.abs().numpy(), lambda t: 1 - np.exp(-(t**theta))).statistic < KS_LIMIT
    assert abs(float((w > 0).double().mean()) - 0.5) < 4 / math.sqrt(N)
    for k in (2, 4):
        assert float((w.abs() ** k).mean()) == pytest.approx(gamma(1 + k / theta), rel=0.02)


def test_characteristic_function_is_one_at_zero_and_matches_the_gaussian_when_divided_back():
    assert log_abs_y_characteristic(np.array([0.0]), 3.0)[0] == pytest.approx(1.0)
    # E|Y|^{it} E|W|^{it} = E|Z|^{it}, checked by Monte Carlo on |Z|
    t = np.array([0.3, 1.0, 2.5])
    z = torch.randn(N, generator=gen(2), dtype=torch.float64).abs().numpy()
    mc = np.exp(1j * np.outer(t, np.log(z))).mean(1)
    from scipy.special import loggamma

    product = log_abs_y_characteristic(t, 3.0) * np.exp(loggamma(1 + 1j * t / 3.0))
    np.testing.assert_allclose(product, mc, atol=5 / math.sqrt(N))


@pytest.mark.parametrize("theta", [2.0, 3.0])
@pytest.mark.parametrize("family", ["odd", "positive"])
def test_weight_times_activation_is_standard_gaussian(theta, family):
    x = torch.randn(N, generator=gen(3), dtype=torch.float64)
    w = sample_weibull(theta, (N,), generator=gen(4))
    assert ks_statistic(w * activation(theta, family)(x)) < KS_LIMIT


def test_theta_two_closed_form_is_box_muller():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    odd = activation(2.0, "odd")(x)
    assert torch.allclose(odd, -activation(2.0, "odd")(-x)) and float(odd.abs().max()) <= math.sqrt(2)
    u = torch.special.ndtr(x)
    torch.testing.assert_close(activation(2.0, "positive")(x), math.sqrt(2) * torch.sin(math.pi * u / 2))
    with pytest.raises(ValueError, match="theta > 2"):
        exact_activation(2.0)


def test_ks_statistic_agrees_with_scipy():
    x = torch.randn(5000, generator=gen(5), dtype=torch.float64) * 1.1
    assert ks_statistic(x) == pytest.approx(kstest(x.numpy(), "norm").statistic, abs=1e-12)
    assert ks_statistic(x, standardise=True) < ks_statistic(x)


def test_width_one_networks_stay_exactly_gaussian_and_relu_does_not():
    n = 50_000
    limit = 1.95 / math.sqrt(n)
    h = propagate("weibull-positive", width=1, depth=5, n_networks=n, seed=6, theta=3.0)
    assert h.shape == (5, n, 1)
    assert max(ks_statistic(h[layer, :, 0]) for layer in range(5)) < limit * 1.3  # five layers tested at once
    relu = propagate("relu", width=1, depth=3, n_networks=n, seed=6)
    assert ks_statistic(relu[-1, :, 0], standardise=True) > 0.3
    with pytest.raises(ValueError, match="unknown network kind"):
        propagate("gelu", width=1, depth=2, n_networks=10, seed=0)


def test_edge_of_chaos_map_against_monte_carlo():
    q = edge_of_chaos_variances(4, sigma_w=1.5, sigma_b=0.2, q1=0.7)
    z = torch.randn(N, generator=gen(7), dtype=torch.float64)
    mc = 1.5**2 * float((torch.tanh(math.sqrt(0.7) * z) ** 2).mean()) + 0.2**2
    assert q[0] == 0.7 and q[1] == pytest.approx(mc, rel=5e-3)


def test_initialiser_for_linear_layers():
    layer = torch.nn.Linear(50, 40, dtype=torch.float64)
    weibull_init_(layer, 3.0, generator=gen(8))
    scaled = (layer.weight * math.sqrt(50)).detach().abs().numpy().ravel()
    assert kstest(scaled, lambda t: 1 - np.exp(-(t**3))).statistic < 1.95 / math.sqrt(scaled.size)
    assert float(layer.bias.detach().abs().max()) == 0.0
    # width-1 stack built from torch modules: one unit with an independent N(0, 1) input gives an N(0, 1) output
    x = torch.randn(N, 1, generator=gen(9), dtype=torch.float64)
    w = sample_weibull(3.0, (N, 1), generator=gen(10))
    assert ks_statistic((w * MatchedActivation(3.0, "odd")(x))[:, 0]) < KS_LIMIT


def test_full_profile_builds_on_cpu():
    cfg = PREACT_FULL
    for theta in (min(t for t in cfg.thetas if t > 2), max(cfg.thetas)):
        table = exact_activation(theta, "positive")
        assert np.all(np.diff(table.cdf) >= 0) and table.cdf[-1] > 0.999
    h = propagate("weibull-odd", width=max(cfg.widths), depth=3, n_networks=16, seed=0, theta=max(cfg.thetas))
    assert h.shape == (3, 16, max(cfg.widths)) and bool(torch.isfinite(h).all())


def test_activation_table_is_built_once_per_theta_and_in_bounded_memory():
    """Both families share one cached inversion, and blocks of the grid keep memory low (theta near 2 needs ~1.6e5
    quadrature nodes: a 3 GB matrix if computed at once)."""
    odd, positive = exact_activation(3.5, "odd"), exact_activation(3.5, "positive")
    assert odd.cdf is positive.cdf and not odd.cdf.flags.writeable
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.allclose(odd(x).abs(), odd(-x).abs()) and bool((positive(x) > 0).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_propagate_runs_on_the_requested_device():
    h = propagate("weibull-odd", width=2, depth=3, n_networks=64, seed=0, theta=3.0, device="cuda")
    assert h.device.type == "cuda" and torch.isfinite(h).all()


def test_union_levels_solve_their_defining_equations():
    """DKW: 2 T exp(-2 n t^2) = p; normal: 2 T (1 - Phi(z)) = p."""
    from scipy.stats import norm

    t = ks_union_level(32, 10_000, 1e-3)
    assert 2 * 32 * math.exp(-2 * 10_000 * t**2) == pytest.approx(1e-3, rel=1e-12)
    z = normal_union_level(64, 1e-3)
    assert 2 * 64 * norm.sf(z) == pytest.approx(1e-3, rel=1e-9)
    with pytest.raises(ValueError, match="need tests"):
        ks_union_level(0, 10)
