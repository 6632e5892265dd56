"""One plotting style for the whole book, and the few figure helpers chapters share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

# A cell's output in the rendered book is 692 px wide in a 1300 px window, a widget's output area 688 px; at the
# style's 100 dpi a figure of this width (670 px, about 690 once saved with a tight bounding box) is shown at its
# natural size, so its 9-10 pt text reads at 12-14 px instead of being shrunk.
COLUMN_INCHES = 6.7
# Narrower panels leave no room for tick labels: more panels wrap into more rows.
MAX_COLUMNS = 4

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def use_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update({
        "figure.dpi": 100,
        "figure.figsize": (COLUMN_INCHES, 3.4),
        "savefig.dpi": "figure",
        "font.size": 10,
        "figure.constrained_layout.use": True,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "lines.linewidth": 1.8,
    })


def panels(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float = COLUMN_INCHES,
    row_height: float | None = None,
    **subplots: Any,
) -> tuple[plt.Figure, Any]:
    """``plt.subplots(nrows, ncols)`` sized for the book's column: ``width`` inches (at most the column's) and
    ``row_height`` inches per row (by default 3.4 for one panel a row, 2.9 for two, 2.5 for three or four).

    Raises:
        ValueError: a width wider than the column (the page would shrink the figure and its text), or more than
            ``MAX_COLUMNS`` panels in a row (wrap them into more rows).

    Example:
        >>> fig, axes = panels(2, 2)
        >>> fig.get_size_inches().tolist(), axes.shape
        ([6.7, 5.8], (2, 2))
    """
    if not 0 < width <= COLUMN_INCHES:
        raise ValueError(f"figure width {width} in is outside (0, {COLUMN_INCHES}] (the book's column); "
                         "wrap panels into more rows instead")
    if not (isinstance(nrows, int) and isinstance(ncols, int) and nrows >= 1 and 1 <= ncols <= MAX_COLUMNS):
        raise ValueError(f"panels(nrows={nrows!r}, ncols={ncols!r}): need nrows >= 1 and 1 <= ncols <= "
                         f"{MAX_COLUMNS} (wrap more panels into more rows)")
    if row_height is None:
        row_height = {1: 3.4, 2: 2.9}.get(ncols, 2.5)
    if not row_height > 0:
        raise ValueError(f"row_height must be positive, got {row_height}")
    return plt.subplots(nrows, ncols, figsize=(width, row_height * nrows), **subplots)


def grid_shape(count: int, max_columns: int = 3) -> tuple[int, int]:
    """Rows and columns for ``count`` panels, at most ``max_columns`` a row, as few rows as possible.

    Example:
        >>> grid_shape(5), grid_shape(2), grid_shape(4, max_columns=2)
        ((2, 3), (1, 2), (2, 2))
    """
    if count < 1 or not 1 <= max_columns <= MAX_COLUMNS:
        raise ValueError(f"grid_shape needs count >= 1 and 1 <= max_columns <= {MAX_COLUMNS}, got {count}, "
                         f"{max_columns}")
    ncols = min(count, max_columns)
    return -(-count // ncols), ncols


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
