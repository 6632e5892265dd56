"""Alrao (chapter 05): per-feature rates log-uniform (KS test) and shared as specified for every layer type, head
rates, the switch against a hand computation in probability space, the optimizer's step, the gradients of one Alrao
step against a direct computation, and the training loops."""

import math
from dataclasses import replace

import pytest
import torch
from scipy.stats import kstest
from torch import nn

from dynbook_lib.alrao import (
    ALRAO_FAST,
    ALRAO_FULL,
    Alrao,
    PerParameterSGD,
    Switch,
    Curves,
    alrao_step,
    diverged,
    feature_learning_rates,
    half_decades,
    head_learning_rates,
    log_uniform,
    build_networks,
    load_data,
    mlp_body,
    train_alrao,
    train_baseline,
    train_sgd_grid,
)
from dynbook_lib.models import seeded
from helpers import assert_close, write_fake_cifar

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rates_are_log_uniform():
    rates = log_uniform((20_000,), 1e-5, 10.0, gen(), F64)
    u = (rates.log() - math.log(1e-5)) / math.log(10.0 / 1e-5)
    assert float(u.min()) >= 0 and float(u.max()) <= 1
    assert kstest(u.numpy(), "uniform").pvalue > 0.01
    layer_rates = feature_learning_rates(nn.Linear(3, 5000), 1e-3, 1e2, generator=gen(1))["bias"]
    u = (layer_rates.double().log() - math.log(1e-3)) / math.log(1e5)
    assert kstest(u.numpy(), "uniform").pvalue > 0.01
    with pytest.raises(ValueError, match="need 0 < eta_min <= eta_max"):
        log_uniform((2,), 1.0, 0.1, gen())


def test_rates_are_shared_per_feature_for_each_layer_type():
    net = nn.ModuleDict({
        "lin": nn.Linear(4, 6),
        "conv": nn.Conv2d(2, 3, 3),
        "emb": nn.Embedding(7, 5),
        "lstm": nn.LSTM(4, 3, num_layers=2),
        "bn": nn.BatchNorm1d(6),
    })
    rates = feature_learning_rates(net, 1e-4, 1.0, generator=gen())
    assert set(rates) == {n for n, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        assert torch.broadcast_shapes(rates[name].shape, p.shape) == p.shape
    # Linear / Conv: one per output unit, the bias reuses it
    assert rates["lin.weight"].shape == (6, 1) and torch.equal(rates["lin.weight"].flatten(), rates["lin.bias"])
    assert rates["conv.weight"].shape == (3, 1, 1, 1)
    assert torch.equal(rates["conv.weight"].flatten(), rates["conv.bias"])
    # Embedding: one per dimension
    assert rates["emb.weight"].shape == (1, 5)
    # LSTM: one per row of each matrix, biases reuse them
    for layer in ("l0", "l1"):
        for kind in ("ih", "hh"):
            w = rates[f"lstm.weight_{kind}_{layer}"]
            assert w.shape == (12, 1) and torch.equal(w.flatten(), rates[f"lstm.bias_{kind}_{layer}"])
    assert not torch.equal(rates["lstm.weight_ih_l0"], rates["lstm.weight_hh_l0"])
    # anything else: one per scalar, all different
    assert rates["bn.weight"].shape == (6,) and len(set(rates["bn.weight"].tolist())) == 6
    assert not torch.equal(rates["bn.weight"], rates["bn.bias"])
    # deterministic from the generator
    again = feature_learning_rates(net, 1e-4, 1.0, generator=gen())
    assert all(torch.equal(rates[k], again[k]) for k in rates)


def test_head_rates_span_the_range_geometrically():
    rates = head_learning_rates(10, 1e-5, 10.0)
    assert float(rates[0]) == 1e-5 and float(rates[-1]) == 10.0
    ratios = rates[1:] / rates[:-1]
    assert_close(ratios, torch.full((9,), 10 ** (6 / 9), dtype=F64))
    with pytest.raises(ValueError, match="at least one head"):
        head_learning_rates(0, 1e-5, 10.0)


def hand_switch(losses, k, theta):
    """The switch in probability space, written out: w_a keeps, w_b has switched."""
    w_a, w_b = [theta / k] * k, [(1 - theta) / k] * k
    posteriors = []
    for t, step_losses in enumerate(losses, start=1):
        pi = 1 / (t + 1)
        w_a = [w * math.exp(-loss) for w, loss in zip(w_a, step_losses)]
        w_b = [w * math.exp(-loss) for w, loss in zip(w_b, step_losses)]
        pool = sum(w_a) * pi
        w_a = [w * (1 - pi) + theta * pool / k for w in w_a]
        w_b = [w + (1 - theta) * pool / k for w in w_b]
        total = sum(w_a) + sum(w_b)
        w_a, w_b = [w / total for w in w_a], [w / total for w in w_b]
        posteriors.append([a + b for a, b in zip(w_a, w_b)])
    return posteriors


@pytest.mark.parametrize("theta", [0.9999, 0.5])
def test_switch_matches_a_hand_computed_posterior(theta):
    losses = [[2.0, 1.0, 0.5], [2.0, 1.5, 0.4], [0.1, 2.0, 3.0], [0.2, 2.5, 3.0], [0.1, 3.0, 2.0]]
    switch = Switch(3, theta)
    assert_close(switch.log_posterior().exp(), torch.full((3,), 1 / 3, dtype=F64))
    for step_losses, expected in zip(losses, hand_switch(losses, 3, theta)):
        switch.update(torch.tensor(step_losses, dtype=F64))
        assert_close(switch.log_posterior().exp(), torch.tensor(expected, dtype=F64))
    assert switch.t == 6


def test_switch_with_equal_losses_stays_uniform_and_follows_the_best():
    switch = Switch(4)
    for _ in range(5):
        switch.update(torch.ones(4))
    assert_close(switch.log_posterior().exp(), torch.full((4,), 0.25, dtype=F64))
    posterior = []
    for _ in range(50):
        switch.update(torch.tensor([1.0, 0.2, 1.0, 1.0], dtype=F64))
        posterior.append(float(switch.log_posterior().exp()[1]))
    assert posterior[-1] > 0.95 and all(b > a for a, b in zip(posterior[:10], posterior[1:11]))


def test_per_parameter_sgd_step_is_exact():
    w = nn.Parameter(torch.randn(3, 4, generator=gen(), dtype=F64))
    b = nn.Parameter(torch.randn(3, generator=gen(1), dtype=F64))
    rw, rb = torch.tensor([[0.1], [1.0], [3.0]], dtype=F64), torch.tensor([0.5, 0.0, 2.0], dtype=F64)
    opt = PerParameterSGD([(w, rw), (b, rb)])
    w0, b0 = w.detach().clone(), b.detach().clone()
    w.grad, b.grad = torch.ones_like(w), torch.full_like(b, 2.0)
    opt.step()
    assert_close(w.detach(), w0 - rw)
    assert_close(b.detach(), b0 - 2.0 * rb)
    with pytest.raises(ValueError, match="does not broadcast"):
        PerParameterSGD([(w, torch.ones(4, 1))])


def small_alrao(seed=0):
    body = seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU()).double(), seed)
    return Alrao(body, nn.Linear(8, 3).double(), n_heads=4, eta_min=1e-3, eta_max=1.0, seed=seed)


def linear_head_log_probs(model, j, features):
    """Head j written out: log_softmax(features W_j^T + b_j)."""
    params = model.head(j)
    return torch.log_softmax(features @ params["weight"].T + params["bias"], -1)


def test_mixture_is_a_distribution_and_heads_differ():
    model = small_alrao()
    x = torch.randn(6, 5, generator=gen(), dtype=F64)
    lp = model(x)
    assert_close(lp.exp().sum(1), torch.ones(6, dtype=F64))
    features = model.body(x)
    direct = sum(a * linear_head_log_probs(model, j, features).exp()
                 for j, a in enumerate(model.switch.log_posterior().exp()))
    assert_close(lp.exp(), direct)
    assert not torch.equal(model.head(0)["weight"], model.head(1)["weight"])  # re-initialised copies
    rates = model.rates()
    assert rates[0][1].shape == (8, 1) and len(rates) == 4 + 2  # body: Linear, BatchNorm; heads: stacked W, b
    assert rates[-2][1].flatten().tolist() == model.head_rates.tolist()
    with pytest.raises(ValueError, match="no buffers"):
        Alrao(nn.Linear(5, 8), nn.BatchNorm1d(8))


def test_any_head_module_is_evaluated_per_copy():
    """A non-Linear head goes through torch.func.vmap: each copy equals the module with that copy's parameters."""
    head = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model = Alrao(seeded(lambda: nn.Linear(5, 8).double(), 0), head, n_heads=3, eta_min=1e-3, eta_max=1.0)
    features = model.body(torch.randn(6, 5, generator=gen(), dtype=F64))
    for j in range(3):
        copy_j = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3)).double()
        copy_j.load_state_dict({k: v.detach() for k, v in model.head(j).items()})
        assert_close(model.head_log_probs(features)[j], torch.log_softmax(copy_j(features), -1))
    assert [tuple(r.shape) for _, r in model.rates()[2:]] == [(3, 1, 1), (3, 1), (3, 1, 1), (3, 1)]


def test_one_alrao_step_has_the_specified_gradients():
    """Body: gradient of the mixture NLL; head j: gradient of its own NLL with the features detached."""
    model, reference = small_alrao(), small_alrao()
    x, y = torch.randn(7, 5, generator=gen(3), dtype=F64), torch.randint(0, 3, (7,), generator=gen(4))
    opt = PerParameterSGD(model.rates())
    features = reference.body(x)
    mixture = nn.functional.nll_loss(reference.mixture(reference.head_log_probs(features)), y)
    body_grads = torch.autograd.grad(mixture, list(reference.body.parameters()))
    own = sum(nn.functional.nll_loss(linear_head_log_probs(reference, j, features.detach()), y)
              for j in range(reference.n_heads))
    head_grads = torch.autograd.grad(own, list(reference.head_params))  # slice j: gradient of head j's own loss
    rates = [r for _, r in reference.rates()]
    loss, head_losses = alrao_step(model, opt, x, y)
    assert loss == pytest.approx(float(mixture.detach()), rel=1e-12) and head_losses.shape == (4,)
    new = list(model.body.parameters()) + list(model.head_params)
    old = list(reference.body.parameters()) + list(reference.head_params)
    for p, p0, g, r in zip(new, old, list(body_grads) + list(head_grads), rates):
        assert_close(p.detach(), p0.detach() - r * g)
    assert model.switch.t == 2


def toy_data(n=64, seed=5):
    x = torch.randn(n + 32, 5, generator=gen(seed))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


def test_switch_gives_a_non_finite_head_weight_zero_and_stays_a_distribution():
    # regression: one diverged head (NaN or inf loss) used to turn every weight into NaN
    switch = Switch(3)
    switch.update(torch.tensor([0.5, math.nan, math.inf], dtype=F64))
    posterior = switch.log_posterior().exp()
    assert torch.isfinite(switch.log_w[:, 0]).all() and float(posterior.sum()) == pytest.approx(1.0)
    # the diverged heads keep only what switching hands every head (pi_t of the pool, spread uniformly)
    assert float(posterior[1]) == float(posterior[2]) < float(posterior[0]) / 2
    for _ in range(3):
        switch.update(torch.tensor([0.5, 0.4, 0.6], dtype=F64))
    assert torch.isfinite(switch.log_posterior()).all() and float(switch.log_posterior().exp().sum()) == pytest.approx(1.0)
    t = switch.t
    switch.update(torch.tensor([math.nan, math.nan, math.nan], dtype=F64))  # nothing to learn from: skipped
    assert switch.t == t


def test_half_decade_grid_and_divergence_rule():
    assert half_decades(1e-4, 10.0) == (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0, 3.16, 10.0)
    assert diverged(Curves(test_nll=[2.3, 2.31])) and not diverged(Curves(test_nll=[2.3, 2.3]))
    assert diverged(Curves(test_nll=[2.3, float("nan")])) and diverged(Curves(test_nll=[2.3, 0.5], diverged=True))


def test_training_loops_record_and_detect_divergence():
    data = toy_data()
    body = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    sgd = train_baseline(body, nn.Linear(8, 3), data, optimizer="sgd", lr=0.1, epochs=3, batch_size=16, seed=0)
    assert sgd.steps[0] == 0 and sgd.steps[-1] == 12 and not sgd.diverged and sgd.test_nll[-1] < sgd.test_nll[0]
    blown = train_baseline(nn.Sequential(nn.Linear(5, 8), nn.ReLU()), nn.Linear(8, 3), data, optimizer="sgd",
                           lr=1e6, epochs=3, batch_size=16, seed=0)
    assert blown.diverged and blown.final_nll == float("inf")
    model = Alrao(nn.Sequential(nn.Linear(5, 8), nn.ReLU()), nn.Linear(8, 3), n_heads=3, eta_min=1e-3,
                  eta_max=1.0, seed=0)
    alrao = train_alrao(model, data, epochs=3, batch_size=16, seed=0)
    assert len(alrao.posterior) == alrao.steps[-1] + 1 and len(alrao.posterior[0]) == 3
    assert alrao.posterior[0] == pytest.approx([1 / 3] * 3) and model.switch.t == alrao.steps[-1] + 1
    assert sum(alrao.posterior[-1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        train_baseline(body, nn.Linear(8, 3), data, optimizer="rmsprop", lr=0.1, epochs=1, batch_size=16, seed=0)


def test_sgd_grid_trains_each_network_as_train_baseline_does():
    """Batch-normalised networks at two rates on two data sets with two minibatch orders, stacked, against the
    one-at-a-time loop: the same curves and final weights up to float rounding; a diverging network is frozen and
    recorded as train_baseline records it, without touching the others."""
    datas = [toy_data(seed=1), toy_data(seed=2), toy_data(seed=1)]
    lrs, seeds = [0.05, 0.5, 1e30], [3, 4, 3]

    def nets():
        return [seeded(lambda: nn.Sequential(mlp_body((5, 8, 8), seed=0), nn.Linear(8, 3)), k) for k in range(3)]

    stacked = nets()
    grid = train_sgd_grid(stacked, lrs, datas, epochs=3, batch_size=16, seeds=seeds)
    alone = nets()
    for m in range(3):
        ref = train_baseline(alone[m][0], alone[m][1], datas[m], optimizer="sgd", lr=lrs[m], epochs=3,
                             batch_size=16, seed=seeds[m])
        assert grid[m].diverged == ref.diverged
        if ref.diverged:  # chaotic once the loss reaches 1e20: the step at which it overflows is rounding's choice
            assert math.isnan(grid[m].test_nll[-1]) and grid[m].final_nll == math.inf
            continue
        assert grid[m].steps == ref.steps
        torch.testing.assert_close(torch.tensor(grid[m].test_nll), torch.tensor(ref.test_nll), rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        torch.testing.assert_close(torch.tensor(grid[m].train_loss[1:]), torch.tensor(ref.train_loss[1:]), rtol=1e-5,
                                   atol=1e-6, equal_nan=True)
        for a, b in zip(stacked[m].state_dict().values(), alone[m].state_dict().values()):
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)
    assert grid[2].diverged and not grid[0].diverged and math.isfinite(grid[1].final_nll)
    with pytest.raises(ValueError, match="one rate, data set and seed per network"):
        train_sgd_grid(nets(), [0.1], datas[0], epochs=1, batch_size=16, seeds=0)


def test_profiles():
    assert ALRAO_FAST.widths == (40, 256, 256) and ALRAO_FAST.epochs == 15 and ALRAO_FAST.batch_size == 32
    assert (ALRAO_FAST.eta_min, ALRAO_FAST.eta_max, ALRAO_FAST.n_heads) == (1e-5, 10.0, 10)
    assert ALRAO_FULL.data == "cifar10" and ALRAO_FULL.n_heads == 10
    body = mlp_body(ALRAO_FAST.widths, seed=0)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in body) == 2


def test_full_profile_builds_and_trains_on_small_fake_cifar(tmp_path):
    body, head = build_networks(ALRAO_FULL, seed=0)  # VGG-11 with batch norm at the profile's width
    assert head(body(torch.zeros(2, 3, 32, 32))).shape == (2, 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in body) == 8
    write_fake_cifar(tmp_path, per_batch=8)
    cfg = replace(ALRAO_FULL, n_train=32, cnn_width=1 / 16, epochs=1, batch_size=8)
    data = load_data(cfg, seed=0, data_root=str(tmp_path), download=False)
    assert data["x_train"].shape == (32, 3, 32, 32) and data["x_test"].shape == (8, 3, 32, 32)
    model = Alrao(*build_networks(cfg, seed=0), n_heads=cfg.n_heads, eta_min=cfg.eta_min, eta_max=cfg.eta_max)
    curves = train_alrao(model, data, epochs=1, batch_size=8, seed=0)
    assert curves.steps[-1] == 4 and len(curves.posterior) == 5
    sgd = train_baseline(*build_networks(cfg, seed=0), data, optimizer="sgd", lr=0.01, epochs=1, batch_size=8,
                         seed=0)
    assert math.isfinite(sgd.final_nll)
    # the stacked grid on the convolutional body (batch-norm buffers per network), two rates at two seeds
    nets = [nn.Sequential(*build_networks(cfg, seed=s)) for s in (0, 0, 1, 1)]
    grid = train_sgd_grid(nets, [0.01, 0.1] * 2, data, epochs=1, batch_size=8, seeds=[0, 0, 1, 1])
    assert all(math.isfinite(c.final_nll) for c in grid) and grid[0].test_nll[-1] != grid[1].test_nll[-1]
    with pytest.raises(ValueError, match="race_seeds must be at least 1"):
        replace(cfg, race_seeds=0)
    with pytest.raises(ValueError, match="unknown data 'svhn'"):
        load_data(replace(cfg, data="svhn"), seed=0)
    with pytest.raises(ValueError, match="unknown body 'resnet'"):
        build_networks(replace(cfg, body="resnet"), seed=0)
