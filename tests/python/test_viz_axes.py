"""The monitor's axes draw what pyqtgraph's would: viz.axis_specs.draw_specs
gives pyqtgraph's own AxisItem.generateDrawSpecs value for value (every
orientation, explicit ticks, styles, ranges and sizes), and the axes' spec
memo hands back the last specs only while nothing they are made from
changed."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import sys

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pg = pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from PyQt6 import QtGui  # noqa: E402

from cgrad.viz import axis_specs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_viz_frames import dashboard, model_with  # noqa: E402,F401  (fixture)


def specs_of(axis, make):
    """make(axis, painter) on a QPicture painter set up as AxisItem.paint does."""
    picture = QtGui.QPicture()
    painter = QtGui.QPainter(picture)
    try:
        if axis.style["tickFont"]:
            painter.setFont(axis.style["tickFont"])
        return make(axis, painter)
    finally:
        painter.end()


def pyqtgraphs(axis):
    return specs_of(axis, pg.AxisItem.generateDrawSpecs)


def ours(axis):
    return specs_of(axis, axis_specs.draw_specs)


def assert_same_specs(got, want, where=""):
    assert (got is None) == (want is None), where
    if want is None:
        return
    (pen, a0, a1), ticks, texts = got
    (want_pen, w0, w1), want_ticks, want_texts = want
    assert pen == want_pen and a0 == w0 and a1 == w1, where
    assert len(ticks) == len(want_ticks), where
    for (p, t0, t1), (wp, u0, u1) in zip(ticks, want_ticks):
        assert p == wp and t0 == u0 and t1 == u1, where
    assert [(r, f, s) for r, f, s in texts] == [(r, f, s) for r, f, s in want_texts], where


def axes_of(d):
    plots = d.step_plots + [d.bars_plot, d.cbar_plot]
    return [(f"{i}.{side}", p.getAxis(side)) for i, p in enumerate(plots)
            for side in ("left", "bottom", "right") if p.getAxis(side).isVisible()]


def test_draw_specs_equal_pyqtgraphs_on_every_axis_of_the_dashboard(dashboard, qtbot):
    d = dashboard
    model = model_with(30_000, n_layers=40)
    d.set_runs(model)
    d.select_row(12_345)
    d.refresh()
    d.grab()
    views = [(0, 30_000), (1_000, 1_200), (12_345.5, 12_346.25), (-50.0, 29_000.0)]
    for x0, x1 in views:
        d.loss_plot.setXRange(x0, x1, padding=0)
        d.refresh_view()
        d.grab()
        checked = 0
        for name, axis in axes_of(d):
            want = pyqtgraphs(axis)
            assert_same_specs(ours(axis), want, (name, x0, x1))
            checked += want is not None and bool(want[1])
        assert checked >= 6                               # real axes with ticks were compared
    # the heatmap's layer axis has explicit ticks (layer names) and text
    layer_axis = d.heat_plot.getAxis("left")
    assert layer_axis._tickLevels and ours(layer_axis)[2]


@pytest.mark.parametrize("orientation", ["left", "right", "top", "bottom"])
def test_draw_specs_equal_pyqtgraphs_for_styles_ranges_and_sizes(qtbot, orientation):
    widget = pg.GraphicsLayoutWidget()
    qtbot.addWidget(widget)
    widget.resize(700, 500)
    plot = widget.addPlot()
    plot.showAxis(orientation)
    axis = plot.getAxis(orientation)
    widget.show()
    qtbot.waitExposed(widget)
    rng = np.random.default_rng(3)
    styles = [{}, {"tickAlpha": 0.4}, {"tickAlpha": 90},
              {"tickLength": 8, "tickTextOffset": 7}, {"showValues": False},
              {"maxTextLevel": 1, "textFillLimits": [(0, 0.3)]}]
    defaults = {name: axis.style[name] for name in
                ("tickAlpha", "tickLength", "showValues", "maxTextLevel", "textFillLimits")}
    defaults["tickTextOffset"] = axis.style["tickTextOffset"][0 if orientation in ("left", "right")
                                                              else 1]
    texts = 0
    for k in range(60):
        lo = float(rng.uniform(-1e5, 1e5))
        hi = lo + float(10 ** rng.uniform(-4, 6))
        axis.setStyle(**{**defaults, **styles[k % len(styles)]})
        axis.setGrid([False, 80, 255][k % 3])
        axis.setTicks([[(lo, "low"), ((lo + hi) / 2, "mid"), (hi, "high")], []]
                      if k % 5 == 4 else None)
        plot.getViewBox().setRange(xRange=(lo, hi), yRange=(lo, hi), padding=0)
        widget.resize(int(rng.integers(200, 900)), int(rng.integers(150, 700)))
        qtbot.wait(1)
        widget.grab()
        want = pyqtgraphs(axis)
        assert_same_specs(ours(axis), want, (orientation, k, lo, hi))
        texts += want is not None and len(want[2])
    assert texts > 100                                    # labels were compared too


def test_the_spec_memo_gives_the_last_specs_only_while_nothing_changed(dashboard, qtbot):
    d = dashboard
    d.set_runs(model_with(20_000))
    d.refresh()
    d.grab()
    axis = d.loss_plot.getAxis("left")        # a GridAxis: values, grid lines
    first = specs_of(axis, type(axis).generateDrawSpecs)
    assert specs_of(axis, type(axis).generateDrawSpecs) is first     # nothing changed
    grid_lines = axis.grid_specs
    specs_of(axis, type(axis).generateDrawSpecs)
    assert axis.grid_specs is grid_lines       # GridLines keeps its mapped lines
    changes = [lambda: d.loss_plot.setYRange(0.3, 0.9, padding=0),
               lambda: axis.setStyle(tickLength=-7),
               lambda: axis.setPen((200, 0, 0)),
               lambda: axis.setTickSpacing(major=0.25, minor=0.05),
               lambda: d.resize(900, 640)]
    last = first
    for change in changes:
        change()
        qtbot.wait(5)
        d.grab()
        now = specs_of(axis, type(axis).generateDrawSpecs)
        assert now is not last
        # what GridAxis builds from pyqtgraph's specs for the same state
        want = specs_of(axis, lambda a, p: type(a)._grid_specs(
            a, pg.AxisItem.generateDrawSpecs(a, p), pg.mkColor(pg.getConfigOption("background"))))
        assert_same_specs(now, want)
        last = now
    # the bars' axis: a new label each live step, same range and size -> same specs
    bars = d.bars_plot.getAxis("bottom")
    d.select_row(100)
    d.grab()
    before = bars._specs_memo[1]
    d.select_row(101)                          # a new label text ("..., step 101")
    d.grab()
    assert bars._specs_memo[1] is before and bars.labelText.endswith("101")
