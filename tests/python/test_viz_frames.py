"""What keeps the monitor's frames short at 100,000 steps without changing
what is drawn: the panels' own peak downsampling of curves (a one-step spike
and the newest step stay), the bin caches that a live append only extends,
and refreshes that leave unchanged panels alone."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import sys

import numpy as np
import pytest

from cgrad.viz import downsample as ds
from cgrad.viz.model import RunModel, decode_delta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_viz_model import make_delta  # noqa: E402

N = 100_000


def spiky(n, rng):
    y = 1.0 + 0.01 * rng.standard_normal(n)
    y[77_777] = 40.0          # one-step explosion
    y[33_333] = -5.0          # one-step dip
    return y


# ------------------------------------------------------------------ Qt-free
def test_peak_line_keeps_one_step_spikes_and_both_ends_at_100k_steps():
    rng = np.random.default_rng(0)
    x = np.arange(N)
    y = spiky(N, rng)
    xs, ys = ds.peak_line(x, y, 0, N, 1000)
    assert len(xs) <= 2 * 1000 + 2                    # it downsampled to ~2 points a bin
    assert ys.max() == 40.0 and xs[np.argmax(ys)] == 77_777
    assert ys.min() == -5.0 and xs[np.argmin(ys)] == 33_333
    assert xs[0] == 0 and xs[-1] == N - 1             # the line reaches both ends
    assert (np.diff(xs) >= 0).all()                   # drawn left to right
    # every bin's max and min are there, at steps inside the bin
    start, width, n_bins = ds.bin_grid(0, N, 1000)
    assert width == 100 and n_bins == 1000
    per_bin = y.reshape(n_bins, 100)
    bin_of = (xs[1:-1] // width).astype(int)
    got_max = np.full(n_bins, -np.inf)
    got_min = np.full(n_bins, np.inf)
    np.maximum.at(got_max, bin_of, ys[1:-1])
    np.minimum.at(got_min, bin_of, ys[1:-1])
    assert np.array_equal(got_max, per_bin.max(axis=1))
    assert np.array_equal(got_min, per_bin.min(axis=1))


def test_peak_line_gaps_and_short_ranges():
    x = np.arange(500)
    y = np.linspace(0.0, 1.0, 500)
    y[10], y[20] = np.inf, np.nan
    xs, ys = ds.peak_line(x, y, 0, 500, 1000)         # fewer rows than bins: the rows
    assert np.array_equal(xs, x) and np.isnan(ys[[10, 20]]).all()
    assert np.array_equal(np.delete(ys, [10, 20]), np.delete(y, [10, 20]))
    z = np.full(N, np.nan)
    z[50_000] = 3.0
    xs, ys = ds.peak_line(np.arange(N), z, 0, N, 1000)
    assert np.nanmax(ys) == 3.0 and xs[np.nanargmax(ys)] == 50_000
    assert np.count_nonzero(np.isfinite(ys)) == 2     # both points of its bin; the rest gaps


def test_peak_line_cache_extends_on_append_and_matches_a_fresh_line():
    rng = np.random.default_rng(1)
    x = np.arange(N)
    y = spiky(N, rng)
    cache = ds.PeakLineCache()
    source = object()
    for n in (60_000, 60_100, 60_250, 61_000, 77_778, N):   # live appends, same grid
        got = cache.line(source, x[:n], y[:n], 0, N, 1000)
        want = ds.peak_line(x[:n], y[:n], 0, N, 1000)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), n
    assert cache.rebuilds == 1
    cache.line(object(), x, y, 0, N, 1000)            # other rows: rebuilt
    assert cache.rebuilds == 2


@pytest.mark.parametrize("max_bins", [300, 5_000])    # bins from the pyramid / from the rows
def test_peak_bin_cache_extends_on_append_and_matches_a_direct_binning(max_bins):
    rng = np.random.default_rng(2)
    steps = np.arange(20_000)
    values = rng.standard_normal((20_000, 5)).astype(np.float32)
    values[12_345, 3] = np.inf
    cache = ds.PeakBinCache()
    source = object()
    start, width, n_bins, block = cache.grid(0, 20_000, max_bins)
    assert (block > 0) == (max_bins == 300)
    assert n_bins <= max_bins and width <= ds.bin_grid(0, 20_000, max_bins)[1] * 9 / 8
    for n in (5_000, 5_001, 5_100, 9_999, 20_000):
        got, got_start, got_width = cache.bins(source, steps[:n], values[:n], 0, 20_000, max_bins)
        want = ds.bin_rows(steps[:n], values[:n], start, width, n_bins)
        assert (got_start, got_width) == (start, width) and np.array_equal(got, want), n
    assert cache.rebuilds == 1
    got, _, _ = cache.bins(source, steps[:7_000], values[:7_000], 0, 20_000, max_bins)  # replay
    assert np.array_equal(got, ds.bin_rows(steps[:7_000], values[:7_000], start, width, n_bins))
    assert cache.rebuilds == 2
    if block == 0:     # narrow bins: the grid is bin_grid's, as peak_bins makes it
        assert np.array_equal(got, ds.peak_bins(steps[:7_000], values[:7_000], 0, 20_000,
                                                max_bins)[0])


def test_bin_cache_codes_equal_a_fresh_encoding_as_bins_levels_and_layers_change():
    rng = np.random.default_rng(4)
    steps = np.arange(30_000)
    values = rng.normal(-2, 1, (30_000, 6)).astype(np.float32)
    values[:, 2] = -3e38                                    # a dead layer (LOG_ZERO)
    values[22_222, 4] = np.inf
    cache = ds.PeakBinCache()
    source = object()
    cols = np.arange(6)
    for n, x1, lo, picked in [(10_000, 30_000, -6, cols), (10_001, 30_000, -6, cols),
                              (12_000, 30_000, -6, cols), (12_000, 30_000, -5, cols),  # new levels
                              (12_500, 30_000, -5, cols[::2]),                        # a filter
                              (25_000, 30_000, -5, cols[::2]), (30_000, 20_000, -5, cols),
                              (30_000, 30_000, -5, cols)]:
        image, _, _ = cache.bins(source, steps[:n], values[:n], 0, x1, 700)
        got = cache.codes(picked, lo, 1.0)
        assert np.array_equal(got, ds.encode(image[:, picked], lo, 1.0)), (n, x1, lo)
    assert (got[:, 2] == ds.CODE_ZERO).all() and (got == ds.CODE_NONFINITE).sum() == 1


@pytest.mark.parametrize("value", [-3.5, 0, 0.2, 7, 7.5, 99.9, 1e30, -1e30])
@pytest.mark.parametrize("side", ["left", "right"])
def test_search_on_integer_steps_matches_numpy(value, side):
    steps = np.array([0, 2, 7, 7, 8, 50, 99], np.int64)
    assert ds.search(steps, value, side) == int(np.searchsorted(steps.astype(float), value, side))


# ------------------------------------------------------------------ panels
pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")


def model_with(n, n_layers=3, spikes=()):
    norm = np.full(n, 0.5)
    norm[np.arange(n) % 997 == 0] = 2.0                   # clipped steps
    for step, value in spikes:
        norm[step] = value
    model = RunModel()
    model.append(decode_delta(make_delta(0, n, n_layers=n_layers, norm=norm), 1))
    return model


@pytest.fixture
def dashboard(qtbot):
    from cgrad.viz.panels import Dashboard
    d = Dashboard()
    qtbot.addWidget(d)
    d.resize(1200, 800)
    d.show()
    qtbot.waitExposed(d)
    return d


def test_curves_at_100k_steps_keep_spikes_and_the_newest_step(dashboard, qtbot):
    d = dashboard
    model = model_with(N, spikes=[(54_321, 80.0), (N - 1, 60.0)])
    d.set_runs(model)
    d.refresh()
    d.grab()
    x, y = d.grad_pre.getOriginalDataset()                # what pyqtgraph was given
    assert len(x) < 5000
    assert y.max() == 80.0 and x[np.argmax(y)] == 54_321
    assert x[-1] == N - 1 and y[-1] == 60.0               # a spike on the newest step
    lx, _ = d.loss_curves[0].getOriginalDataset()
    assert lx[0] == 0 and lx[-1] == N - 1
    mx, my = d.grad_clip_markers.getOriginalDataset()
    assert set(range(0, N, 997)) <= set(mx.astype(int))   # every clipped step keeps its marker
    assert (my == 2.0).sum() == len(range(0, N, 997))


def test_zooming_in_shows_every_step_of_the_window(dashboard, qtbot):
    d = dashboard
    d.set_runs(model_with(N))
    d.refresh()
    d.loss_plot.setXRange(40_000, 40_300, padding=0)
    d.refresh_view()                                      # what the window's timer does
    x, _ = d.grad_pre.getOriginalDataset()
    inside = x[(x >= 40_000) & (x <= 40_300)]
    assert np.array_equal(inside, np.arange(40_000, 40_301))


def spy(monkeypatch, item, name="setData"):
    calls = []
    real = getattr(item, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(item, name, wrapper)
    return calls


def test_refresh_leaves_unchanged_panels_alone(dashboard, qtbot, monkeypatch):
    d = dashboard
    model = model_with(50_000)
    d.set_runs(model)
    d.refresh()
    d.grab()
    lines = [d.loss_curves[0], d.lr_curves[0], d.grad_pre, d.grad_post, d.grad_clip]
    counts = {id(item): spy(monkeypatch, item) for item in lines + [d.grad_clip_markers]}
    image_calls = spy(monkeypatch, d.heat_image, "setImage")
    rebuilds = d._heat_bins.rebuilds
    px = max(int(d.heat_plot.getViewBox().width()), 16)
    width_changes = d._heat_bins.grid(0, 50_000, px)[1] != d._heat_bins.grid(0, 50_100, px)[1]
    axis_calls = spy(monkeypatch, d.heat_plot.getAxis("left"), "setTicks")

    d.refresh()                                           # nothing new: nothing redrawn
    assert sum(map(len, counts.values())) == 0 and not image_calls and not axis_calls

    # a live append of unclipped steps: the curves take the new steps, the
    # clip markers and the layer names stay as they are
    model.append(decode_delta(make_delta(50_000, 100, n_layers=3), 1))
    d.refresh()
    assert all(len(counts[id(item)]) == 1 for item in lines)
    assert len(counts[id(d.grad_clip_markers)]) == 0 and not axis_calls
    assert len(image_calls) == 1
    x, _ = d.grad_pre.getOriginalDataset()
    assert x[-1] == 50_099
    # and the heatmap bins were extended, not rebuilt (unless the bin width changed)
    assert d._heat_bins.rebuilds == rebuilds + width_changes


def test_grid_is_opaque_under_the_data_and_keeps_crossings_dark(dashboard):
    import pyqtgraph as pg
    from PyQt6 import QtGui
    d = dashboard
    d.set_runs(model_with(1000))
    d.refresh()
    d.grab()                                              # the axes compute their lines
    plot = d.loss_plot
    assert plot.getAxis("bottom").zValue() < plot.grid_lines.zValue() \
        < plot.getViewBox().zValue()
    bg = pg.mkColor(pg.getConfigOption("background"))
    for name in ("bottom", "left"):
        specs = plot.getAxis(name).grid_specs
        assert specs, name
        for pen, _, _ in specs:
            c = pen.color()
            assert c.alpha() == 255
            assert c.red() == c.green() == c.blue() and 0 < c.red() < bg.red()   # a light grey
    # the grabbed pixels: a vertical grid line keeps its colour where a
    # lighter horizontal line crosses it (no gaps cut into it)
    image = d.canvas.grab().toImage()
    axis = plot.getAxis("bottom")
    pen, p1, p2 = min(axis.grid_specs, key=lambda spec: spec[0].color().lightness())
    top = d.canvas.mapFromScene(axis.mapToScene(p1))
    bottom = d.canvas.mapFromScene(axis.mapToScene(p2))
    ys = range(min(top.y(), bottom.y()) + 2, max(top.y(), bottom.y()) - 2)
    darkest = pen.color().lightness()
    columns = [[QtGui.QColor(image.pixel(x, y)).lightness() for y in ys]
               for x in (top.x() - 1, top.x(), top.x() + 1)]
    # the pixel column it landed on: the one most of whose pixels have its
    # colour (the data, drawn over the grid, may cover part of it)
    line = max(columns, key=lambda c: sum(v == darkest for v in c))
    assert len(ys) > 50 and sum(v == darkest for v in line) > len(ys) // 4
    assert max(line) <= darkest                           # no lighter pixel on the line


def test_a_live_frame_lays_nothing_out_again(dashboard, qtbot):
    """New steps move the x range (new tick labels) and the selected step
    (new bar label): no layout of the window may be invalidated by that,
    and no axis may change its size."""
    from PyQt6 import QtWidgets
    d = dashboard
    model = model_with(50_000, n_layers=20)
    d.set_runs(model)
    for _ in range(3):
        d.refresh()
        qtbot.wait(10)                                    # layout requests handled
        d.grab()
    layouts = [QtWidgets.QGraphicsWidget.layout(item) for item in d.canvas.scene().items()
               if isinstance(item, QtWidgets.QGraphicsWidget)]
    layouts = [lay for lay in layouts if lay is not None]
    axes = [p.getAxis(name) for p in d.step_plots + [d.bars_plot] for name in ("left", "bottom")]
    sizes = [(a.width(), a.height()) for a in axes]
    assert len(layouts) > 5 and all(lay.isActivated() for lay in layouts)
    for first in range(50_000, 51_000, 100):
        model.append(decode_delta(make_delta(first, 100, n_layers=20), 1))
        d.refresh()
        d.grab()
        assert d.bars_plot.getAxis("bottom").labelText.endswith(str(first + 99))   # it did change
        assert all(lay.isActivated() for lay in layouts), first
        assert [(a.width(), a.height()) for a in axes] == sizes, first


def test_event_kinds_without_steps_are_skipped_when_painting(dashboard):
    from PyQt6 import QtWidgets
    d = dashboard
    d.set_runs(model_with(5_000))
    d.refresh()
    d.grab()
    flag = QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemHasNoContents
    kinds = {}
    for _, kind, item in d.event_lines:
        kinds.setdefault(kind, set()).add(bool(item.flags() & flag) == (item.steps.size == 0))
    assert kinds["clip"] == {True} and all(v == {True} for v in kinds.values())
    clip = next(item for _, kind, item in d.event_lines if kind == "clip")
    assert clip.steps.size and not clip.flags() & flag
    clip.setSteps([])
    assert clip.flags() & flag


def test_axes_set_their_label_again_only_when_it_changes(dashboard, monkeypatch):
    d = dashboard
    d.set_runs(model_with(20_000))
    d.refresh()
    d.grab()
    axes = [p.getAxis("bottom") for p in d.step_plots + [d.bars_plot]] + \
        [p.getAxis("left") for p in d.step_plots]
    calls = {id(a): spy(monkeypatch, a.label, "setHtml") for a in axes}
    before = [a.label.toHtml() for a in axes]
    for x0 in (1_000, 2_000, 5_000):                      # pans: every axis gets a new range
        d.loss_plot.setXRange(x0, x0 + 3_000, padding=0)
        d.refresh_view()
        d.grab()
    assert sum(map(len, calls.values())) == 0
    assert [a.label.toHtml() for a in axes] == before
    assert all(a.picture is not None for a in axes[:4])  # the ticks were drawn for the new range
    d.heat_plot.setLabel("bottom", "step (new)")
    assert len(calls[id(d.heat_plot.getAxis("bottom"))]) == 1
    assert "step (new)" in d.heat_plot.getAxis("bottom").label.toHtml()


def test_axes_share_ticks_and_give_pyqtgraphs_own(qtbot, monkeypatch):
    import pyqtgraph as pg
    from cgrad.viz.items import GridAxis, QuietAxis
    rng = np.random.default_rng(8)
    quiet, grid, plain = QuietAxis("bottom"), GridAxis("bottom"), pg.AxisItem("bottom")
    for _ in range(200):
        lo = float(rng.uniform(-1e6, 1e6))
        hi = lo + float(10 ** rng.uniform(-3, 7))
        size = float(rng.uniform(50, 2000))
        want = plain.tickValues(lo, hi, size)
        assert quiet.tickValues(lo, hi, size) == want == grid.tickValues(lo, hi, size)
    quiet.setTickSpacing(major=1000, minor=250)                # state the ticks depend on
    assert quiet.tickValues(0, 5000, 800)[0] == (1000, [0.0, 1000.0, 2000.0, 3000.0, 4000.0,
                                                        5000.0])
    computed = []
    real = pg.AxisItem.tickValues
    monkeypatch.setattr(pg.AxisItem, "tickValues",
                        lambda self, *a: computed.append(1) or real(self, *a))
    other = GridAxis("bottom")
    first = grid.tickValues(3.0, 12345.0, 640.0)
    first[0][1].append(-1.0)                                  # a caller's copy
    assert other.tickValues(3.0, 12345.0, 640.0) == real(plain, 3.0, 12345.0, 640.0)
    assert len(computed) == 1                                 # the second axis shared the first's


def test_event_lines_are_one_array_of_one_line_per_pixel_column(dashboard, qtbot):
    """The lines an EventLines item paints: one array, one vertical line
    per device pixel column holding events (its first event), at that
    event's step, spanning the item's strip; kept for a repaint of the same
    view and made again when the view moves."""
    from PyQt6 import QtCore
    from cgrad.viz.items import line_array
    d = dashboard
    model = model_with(20_000)
    d.set_runs(model)
    d.refresh()
    d.grab()
    clip = next(item for p, kind, item in d.event_lines if kind == "clip" and p is d.grad_plot)
    steps = np.arange(0, 20_000, 997.0)
    assert np.array_equal(clip.steps, steps)
    for x0, x1 in ((0, 20_000), (3_900, 4_100), (-500, 60_000)):
        d.loss_plot.setXRange(x0, x1, padding=0)
        d.refresh_view()
        d.grab()
        lines = clip._lines
        xs = clip.visible_steps()
        rect = clip.boundingRect()
        inside = steps[(steps >= rect.left()) & (steps <= rect.right())]
        px = clip.pixelWidth()
        # one line per pixel column that holds events: its first event
        columns = np.floor(inside / px)
        assert np.array_equal(xs, inside[np.r_[True, np.diff(columns) > 0]])
        assert len(lines) == xs.size == len(np.unique(columns))
        assert xs.size >= 1
        for line, x in zip(lines, xs):
            assert line.x1() == line.x2() == x                         # vertical, at the step
            assert line.y1() == rect.top() and line.y2() == pytest.approx(
                rect.top() + rect.height() * 0.06)                     # the clip rug's strip
        same = clip._lines
        d.grab()
        assert clip._lines is same                                     # a repaint reuses them
    empty = line_array([], [], [], [])
    assert len(empty) == 0
    two = line_array([1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0])
    assert list(two) == [QtCore.QLineF(1, 3, 5, 7), QtCore.QLineF(2, 4, 6, 8)]
