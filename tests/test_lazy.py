"""Lazy training: the two-layer student, its tangent kernel, gradient descent, the rescaled model and the
linearisation gap, in float64; the full profile's CNN pipeline on small files."""


import pytest
import torch
from torch import nn

from dynbook_lib.data import teacher_student
from dynbook_lib.lazy import (
    LAZY_FAST,
    LAZY_FULL,
    Rescaled,
    half_mse,
    lazy_limit,
    linearization_gap,
    loglog_slope,
    neuron_positions,
    paper_step,
    relative_distance,
    shallow_net,
    teacher_student_sweep,
    train_gd,
    two_layer_init,
)
from dynbook_lib.data.downloads import cifar10_tensors
from dynbook_lib.lazy_cnn import activation_rms, he_init_, train_scaled_cnn, vgg11
from dynbook_lib.models import seeded
from dynbook_lib.ntk import empirical_ntk
from helpers import assert_close, write_fake_cifar

F64 = torch.float64


def sphere(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x / x.norm(dim=1, keepdim=True)


def test_teacher_student_data():
    task = teacher_student(20, 5, 3, seed=1, n_test=7)
    assert_close(task.X.norm(dim=1), torch.ones(20, dtype=F64))
    assert_close(task.theta.norm(dim=1), torch.ones(3, dtype=F64))
    assert set(task.signs.tolist()) <= {-1.0, 1.0}
    assert_close(task.y, torch.relu(task.X @ task.theta.T) @ task.signs)
    assert task.X_test.shape == (7, 5)
    assert torch.equal(teacher_student(20, 5, 3, seed=1, n_test=7).X, task.X)  # same seed, same data


def test_symmetric_init_is_zero_and_the_model_is_two_homogeneous():
    x = sphere(6, 4, 0)
    sym = two_layer_init(6, 4, torch.tensor([0.5, 3.0], dtype=F64), seed=0)
    assert float(sym(x).detach().abs().max()) < 1e-15  # zero up to the rounding of the sum over neurons
    assert torch.equal(sym.a[0, :3], sym.a[0, 3:]) and torch.equal(sym.b[0, :3], -sym.b[0, 3:])
    net = two_layer_init(6, 4, torch.tensor([1.0, 2.0], dtype=F64), seed=0, symmetric=False)
    out = net(x)
    assert_close(out[1], 4 * out[0])  # f(tau w) = tau^2 f(w)
    with pytest.raises(ValueError, match="even for the symmetrised init"):
        two_layer_init(5, 4, torch.tensor([1.0], dtype=F64), seed=0)


def test_single_network_has_the_closed_form_tangent_kernel():
    net = two_layer_init(6, 3, torch.tensor([1.0, 2.0], dtype=F64), seed=3, symmetric=False)
    x = sphere(5, 3, 1)
    single = net.single(1)
    assert_close(single(x)[:, 0], net(x)[1])
    a, b, m = net.a[1].detach(), net.b[1].detach(), net.width
    pre = x @ a.T
    on = (pre > 0).double()
    expected = ((b**2 * on) @ on.T * (x @ x.T) + torch.relu(pre) @ torch.relu(pre).T) / m**2
    assert_close(empirical_ntk(single, x, layout="trace"), expected)


def test_one_gradient_step_is_the_hand_derived_step():
    task = teacher_student(9, 3, 2, seed=0)
    taus = torch.tensor([0.7, 1.3], dtype=F64)
    net = two_layer_init(4, 3, taus, seed=1, symmetric=False)
    a0, b0 = net.a.detach().clone(), net.b.detach().clone()
    lr = torch.tensor([0.3, 0.05], dtype=F64)
    train_gd(net, task.X, task.y, lr, 1)
    m, n = 4, 9
    for k in range(2):
        pre = task.X @ a0[k].T  # (n, m)
        r = (torch.relu(pre) @ b0[k] / m - task.y) / n  # dL/df for L = (1/2n) sum (f - y)^2
        grad_b = torch.relu(pre).T @ r / m
        grad_a = ((pre > 0).double() * r[:, None]).T @ task.X * b0[k][:, None] / m
        assert_close(net.b[k].detach(), b0[k] - lr[k] * grad_b)
        assert_close(net.a[k].detach(), a0[k] - lr[k] * grad_a)


def test_train_gd_records_and_decreases_the_loss():
    task = teacher_student(30, 3, 2, seed=0, n_test=10)
    taus = torch.tensor([0.3, 1.0], dtype=F64)
    run = teacher_student_sweep(task, taus, 8, 200, seed=0, record_every=50)
    assert run.times.tolist() == [0, 50, 100, 150, 200]
    assert run.train_loss.shape == (5, 2) and run.test_loss.shape == (5, 2)
    assert torch.all(run.train_loss[-1] < run.train_loss[0])
    assert_close(run.train_loss[0], half_mse(torch.zeros(2, 30, dtype=F64), task.y))  # symmetric init: f(w0) = 0


def test_train_gd_keeps_the_final_test_predictions():
    task = teacher_student(30, 3, 2, seed=0, n_test=10)
    taus = torch.tensor([0.3, 1.0], dtype=F64)
    model = two_layer_init(8, 3, taus, seed=0)
    run = train_gd(model, task.X, task.y, 8 * paper_step(taus), 20, x_test=task.X_test, y_test=task.y_test)
    with torch.no_grad():
        assert torch.equal(run.test_outputs, model(task.X_test))
    assert_close(run.test_loss[-1], half_mse(run.test_outputs, task.y_test))


def test_compensated_float32_steps_follow_float64_gradient_descent():
    """Large weights, tiny steps: plain float32 updates round part of each step away, compensated ones do not."""
    task = teacher_student(40, 5, 2, seed=1, n_test=10)
    taus = torch.tensor([30.0], dtype=F64)
    steps = 400
    exact = two_layer_init(8, 5, taus, seed=2)
    train_gd(exact, task.X, task.y, 8 * paper_step(taus), steps)
    errors = {}
    for compensated in (False, True):
        net = two_layer_init(8, 5, taus, seed=2).float()
        train_gd(net, task.X.float(), task.y.float(), 8 * paper_step(taus).float(), steps, compensated=compensated)
        moved = (exact.a - two_layer_init(8, 5, taus, seed=2).a).detach()
        errors[compensated] = float((net.a.double() - exact.a).norm() / moved.norm())
    assert errors[True] < 1e-3 < errors[False], errors  # the displacement is kept to float32 accuracy, or lost
    plain = two_layer_init(8, 5, taus, seed=2)
    train_gd(plain, task.X, task.y, 8 * paper_step(taus), 50, compensated=True)
    reference = two_layer_init(8, 5, taus, seed=2)
    train_gd(reference, task.X, task.y, 8 * paper_step(taus), 50)
    assert_close(plain.a.detach(), reference.a.detach())  # in float64 both are gradient descent


def test_lazy_limit_is_the_trained_linearisation_and_the_lazy_network_approaches_it():
    task = teacher_student(25, 4, 2, seed=3, n_test=15)
    steps, m = 100, 8
    limit = lazy_limit(task, m, steps, seed=4)
    # independent path: gradient descent on the linearised model at tau = 1, the sweep's step
    one = torch.ones(1, dtype=F64)
    from dynbook_lib.linearize import LinearizedModel

    lin = LinearizedModel(two_layer_init(m, 4, one, seed=4))
    run = train_gd(lin, task.X, task.y, m * paper_step(one), steps, x_test=task.X_test, y_test=task.y_test)
    assert_close(run.test_outputs[0], limit.at_time, scale=10)
    assert limit.test_loss_at_time == pytest.approx(float(run.test_loss[-1, 0]), rel=1e-9)
    assert limit.train_loss_at_time == pytest.approx(float(run.train_loss[-1, 0]), rel=1e-9)
    # symmetrised pairs share a_i, and relu(a_i . x) = a_i . (1[a_i . x > 0] x): rank (m / 2) d
    assert limit.rank == m // 2 * 4
    # the network's distance to it falls with tau: at least 10 times per decade of tau here
    taus = torch.tensor([1.0, 10.0, 100.0], dtype=F64)
    sweep = teacher_student_sweep(task, taus, m, steps, seed=4)
    d = relative_distance(sweep.test_outputs, limit.at_time)
    assert d[0] > 10 * d[1] > 100 * d[2] and float(d[2]) < 1e-4


def test_paper_step():
    taus = torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=F64)
    assert_close(paper_step(taus), torch.tensor([10.0, 10.0, 0.1, 0.001], dtype=F64))


def test_rescaled_model_is_zero_at_init_and_scales_the_change():
    net = two_layer_init(4, 3, torch.tensor([1.0, 1.0], dtype=F64), seed=0, symmetric=False)
    x = sphere(5, 3, 0)
    alpha = torch.tensor([2.0, 5.0], dtype=F64)
    scaled = Rescaled(net, alpha)
    assert float(scaled(x).detach().abs().max()) == 0.0
    before = net(x).detach()
    with torch.no_grad():
        net.b.add_(0.1)
    assert_close(scaled(x), alpha[:, None] * (net(x) - before))


def test_linearization_gap_is_zero_for_a_linear_model_and_displacement_is_exactly_one_over_alpha():
    """For f linear in w the linearisation is exact: the gap is rounding only and ||w - w0|| is exactly ~ 1/alpha."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    x = sphere(12, 4, 2)
    y = torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=F64)
    alphas = torch.tensor([1.0, 4.0, 16.0], dtype=F64)
    result = linearization_gap(model, x, y, alphas, 30, record_every=5)
    assert float(result.gap.max()) < 1e-12
    assert_close(result.displacement * alphas, result.displacement[0].expand(3), scale=100)
    assert loglog_slope(alphas, result.displacement) == pytest.approx(-1.0, abs=1e-9)
    assert float(result.loss[-1, 0]) < float(result.loss[0, 0])


def test_linearization_gap_shrinks_on_a_relu_net():
    task = teacher_student(40, 5, 2, seed=0)
    net = shallow_net(5, 50, seed=0)
    alphas = torch.tensor([4.0, 16.0, 64.0], dtype=F64)
    result = linearization_gap(net, task.X, task.y, alphas, 60)
    assert torch.all(result.gap[1:] < result.gap[:-1])
    assert loglog_slope(alphas, result.displacement) == pytest.approx(-1.0, abs=0.1)


def test_neuron_positions():
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    b = torch.tensor([-2.0, 0.5], dtype=F64)
    assert_close(neuron_positions(a, b), torch.tensor([[2.0, 4.0], [1.5, -0.5]], dtype=F64))


def test_profiles_are_the_paper_sizes():
    assert LAZY_FULL.log10_taus[0] == -2.2 and LAZY_FULL.log10_taus[-1] == 1.0 and len(LAZY_FULL.log10_taus) == 33
    assert (LAZY_FULL.d, LAZY_FULL.n_train, LAZY_FULL.m0, LAZY_FULL.m, LAZY_FULL.trials) == (100, 1000, 3, 50, 10)
    assert LAZY_FULL.steps == 10_000 and LAZY_FULL.cnn_alphas == (1.0, 1e2, 1e5)
    assert (LAZY_FAST.d, LAZY_FAST.n_train, LAZY_FAST.m) == (100, 1000, 50) and not LAZY_FAST.cnn_alphas
    assert LAZY_FAST.lin_width == 200 and LAZY_FAST.lin_n == 200 and LAZY_FAST.lin_d == 10


# ---------------------------------------------------------------- full profile: VGG-11 on CIFAR-10, construction


def test_cifar10_reader_on_small_files(tmp_path):
    write_fake_cifar(tmp_path)
    data = cifar10_tensors(tmp_path)
    assert data["x_train"].shape == (20, 3, 32, 32) and data["x_test"].shape == (4, 3, 32, 32)
    assert data["y_train"].dtype == torch.long and int(data["y_train"].max()) < 10
    assert_close(data["x_train"].mean(dim=(0, 2, 3)).double(), torch.zeros(3, dtype=F64), scale=1e5)
    with pytest.raises(FileNotFoundError, match="download=True"):
        cifar10_tensors(tmp_path / "missing")


def test_vgg11_and_scaled_training_run_on_cpu(tmp_path):
    net = vgg11(10)
    assert sum(isinstance(m, nn.Conv2d) for m in net) == 8 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    write_fake_cifar(tmp_path)
    data = cifar10_tensors(tmp_path)
    for alpha in (1.0, 1e3):  # float32 and float64 paths
        accuracy = train_scaled_cnn(data, alpha, epochs=1, seed=0, width=1 / 16, batch_size=8)
        assert 0.0 <= accuracy <= 1.0


def test_vgg11_he_init_keeps_the_activation_scale_and_the_default_init_does_not():
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    he = vgg11(10, seed=0)
    rms = activation_rms(he, x)
    assert len(rms) == 9  # eight ReLUs and the output
    assert all(0.5 < r < 4.0 for r in rms), rms  # unit-variance input: every layer keeps its scale
    with torch.no_grad():
        assert float(he(x).std(0).mean()) > 0.05  # the output at init depends on the input
    default = activation_rms(vgg11(10, seed=0, init="torch"), x)
    assert default[7] < default[0] / 30  # PyTorch's default loses about 60x through the eight convolutions
    with pytest.raises(ValueError, match="unknown init 'xavier'; expected 'he' or 'torch'"):
        vgg11(10, init="xavier")


def test_he_init_has_the_he_variances_and_zero_biases():
    net = seeded(lambda: he_init_(nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 200))), 0)
    # 120k and 60k draws: the relative standard error of a sample variance is sqrt(2 / N), 0.4% and 0.6%
    assert abs(float(net[0].weight.var()) * 400 / 2 - 1) < 0.01
    assert abs(float(net[2].weight.var()) * 300 - 1) < 0.02
    assert float(net[0].bias.abs().max()) == 0.0 and float(net[2].bias.abs().max()) == 0.0
