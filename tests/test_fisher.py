"""The Fisher family (dense, block-diagonal, diagonal, KFAC, EKFAC) against the dense Fisher J^T B J in float64, on
tiny nets (width 3 to 5, batch 1 to 7), and KFAC / EKFAC against nngeometry 0.4."""

import contextlib

import pytest
import torch
from torch import nn

from dynbook_lib.fisher import (
    BlockDiagFisher,
    EKFACFisher,
    KFACFisher,
    fisher_factors,
    fisher_matrix,
    output_fisher_sqrt,
)
from dynbook_lib.tangent import jacobian
from helpers import assert_close

F64 = torch.float64
KINDS = ("dense", "block_diag", "diag", "kfac", "ekfac")
LOSSES = ("regression", "classification", "bernoulli")
# (widths, batch): two-layer nets of width 3 to 5, batches of 1 to 7
CASES = [([3, 4, 3], 1), ([4, 5, 3], 3), ([3, 3, 4, 2], 7), ([5, 4, 3], 5)]


def net(widths, *, bias=True, act=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2 and act is not None:
            layers.append(act())
    return nn.Sequential(*layers).double()


def inputs(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def dense_fisher(model, x, loss):
    """F = (1/n) sum_i J_i^T B_i J_i from the jacrev Jacobian and the closed-form output Fisher."""
    jac = jacobian(model, x)
    out = model(x).detach()
    if loss == "regression":
        b = torch.eye(out.shape[1], dtype=F64).expand(len(x), -1, -1)
    elif loss == "bernoulli":  # the Hessian of the binary cross-entropy with logits, summed over outputs
        p = torch.sigmoid(out)
        b = torch.diag_embed(p * (1 - p))
    else:
        p = out.softmax(-1)
        b = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("iap,iab,ibq->pq", jac, b, jac) / len(x)


def layer_slices(model):
    out, start = [], 0
    for m in model:
        if isinstance(m, nn.Linear):
            size = sum(p.numel() for p in m.parameters())
            out.append(slice(start, start + size))
            start += size
    return out


@pytest.mark.parametrize("loss", LOSSES)
def test_output_fisher_square_root(loss):
    out = inputs(4, 3, 0)
    sq = output_fisher_sqrt(out, loss)
    if loss == "regression":
        expected = torch.eye(3, dtype=F64).expand(4, 3, 3)
    elif loss == "bernoulli":
        p = torch.sigmoid(out)
        expected = torch.diag_embed(p * (1 - p))
    else:
        p = out.softmax(-1)
        expected = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    assert_close(sq @ sq.transpose(1, 2), expected)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("widths,batch", CASES)
def test_dense_block_and_diag_are_the_exact_fisher_and_its_parts(loss, widths, batch):
    model, x = net(widths), inputs(batch, widths[0], batch)
    exact = dense_fisher(model, x, loss)
    assert_close(fisher_matrix(model, x, "dense", loss).to_dense(), exact)
    block = torch.zeros_like(exact)
    for s in layer_slices(model):
        block[s, s] = exact[s, s]
    assert_close(fisher_matrix(model, x, "block_diag", loss).to_dense(), block)
    assert_close(fisher_matrix(model, x, "diag", loss).to_dense(), torch.diag(torch.diagonal(exact)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_operation_agrees_with_to_dense(kind, loss):
    model, x = net([4, 5, 3]), inputs(6, 4, 0)
    m = fisher_matrix(model, x, kind, loss)
    dense = m.to_dense()
    p = dense.shape[0]
    assert m.numel == p == sum(q.numel() for q in model.parameters())
    assert_close(dense, dense.T)
    v = inputs(3, p, 1)
    assert_close(m.mv(v), v @ dense)
    assert_close(m.mv(v[0]), dense @ v[0])
    assert_close(m.vTMv(v[1]), v[1] @ dense @ v[1])
    assert_close(m.trace(), torch.trace(dense))
    damping = 0.1
    expected = torch.linalg.solve(dense + damping * torch.eye(p, dtype=F64), v.T).T
    assert_close(m.solve(v, damping), expected, scale=100)  # condition number up to 1 / damping
    assert_close(m.mv(m.solve(v[0], damping)) + damping * m.solve(v[0], damping), v[0], scale=100)
    assert_close(m.frobenius_distance(dense), torch.tensor(0.0, dtype=F64))
    for i, s in enumerate(m.slices):  # each layer's block, built without the P x P matrix where the kind allows
        assert torch.equal(m.layer_block(i), dense[s, s])


def test_kfac_is_exact_for_one_example_and_one_output():
    """With n = 1 and K = 1 the block is (g g^T) (x) (a a^T): KFAC equals the block-diagonal Fisher."""
    model, x = net([3, 4, 1]), inputs(1, 3, 0)
    assert_close(fisher_matrix(model, x, "kfac").to_dense(), fisher_matrix(model, x, "block_diag").to_dense())


def test_kfac_is_exact_on_a_deep_linear_net_with_one_repeated_input():
    """A deep linear net fed one input n times: every layer's input a is the same for all examples, so
    E[a a^T (x) sum_k g g^T] = a a^T (x) E[sum_k g g^T] = A (x) G (Martens & Grosse 2015)."""
    model = net([3, 4, 5, 2], act=None)
    x = inputs(1, 3, 0).expand(6, 3)
    for loss in LOSSES:
        block = fisher_matrix(model, x, "block_diag", loss).to_dense()
        assert_close(fisher_matrix(model, x, "kfac", loss).to_dense(), block)
        assert_close(fisher_matrix(model, x, "ekfac", loss).to_dense(), block)


def test_kfac_is_not_exact_in_general():
    model, x = net([4, 5, 3]), inputs(6, 4, 0)
    kfac = fisher_matrix(model, x, "kfac")
    assert float(kfac.frobenius_distance(fisher_matrix(model, x, "block_diag"))) > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("widths,batch", CASES)
def test_ekfac_is_never_farther_than_kfac_on_any_layer(loss, widths, batch):
    model, x = net(widths, seed=batch), inputs(batch, widths[0], 10 + batch)
    block = fisher_matrix(model, x, "block_diag", loss)
    kfac = fisher_matrix(model, x, "kfac", loss).frobenius_distance(block, per_layer=True)
    ekfac = fisher_matrix(model, x, "ekfac", loss).frobenius_distance(block, per_layer=True)
    assert torch.all(ekfac <= kfac * (1 + 1e-12) + 1e-14)


def test_ekfac_diagonal_is_the_diagonal_of_the_fisher_in_the_kfe():
    model, x = net([4, 5, 3]), inputs(7, 4, 0)
    exact = dense_fisher(model, x, "classification")
    ekfac = fisher_matrix(model, x, "ekfac", "classification")
    for i, s in enumerate(ekfac.slices):
        ua, ug = ekfac.bases[i]
        u = torch.kron(ug, ua)  # in [W | b] row-major order
        position = ekfac._permutation(i)  # [W | b] entry -> flat position
        block = exact[s, s][position][:, position]
        assert_close(ekfac.scales[i].flatten(), torch.diagonal(u.T @ block @ u))


def test_ekfac_before_rescaling_is_kfac():
    model, x = net([4, 5, 3]), inputs(7, 4, 0)
    kfac = fisher_matrix(model, x, "kfac")
    assert_close(EKFACFisher.from_kfac(kfac).to_dense(), kfac.to_dense())


def test_ekfac_with_a_stale_basis_is_still_closer_than_stale_kfac():
    """The refreshed diagonal is the Frobenius-optimal one in the stale eigenbasis, which stale KFAC also uses."""
    model, x = net([4, 5, 3]), inputs(7, 4, 0)
    stale = KFACFisher(fisher_factors(model, x, "classification"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5), dtype=F64))
    now = fisher_matrix(model, x, "block_diag", "classification")
    refreshed = EKFACFisher.from_kfac(stale).update_diagonal(fisher_factors(model, x, "classification"))
    assert torch.all(refreshed.frobenius_distance(now, per_layer=True) <= stale.frobenius_distance(now, per_layer=True))


def test_kfac_beats_the_diagonal_on_a_correlated_input():
    """Inputs with strongly correlated coordinates: the diagonal misses the off-diagonal mass that A (x) G keeps."""
    model = net([4, 5, 3])
    z = inputs(7, 1, 0)
    x = z.expand(7, 4) + 0.05 * inputs(7, 4, 1)
    block = fisher_matrix(model, x, "block_diag")
    assert fisher_matrix(model, x, "kfac").frobenius_distance(block) < fisher_matrix(model, x, "diag").frobenius_distance(block)


def test_kronecker_kinds_reject_other_layers_with_a_clear_message():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2)).double()
    x = torch.randn(3, 1, 4, dtype=F64)
    with pytest.raises(ValueError, match="KFAC and EKFAC cover nn.Linear layers.*'0' is a Conv1d"):
        fisher_matrix(model, x, "kfac")
    assert fisher_matrix(model, x, "dense").to_dense().shape == (18, 18)  # conv 2*3 + 2, linear 4*2 + 2
    with pytest.raises(ValueError, match="unknown Fisher kind 'full'; expected one of dense, block_diag, diag, kfac, ekfac"):
        fisher_matrix(model, x, "full")
    with pytest.raises(ValueError, match="unknown loss 'mse'; expected one of regression, classification"):
        fisher_matrix(model, x, "dense", "mse")


# ---------------------------------------------------------------- nngeometry 0.4 on the same model


@contextlib.contextmanager
def default_float64():
    """nngeometry 0.4 allocates some buffers in the default dtype (KFAC's to_torch, the classification
    factorisation): run it with float64 as the default so the comparison is exact."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("loss,variant", [("regression", "regression"), ("classification", "classif_logits")])
def test_kfac_ekfac_and_dense_equal_nngeometry(loss, variant):
    import nngeometry  # installed by `make setup` (--no-deps, see the Makefile)
    from nngeometry.object import PMatDense, PMatEKFAC, PMatKFAC
    from torch.utils.data import DataLoader, TensorDataset

    model, x = net([4, 5, 3]), inputs(7, 4, 0)
    loader = DataLoader(TensorDataset(x), batch_size=3)  # several batches: the scale must not depend on them
    with default_float64():
        theirs = {
            "dense": nngeometry.FIM(model, loader, PMatDense, variant=variant),
            "kfac": nngeometry.FIM(model, loader, PMatKFAC, variant=variant),
            "ekfac": nngeometry.FIM(model, loader, PMatEKFAC, variant=variant),
        }
        theirs["ekfac"].update_diag(loader)
        theirs = {k: m.to_torch() for k, m in theirs.items()}
    for kind, matrix in theirs.items():
        assert_close(fisher_matrix(model, x, kind, loss).to_dense(), matrix)


def test_kfe_diagonalises_kfac_and_ekfac_and_relative_errors():
    model, x = net([4, 5, 3]), inputs(7, 4, 0)
    block = fisher_matrix(model, x, "block_diag", "classification")
    for kind in ("kfac", "ekfac"):
        m = fisher_matrix(model, x, kind, "classification")
        dense = m.to_dense()
        for i, s in enumerate(m.slices):
            u = m.kfe(i)
            assert_close(u.T @ u, torch.eye(u.shape[0], dtype=F64))
            in_kfe = u.T @ dense[s, s] @ u
            assert_close(in_kfe, torch.diag(torch.diagonal(in_kfe)), scale=100)
        errors = m.relative_error(block, per_layer=True)
        expected = torch.stack([torch.linalg.matrix_norm((dense - block.to_dense())[s, s])
                                / torch.linalg.matrix_norm(block.to_dense()[s, s]) for s in m.slices])
        assert_close(errors, expected)
        assert_close(m.relative_error(block), m.frobenius_distance(block) / torch.linalg.matrix_norm(block.to_dense()))


def test_bernoulli_fisher_is_the_hessian_of_the_summed_binary_cross_entropy_of_a_linear_model():
    """For logits f = W x the Gauss-Newton matrix is the Hessian: compare with torch.autograd.functional.hessian."""
    model = net([3, 2])
    x = inputs(4, 3, seed=1)
    targets = torch.rand(4, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()

    def loss(flat):
        w, b = flat[:6].reshape(2, 3), flat[6:]
        logits = x @ w.T + b
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(x)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([w0.flatten(), b0]))
    assert_close(fisher_matrix(model, x, "dense", "bernoulli").to_dense(), hessian)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(("widths", "batch"), CASES)
def test_fast_linear_blocks_equal_the_per_example_gradient_blocks(loss, widths, batch):
    model = net(widths)
    factors = fisher_factors(model, inputs(batch, widths[0], seed=batch), loss)
    fast, reference = BlockDiagFisher(factors), BlockDiagFisher(factors, fast=False)
    for a, b in zip(fast.blocks, reference.blocks):
        assert_close(a, b)


def test_block_solve_is_the_damped_inverse():
    model = net([4, 5, 3])
    block = fisher_matrix(model, inputs(5, 4, seed=3), "block_diag", "bernoulli")
    v = inputs(2, block.numel, seed=4)
    eye = torch.eye(block.numel, dtype=F64)
    for damping in (1e-3, 1.0):
        assert_close(block.solve(v, damping) @ (block.to_dense() + damping * eye), v, scale=1e3)
