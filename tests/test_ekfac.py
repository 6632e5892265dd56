"""The KFAC / EKFAC optimizer against the Fisher matrices of dynbook_lib.fisher (float64), and offline data sets."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from dynbook_lib.data import digits_tensors, mnist1d_tensors
from dynbook_lib.ekfac import KFACOptimizer, bernoulli_on
from dynbook_lib.fisher import EKFACFisher, KFACFisher
from dynbook_lib.tangent import tangent_factors
from helpers import assert_close

F64 = torch.float64


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batch(seed=0, n=7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=F64), torch.randint(0, 3, (n,), generator=gen)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def empirical_factors(model, x, y):
    """Tangent factors whose cotangent is each example's loss gradient in output space (the empirical Fisher)."""
    out = model(x).detach().requires_grad_(True)
    losses = nn.functional.cross_entropy(out, y, reduction="sum")
    (dout,) = torch.autograd.grad(losses, out)
    return tangent_factors(model, x, dout.unsqueeze(1))


@pytest.mark.parametrize("mode", ["kfac", "ekfac"])
def test_one_step_is_the_damped_inverse_of_the_fisher_toolbox(mode):
    """stat_decay 0, a fresh basis, no momentum: the step is -lr (M + damping I)^{-1} grad with M the toolbox matrix."""
    model, (x, y) = net(), batch()
    lr, damping = 0.1, 0.05
    factors = empirical_factors(model, x, y)
    kfac = KFACFisher(factors)
    matrix = kfac if mode == "kfac" else EKFACFisher.from_kfac(kfac).update_diagonal(factors)
    loss = nn.functional.cross_entropy(model(x), y)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    expected = flat_params(model) - lr * matrix.solve(grad, damping)

    opt = KFACOptimizer(model, lr, mode=mode, damping=damping, momentum=0.0, stat_decay=0.0)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert_close(flat_params(model), expected)


def test_stale_basis_is_kept_and_the_ekfac_diagonal_refreshed():
    model = net()
    opt = KFACOptimizer(model, 0.05, mode="ekfac", basis_every=3, stat_decay=0.0, momentum=0.0)
    layer = model[0]
    bases, diagonals = [], []
    for step in range(4):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        bases.append(opt.factors[layer]["ua"].clone())
        diagonals.append(opt.factors[layer]["s"].clone())
    assert torch.equal(bases[0], bases[1]) and torch.equal(bases[1], bases[2])  # steps 0, 1, 2 share the basis
    assert not torch.equal(bases[2], bases[3])  # step 3 recomputes it
    assert not torch.equal(diagonals[0], diagonals[1])  # the diagonal follows every batch


def test_non_linear_parameters_take_plain_sgd_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=F64), torch.tensor([0, 1, 1, 0, 1])
    before = model[1].weight.detach().clone()
    opt = KFACOptimizer(model, 0.1, momentum=0.0)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grad = model[1].weight.grad.clone()
    opt.step()
    assert_close(model[1].weight.detach(), before - 0.1 * grad)
    assert len(opt.layers) == 2


def test_training_reduces_the_loss_and_hooks_can_be_removed():
    model, (x, y) = net(), batch(n=32)
    opt = KFACOptimizer(model, 0.1, damping=0.1)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert nn.functional.cross_entropy(model(x), y).item() < 0.5 * first
    opt._captured.clear()
    with torch.no_grad():
        model(x)  # evaluation passes record nothing
    assert opt._captured == {}
    opt.remove_hooks()
    model(x).sum().backward()
    assert opt._captured == {}


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="unknown mode 'adam'; expected kfac or ekfac"):
        KFACOptimizer(net(), 0.1, mode="adam")
    with pytest.raises(ValueError, match="need lr > 0"):
        KFACOptimizer(net(), -1.0)
    with pytest.raises(ValueError, match="stat_decay must be in"):
        KFACOptimizer(net(), 0.1, stat_decay=1.0)


def test_mnist1d_is_generated_locally_deterministically_and_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    data = mnist1d_tensors(200, seed=3)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert data["x_train"].shape == (160, 40) and data["x_test"].shape == (40, 40)
    assert set(data["y_train"].tolist()) <= set(range(10))
    assert torch.equal(mnist1d_tensors(200, seed=3)["x_train"], data["x_train"])


def test_digits():
    data = digits_tensors()
    assert data["x"].shape == (1797, 64) and float(data["x"].max()) == 1.0 and float(data["x"].min()) == 0.0


def test_statistics_are_gathered_every_stats_every_steps():
    model = net()
    opt = KFACOptimizer(model, 0.05, stats_every=2, basis_every=4, momentum=0.0)
    layer = model[2]
    seen = []
    for step in range(5):
        x, y = batch(step)
        wanted = opt.wants_statistics
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        seen.append((wanted, opt.factors[layer]["A"].clone()))
    assert [w for w, _ in seen] == [True, False, True, False, True]
    assert torch.equal(seen[0][1], seen[1][1]) and not torch.equal(seen[1][1], seen[2][1])


def test_mnist_idx_reader_on_small_files(tmp_path):
    import gzip

    from dynbook_lib.data.downloads import MNIST_FILES, mnist_tensors, read_idx

    def write_idx(path, array):
        header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
        with gzip.open(path, "wb") as fh:
            fh.write(header + array.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for key, name in MNIST_FILES.items():
        n = 6 if "train" in key else 3
        array = rng.integers(0, 256, (n, 28, 28)) if key.startswith("x") else rng.integers(0, 10, n)
        write_idx(tmp_path / name, array)
    data = mnist_tensors(tmp_path)
    assert data["x_train"].shape == (6, 784) and data["x_test"].shape == (3, 784)
    assert float(data["x_train"].max()) <= 1.0 and data["y_train"].dtype == torch.long
    assert np.array_equal(read_idx(tmp_path / MNIST_FILES["y_test"]), data["y_test"].numpy())
    with pytest.raises(FileNotFoundError, match="download=True"):
        mnist_tensors(tmp_path / "missing")


def test_sampled_fisher_draws_follow_the_generator_not_the_model_device():
    """Regression: the full profile crashed on a GPU because the Bernoulli draws of the sampled Fisher used a CPU
    generator on CUDA logits. The draws are made on the generator's device: the same on any model device."""
    probs = torch.linspace(0, 1, 50, dtype=F64)
    a = bernoulli_on(torch.Generator().manual_seed(3), probs)
    b = torch.bernoulli(probs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.device == probs.device
    if torch.cuda.is_available():  # the GPU job: CUDA probabilities with a CPU generator
        c = bernoulli_on(torch.Generator().manual_seed(3), probs.cuda())
        assert c.device.type == "cuda" and torch.equal(c.cpu(), a)


def test_natural_gradient_cosines_against_dense_solves():
    """The cosines are those of the dense damped solves; with one input KFAC and EKFAC are exact (cosine 1)."""
    from dynbook_lib.ekfac import autoencoder, natural_gradient_cosines
    from dynbook_lib.fisher import fisher_matrix

    model = autoencoder((5, 3, 2), seed=0, dtype=F64)
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    damping = 0.01
    got, other = natural_gradient_cosines(model, x, (damping, 1.0), step=7)
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), x, reduction="sum") / len(x)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    eye = torch.eye(grad.numel(), dtype=F64)
    exact = torch.linalg.solve(fisher_matrix(model, x, "block_diag", "bernoulli").to_dense() + damping * eye, grad)
    for kind in ("kfac", "ekfac"):
        approx = torch.linalg.solve(fisher_matrix(model, x, kind, "bernoulli").to_dense() + damping * eye, grad)
        expected = float(nn.functional.cosine_similarity(exact, approx, dim=0))
        assert abs(getattr(got, kind) - expected) < 1e-10
    assert got.step == 7 and got.damping == damping and other.damping == 1.0 and -1 <= got.unpaired <= 1
    (one,) = natural_gradient_cosines(model, x[:1], (damping,))
    assert abs(one.kfac - 1) < 1e-10 and abs(one.ekfac - 1) < 1e-10


def test_autoencoder_run_keeps_snapshots_eigenvalues_and_marks_divergence():
    from dynbook_lib.ekfac import train_autoencoder

    x = digits_tensors()["x"][:64]
    kw = dict(widths=(64, 8), steps=6, batch_size=16, seed=0, record_every=2, basis_every=2)
    curve = train_autoencoder("ekfac", dict(lr=0.05, damping=1.0), x, snapshot_steps=(0, 6), **kw)
    assert sorted(curve.snapshots) == [0, 6] and curve.iterations.tolist() == [0, 2, 4, 6]
    first = next(curve.snapshots[0].parameters())
    assert not torch.equal(first, next(curve.snapshots[6].parameters()))
    curve.snapshots[6](x).sum().backward()  # a snapshot is a plain network, without the optimizer's hooks
    assert curve.eigenvalues.shape == (8 * 65 + 64 * 9,) and bool((curve.eigenvalues >= 0).all())
    assert train_autoencoder("sgd", dict(lr=0.05), x, **kw).eigenvalues is None
    # regression: NaN logits (an ELU autoencoder diverging) crashed the Bernoulli draws of the sampled Fisher
    diverged = train_autoencoder("kfac", dict(lr=0.05, damping=1.0), torch.full_like(x, float("nan")), **kw)
    assert diverged.final == float("inf") and diverged.iterations.tolist() == [0]
    blown = train_autoencoder("ekfac", dict(lr=0.1, damping=1e-3), digits_tensors(torch.float32)["x"],
                              **(kw | dict(widths=(64, 32, 16, 8), batch_size=100, steps=40, record_every=10)))
    assert blown.final == float("inf") and len(blown.loss) < 5  # stopped once the loss passed 10x its initial value
