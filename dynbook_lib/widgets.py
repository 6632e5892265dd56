"""Widget helpers: a live explorer over a chapter's knobs and the static sweep that stands in for it offline.

The explorer draws its figure into an ``ipywidgets.Output`` from the kernel side (``append_display_data``), so the
figure is part of the widget state that papermill saves and the static book shows; nothing waits for input, so
headless runs never block. The static sweep draws the same panel at a few values of the knob as small multiples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def explorer(draw: Callable[..., Figure], controls: Mapping[str, widgets.ValueWidget]) -> widgets.VBox:
    """A box of ``controls`` above the figure ``draw(**values)``, redrawn whenever a control changes.

    Args:
        draw: returns a new figure for the controls' values, passed as keyword arguments named as in ``controls``.
        controls: keyword name -> widget (use ``continuous_update=False`` on sliders over slow computations).

    Example:
        >>> import ipywidgets as w
        >>> box = explorer(lambda a: plt.figure(), {"a": w.FloatSlider(value=1.0)})
        >>> len(box.children)
        2
    """
    out = widgets.Output(layout=widgets.Layout(min_height="300px"))

    def refresh(_: Any = None) -> None:
        fig = draw(**{name: c.value for name, c in controls.items()})
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    for control in controls.values():
        control.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


def log_slider(description: str, low: float, high: float, step: float, value: float) -> widgets.FloatSlider:
    """A slider over ``log10`` of a positive knob, updating on release (the knob is ``10 ** slider.value``)."""
    if not low <= value <= high:
        raise ValueError(f"slider value {value} is outside [{low}, {high}]")
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                               readout_format=".2f", continuous_update=False,
                               style={"description_width": "initial"})


def static_sweep(
    panel: Callable[[plt.Axes, Any], None],
    values: Sequence[Any],
    *,
    title: Callable[[Any], str],
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.2, 2.6),
    sharey: bool = True,
) -> Figure:
    """Small multiples: ``panel(ax, value)`` for each value, in a grid, with ``title(value)`` above each.

    Example:
        >>> fig = static_sweep(lambda ax, v: ax.plot([0, v]), [1, 2], title=str)
        >>> len(fig.axes)
        2
    """
    ncols = min(ncols, len(values))
    nrows = -(-len(values) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             sharey=sharey, squeeze=False)
    for ax, value in zip(axes.flat, values):
        panel(ax, value)
        ax.set_title(title(value))
    for ax in list(axes.flat)[len(values):]:
        ax.remove()
    return fig
