"""Alignment tracking along training (chapter 03, in progress): label noise, logging schedule, standardisation and the
logged kernel measures against a direct computation (float64)."""

import pytest
import torch

from dynbook_lib.alignment import log_steps, relabel, standardize, train_and_track
from dynbook_lib.models import mlp
from dynbook_lib.kernels import effective_rank, one_hot_targets, target_alignment
from dynbook_lib.ntk import empirical_ntk_reference

F64 = torch.float64


def test_relabel_changes_exactly_the_chosen_fraction_to_other_labels():
    y = torch.arange(50) % 10
    noisy, mask = relabel(y, 0.3, 10, seed=0)
    assert int(mask.sum()) == 15
    assert torch.all(noisy[mask] != y[mask]) and torch.equal(noisy[~mask], y[~mask])
    assert torch.equal(relabel(y, 0.3, 10, seed=0)[0], noisy)
    with pytest.raises(ValueError, match=r"label-noise fraction must be in \[0, 1\]"):
        relabel(y, 1.5, 10, seed=0)


def test_log_steps_and_standardize():
    steps = log_steps(100)
    assert steps[0] == 0 and steps[-1] == 100 and steps == sorted(set(steps)) and 5 in steps
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=F64)
    a, b = standardize(x, x)
    assert torch.allclose(a[:, 0], torch.tensor([-1.0, 0.0, 1.0], dtype=F64))
    assert torch.allclose(a[:, 1], torch.zeros(3, dtype=F64))  # constant pixel: std clamped, no division by zero


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_logged_measures_match_a_direct_computation_at_init(alpha):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=gen, dtype=F64), torch.randint(0, 3, (12,), generator=gen)
    model = mlp((4, 6, 3), seed=0)
    reference = mlp((4, 6, 3), seed=0)
    log = train_and_track(model, x, y, {"probe": (x[:5], y[:5])}, (x, y), steps=4, lr=0.1, batch_size=4, seed=0,
                          alpha=alpha, log_at=[0, 4], n_classes=3)
    assert log.steps == [0, 4]
    k = alpha**2 * empirical_ntk_reference(reference, x[:5]).reshape(15, 15)  # NTK of alpha (f - f0) at init
    target = one_hot_targets(y[:5], 3).reshape(-1)
    assert log.alignment["probe"][0] == pytest.approx(float(target_alignment(k, target)), rel=1e-9)
    assert log.effective_rank["probe"][0] == pytest.approx(float(effective_rank(k)), rel=1e-9)
    assert log.top_eigenvalue["probe"][0] == pytest.approx(float(torch.linalg.eigvalsh(k)[-1]), rel=1e-9)
    assert log.train_loss[1] < log.train_loss[0]


def test_minibatches_walk_a_permutation_then_reshuffle():
    from dynbook_lib.models import minibatches

    gen = torch.Generator().manual_seed(0)
    batches = minibatches(10, 4, gen)
    first, second, third = next(batches), next(batches), next(batches)
    assert len(set(torch.cat([first, second]).tolist())) == 8  # two disjoint batches of one permutation
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([first, second]), expected[:8])
    assert len(third) == 4  # the remainder of 2 was dropped and a new order drawn
    with pytest.raises(ValueError, match="need 0 < batch_size <= n"):
        next(minibatches(3, 4, gen))
