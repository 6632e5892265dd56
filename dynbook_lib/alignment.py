"""Neural feature alignment (Baratin et al. 2021): the empirical NTK tracked along training.

A network is trained with SGD on cross-entropy, optionally rescaled as ``alpha (f(w) - f(w0))`` with step
``lr / alpha^2`` (``alpha >> 1`` lazy, ``alpha < 1`` "hasty", George, Lajoie & Baratin 2022). At logged steps the
full empirical NTK (``n O x n O``, :func:`dynbook_lib.ntk.empirical_ntk`) of each probe set is measured: its alignment
``CKA(K, y y^T)`` with the centred one-hot targets flattened to ``n O`` entries, its effective rank and top eigenvalue
(:mod:`dynbook_lib.kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dynbook_lib.core.seeding import make_generator
from dynbook_lib.kernels import effective_rank, one_hot_targets, target_alignment
from dynbook_lib.lazy import Rescaled
from dynbook_lib.models import minibatches
from dynbook_lib.ntk import empirical_ntk


def standardize(x_train: torch.Tensor, x_other: torch.Tensor, min_std: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise both sets with the training mean and std, the std clamped below at ``min_std`` (digits has
    constant pixels)."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(min_std)
    return (x_train - mean) / std, (x_other - mean) / std


def relabel(y: torch.Tensor, fraction: float, n_classes: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give a random *different* label to ``fraction`` of the examples; returns (labels, mask of relabelled)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"the label-noise fraction must be in [0, 1], got {fraction}")
    gen = make_generator(seed)
    n = len(y)
    chosen = torch.randperm(n, generator=gen)[: int(round(fraction * n))]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    shift = torch.randint(1, n_classes, (n,), generator=gen)
    noisy = torch.where(mask, (y + shift) % n_classes, y)
    return noisy, mask


@dataclass
class KernelLog:
    """Measurements at each logged step: ``steps``; per probe set ``alignment`` and ``effective_rank`` and
    ``top_eigenvalue`` (lists over steps); ``test_accuracy`` and ``train_loss``; the last ``spectra`` per probe."""

    steps: list[int] = field(default_factory=list)
    alignment: dict[str, list[float]] = field(default_factory=dict)
    effective_rank: dict[str, list[float]] = field(default_factory=dict)
    top_eigenvalue: dict[str, list[float]] = field(default_factory=dict)
    spectra: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)

    def gain(self, probe: str, index: int = -1) -> float:
        """Alignment at log ``index`` divided by the alignment at the start."""
        return self.alignment[probe][index] / self.alignment[probe][0]


def log_steps(total: int, first: int = 5, ratio: float = 1.15) -> list[int]:
    """``0`` and ``first * ratio^k`` rounded, up to ``total`` (the paper's logging schedule), and ``total``."""
    steps, k = {0, total}, 0
    while first * ratio**k < total:
        steps.add(int(round(first * ratio**k)))
        k += 1
    return sorted(steps)


def train_and_track(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: dict[str, tuple[torch.Tensor, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    alpha: float = 1.0,
    log_at: list[int] | None = None,
    n_classes: int = 10,
) -> KernelLog:
    """SGD on the mean cross-entropy of ``alpha (f - f0)`` with step ``lr / alpha^2``, logging the NTK of each probe.

    Args:
        model: classifier with ``n_classes`` logits (trained in place).
        x, y: training inputs and (possibly noisy) labels.
        probes: name -> (inputs, labels) on which the kernel is measured, with the labels its alignment is to.
        test: (inputs, labels) for the test accuracy.
        steps, lr, batch_size, seed: SGD settings (minibatches drawn from ``seed``).
        alpha: output scale (``1`` the standard network).
        log_at: steps at which to measure (default :func:`log_steps`).
    """
    scaled = Rescaled(model, alpha) if alpha != 1.0 else model
    opt = torch.optim.SGD(model.parameters(), lr=lr / alpha**2)
    gen = make_generator(seed)
    log_at = set(log_steps(steps) if log_at is None else log_at)
    log = KernelLog()
    batches = minibatches(len(x), batch_size, gen)
    for step in range(steps + 1):
        if step in log_at:
            log.steps.append(step)
            for name, (px, py) in probes.items():
                k = empirical_ntk(scaled, px).reshape(len(px) * n_classes, -1)
                lam = torch.linalg.eigvalsh(k)
                target = one_hot_targets(py, n_classes, dtype=k.dtype).reshape(-1)
                log.alignment.setdefault(name, []).append(float(target_alignment(k, target)))
                log.effective_rank.setdefault(name, []).append(float(effective_rank(lam, eigenvalues=True)))
                log.top_eigenvalue.setdefault(name, []).append(float(lam[-1]))
                log.spectra.setdefault(name, []).append(lam.flip(0))
            with torch.no_grad():
                log.test_accuracy.append(float((scaled(test[0]).argmax(1) == test[1]).double().mean()))
                log.train_loss.append(float(nn.functional.cross_entropy(scaled(x), y)))
        if step == steps:
            break
        idx = next(batches)
        opt.zero_grad()
        nn.functional.cross_entropy(scaled(x[idx]), y[idx]).backward()
        opt.step()
    return log
