"""Widget helpers: a live explorer over a chapter's knobs and the static sweep that stands in for it offline.

The explorer draws its figure into an ``ipywidgets.Output`` from the kernel side (``append_display_data``), so the
figure is part of the widget state that papermill saves and the static book shows; nothing waits for input, so
headless runs never block. The static sweep draws the same panel at a few values of the knob as small multiples.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from dynbook_lib.plotting import grid_shape, panels


def figure_data(fig: Figure, line_x: bool = True) -> list[np.ndarray]:
    """The numbers a figure shows: every line's points (``(N, 2)``, x and y, so that a marker line that moves is a
    change; its y values only with ``line_x=False``), every image's array, every scatter's offsets, every bar's height
    (in the order the axes hold them)."""
    data: list[np.ndarray] = []
    for ax in fig.axes:
        data += [np.asarray(line.get_xydata() if line_x else line.get_ydata(), dtype=float) for line in ax.get_lines()]
        data += [np.asarray(im.get_array(), dtype=float) for im in ax.get_images()]
        data += [np.asarray(c.get_offsets(), dtype=float) for c in ax.collections
                 if hasattr(c, "get_offsets") and len(c.get_offsets())]
        data += [np.asarray([p.get_height() for p in ax.patches if hasattr(p, "get_height")], dtype=float)]
    return [d for d in data if d.size]


def check_view(fig: Figure, what: str = "the explorer's default view") -> None:
    """Raise a one-line ``ValueError`` when a figure shows nothing that moves: no data, a plotted series with no
    finite value (all NaN or infinite), or every plotted series constant (lines judged by their y values). (A series
    with some NaN is allowed: charts leave gaps for diverged runs on purpose.)

    Example:
        >>> fig, ax = plt.subplots(); _ = ax.plot([0.3, 0.3, 0.3])
        >>> check_view(fig)
        Traceback (most recent call last):
        ...
        ValueError: the explorer's default view is flat: every plotted series is constant
    """
    data = figure_data(fig, line_x=False)
    if not data:
        raise ValueError(f"{what} plots no data")
    empty = sum(not np.isfinite(d).any() for d in data)
    if empty:
        raise ValueError(f"{what} plots {empty} series with no finite value (all NaN or infinite)")
    if all(np.ptp(d[np.isfinite(d)]) == 0 for d in data):
        raise ValueError(f"{what} is flat: every plotted series is constant")


def views_differ(a: Figure, b: Figure) -> bool:
    """True when two figures plot different numbers (a knob that changes nothing gives False)."""
    da, db = figure_data(a), figure_data(b)
    return len(da) != len(db) or any(x.shape != y.shape or not np.allclose(x, y, equal_nan=True) for x, y in zip(da, db))


CHECK_KNOBS_ENV = "DYNBOOK_CHECK_KNOBS"
"""Set to 1 to make every explorer check, when it is built, that each of its knobs changes the figure."""


def moved_value(control: widgets.ValueWidget) -> Any:
    """A value of ``control`` next to its current one: one step up a slider (down at its top), the next option of a
    list (the first after the last), the other state of a checkbox.

    Example:
        >>> moved_value(widgets.IntSlider(value=10, min=0, max=10, step=5)), moved_value(widgets.Checkbox(value=True))
        (5, False)
    """
    if isinstance(control, widgets.Checkbox):
        return not control.value
    if hasattr(control, "options"):
        values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return values[(values.index(control.value) + 1) % len(values)]
    if hasattr(control, "step") and hasattr(control, "max"):
        up = control.value + control.step
        return up if up <= control.max else control.value - control.step
    raise TypeError(f"cannot move a {type(control).__name__}; knobs are sliders, lists and checkboxes")


def check_knobs(draw: Callable[..., Figure], controls: Mapping[str, widgets.ValueWidget],
                base: Figure | None = None) -> None:
    """Draw the view with each knob moved one notch (:func:`moved_value`; the controls themselves are not touched)
    and raise a one-line ``ValueError`` naming every knob whose move leaves the figure's numbers unchanged. ``base``
    is the view at the controls' values when the caller has drawn it already. The random states of torch, numpy and
    ``random`` are restored afterwards, so a chapter computes the same with or without the check."""
    values = {name: c.value for name, c in controls.items()}
    np_state, py_state = np.random.get_state(), random.getstate()
    dead = []
    with torch.random.fork_rng(devices=[]):
        reference = base if base is not None else draw(**values)
        for name, control in controls.items():
            value = moved_value(control)
            moved = draw(**{**values, name: value})
            if not views_differ(reference, moved):
                dead.append(f"{name} ({control.value!r} -> {value!r})")
            plt.close(moved)
        if base is None:
            plt.close(reference)
    np.random.set_state(np_state)
    random.setstate(py_state)
    if dead:
        raise ValueError(f"the explorer's knobs change nothing in its figure: {', '.join(dead)}")


def control_grid(controls: Sequence[widgets.Widget]) -> widgets.GridBox:
    """The controls in a grid of cells at least 300 px wide that wraps to the page's width; a control with several
    buttons (toggle buttons) takes a whole row, so none is squeezed below a usable width."""
    for control in controls:
        control.style.description_width = "initial"
        control.layout.width = "auto"
        if isinstance(control, (widgets.ToggleButtons, widgets.RadioButtons)):
            control.layout.grid_column = "1 / -1"
    return widgets.GridBox(list(controls), layout=widgets.Layout(
        grid_template_columns="repeat(auto-fill, minmax(300px, 1fr))", grid_gap="4px 16px", width="100%"))


def explorer(draw: Callable[..., Figure], controls: Mapping[str, widgets.ValueWidget]) -> widgets.VBox:
    """A grid of ``controls`` above the figure ``draw(**values)``, redrawn whenever a control changes. The default
    view is checked (:func:`check_view`): a series with no finite value, or only constant series, is an error;
    with ``DYNBOOK_CHECK_KNOBS=1`` every knob must also change the figure (:func:`check_knobs`).

    Args:
        draw: returns a new figure for the controls' values, passed as keyword arguments named as in ``controls``.
        controls: keyword name -> widget (use ``continuous_update=False`` on sliders over slow computations).

    Example:
        >>> import ipywidgets as w
        >>> box = explorer(lambda a: plt.figure().gca().plot([0, a]).pop().figure, {"a": w.FloatSlider(value=1.0)})
        >>> len(box.children)
        2
    """
    out = widgets.Output(layout=widgets.Layout(min_height="300px"))

    def show(fig: Figure) -> None:
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    def refresh(_: Any = None) -> None:
        show(draw(**{name: c.value for name, c in controls.items()}))

    for control in controls.values():
        control.observe(refresh, names="value")
    default = draw(**{name: c.value for name, c in controls.items()})
    check_view(default)
    if os.environ.get(CHECK_KNOBS_ENV) == "1":
        check_knobs(draw, controls, base=default)
    show(default)
    return widgets.VBox([control_grid(list(controls.values())), out])


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
    ncols: int = 3,
    row_height: float | None = None,
    sharey: bool = True,
) -> Figure:
    """Small multiples: ``panel(ax, value)`` for each value, ``ncols`` a row across the book's column, with
    ``title(value)`` above each.

    Example:
        >>> fig = static_sweep(lambda ax, v: ax.plot([0, v]), [1, 2], title=str)
        >>> len(fig.axes)
        2
    """
    if not values:
        raise ValueError("static_sweep needs at least one value to draw")
    nrows, ncols = grid_shape(len(values), max_columns=ncols)
    fig, axes = panels(nrows, ncols, row_height=row_height, sharey=sharey, squeeze=False)
    for ax, value in zip(axes.flat, values):
        panel(ax, value)
        ax.set_title(title(value))
    for ax in list(axes.flat)[len(values):]:
        ax.remove()
    return fig
