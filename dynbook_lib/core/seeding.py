"""Explicit randomness: every stochastic function of the library takes a seed or a ``torch.Generator``."""

from __future__ import annotations

import torch


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int, or raise ``ValueError`` with one line saying what is allowed.

    Example:
        >>> check_seed(3)
        3
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``; no global RNG state is touched.

    Example:
        >>> a = torch.randn(3, generator=make_generator(0))
        >>> b = torch.randn(3, generator=make_generator(0))
        >>> bool(torch.equal(a, b))
        True
    """
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(check_seed(seed))
    return gen
