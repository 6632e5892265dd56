"""The widget helpers: the explorer's layout and its check of the default view, the knob check, the static sweep."""

import ipywidgets as w
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dynbook_lib.widgets import (check_knobs, check_view, control_grid, explorer, figure_data, log_slider,  # noqa: E402
                                 moved_value, views_differ)


def line_figure(y):
    fig, ax = plt.subplots()
    ax.plot(np.arange(len(y)), y)
    return fig


def test_figure_data_reads_lines_images_scatters_and_bars():
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([1, 2, 3])
    a.scatter([0, 1], [2, 3])
    b.imshow(np.eye(2))
    b.bar([0, 1], [4, 5])
    assert [d.tolist() for d in figure_data(fig)] == [[[0, 1], [1, 2], [2, 3]], [[0, 2], [1, 3]], np.eye(2).tolist(),
                                                      [4, 5]]
    assert figure_data(fig, line_x=False)[0].tolist() == [1, 2, 3]
    plt.close("all")


@pytest.mark.parametrize("y,message", [
    ([0.315, 0.315, 0.315], "is flat: every plotted series is constant"),
    ([np.nan, np.nan], "plots 1 series with no finite value"),
    ([np.inf, np.inf], "plots 1 series with no finite value"),
])
def test_a_flat_or_nan_default_view_is_a_one_line_error(y, message):
    with pytest.raises(ValueError, match=message):
        check_view(line_figure(y))
    plt.close("all")


def test_a_view_that_moves_passes_even_with_a_gap():
    check_view(line_figure([1.0, np.nan, 0.5, 0.2]))
    fig = plt.figure()
    with pytest.raises(ValueError, match="plots no data"):
        check_view(fig)
    plt.close("all")


def test_a_marker_line_that_moves_is_a_change():
    """Chapter 04's damping knob moves only a vertical marker: its x position is what changes."""
    a, b = plt.figure(), plt.figure()
    a.gca().axvline(1e-3)
    b.gca().axvline(1e-2)
    assert views_differ(a, b)
    plt.close("all")


def test_views_differ_tells_a_knob_that_changes_nothing():
    a, b, c = line_figure([1.0, 2.0]), line_figure([1.0, 2.0]), line_figure([1.0, 3.0])
    assert not views_differ(a, b) and views_differ(a, c) and views_differ(a, line_figure([1.0, 2.0, 3.0]))
    plt.close("all")


def test_explorer_refuses_a_flat_default_view_and_redraws_on_every_control():
    calls = []

    def draw(a, b):
        calls.append((a, b))
        return line_figure([0.0, a * b])

    a, b = w.FloatSlider(value=1.0, min=0, max=2), w.Dropdown(options=[1, 2], value=1)
    box = explorer(draw, {"a": a, "b": b})
    a.value = 2.0
    b.value = 2
    assert calls == [(1.0, 1), (2.0, 1), (2.0, 2)] and len(box.children[1].outputs) == 1
    with pytest.raises(ValueError, match="default view is flat"):
        explorer(lambda a: line_figure([0.0, 0.0 * a]), {"a": w.FloatSlider(value=1.0)})
    plt.close("all")


def test_controls_wrap_in_a_grid_and_buttons_take_a_row():
    """Four sliders and a toggle in one row crushed them to zero width (chapter 01, 04): a wrapping grid with cells
    of at least 300 px, labels at their natural width, a row for a control with several buttons."""
    sliders = [w.FloatSlider(description=f"knob {k}") for k in range(4)]
    toggle = w.ToggleButtons(options=["parameter", "KFE"], description="basis")
    grid = control_grid([*sliders, toggle])
    assert isinstance(grid, w.GridBox) and "auto-fill" in grid.layout.grid_template_columns
    assert "minmax(300px" in grid.layout.grid_template_columns
    assert all(c.style.description_width == "initial" and c.layout.width == "auto" for c in grid.children)
    assert toggle.layout.grid_column == "1 / -1" and sliders[0].layout.grid_column is None


def test_log_slider_checks_its_default():
    assert log_slider("log10 x", -1.0, 0.0, 0.25, 0.0).value == 0.0
    with pytest.raises(ValueError, match=r"slider value 1.0 is outside \[-1.0, 0.0\]"):
        log_slider("log10 x", -1.0, 0.0, 0.25, 1.0)


def test_moved_value_is_one_notch_away_for_every_kind_of_knob():
    assert moved_value(w.FloatSlider(value=0.0, min=-1.0, max=0.0, step=0.25)) == -0.25
    assert moved_value(w.IntSlider(value=4, min=4, max=64, step=4)) == 8
    assert moved_value(w.Dropdown(options=[("layer 1", 0), ("layer 2", 1)], value=1)) == 0
    assert moved_value(w.ToggleButtons(options=["parameter", "KFE"], value="parameter")) == "KFE"
    assert moved_value(w.Checkbox(value=False)) is True
    with pytest.raises(TypeError, match="cannot move a Text"):
        moved_value(w.Text(value="x"))


def test_check_knobs_names_the_knob_that_changes_nothing(monkeypatch):
    """Chapter 01's bug: the step knob reached the training as its log, so no value of it changed the figure."""
    def draw(log_tau, log_step):
        lr = max(log_step, 0.0)  # the bug: the raw slider value in [-1, 0] clipped to a zero step
        return line_figure([1.0, 1.0 - lr * 0.5, 0.5 - log_tau])

    controls = {"log_tau": log_slider("log10 tau", -1.0, 1.0, 0.5, 0.0),
                "log_step": log_slider("log10 step x", -1.0, 0.0, 0.25, 0.0)}
    with pytest.raises(ValueError, match=r"knobs change nothing in its figure: log_step \(0.0 -> -0.25\)$"):
        check_knobs(draw, controls)
    check_knobs(lambda log_tau, log_step: draw(log_tau, 10 ** log_step), controls)  # the fix
    monkeypatch.setenv("DYNBOOK_CHECK_KNOBS", "1")
    with pytest.raises(ValueError, match="log_step"):
        explorer(draw, controls)
    assert controls["log_step"].value == 0.0  # the check never moves the controls themselves
    plt.close("all")


def test_check_knobs_leaves_the_random_streams_as_it_found_them():
    import random

    import torch

    def draw(a):
        return line_figure([0.0, a + float(torch.rand(())) + np.random.rand() + random.random()])

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (float(torch.rand(())), np.random.rand(), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    check_knobs(draw, {"a": w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.5)})
    assert (float(torch.rand(())), np.random.rand(), random.random()) == expected
    plt.close("all")
