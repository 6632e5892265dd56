"""Mean-field particle networks (chapter 02), in float64: the batched forward against a network-by-network loop, the
scaling of the per-particle steps (one GD step moves the outputs by the closed-form tangent kernel, whatever beta),
conservation of b^2 - |a|^2 for ReLU along gradient flow, displacement per network, the closed-form gradient against
autograd, online SGD, replicates batched against each replicate alone, and the convergence summary."""

import pytest
import torch

from dynbook_lib.data import teacher_student
from dynbook_lib.data.synthetic import TeacherStudent
from dynbook_lib.meanfield import (
    MEANFIELD_FAST,
    MEANFIELD_FULL,
    MEANFIELD_SMOKE,
    ParticleNets,
    convergence,
    init_output_rms,
    init_particles,
    particle_steps,
    PlantedTeacher,
    planted_teacher,
    population_sweep,
    relative_displacement,
    train_online,
    width_sweep,
)
from helpers import assert_close

F64 = torch.float64


def loop_forward(a, b, sizes, beta, activation, x):
    """Each network on its own: m^-beta sum_i b_i sigma(a_i . x)."""
    sigma = torch.relu if activation == "relu" else torch.sigmoid
    outs, start = [], 0
    for m in sizes:
        aa, bb = a[start : start + m], b[start : start + m]
        outs.append(m ** (-beta) * (sigma(x @ aa.T) * bb).sum(1))
        start += m
    return torch.stack(outs)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_batched_forward_equals_each_network_alone(activation, beta):
    gen = torch.Generator().manual_seed(0)
    sizes = (1, 3, 8)
    a, b = torch.randn(12, 4, generator=gen, dtype=F64), torch.randn(12, generator=gen, dtype=F64)
    x = torch.randn(6, 4, generator=gen, dtype=F64)
    net = ParticleNets(a, b, sizes, beta, activation)
    assert_close(net(x), loop_forward(a, b, sizes, beta, activation, x))
    assert [len(p) for p in net.split(net.b.detach())] == list(sizes)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_replicates_on_a_leading_axis_equal_each_replicate_alone(activation):
    gen = torch.Generator().manual_seed(4)
    sizes = (2, 5)
    a, b = torch.randn(3, 7, 4, generator=gen, dtype=F64), torch.randn(3, 7, generator=gen, dtype=F64)
    x = torch.randn(3, 6, 4, generator=gen, dtype=F64)
    out = ParticleNets(a, b, sizes, 1.0, activation)(x)
    assert out.shape == (3, 2, 6)
    for r in range(3):
        assert_close(out[r], loop_forward(a[r], b[r], sizes, 1.0, activation, x[r]))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("replicates", [None, 3])
def test_closed_form_gradient_equals_autograd(activation, replicates):
    gen = torch.Generator().manual_seed(5)
    lead = () if replicates is None else (replicates,)
    a, b = torch.randn(*lead, 9, 4, generator=gen, dtype=F64), torch.randn(*lead, 9, generator=gen, dtype=F64)
    x, y = torch.randn(*lead, 11, 4, generator=gen, dtype=F64), torch.randn(*lead, 11, generator=gen, dtype=F64)
    net = ParticleNets(a, b, (1, 3, 5), 1.0, activation)
    loss, grad_a, grad_b = net.square_loss_grads(x, y)
    reference = 0.5 * ((net(x) - y.unsqueeze(-2)) ** 2).mean(-1).sum()
    ref_a, ref_b = torch.autograd.grad(reference, [net.a, net.b])
    assert_close(loss, reference.detach())
    assert_close(grad_a, ref_a)
    assert_close(grad_b, ref_b)


def test_bad_arguments_are_refused():
    a, b = torch.zeros(3, 2, dtype=F64), torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; expected one of relu, sigmoid"):
        ParticleNets(a, b, (3,), 1.0, "tanh")
    with pytest.raises(ValueError, match="sizes summing to M"):
        ParticleNets(a, b, (2, 2), 1.0)
    with pytest.raises(ValueError, match="even widths"):
        init_particles((3,), 2, seed=0, beta=1.0)


def test_init_is_symmetric_and_depends_on_seed_and_width_only():
    net = init_particles((4, 8, 16), 5, seed=1, beta=0.5)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(net(x).detach().abs().max()) < 1e-14  # f(w0) = 0 for every network, up to rounding
    alone = init_particles((8,), 5, seed=1, beta=1.0)
    assert torch.equal(net.split(net.a.detach())[1], alone.a.detach())
    assert not torch.equal(alone.a, init_particles((8,), 5, seed=2, beta=1.0).a)


def test_particle_steps_follow_the_time_scale():
    net = init_particles((2, 8), 3, seed=0, beta=1.0)
    assert particle_steps(net, 0.1).tolist() == [0.2] * 2 + [0.8] * 8  # eta m
    lazy = init_particles((2, 8), 3, seed=0, beta=0.5)
    assert particle_steps(lazy, 0.1).tolist() == [0.1] * 10  # eta


def relu_tangent_kernel(a, b, x):
    """Closed form (1/m) sum_i [b_i^2 1(a_i.x > 0) 1(a_i.x' > 0) x.x' + relu(a_i.x) relu(a_i.x')]."""
    pre = x @ a.T
    on = (pre > 0).to(x.dtype)
    return ((on * b**2) @ on.T * (x @ x.T) + torch.relu(pre) @ torch.relu(pre).T) / len(b)


@pytest.mark.parametrize("beta", [0.5, 0.75, 1.0])
def test_one_step_moves_outputs_by_the_tangent_kernel_whatever_beta(beta):
    """One GD step on (1/2n)||f - y||^2 with the per-particle steps moves f by -(eta / n) K r + O(eta^2), K the
    closed-form tangent kernel with the 1/m of the mean field, whatever the scaling beta."""
    m, d, n = 64, 3, 5
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, d, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    errors = []
    for eta in (1e-3, 5e-4):
        net = init_particles((m,), d, seed=0, beta=beta, symmetric=False)
        kernel = relu_tangent_kernel(net.a.detach(), net.b.detach(), x)
        f0 = net(x)[0].detach()
        ga, gb = torch.autograd.grad(0.5 * ((net(x)[0] - y) ** 2).mean(), [net.a, net.b])
        step = particle_steps(net, eta)
        with torch.no_grad():
            net.a -= step[:, None] * ga
            net.b -= step * gb
        first_order = -eta / n * kernel @ (f0 - y)
        errors.append(float((net(x)[0].detach() - f0 - first_order).abs().max() / first_order.abs().max()))
    assert errors[0] < 1e-2  # the first-order term dominates
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.05)  # relative remainder O(eta): absolute O(eta^2)


def test_relu_gradient_flow_conserves_b2_minus_a2():
    """d/dt (b_i^2 - |a_i|^2) = 0 for 2-homogeneous neurons; GD drifts by O(eta) over a fixed time."""
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(20, 3, generator=gen, dtype=F64), torch.randn(20, generator=gen, dtype=F64)
    drifts = []
    for eta in (0.02, 0.01):
        net = init_particles((16,), 3, seed=3, beta=1.0, symmetric=False)
        a0, b0 = net.a.detach().clone(), net.b.detach().clone()
        start = b0**2 - (a0**2).sum(1)
        step = particle_steps(net, eta)
        for _ in range(int(round(2.0 / eta))):  # time horizon t = 2
            loss = 0.5 * ((net(x)[0] - y) ** 2).mean()
            ga, gb = torch.autograd.grad(loss, [net.a, net.b])
            with torch.no_grad():
                net.a -= step[:, None] * ga
                net.b -= step * gb
        moved = float(((net.a.detach() - a0) ** 2).sum(1).add((net.b.detach() - b0) ** 2).sqrt().max())
        drift = float((net.b.detach() ** 2 - (net.a.detach() ** 2).sum(1) - start).abs().max())
        assert moved > 10 * drift  # the neurons did move
        drifts.append(drift)
    assert drifts[0] / drifts[1] == pytest.approx(2.0, rel=0.1)


def test_relative_displacement_per_network():
    net = init_particles((2, 4), 3, seed=0, beta=1.0)
    a0, b0 = net.a.detach().clone(), net.b.detach().clone()
    with torch.no_grad():
        net.a[:2] += 1.0  # only the first network moves
    first = (2 * 3) ** 0.5 / float(((a0[:2] ** 2).sum() + (b0[:2] ** 2).sum()).sqrt())
    assert relative_displacement(net, a0, b0).tolist() == pytest.approx([first, 0.0], rel=1e-12)


def test_online_sgd_lowers_the_population_loss_and_is_deterministic():
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)

    def teacher(x):
        return torch.relu(x @ theta.T).sum(1)

    x_test = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    runs = []
    for _ in range(2):
        net = init_particles((4, 16), 3, seed=0, beta=1.0, scale=0.5)
        runs.append(train_online(net, teacher, x_test, eta=0.05, steps=300, batch_size=32, seed=1, record_every=100))
    assert runs[0].steps.tolist() == [0, 100, 200, 300] and runs[0].loss.shape == (4, 2)
    assert torch.equal(runs[0].loss, runs[1].loss)
    assert bool((runs[0].loss[-1] < 0.5 * runs[0].loss[0]).all())


def test_online_sgd_over_replicates_equals_each_replicate_alone():
    """Replicate r of a batched run sees the inputs of seed[r] and follows the run it would have alone."""
    teachers = [planted_teacher(3, 2, seed=s) for s in (10, 11)]
    x_tests = [torch.randn(50, 3, generator=torch.Generator().manual_seed(s), dtype=F64) for s in (0, 1)]
    nets = [init_particles((2, 6), 3, seed=s, beta=1.0) for s in (20, 21)]
    alone = [train_online(init_particles((2, 6), 3, seed=s, beta=1.0), t, xt, eta=0.05, steps=30, batch_size=8,
                          seed=sgd, record_every=10)
             for s, t, xt, sgd in zip((20, 21), teachers, x_tests, (30, 31))]
    batched_teacher = PlantedTeacher(torch.stack([t.theta for t in teachers]), torch.stack([t.signs for t in teachers]))
    net = ParticleNets(torch.stack([n.a.detach() for n in nets]), torch.stack([n.b.detach() for n in nets]), (2, 6),
                       1.0)
    together = train_online(net, batched_teacher, torch.stack(x_tests), eta=0.05, steps=30, batch_size=8,
                            seed=[30, 31], record_every=10)
    assert together.loss.shape == (4, 2, 2)
    for r in range(2):
        assert_close(together.loss[:, r], alone[r].loss)
    with pytest.raises(ValueError, match="2 replicates need as many seeds"):
        train_online(net, batched_teacher, torch.stack(x_tests), eta=0.05, steps=1, batch_size=8, seed=[30])


def test_init_output_follows_the_central_limit_theorem():
    """E f(w0)(x)^2 = m^(1 - 2 beta) E[b^2] E[relu(a.x)^2] = m^(1 - 2 beta) |x|^2 / (2 d) for a ~ N(0, I / d)."""
    d = 4
    x = torch.randn(50, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    expected_sq = (x**2).sum(1).mean() / (2 * d)
    for beta in (0.5, 1.0):
        rms = init_output_rms((2, 32), d, beta, x, seed=0, draws=400)
        predicted = (torch.tensor([2.0, 32.0], dtype=F64) ** (1 - 2 * beta) * expected_sq).sqrt()
        assert torch.allclose(rms, predicted, rtol=0.08)  # 400 draws: a few percent of sampling error
    one = init_particles((6,), d, seed=3, beta=1.0, symmetric=False)
    assert_close(init_output_rms((6,), d, 1.0, x, seed=3, draws=1), one(x).detach().pow(2).mean(1).sqrt())


def test_planted_teacher_is_a_sum_of_signed_unit_neurons():
    teacher = planted_teacher(3, 2, seed=0)
    x, z = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert_close(teacher(2.5 * x), 2.5 * teacher(x))  # 1-homogeneous

    def odd(u):  # relu(t) - relu(-t) = t, so f*(x) - f*(-x) = sum_j s_j theta_j . x is linear
        return teacher(u) - teacher(-u)

    assert_close(odd(x + z), odd(x) + odd(z))
    sig = planted_teacher(3, 2, seed=0, activation="sigmoid")
    assert_close(sig(x) + sig(-x), 2 * sig(torch.zeros(6, 3, dtype=F64)))  # sigma(t) + sigma(-t) = 1 for each unit
    with pytest.raises(ValueError, match="unknown activation"):
        planted_teacher(3, 2, seed=0, activation="gelu")


def small_task(d=5, n=30, dtype=F64):
    t = teacher_student(n, d, 2, seed=0, n_test=40, dtype=dtype)
    r = d**0.5
    return TeacherStudent(t.X * r, t.y * r, t.X_test * r, t.y_test * r, t.theta, t.signs)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_width_sweep_starts_from_zero_and_lowers_the_loss(beta):
    task = small_task()
    sweep = width_sweep(task, (2, 8, 32), beta, eta=0.2, steps=200, seed=0, record_every=100)
    assert sweep.run.train_loss.shape == (3, 3) and sweep.displacement.shape == (3,)
    assert_close(sweep.run.train_loss[0], torch.full((3,), float(0.5 * task.y.pow(2).mean()), dtype=F64))
    assert bool((sweep.run.train_loss[-1] < 0.5 * sweep.run.train_loss[0]).all())


def test_population_loss_is_normalised_by_the_zero_function_and_replicates_are_independent():
    kwargs = dict(activation="relu", eta=0.05, steps=4, batch_size=8, scale=1.0, n_test=100, record_every=2)
    run = population_sweep((4, 8), 3, 2, seeds=[0, 1000], **kwargs)
    assert run.loss.shape == (3, 2, 2)
    assert_close(run.loss[0], torch.ones(2, 2, dtype=F64))  # symmetrised init: f(w0) = 0
    assert_close(run.loss[:, 1], population_sweep((4, 8), 3, 2, seeds=[1000], **kwargs).loss[:, 0])


def test_convergence_counts_the_failing_seeds_and_takes_the_worst_from_m_star():
    final = torch.tensor([[0.2, 3e-5, 1e-6], [1e-12, 2e-3, 4e-6], [1e-12, 1e-6, 2e-6]], dtype=F64)
    c = convergence(final, (4, 8, 16), tol=1e-4, m_star=8)
    assert c.failing.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert c.worst == 2e-3 and c.m_star == 8
    assert convergence(final, (4, 8, 16), tol=1e-4, m_star=16).worst == 4e-6
    with pytest.raises(ValueError, match="m_star"):
        convergence(final, (4, 8, 16), tol=1e-4, m_star=32)


def test_profiles_and_the_full_profile_runs_a_step_at_its_sizes():
    fast, full = MEANFIELD_FAST, MEANFIELD_FULL
    assert (fast.d, fast.n, fast.widths[-1], fast.pop_d, fast.pop_m0) == (20, 300, 512, 10, 4)
    assert 32 * fast.pop_m0 in fast.pop_widths and 64 * full.pop_m0 in full.pop_widths
    for cfg in (fast, full, MEANFIELD_SMOKE):  # the claims' widths m* are in the sweep, and >= 5 replicates
        assert {cfg.pop_spare_relu * cfg.pop_m0, cfg.pop_spare_sigmoid * cfg.pop_m0} <= set(cfg.pop_widths)
    assert fast.pop_seeds >= 5 and full.pop_seeds >= 5
    assert (full.d, full.n, full.steps, full.widths[-1]) == (100, 1000, 25_000, 512)
    base = teacher_student(full.n, full.d, full.m0, seed=0, n_test=full.n_test, dtype=full.dtype)
    for beta in (1.0, 0.5):
        sweep = width_sweep(base, full.widths, beta, eta=full.eta, steps=2, seed=0, record_every=1)
        assert sweep.run.test_loss.shape == (3, len(full.widths))
    run = population_sweep(full.pop_widths, full.pop_d, full.pop_m0, activation="sigmoid", seeds=[0, 1000],
                           eta=full.pop_eta_sigmoid, steps=2, batch_size=full.pop_batch, scale=full.pop_scale,
                           n_test=full.pop_n_test, record_every=1, dtype=full.dtype)
    assert run.loss.shape == (3, 2, len(full.pop_widths)) and bool(torch.isfinite(run.loss).all())
