"""Small building blocks shared by the chapters: seeded networks and minibatch orders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def seeded(build: Callable[[], M], seed: int) -> M:
    """``build()`` with torch's CPU generator seeded by ``seed``, the global random state restored afterwards (so a
    network's init depends on its seed only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def mlp(widths: tuple[int, ...], *, seed: int, activation: type[nn.Module] = nn.ReLU,
        dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``Linear(widths[0], widths[1]) - activation - ... - Linear(widths[-2], widths[-1])`` with PyTorch's default
    init drawn from ``seed``.

    Example:
        >>> torch.equal(mlp((3, 4, 2), seed=0)[0].weight, mlp((3, 4, 2), seed=0)[0].weight)
        True
    """

    def build() -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b)] + ([activation()] if i < len(widths) - 2 else [])
        return nn.Sequential(*layers).to(dtype)

    return seeded(build, seed)


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless minibatch indices: a random order of ``range(n)`` walked ``batch_size`` at a time, reshuffled when fewer
    than ``batch_size`` indices are left (the remainder is dropped)."""
    if not 0 < batch_size <= n:
        raise ValueError(f"need 0 < batch_size <= n, got batch_size={batch_size}, n={n}")
    order, cursor = torch.randperm(n, generator=generator), 0
    while True:
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size
