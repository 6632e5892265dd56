"""Tangent features, the empirical NTK (fast path against the jacrev+vmap reference), kernel measures and the
linearised model, in float64."""

import pytest
import torch
from torch import nn

from dynbook_lib.kernels import (
    center,
    cka,
    effective_rank,
    kernel_gd_predict,
    one_hot_targets,
    spectrum,
    target_alignment,
)
from dynbook_lib.linearize import LinearizedModel
from dynbook_lib.ntk import center_examples, empirical_ntk, empirical_ntk_reference
from dynbook_lib.tangent import jacobian, tangent_factors
from helpers import assert_close

F64 = torch.float64


def mlp(widths, *, bias=True, act=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


def cnn1d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 2, 3, stride=2), nn.Flatten(), nn.Linear(6, 3)
    ).double()


def cnn2d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 2)).double()


def inputs(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


MODELS = {
    "mlp": (lambda: mlp([4, 5, 3, 3]), (4,)),
    "mlp_no_bias": (lambda: mlp([3, 4, 2], bias=False, act=nn.ReLU), (3,)),
    "cnn1d": (cnn1d, (2, 7)),
    "cnn2d_layernorm": (cnn2d, (1, 4, 6)),
}


# ---------------------------------------------------------------- the NTK, two paths


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layout", ["full", "blocks", "trace"])
@pytest.mark.parametrize("centered", [False, True])
def test_fast_ntk_equals_jacobian_reference(name, layout, centered):
    make, shape = MODELS[name]
    model = make()
    x1, x2 = inputs((6, *shape), 1), inputs((4, *shape), 2)
    for other in (None, x2):
        fast = empirical_ntk(model, x1, other, layout=layout, centered=centered, chunk_size=4)
        ref = empirical_ntk_reference(model, x1, other, layout=layout, centered=centered)
        assert_close(fast, ref)


def test_ntk_of_a_linear_model_is_the_input_gram_plus_one():
    model = nn.Linear(3, 2).double()
    x = inputs((5, 3), 0)
    k = empirical_ntk(model, x)
    expected = (x @ x.T + 1)[:, None, :, None] * torch.eye(2, dtype=F64)[None, :, None, :]
    assert_close(k, expected)


def test_layouts_hold_the_same_numbers():
    model, x = mlp([3, 4, 3]), inputs((5, 3), 0)
    full = empirical_ntk(model, x)
    blocks = empirical_ntk(model, x, layout="blocks")
    trace = empirical_ntk(model, x, layout="trace")
    assert full.shape == (5, 3, 5, 3) and blocks.shape == (3, 3, 5, 5) and trace.shape == (5, 5)
    assert_close(blocks[1, 2], full[:, 1, :, 2])
    assert_close(trace, torch.einsum("iojo->ij", full))
    gram = full.reshape(15, 15)
    assert_close(gram, gram.T)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10


def test_result_does_not_depend_on_chunk_size():
    model, x = mlp([4, 6, 3]), inputs((9, 4), 3)
    reference = empirical_ntk(model, x, chunk_size=9)
    for size in (1, 2, 4):
        assert_close(empirical_ntk(model, x, chunk_size=size), reference)


def test_centering_the_gram_is_centering_the_features():
    model, x = mlp([3, 4, 2]), inputs((6, 3), 0)
    full = empirical_ntk(model, x)
    assert_close(empirical_ntk(model, x, centered=True), center_examples(full))
    c = torch.eye(6, dtype=F64) - 1 / 6
    trace = empirical_ntk(model, x, layout="trace")
    assert_close(empirical_ntk(model, x, layout="trace", centered=True), c @ trace @ c)


def test_jacobian_reference_matches_a_hand_derivative():
    # f(x) = v * tanh(w x) with scalar w, v: df/dw = v x (1 - tanh^2), df/dv = tanh(w x)
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Tanh(), nn.Linear(1, 1, bias=False)).double()
    w, v = model[0].weight.item(), model[2].weight.item()
    x = torch.tensor([[0.3], [-1.2]], dtype=F64)
    t = torch.tanh(w * x[:, 0])
    expected = torch.stack([v * x[:, 0] * (1 - t**2), t], dim=-1)[:, None, :]
    assert_close(jacobian(model, x), expected)


def test_tangent_factors_give_the_jacobian_and_follow_frozen_parameters():
    model, x = mlp([3, 4, 2]), inputs((5, 3), 0)
    model[0].bias.requires_grad_(False)
    tf = tangent_factors(model, x)
    assert tf.numel == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert_close(tf.per_example_grads(), jacobian(model, x))


def test_large_gram_n2000_fits():
    """n = 2000 examples, 10 outputs, MLP 40-256-256-10 in float32: the 20000 x 20000 Gram matrix (1.6 GB)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.randn(2000, 40, generator=torch.Generator().manual_seed(0))
    gram = empirical_ntk(model, x)
    assert gram.shape == (2000, 10, 2000, 10)
    # spot-check one block against the reference on a few examples
    idx = torch.tensor([0, 777, 1999])
    ref = empirical_ntk_reference(model, x[idx])
    torch.testing.assert_close(gram[idx][:, :, idx], ref, rtol=1e-4, atol=1e-4)


def test_bad_inputs_say_what_is_allowed():
    model, x = mlp([3, 2]), inputs((2, 3), 0)
    with pytest.raises(ValueError, match="unknown layout 'diag'; expected one of full, blocks, trace"):
        empirical_ntk(model, x, layout="diag")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        empirical_ntk(model, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"must return \(n, O\) outputs"):
        empirical_ntk(nn.Sequential(nn.Linear(3, 2), nn.Flatten(0)).double(), x)
    shared = nn.Linear(3, 3).double()
    with pytest.raises(ValueError, match="called more than once"):
        empirical_ntk(nn.Sequential(shared, nn.Tanh(), shared), x)


# ---------------------------------------------------------------- kernel measures


def test_center_removes_row_and_column_means_and_is_idempotent():
    a = inputs((5, 3), 0)
    k = a @ a.T
    kc = center(k)
    assert_close(kc.sum(0), torch.zeros(5, dtype=F64), scale=100)
    assert_close(kc.sum(1), torch.zeros(5, dtype=F64), scale=100)
    assert_close(center(kc), kc)


def test_cka_known_values():
    u, v = inputs((6,), 1), inputs((6,), 2)
    u, v = u - u.mean(), v - v.mean()
    # rank-one centred kernels: CKA = cos^2 of the angle between u and v
    expected = (u @ v) ** 2 / ((u @ u) * (v @ v))
    assert_close(cka(torch.outer(u, u), torch.outer(v, v)), expected)
    w = v - (v @ u) / (u @ u) * u  # orthogonal to u, still centred
    assert abs(float(cka(torch.outer(u, u), torch.outer(w, w)))) < 1e-12
    k = torch.outer(u, u) + torch.eye(6, dtype=F64)
    assert_close(cka(k, 3.0 * k + 2.0), torch.tensor(1.0, dtype=F64))  # invariant to scale and to a constant shift
    assert_close(cka(k, torch.outer(v, v)), cka(torch.outer(v, v), k))


def test_target_alignment_is_the_spec_formula_for_one_target():
    a = inputs((7, 4), 0)
    k = a @ a.T
    y = inputs((7,), 1)
    yc, kc = y - y.mean(), center(k)
    expected = yc @ kc @ yc / (torch.linalg.matrix_norm(kc) * (yc @ yc))
    assert_close(target_alignment(k, y), expected)


def test_target_alignment_of_the_label_kernel_is_one():
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    y = one_hot_targets(labels)
    assert y.shape == (6, 3)
    assert_close(target_alignment(y @ y.T, labels), torch.tensor(1.0, dtype=F64))
    assert float(target_alignment(torch.eye(6, dtype=F64), labels)) < 1


def test_effective_rank_known_values():
    assert_close(effective_rank(torch.eye(5, dtype=F64)), torch.tensor(5.0, dtype=F64))
    u = inputs((4,), 0)
    assert_close(effective_rank(torch.outer(u, u)), torch.tensor(1.0, dtype=F64), scale=1e4)  # round-off eigenvalues
    p = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    entropy = -(p * p.log()).sum()
    assert_close(effective_rank(torch.diag(7 * p)), torch.exp(entropy))
    assert_close(effective_rank(7 * p, eigenvalues=True), torch.exp(entropy))


def test_spectrum_is_decreasing_and_sums_to_the_trace():
    a = inputs((6, 6), 0)
    k = a @ a.T
    lam = spectrum(k)
    assert torch.all(lam[:-1] >= lam[1:])
    assert_close(lam.sum(), torch.trace(k))


# ---------------------------------------------------------------- the linearised model


def flat(tensors, names):
    return torch.cat([tensors[n].reshape(-1) for n in names])


def test_linearized_model_equals_the_network_at_w0_and_is_linear_in_w():
    model, x = mlp([3, 5, 2]), inputs((4, 3), 0)
    lin = LinearizedModel(model)
    assert_close(lin(x), model(x))
    names = [n for n, _ in model.named_parameters()]
    d = {n: inputs(p.shape, i + 10) for i, (n, p) in enumerate(model.named_parameters())}
    with torch.no_grad():
        for n in names:
            lin.params[lin._key(n)].add_(d[n])
    expected = model(x) + torch.einsum("iop,p->io", jacobian(model, x), flat(d, names))
    assert_close(lin(x), expected)
    centered = LinearizedModel(model, centered=True)
    assert_close(centered(x), torch.zeros(4, 2, dtype=F64))


def test_linearized_model_is_first_order_in_finite_differences():
    model, x = mlp([3, 6, 2]), inputs((5, 3), 0)
    names = [n for n, _ in model.named_parameters()]
    d = {n: inputs(p.shape, i + 20) for i, (n, p) in enumerate(model.named_parameters())}
    errors = []
    for eps in (1e-2, 5e-3):
        moved = mlp([3, 6, 2])
        lin = LinearizedModel(model)
        with torch.no_grad():
            for n, p in moved.named_parameters():
                p.add_(eps * d[n])
                lin.params[lin._key(n)].add_(eps * d[n])
        errors.append(float((moved(x) - lin(x)).detach().abs().max()))
    # the Taylor remainder is O(eps^2): halving eps divides it by 4
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.05)


def test_gradient_step_on_the_linearized_model_is_a_kernel_step():
    """One GD step on (1/2)||T(w) - y||^2 moves the outputs by -eta Theta (T - y), Theta the NTK at w0 (exactly)."""
    model, x = mlp([3, 5, 2]), inputs((4, 3), 0)
    y = inputs((4, 2), 1)
    lin = LinearizedModel(model)
    eta = 0.05
    before = lin(x)
    loss = 0.5 * ((before - y) ** 2).sum()
    loss.backward()
    with torch.no_grad():
        for p in lin.parameters():
            p -= eta * p.grad
    theta = empirical_ntk(model, x).reshape(8, 8)
    expected = before.detach() - eta * (theta @ (before.detach() - y).reshape(-1)).reshape(4, 2)
    assert_close(lin(x).detach(), expected)


def test_linearized_model_keeps_its_own_copy_of_w0():
    model, x = mlp([3, 4, 1]), inputs((3, 3), 0)
    lin = LinearizedModel(model)
    before = lin(x).detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert_close(lin(x).detach(), before)
    assert list(lin.base.parameters()) == []
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in model.parameters())
    assert list(lin.named_weights()) == [n for n, _ in model.named_parameters()]


def _features(n, p, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)


def test_kernel_gd_predict_is_gradient_descent_on_the_linear_model_iterated():
    phi, y = _features(12, 30, 0)  # over-parameterised: K invertible
    phi_new = torch.randn(5, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eta, steps, n = 0.05, 137, phi.shape[0]
    w = torch.zeros(30, dtype=torch.float64)
    for _ in range(steps):  # gradient descent on (1/2n) ||phi w - y||^2
        w -= eta * phi.T @ (phi @ w - y) / n
    k, k_new = phi @ phi.T, phi_new @ phi.T
    assert_close(kernel_gd_predict(k, k_new, y, rate=eta / n, steps=steps), phi_new @ w)
    assert_close(kernel_gd_predict(k, k, y, rate=eta / n, steps=0), torch.zeros_like(y))


def test_kernel_gd_predict_limit_is_the_min_norm_interpolant_or_the_least_squares_fit():
    phi, y = _features(12, 30, 2)
    phi_new = torch.randn(4, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w_min_norm = torch.linalg.pinv(phi) @ y  # interpolates with the smallest ||w||
    assert_close(kernel_gd_predict(phi @ phi.T, phi_new @ phi.T, y), phi_new @ w_min_norm, scale=100)
    assert_close(kernel_gd_predict(phi @ phi.T, phi @ phi.T, y), y, scale=100)
    under, y_under = _features(20, 6, 4)  # under-parameterised: rank-6 kernel, the limit is least squares
    w_ls = torch.linalg.lstsq(under, y_under[:, None]).solution[:, 0]
    assert_close(kernel_gd_predict(under @ under.T, under @ under.T, y_under), under @ w_ls, scale=100)
    # a long finite run approaches the limit, and tiny eigenvalues keep their digits (gain -> rate * steps)
    k = under @ under.T
    rate = 1.0 / float(torch.linalg.eigvalsh(k)[-1])
    assert_close(kernel_gd_predict(k, k, y_under, rate=rate, steps=200_000), under @ w_ls, scale=100)


def test_kernel_gd_predict_refuses_bad_inputs():
    k = torch.eye(3, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="rate 3 diverges: it must be below 2 / lambda_max = 2"):
        kernel_gd_predict(k, k, y, rate=3.0, steps=5)
    with pytest.raises(ValueError, match="needs rate > 0 and steps >= 0"):
        kernel_gd_predict(k, k, y, steps=5)
    with pytest.raises(ValueError, match=r"needs k_train \(n, n\), k_cross \(n', n\) and y"):
        kernel_gd_predict(k, k[:, :2], y)
