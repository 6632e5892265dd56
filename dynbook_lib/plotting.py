"""One plotting style for the whole book, and the few figure helpers chapters share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def use_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update({
        "figure.dpi": 100,
        "figure.figsize": (7.0, 4.0),
        "figure.constrained_layout.use": True,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "lines.linewidth": 1.8,
    })


def to_numpy(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """A detached CPU numpy copy of ``x``: float64, or bool for boolean masks."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy() if x.dtype == torch.bool else x.double().numpy()
    x = np.asarray(x)
    return x if x.dtype == bool else x.astype(np.float64)


def stem_compare(
    ax: plt.Axes,
    beta: torch.Tensor,
    references: Mapping[str, torch.Tensor],
    *,
    label: str = "trained",
    title: str | None = None,
) -> None:
    """Stem plot of a coefficient vector over reference vectors drawn as markers, one colour each.

    Args:
        ax: where to draw.
        beta: the vector to show as stems, shape ``(d,)``.
        references: name -> vector of the same shape, drawn as hollow markers.
        label: legend entry of ``beta``.
        title: axes title.
    """
    idx = np.arange(len(beta))
    markers = ("o", "s", "D", "^")
    for i, (name, ref) in enumerate(references.items()):
        ax.plot(idx, to_numpy(ref), linestyle="none", marker=markers[i % len(markers)], markersize=6,
                markerfacecolor="none", color=PALETTE[(i + 1) % len(PALETTE)], label=name)
    stems = ax.stem(idx, to_numpy(beta), linefmt="-", markerfmt=".", basefmt=" ", label=label)
    plt.setp(stems.stemlines, color=PALETTE[0], linewidth=1.0)
    plt.setp(stems.markerline, color=PALETTE[0])
    ax.set_xlabel("coordinate i")
    ax.set_ylabel(r"$\beta_i$")
    if title:
        ax.set_title(title)
