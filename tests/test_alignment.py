"""Alignment tracking along training (chapter 03): label noise, logging schedule, standardisation, the centred
kernel, the logged measures and the path length against direct computations (float64), the complexity measure, the
yin-yang set's geometry, and the full profile's construction on small fake CIFAR files."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from dynbook_lib.alignment import (
    ALIGNMENT_FAST,
    ALIGNMENT_FULL,
    KernelLog,
    build_model,
    center_examples,
    complexity,
    learned_before_auc,
    load_task,
    log_steps,
    relabel,
    run_alignment,
    standardize,
    train_and_track,
    yin_yang_run,
)
from dynbook_lib.data.synthetic import DOT, YANG, YIN, yin_yang, yin_yang_class
from dynbook_lib.kernels import effective_rank, one_hot_targets, target_alignment
from dynbook_lib.models import mlp
from dynbook_lib.ntk import empirical_ntk, empirical_ntk_reference
from dynbook_lib.tangent import jacobian
from helpers import assert_close, write_fake_cifar

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


def test_center_examples_is_the_kernel_of_centred_tangent_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=F64)
    model = mlp((4, 5, 3), seed=0)
    jac = jacobian(model, x)  # (n, O, P)
    centred = jac - jac.mean(0, keepdim=True)
    expected = torch.einsum("iop,jqp->iojq", centred, centred)  # (n, O, n, O)
    assert_close(center_examples(empirical_ntk_reference(model, x)), expected)
    assert_close(center_examples(empirical_ntk(model, x)), empirical_ntk(model, x, centered=True))
    with pytest.raises(ValueError, match=r"shape \(n, O, n, O\)"):
        center_examples(torch.zeros(3, 3))


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_logged_measures_match_a_direct_computation_at_init(alpha):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=gen, dtype=F64), torch.randint(0, 3, (12,), generator=gen)
    model = mlp((4, 6, 3), seed=0)
    reference = mlp((4, 6, 3), seed=0)
    log = train_and_track(model, x, y, {"probe": (x[:5], y[:5])}, (x, y), steps=4, lr=0.1, batch_size=4, seed=0,
                          alpha=alpha, log_at=[0, 4], n_classes=3)
    assert log.steps == [0, 4] and log.probe_sizes == {"probe": 5}
    full = alpha**2 * empirical_ntk_reference(reference, x[:5])  # NTK of alpha (f - f0) at init
    k = center_examples(full).reshape(15, 15)
    lam = torch.linalg.eigvalsh(k)
    target = one_hot_targets(y[:5], 3).reshape(-1)
    assert log.alignment["probe"][0] == pytest.approx(float(target_alignment(k, target)), rel=1e-9)
    assert log.effective_rank["probe"][0] == pytest.approx(float(effective_rank(lam.clamp_min(0), eigenvalues=True)),
                                                           rel=1e-9)
    assert log.top_eigenvalue["probe"][0] == pytest.approx(float(lam[-1]), rel=1e-9)
    assert log.trace["probe"][0] == pytest.approx(float(full.reshape(15, 15).trace()), rel=1e-9)
    assert_close(log.spectra["probe"][0], lam.flip(0))
    assert log.train_loss[1] < log.train_loss[0]


def test_weight_decay_pulls_to_zero_or_to_the_initialisation():
    """Replayed by hand: plain SGD on cross-entropy + (wd / 2) ||w - c||^2 with c = 0 or c = w0, step lr / alpha^2."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 4, generator=gen, dtype=F64), torch.randint(0, 3, (8,), generator=gen)
    alpha, lr, wd, steps = 2.0, 0.5, 0.3, 3
    for decay_to in ("zero", "init"):
        model = mlp((4, 5, 3), seed=2)
        train_and_track(model, x, y, {}, (x, y), steps=steps, lr=lr, batch_size=8, seed=0, alpha=alpha,
                        weight_decay=wd, decay_to=decay_to, log_at=[0], n_classes=3)
        replay = mlp((4, 5, 3), seed=2)
        w0 = [p.detach().clone() for p in replay.parameters()]
        frozen = mlp((4, 5, 3), seed=2)
        for _ in range(steps):  # full batch: every minibatch is the whole set
            out = alpha * (replay(x) - frozen(x))
            grads = torch.autograd.grad(nn.functional.cross_entropy(out, y), list(replay.parameters()))
            with torch.no_grad():
                for p, g, p0 in zip(replay.parameters(), grads, w0):
                    p -= lr / alpha**2 * (g + wd * (p - (p0 if decay_to == "init" else 0)))
        for p, q in zip(model.parameters(), replay.parameters()):
            assert_close(p.detach(), q.detach())
    with pytest.raises(ValueError, match="unknown decay_to 'one'; expected 'zero' or 'init'"):
        train_and_track(mlp((4, 5, 3), seed=2), x, y, {}, (x, y), steps=1, lr=0.1, batch_size=8, seed=0,
                        decay_to="one", n_classes=3)


def test_path_length_is_the_sum_of_the_gradient_step_norms():
    """Full-batch SGD without momentum: w_{t+1} - w_t = -lr grad, replayed here with autograd."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=gen, dtype=F64), torch.randint(0, 2, (8,), generator=gen)
    model, replay = mlp((3, 4, 2), seed=1), mlp((3, 4, 2), seed=1)
    log = train_and_track(model, x, y, {}, (x, y), steps=5, lr=0.3, batch_size=8, seed=0, log_at=[0, 2, 5],
                          n_classes=2)
    lengths = []
    for _ in range(5):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(replay(x), y), list(replay.parameters()))
        with torch.no_grad():
            for p, g in zip(replay.parameters(), grads):
                p -= 0.3 * g
        lengths.append(0.3 * float(torch.sqrt(sum((g**2).sum() for g in grads))))
    assert log.path == pytest.approx([0.0, sum(lengths[:2]), sum(lengths[2:])], rel=1e-12)
    assert_close(torch.cat([p.flatten() for p in model.parameters()]),
                 torch.cat([p.flatten() for p in replay.parameters()]))


def test_complexity_sums_path_times_feature_norm_over_intervals():
    log = KernelLog(steps=[0, 1, 3], path=[0.0, 0.5, 2.0], trace={"train": [8.0, 18.0, 50.0]},
                    probe_sizes={"train": 2})
    n = 50  # ||Phi_t||_F^2 = (50 / 2) Tr K at the left end of each interval
    expected = (0.5 * math.sqrt(25 * 8.0) + 2.0 * math.sqrt(25 * 18.0)) / n
    assert complexity(log, n) == pytest.approx(expected, rel=1e-15)


def test_peak_is_the_first_best_test_accuracy():
    assert KernelLog(test_accuracy=[0.1, 0.9, 0.5, 0.9]).peak() == 1


# ---------------------------------------------------------------- yin-yang


def test_yin_yang_classes_follow_the_symbol():
    # the symbol is symmetric under x -> -x with yin and yang swapped; the dots map to each other
    x = torch.rand(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    x = x[x.norm(dim=1) <= 1]
    c, c_flipped = yin_yang_class(x), yin_yang_class(-x)
    swap = torch.tensor([YANG, YIN, DOT])
    boundary = ((x - torch.tensor([0.5, 0.0], dtype=F64)).norm(dim=1) - 0.5).abs() < 1e-9
    assert torch.equal(c_flipped[~boundary], swap[c][~boundary])
    # areas: each dot pi r^2, so yin and yang each pi / 2 - pi r^2 of the disk's pi
    fractions = torch.bincount(c, minlength=3).double() / len(c)
    assert_close(fractions, torch.tensor([0.49, 0.49, 0.02], dtype=F64), scale=1.2e8)  # ~4 standard errors


def test_yin_yang_is_balanced_seeded_and_in_the_disk():
    x, y = yin_yang(300, seed=3)
    assert torch.bincount(y).tolist() == [100, 100, 100] and bool((x.norm(dim=1) <= 1).all())
    assert torch.equal(yin_yang_class(x), y)
    x2, y2 = yin_yang(300, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, yin_yang(300, seed=4)[0])
    with pytest.raises(ValueError, match="n >= 3"):
        yin_yang(2, seed=0)


def test_yin_yang_run_records_classes_and_snapshots():
    cfg = replace(ALIGNMENT_FAST, yy_n=60, yy_widths=(2, 8, 3), yy_steps=30, yy_batch_size=20)
    grid = torch.tensor([[0.0, 0.9], [0.0, -0.9]])
    run = yin_yang_run(cfg, 2.0, seed=0, grid=grid, snapshots=(10, 30))
    assert sorted(run.regions) == [10, 30] and run.regions[30].shape == (2,)
    assert set(run.log.accuracy) == {"yin", "yang", "dots"} and run.log.steps == [0, 10, 25, 30]


# ---------------------------------------------------------------- profiles


def test_run_alignment_on_digits_probes_and_labels():
    cfg = replace(ALIGNMENT_FAST, epochs=1, batch_size=479, probe_size=7, log_ratio=2.0)
    task = load_task(cfg, seed=0)
    assert task.x_train.shape == (1437, 64) and task.x_test.shape == (360, 64)
    assert_close(task.x_train.mean(0), torch.zeros(64), scale=10.0)  # float32 data, standardised
    run = run_alignment(task, cfg, noise=0.5, seed=0)
    assert int(run.relabelled.sum()) == round(0.5 * 1437)
    assert set(run.log.alignment) == {"test", "train", "clean", "relabelled"}
    assert set(run.log.spectra) == set(run.log.effective_rank) == {"test"}  # no eigenvalues of the others
    assert run.log.steps[-1] == cfg.steps == 3 and run.log.probe_sizes["relabelled"] == 7
    assert len(run_alignment(task, cfg, noise=0.0, seed=0).log.alignment) == 2  # no clean / relabelled probes


def test_fast_profile_is_the_specified_one():
    cfg = ALIGNMENT_FAST
    assert (cfg.data, cfg.widths, cfg.lr, cfg.epochs, cfg.probe_size) == ("digits", (64, 256, 256, 10), 0.05, 30, 100)
    assert cfg.momentum == 0.9 and cfg.noise == 0.3 and len(cfg.sweep_noises) == 5


def test_full_profile_builds_and_runs_on_small_fake_cifar(tmp_path):
    net = build_model(ALIGNMENT_FULL, seed=0)  # VGG-11 at the profile's width
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert ALIGNMENT_FULL.sweep_noises == (0.0, 0.1, 0.2, 0.35, 0.5) and ALIGNMENT_FULL.weight_decay == 5e-4
    write_fake_cifar(tmp_path, per_batch=8)
    cfg = replace(ALIGNMENT_FULL, n_train=40, n_test=8, epochs=1, batch_size=8, probe_size=3, cnn_width=1 / 16)
    task = load_task(cfg, seed=0, data_root=str(tmp_path), download=False)
    assert task.x_train.shape == (40, 3, 32, 32) and task.x_test.shape == (8, 3, 32, 32)
    run = run_alignment(task, cfg, noise=0.2, seed=0)
    assert run.log.steps[-1] == 5 and run.log.spectra["test"][0].shape == (30,)
    assert all(math.isfinite(a) for a in run.log.alignment["relabelled"])


def test_bad_data_or_model_names_are_refused():
    with pytest.raises(ValueError, match="unknown data 'mnist'; expected digits or cifar10"):
        load_task(replace(ALIGNMENT_FAST, data="mnist"), seed=0)
    with pytest.raises(ValueError, match="unknown model 'resnet'; expected mlp or vgg11"):
        build_model(replace(ALIGNMENT_FAST, model="resnet"), seed=0)


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


def test_learned_before_auc_is_the_probability_that_a_hard_example_is_fitted_first():
    # per-example fitting times: easy at 1, 2, 3, 4; hard at 2.5, 5 (P(T_hard < T_easy) = (2 + 0) / 8 = 0.25)
    steps = [0, 1, 2, 2.5, 3, 4, 5]
    easy = [sum(t <= s for t in (1, 2, 3, 4)) / 4 for s in steps]
    hard = [sum(t <= s for t in (2.5, 5)) / 2 for s in steps]
    assert learned_before_auc(easy, hard) == pytest.approx(0.25)
    assert learned_before_auc(hard, easy) == pytest.approx(0.75)
    # hard examples never fitted count as fitted last; a dip (forgetting) is ignored by the running maximum
    assert learned_before_auc([0.5, 1.0], [0.0, 0.0]) == 0.0
    assert learned_before_auc([0.0, 0.5, 0.2, 1.0], [0.0, 0.5, 0.5, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two curves of fitted fractions in"):
        learned_before_auc([0.0, 1.2], [0.0, 1.0])
