"""Lazy vs hasty analytical model: closed forms against an independent ODE solver and gradient descent (float64)."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dynbook_lib.hasty import (
    closed_form,
    gradient_descent,
    half_times,
    half_times_closed_form,
    reversed_example,
    spearman,
)
from helpers import assert_close

F64 = torch.float64


@pytest.mark.parametrize("regime", ["linear", "quadratic"])
def test_closed_form_solves_the_gradient_flow(regime):
    mu, y = reversed_example()
    theta0 = 0.05
    t = torch.linspace(0, 2, 21, dtype=F64)

    def flow(_, theta):
        speed = 2 * (theta if regime == "quadratic" else theta0) * mu.numpy()
        return -speed * (theta - y.numpy() / np.sqrt(mu.numpy()))

    sol = solve_ivp(flow, (0, 2), np.full(5, theta0), t_eval=t.numpy(), rtol=1e-12, atol=1e-14)
    assert_close(closed_form(mu, y, theta0, t, regime), torch.tensor(sol.y.T), scale=1e4)  # ODE solver tolerance


@pytest.mark.parametrize("regime", ["linear", "quadratic"])
def test_gradient_descent_tracks_the_flow_to_first_order_in_the_step(regime):
    mu, y = reversed_example()
    theta0, horizon = 0.05, 1.0
    errors = []
    for lr in (1e-3, 5e-4):
        steps = int(round(horizon / lr))
        gd = gradient_descent(mu, y, theta0, lr, steps, regime)
        exact = closed_form(mu, y, theta0, torch.tensor([horizon], dtype=F64), regime)[0]
        errors.append(float((gd[-1] - exact).abs().max()))
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)  # Euler: error O(lr)


@pytest.mark.parametrize("regime", ["linear", "quadratic"])
def test_half_times_closed_form_and_measured(regime):
    mu, y = reversed_example()
    theta0, lr = 0.05, 1e-4
    expected = half_times_closed_form(mu, y, theta0, regime)
    steps = int(float(expected.max()) / lr) + 10
    gd = gradient_descent(mu, y, theta0, lr, steps, regime)
    measured = half_times(gd, lr * torch.arange(steps + 1, dtype=F64), theta0, y / mu.sqrt())
    torch.testing.assert_close(measured, expected, rtol=1e-2, atol=2 * lr)
    mid = closed_form(mu, y, theta0, expected, regime).diagonal()
    assert_close(mid, (theta0 + y / mu.sqrt()) / 2, scale=1e3)


def test_the_order_of_learning_reverses_between_the_regimes():
    mu, y = reversed_example()
    assert_close(mu.sqrt() * y, torch.tensor([5.0, 6.0, 7.0, 8.0, 9.0], dtype=F64))
    linear = half_times_closed_form(mu, y, 0.05, "linear")
    quadratic = half_times_closed_form(mu, y, 0.05, "quadratic")
    assert torch.all(linear[:-1] < linear[1:]) and torch.all(quadratic[:-1] > quadratic[1:])
    assert spearman(linear, quadratic) == pytest.approx(-1.0)


def test_half_times_never_reached_are_infinite_and_bad_regime_is_refused():
    theta = torch.tensor([[0.0, 0.0], [0.1, 0.6]], dtype=F64)
    out = half_times(theta, torch.tensor([0.0, 1.0], dtype=F64), 0.0, torch.tensor([1.0, 1.0], dtype=F64))
    assert out[0] == float("inf") and out[1] == 1.0
    with pytest.raises(ValueError, match="unknown regime 'lazy'; expected linear or quadratic"):
        closed_form(*reversed_example(), 0.1, torch.zeros(1, dtype=F64), "lazy")
