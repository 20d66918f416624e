"""The plots: loss, lr per group, global grad norm (pre/post clip, threshold,
clip markers), the layer x step heatmap with its colour bar, and bars of the
per-layer norms at the selected step. One linked step axis; event markers
and alert highlights on every step plot.

The Dashboard is a view: ``set_runs`` gives it models, ``refresh`` redraws
what changed. It is only ever called on the GUI thread.
"""
import os

# Qt's raster engine hands every fill of 96 or more spans (a tall event line,
# a chunk of 16 curve segments, a gradient) to its GUI thread pool and waits
# for it: on a 2-core machine the hand-off costs more than these fills (an
# alert strip of 100 lines: ~2.4 ms with it, ~0.8 ms without). Qt reads the
# switch once, when the pool is first asked for, so it is set on import; the
# fills are the same code run serially (same pixels). A value already set wins.
os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PyQt6 import QtCore, QtGui, QtWidgets, sip  # noqa: E402

from . import downsample as ds
from .items import (ALERT_RGBA, EVENT_STYLE, GROUP_COLOURS, NONFINITE_RGB, RUN_COLOURS,
                    SELECT_RGB, ZERO_RGB, EventLines, GridAxis, GridLines, QuietAxis, heatmap_lut,
                    html_key)
from .model import LOG_NONFINITE, LOG_ZERO

BAR_MODES = {
    "grad norm": "layer_log",
    "max |g|": "layer_grad_max",
    "update / weight": "layer_update_ratio",
}
MAX_NAME_CHARS = 26
EMPTY = ("empty",)   # _set_data key of an item showing no data
# Curve bins per pixel column. Bins have a whole number of steps, so their
# edges drift against the pixel columns; a column loses its own max only to
# a bin that straddles its edge, and two bins a column keep that to the
# column's outer quarter (one spike per bin is never lost either way).
LINE_BINS_PER_PIXEL = 2


def configure_pyqtgraph():
    # Light background: the PNG exports go into reports and CI artefacts.
    pg.setConfigOptions(background="w", foreground="k", antialias=False,
                        imageAxisOrder="col-major")


def add_plot(layout, axis_cls, sides, **where):
    """layout.addPlot(**where) with axis_cls axes on the given sides, owned
    by the plot like pyqtgraph's own axes (made with parent=plot), not by
    their Python wrappers, which the collector may free while the scene
    still paints them."""
    plot = layout.addPlot(**where)
    axes = {side: axis_cls(side) for side in sides}
    plot.setAxisItems(axes)
    for axis in axes.values():
        sip.transferto(axis, plot)  # the plot's C++ side owns it from here
    return plot


def elide(name, n=MAX_NAME_CHARS):
    return name if len(name) <= n else name[:n // 2 - 1] + "\u2026" + name[-(n - n // 2):]


class Dashboard(QtWidgets.QWidget):
    """All panels of the window, on the primary run plus compared runs."""

    step_selected = QtCore.pyqtSignal(int)

    def __init__(self, parent=None):
        configure_pyqtgraph()
        super().__init__(parent)
        self.model = None          # primary RunModel
        self.compare = []          # other RunModels overlaid on loss / grad norm
        self.alerts = []           # Alerts of the primary run
        self.limit = None          # replay: rows shown (None = all)
        self.selected_row = None
        self.follow_window = None  # steps shown at the right edge, None = off
        self.bar_mode = "grad norm"
        self.layer_filter = "auto"   # 'param' | 'module' | 'all' | 'auto'
        self._lut = heatmap_lut()
        self._brushes = [pg.mkBrush(*rgba) for rgba in self._lut]   # one per heatmap code
        self._heatmap_dirty = True
        self.heat_codes = np.zeros((0, 0), np.uint8)   # (bins, shown layers) last drawn
        self._heat_bins = ds.PeakBinCache()
        self._heat_key = None       # what the heatmap image on screen was made from
        self._cbar_levels = None
        self._shown_rows = 0
        self._dead_drawn = ()       # (step, row, length) of the dead-layer rectangles shown
        self._axis_drawn = None     # (ticks, n_layers) of the layer axis shown
        self._bars_drawn = None
        self._line_caches = {}      # id(plot item) -> PeakLineCache
        self._drawn = {}            # id(plot item) -> key of the data it shows (_set_data)
        self._build()

    # ------------------------------------------------------------ layout
    def _build(self):
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setMinimumSize(320, 240)
        lay = self.canvas.ci
        lay.setSpacing(2)

        self.loss_plot = self._step_plot(0, "loss")
        self.lr_plot = self._step_plot(1, "lr")
        self.grad_plot = self._step_plot(2, "grad norm")
        self.heat_plot = add_plot(lay, QuietAxis, ("left", "bottom"), row=3, col=0)
        self.heat_plot.setLabel("bottom", "step")
        self.heat_plot.setLabel("left", "layer")
        self.heat_plot.invertY(True)
        self.heat_plot.getAxis("left").enableAutoSIPrefix(False)
        self.heat_plot.setXLink(self.loss_plot)
        self.heat_plot.setMouseEnabled(x=True, y=False)
        self.heat_plot.getViewBox().setDefaultPadding(0.0)
        for p in (self.lr_plot, self.grad_plot):
            p.setXLink(self.loss_plot)
        self.step_plots = [self.loss_plot, self.lr_plot, self.grad_plot, self.heat_plot]

        self.heat_image = pg.ImageItem(axisOrder="col-major")
        self.heat_plot.getViewBox().addItem(self.heat_image, ignoreBounds=True)
        self.heat_plot.getViewBox().sigXRangeChanged.connect(self._on_x_range)
        # bins are made per pixel: a resize needs new ones as a zoom does
        self.heat_plot.getViewBox().sigResized.connect(self._on_x_range)
        self.loss_plot.getViewBox().sigResized.connect(self._on_x_range)
        self.heat_plot.scene().sigMouseClicked.connect(self._on_click)

        self.bars_plot = add_plot(lay, QuietAxis, ("left", "bottom"), row=3, col=1)
        self.bars_plot.setYLink(self.heat_plot)
        self.bars_plot.invertY(True)
        self.bars_plot.hideAxis("left")
        self.bars_plot.setMouseEnabled(x=False, y=False)
        # no title: with linked y the view boxes must start at the same height
        self.bars_plot.setLabel("bottom", "log10 grad norm")
        self.bars = pg.BarGraphItem(x0=[], y=[], height=[], width=[])
        self.bars_plot.addItem(self.bars)

        cbar_lay = lay.addLayout(row=3, col=2)
        self.cbar_plot = add_plot(cbar_lay, QuietAxis, ("right", "bottom", "left"), row=0, col=0)
        self.cbar_plot.hideAxis("bottom")
        self.cbar_plot.hideAxis("left")
        self.cbar_plot.showAxis("right")
        self.cbar_plot.setLabel("right", "log10 grad norm")
        self.cbar_plot.getAxis("right").enableAutoSIPrefix(False)
        self.cbar_plot.setMouseEnabled(x=False, y=False)
        self.cbar_plot.setMaximumWidth(80)
        self.cbar_image = pg.ImageItem(axisOrder="col-major")
        self.cbar_plot.addItem(self.cbar_image)
        self.cbar_plot.getViewBox().setDefaultPadding(0.0)
        self.cbar_key = cbar_lay.addLabel(
            html_key([("0", ZERO_RGB), ("NaN/Inf", NONFINITE_RGB)]).replace("&nbsp;&nbsp;", "<br>"),
            row=1, col=0, size="8pt")

        self.loss_legend = self._legend(0)
        self.lr_legend = self._legend(1)
        self.grad_legend = self._legend(2)
        lay.layout.setRowStretchFactor(3, 2)
        lay.layout.setColumnStretchFactor(0, 5)
        lay.layout.setColumnStretchFactor(1, 1)
        self.bars_plot.setMinimumWidth(150)

        # curves
        self.loss_curves = []
        self.grad_compare_curves = []
        self.lr_curves = []
        self.grad_pre = self.grad_plot.plot(pen=pg.mkPen(RUN_COLOURS[0], width=1.0))
        self.grad_post = self.grad_plot.plot(pen=pg.mkPen((44, 160, 44), width=1))
        self.grad_clip = self.grad_plot.plot(
            pen=pg.mkPen((90, 90, 90), width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.grad_clip_markers = self.grad_plot.plot(
            pen=None, symbol="t1", symbolSize=7, symbolPen=None,
            symbolBrush=EVENT_STYLE["clip"][1])
        self.grad_spike_markers = pg.ScatterPlotItem(
            size=13, pen=pg.mkPen((255, 0, 200), width=2), brush=None, symbol="o")
        self.grad_plot.addItem(self.grad_spike_markers)
        for item, name in ((self.grad_pre, "pre-clip"), (self.grad_post, "post-clip"),
                           (self.grad_clip, "clip threshold"),
                           (self.grad_clip_markers, "clipped step"),
                           (self.grad_spike_markers, "alert")):
            self.grad_legend.addItem(item, name)

        # markers on every step plot
        self.event_lines = []   # (plot, kind, EventLines)
        self.alert_lines = []
        self.select_lines = []
        for p in self.step_plots:
            on_heatmap = p is self.heat_plot
            for kind, (_, rgb, style, span) in EVENT_STYLE.items():
                width = 2.0 if kind == "nonfinite" else 1.0
                # the clip rug covers fewer heatmap rows
                item = EventLines(rgb, style, width=width, span=span * 0.5 if span < 1 and
                                  on_heatmap else span)
                p.getViewBox().addItem(item, ignoreBounds=True)
                self.event_lines.append((p, kind, item))
            # alerts: a strip of marks along the top edge (the data stay readable)
            alert = EventLines(ALERT_RGBA[:3], width=3.0, alpha=ALERT_RGBA[3],
                               span=0.03 if on_heatmap else 0.08, from_top=True)
            p.getViewBox().addItem(alert, ignoreBounds=True)
            self.alert_lines.append(alert)
            line = pg.InfiniteLine(angle=90, movable=True,
                                   pen=pg.mkPen(SELECT_RGB, width=1, style=QtCore.Qt.PenStyle.DashLine))
            line.setZValue(20)
            line.setVisible(False)
            line.sigDragged.connect(self._on_line_dragged)
            p.getViewBox().addItem(line, ignoreBounds=True)
            self.select_lines.append(line)
        self.dead_rects = []

        # step scrubber and bar mode
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._on_slider)
        self.step_label = QtWidgets.QLabel("step -")
        self.step_label.setMinimumWidth(90)
        self.mode_box = QtWidgets.QComboBox()
        self.mode_box.addItems(list(BAR_MODES))
        self.mode_box.currentTextChanged.connect(self._on_bar_mode)
        bottom = QtWidgets.QHBoxLayout()
        bottom.addWidget(QtWidgets.QLabel("selected step:"))
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.step_label)
        self.layer_box = QtWidgets.QComboBox()
        self.layer_box.addItems(["parameters", "modules", "all"])
        self.layer_box.currentTextChanged.connect(self._on_layer_filter)
        bottom.addWidget(QtWidgets.QLabel("layers:"))
        bottom.addWidget(self.layer_box)
        bottom.addWidget(QtWidgets.QLabel("bars:"))
        bottom.addWidget(self.mode_box)
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.canvas, 1)
        outer.addLayout(bottom)

    def _step_plot(self, row, label):
        p = add_plot(self.canvas.ci, GridAxis, ("left", "bottom"), row=row, col=0)
        p.grid_lines = GridLines(p, [p.getAxis("bottom"), p.getAxis("left")])
        p.setLabel("left", label)
        p.getAxis("left").enableAutoSIPrefix(False)   # "479 (x0.001)" reads badly for a loss
        # the panels downsample themselves (peak, bins per pixel, cached:
        # see _line); pyqtgraph's own pass would redo every step every frame
        p.setDownsampling(ds=1, auto=False, mode="peak")
        p.setClipToView(True)
        p.showGrid(x=True, y=True, alpha=0.15)
        p.getViewBox().setAutoVisible(y=True)
        p.getAxis("bottom").setStyle(showValues=False)
        return p

    def _legend(self, row):
        legend = pg.LegendItem(labelTextSize="8pt", verSpacing=-6)
        legend.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred,
                             QtWidgets.QSizePolicy.Policy.Fixed)
        self.canvas.ci.addItem(legend, row=row, col=1, colspan=2)
        self.canvas.ci.layout.setAlignment(
            legend, QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        return legend

    # ------------------------------------------------------------ input
    def set_runs(self, model, compare=(), alerts=()):
        if model is not self.model:
            self.selected_row = None
            self._shown_rows = 0
        self.model = model
        self.compare = [m for m in compare if m is not model]
        self.alerts = list(alerts)
        self._heatmap_dirty = True

    def n_rows(self):
        if self.model is None:
            return 0
        return self.model.n if self.limit is None else min(self.model.n, self.limit)

    def select_step(self, step):
        if self.model is None or self.model.n == 0:
            return
        self.select_row(self.model.row_of_step(step))

    def select_row(self, row):
        n = self.n_rows()
        if n == 0:
            return
        row = int(min(max(row, 0), n - 1))
        changed = row != self.selected_row
        self.selected_row = row
        if self.slider.value() != row:
            self.slider.blockSignals(True)
            self.slider.setValue(row)
            self.slider.blockSignals(False)
        self._draw_selection()
        if changed:
            self.step_selected.emit(int(self.model.steps[row]))

    def move_selection(self, delta_rows):
        if self.selected_row is None:
            self.select_row(self.n_rows() - 1)
        else:
            self.select_row(self.selected_row + delta_rows)

    def _on_slider(self, value):
        self.select_row(value)

    def _on_line_dragged(self, line):
        self.select_step(line.value())

    def _on_bar_mode(self, mode):
        self.bar_mode = mode
        self._draw_bars()

    def _on_layer_filter(self, text):
        self.layer_filter = {"parameters": "param", "modules": "module", "all": "all"}[text]
        self.refresh()

    def shown_layers(self):
        """Model columns shown in the heatmap and bars, top to bottom."""
        m = self.model
        if m is None:
            return np.zeros(0, np.int64)
        kinds = [layer.get("kind", "param") for layer in m.layers]
        want = self.layer_filter
        if want == "auto":
            want = "param" if "param" in kinds else "all"
        if want == "all":
            return np.arange(len(kinds))
        cols = np.array([i for i, k in enumerate(kinds) if k == want], dtype=np.int64)
        return cols if cols.size else np.arange(len(kinds))

    def _on_x_range(self, *args):
        self._heatmap_dirty = True

    def _on_click(self, event):
        vb = self.heat_plot.getViewBox()
        if self.model is None or not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        pt = vb.mapSceneToView(event.scenePos())
        self.select_step(pt.x())

    # ------------------------------------------------------------ view
    def show_all(self):
        self.follow_window = None
        for p in self.step_plots:
            p.enableAutoRange(x=True, y=True)
        self._heatmap_dirty = True

    def show_recent(self, window):
        """x: the last ``window`` steps, following new ones; y: autoscale."""
        self.follow_window = int(window)
        self._apply_follow()
        for p in self.step_plots[:3]:
            p.enableAutoRange(y=True)

    def _apply_follow(self):
        if self.follow_window is None or self.model is None or self.n_rows() == 0:
            return
        last = float(self.model.steps[self.n_rows() - 1])
        first = float(self.model.steps[0])
        self.loss_plot.setXRange(max(first, last - self.follow_window), last, padding=0.01)

    # ------------------------------------------------------------ drawing
    def refresh(self):
        """Redraws from the models what changed since the last call: items
        whose data and view are unchanged are left alone (see _set_data), and
        the curve and heatmap bins are extended rather than rebuilt."""
        m = self.model
        n = self.n_rows()
        if m is None:
            return
        steps = m.steps[:n]
        self.slider.setRange(0, max(n - 1, 0))
        self._apply_follow()      # first: the curves are downsampled for the range shown
        self._draw_lines(n)
        self._draw_events(n)
        self._draw_alerts(n)
        self._update_layer_axis()
        # a selection on the newest step follows new steps (live bars)
        if n and (self.selected_row is None or self.selected_row == self._shown_rows - 1) \
                and self.selected_row != n - 1:
            self.select_row(n - 1)          # draws the selection and bars
        else:
            self._draw_selection()
        self._shown_rows = n
        self._heatmap_dirty = True
        self.refresh_heatmap()
        del steps

    def _draw_loss(self, n, grid):
        runs = [self.model] + self.compare
        while len(self.loss_curves) < len(runs):
            i = len(self.loss_curves)
            rgb = RUN_COLOURS[i % len(RUN_COLOURS)]
            self.loss_curves.append(self.loss_plot.plot(pen=pg.mkPen(rgb, width=1.0)))
            if i:
                self.grad_compare_curves.append(self.grad_plot.plot(
                    pen=pg.mkPen(rgb, width=1.2, style=QtCore.Qt.PenStyle.DotLine)))
        names = [elide(r.name, 30) for r in runs]
        if names != getattr(self, "_loss_legend_names", None):
            old = getattr(self, "_loss_legend_names", None) or []
            for curve in self.grad_compare_curves[:max(len(old) - 1, 0)]:
                self.grad_legend.removeItem(curve)
            self._loss_legend_names = names
            self.loss_legend.clear()
            for curve, name in zip(self.loss_curves, names):
                self.loss_legend.addItem(curve, name)
            for curve, name in zip(self.grad_compare_curves, names[1:]):
                self.grad_legend.addItem(curve, elide(name, 22) + " (pre)")
        for i, curve in enumerate(self.loss_curves):
            if i >= len(runs):
                self._set_data(curve, EMPTY, lambda: ([], []))
                if i:
                    self._set_data(self.grad_compare_curves[i - 1], EMPTY, lambda: ([], []))
                continue
            r = runs[i]
            rn = n if i == 0 else r.n
            self._line(curve, r, rn, r.loss[:rn], grid)
            if i:
                self._line(self.grad_compare_curves[i - 1], r, rn, r.grad_norm[:rn], grid)

    def _draw_lr(self, n, grid):
        m = self.model
        groups = m.lr.shape[1]
        while len(self.lr_curves) < groups:
            g = len(self.lr_curves)
            curve = self.lr_plot.plot(pen=pg.mkPen(GROUP_COLOURS[g % len(GROUP_COLOURS)], width=1.0))
            self.lr_curves.append(curve)
            self.lr_legend.addItem(curve, f"group {g}")
        for g, curve in enumerate(self.lr_curves):
            if g < groups:
                self._line(curve, m, n, m.lr[:n, g], grid, groups)
            else:
                self._set_data(curve, EMPTY, lambda: ([], []))

    def _draw_grad(self, n, grid):
        m = self.model
        self._line(self.grad_pre, m, n, m.grad_norm[:n], grid)
        self._line(self.grad_post, m, n, m.grad_norm_clipped[:n], grid)
        self._line(self.grad_clip, m, n, m.clip_max_norm[:n], grid)
        # markers: the highest and lowest clipped step of every pixel column
        clipped = m.clipped[:n]
        # keyed on the clipped steps held, not all rows: new unclipped steps
        # leave the markers as they are
        rows = np.flatnonzero(clipped)
        last = int(m.steps[rows[-1]]) if rows.size else -1
        self._line(self.grad_clip_markers, m, rows.size, None, grid, "clip", last=last,
                   subset=lambda: (m.steps[rows], m.grad_norm[rows]))

    def _draw_lines(self, n):
        grid = self._line_grid(n)
        self._draw_loss(n, grid)
        self._draw_lr(n, grid)
        self._draw_grad(n, grid)
        self._clip_curves_to_view()     # after: new curves start with the plot's clip

    def _clip_curves_to_view(self):
        """pyqtgraph's clip to view on the curves while the view is narrower
        than the data, off while x autoranges over all of it: a clip then keeps
        every point anyway (same pixels), but pyqtgraph slices every curve
        again on each range change, i.e. each live frame, on every plot.
        What lies outside the view is clipped by the ViewBox when painting."""
        clip = not self.loss_plot.getViewBox().autoRangeEnabled()[0]
        for p in self.step_plots[:3]:
            for item in p.listDataItems():
                # the clip markers never: a clip rebuilds their symbols (pyqtgraph's
                # ScatterPlotItem) and they are at most two a pixel column anyway
                want = clip and item is not self.grad_clip_markers
                if isinstance(item, pg.PlotDataItem) and item.opts["clipToView"] != want:
                    item.setClipToView(want)

    def _line_grid(self, n):
        """(x0, x1, bins, stride) the curves are downsampled to: the whole
        data while x autoranges, else the view and one view width either side
        (a pan or zoom shows data at once; the next tick redraws for it),
        at LINE_BINS_PER_PIXEL bins per device pixel of the view."""
        runs = [(self.model, n)] + [(r, r.n) for r in self.compare]
        ends = [(float(r.steps[0]), float(r.steps[k - 1]) + 1) for r, k in runs if k]
        if not ends:
            return 0.0, 1.0, 1, 1
        lo, hi = min(a for a, _ in ends), max(b for _, b in ends)
        vb = self.loss_plot.getViewBox()
        px = max(int(vb.width()), 16) * LINE_BINS_PER_PIXEL
        x0, x1, bins = lo, hi, px
        if not vb.autoRangeEnabled()[0]:
            v0, v1 = vb.viewRange()[0]
            span = max(v1 - v0, 1e-9)
            a, b = max(lo, v0 - span), min(hi, v1 + span)
            if b > a:
                x0, x1 = a, b
                bins = max(16, int(np.ceil(px * (x1 - x0) / span)))
        return x0, x1, bins, self.model.step_stride()

    def _line(self, item, model, rows, values, grid, *extra, subset=None, last=None):
        """item shows ``values`` (rows of ``model``) peak-downsampled to ``grid``;
        ``subset``: a function giving (steps, values) instead, with ``rows``
        of them, the last at step ``last``."""
        x0, x1, bins, stride = grid
        start, width, n_bins = ds.bin_grid(x0, x1, bins, stride)
        if last is None:
            last = int(model.steps[rows - 1]) if rows else -1
        # the grid's end only matters up to the data's end
        key = (model, rows, start, width, min(start + n_bins * width, last + 1)) + extra
        cache = self._line_caches.get(id(item))
        if cache is None:
            cache = self._line_caches[id(item)] = ds.PeakLineCache()

        def data():
            # rows: of the model, or of the subset (which only grows at its end too)
            x, y = subset() if subset is not None else (model.steps[:rows], values)
            return cache.line(model, x, y, x0, x1, bins, stride)
        self._set_data(item, key, data)

    def _set_data(self, item, key, data):
        """item.setData(*data()) unless it already shows the data of ``key``.

        key: (model, rows, ...) or EMPTY. Rows once appended never change
        (RunModel.append), so equal keys mean equal data; setData costs a
        copy, bounds and a downsample of every step, and a repaint."""
        if self._drawn.get(id(item)) == key:
            return
        item.setData(*data())
        self._drawn[id(item)] = key

    def event_steps(self, n=None):
        """kind -> steps of the markers drawn (clip included)."""
        m = self.model
        n = self.n_rows() if n is None else n
        last = m.steps[n - 1] if n else -1
        out = {kind: [] for kind in EVENT_STYLE}
        out["clip"] = m.steps[:n][m.clipped[:n]]
        for e in m.events:
            if e.get("step", 0) > last:
                continue
            kind = e.get("kind")
            out[kind if kind in EVENT_STYLE else "other"].append(e["step"])
        skipped = m.steps[:n][m.skipped[:n]]
        out["skipped"] = np.union1d(np.asarray(out["skipped"], dtype=np.float64), skipped)
        return out

    def _draw_events(self, n):
        steps = self.event_steps(n)
        for _, kind, item in self.event_lines:
            item.setSteps(steps[kind])

    def _draw_alerts(self, n):
        m = self.model
        last = m.steps[n - 1] if n else -1
        shown = [a for a in self.alerts if a.step <= last]
        highlight = [a.step for a in shown]
        for item in self.alert_lines:
            item.setSteps(highlight)
        spikes = [(a.step, a.value) for a in shown if a.kind == "spike"]
        self._set_data(self.grad_spike_markers, ("spikes", tuple(spikes)),
                       lambda: ([x for x, _ in spikes], [y for _, y in spikes]))
        row_of = {int(c): r for r, c in enumerate(self.shown_layers())}
        dead = tuple((a.step, row_of[a.layer_id], max(a.end_step - a.step, 1)) for a in shown
                     if a.kind == "dead_layer" and a.layer_id in row_of)
        if dead == self._dead_drawn:
            return   # the rectangles shown are these (re-adding them repaints the heatmap)
        self._dead_drawn = dead
        for rect in self.dead_rects:
            self.heat_plot.getViewBox().removeItem(rect)
        self.dead_rects = []
        for step, row, length in dead:
            rect = QtWidgets.QGraphicsRectItem(step, row - 0.5, length, 1.0)
            pen = pg.mkPen((255, 0, 200, 190), width=1)
            pen.setCosmetic(True)
            rect.setPen(pen)
            rect.setZValue(10)
            self.heat_plot.getViewBox().addItem(rect, ignoreBounds=True)
            self.dead_rects.append(rect)

    def _update_layer_axis(self):
        m = self.model
        all_names = m.layer_names
        names = [all_names[c] for c in self.shown_layers()]
        n_layers = len(names)
        vb_height = max(self.heat_plot.getViewBox().height(), 50)
        every = max(1, int(np.ceil(n_layers / max(vb_height / 13.0, 1))))
        ticks = [(i, elide(names[i])) for i in range(0, n_layers, every)]
        # unchanged ticks are not set again: that re-lays out 200 names
        if (ticks, n_layers) != self._axis_drawn:
            self._axis_drawn = (ticks, n_layers)
            self.heat_plot.getAxis("left").setTicks([ticks, []])
            fm = QtGui.QFontMetrics(self.heat_plot.getAxis("left").font())
            width = max([fm.horizontalAdvance(t) for _, t in ticks] + [30]) + 34
            for p in self.step_plots:
                p.getAxis("left").setWidth(int(min(width, 230)))
        self.heat_plot.setYRange(-0.5, max(n_layers, 1) - 0.5, padding=0)

    def refresh_view(self):
        """After a zoom or pan: the curves and the heatmap for the new range."""
        if not self._heatmap_dirty or self.model is None:
            return
        self._resolve_ranges()
        self._draw_lines(self.n_rows())
        self.refresh_heatmap()

    def refresh_heatmap(self):
        """Rebuilds the heatmap image for the visible steps (peak bins)."""
        if not self._heatmap_dirty or self.model is None:
            return
        self._resolve_ranges()
        self._heatmap_dirty = False
        m = self.model
        n = self.n_rows()
        vb = self.heat_plot.getViewBox()
        if n == 0 or m.n_layers == 0:
            self._heat_key = None
            self.heat_image.clear()
            self._draw_colourbar(*m.log_levels())
            return
        (x0, x1), _ = vb.viewRange()
        steps = m.steps[:n]
        x0, x1 = max(x0, float(steps[0])), min(x1, float(steps[-1]) + 1)
        if x1 <= x0:
            x0, x1 = float(steps[0]), float(steps[-1]) + 1
        stride = m.step_stride()
        max_bins = max(int(vb.width()), 16)
        cols = self.shown_layers()
        lo, hi = m.log_levels()
        key = (m, n, self._heat_bins.grid(x0, x1, max_bins, stride), stride, cols.tobytes(), lo, hi)
        if key == self._heat_key:
            return    # same rows, same bins, same colours: the image on screen is right
        image, start, width = self._heat_bins.bins(m, steps, m.layer_log[:n], x0, x1,
                                                   max_bins, min_width=stride)
        codes = self._heat_bins.codes(cols, lo, hi)
        self._heat_key = key
        self.heat_codes = codes
        self.heat_image.setImage(codes, autoLevels=False, levels=(0, 255), lut=self._lut)
        self.heat_image.setRect(QtCore.QRectF(start - stride / 2, -0.5,
                                              codes.shape[0] * width, codes.shape[1]))
        self._draw_colourbar(lo, hi)

    def _resolve_ranges(self):
        # Autorange is applied lazily at paint time; do it now so the heatmap
        # bins are made for the range the next paint shows, not the last one.
        for p in self.step_plots:
            p.getViewBox().prepareForPaint()

    def _draw_colourbar(self, lo, hi):
        if (lo, hi) == self._cbar_levels:
            return
        self._cbar_levels = (lo, hi)
        ramp = np.arange(ds.CODE_FIRST, ds.CODE_LAST + 1, dtype=np.uint8)[None, :]
        self.cbar_image.setImage(ramp, autoLevels=False, levels=(0, 255), lut=self._lut)
        self.cbar_image.setRect(QtCore.QRectF(0, lo, 1, hi - lo))
        self.cbar_plot.setYRange(lo, hi, padding=0)
        self.cbar_plot.setXRange(0, 1, padding=0)

    def _draw_selection(self):
        m = self.model
        if m is None or self.selected_row is None or self.selected_row >= self.n_rows():
            for line in self.select_lines:
                line.setVisible(False)
            return
        step = int(m.steps[self.selected_row])
        for line in self.select_lines:
            line.setVisible(True)
            line.blockSignals(True)
            line.setValue(step)
            line.blockSignals(False)
        self.step_label.setText(f"step {step}")
        self._draw_bars()

    def bar_values(self):
        """(values, kinds) for the selected step: kinds 0 missing, 1 zero,
        2 finite, 3 non-finite; values are log10 of the bar mode's column."""
        m = self.model
        row = self.selected_row
        if m is None or row is None:
            return np.zeros(0), np.zeros(0, int)
        cols = self.shown_layers()
        log = m.layer_log[row][cols]
        kinds = np.full(log.shape, 2)
        kinds[log == -np.inf] = 0
        kinds[log == LOG_ZERO] = 1
        kinds[log == LOG_NONFINITE] = 3
        column = BAR_MODES[self.bar_mode]
        if column == "layer_log":
            values = log.astype(np.float64)
        else:
            raw = getattr(m, column)[row][cols].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.log10(raw)
            kinds[(kinds == 2) & (raw == 0)] = 1
            kinds[(kinds == 2) & ~np.isfinite(values)] = 0
        return values, kinds

    def _draw_bars(self):
        m = self.model
        if m is None or self.selected_row is None:
            return
        key = (m, self.selected_row, self.bar_mode, self.shown_layers().tobytes())
        if key == self._bars_drawn:
            return   # a row's values never change once recorded
        self._bars_drawn = key
        values, kinds = self.bar_values()
        finite = values[kinds == 2]
        if finite.size:
            lo, hi = np.floor(finite.min()) - 0.5, np.ceil(finite.max())
        else:
            lo, hi = m.log_levels()
        hi = max(hi, lo + 1)
        width = np.where(kinds == 2, values - lo, 0.0)
        width[kinds == 1] = (hi - lo) * 0.04
        width[kinds == 3] = hi - lo
        scale = (ds.N_FINITE_CODES - 1) / max(hi - lo, 1e-9)
        codes = np.full(len(values), ds.CODE_MISSING)
        finite = kinds == 2
        codes[finite] = ds.CODE_FIRST + np.clip((values[finite] - lo) * scale, 0,
                                                ds.N_FINITE_CODES - 1).astype(int)
        codes[kinds == 1] = ds.CODE_ZERO
        codes[kinds == 3] = ds.CODE_NONFINITE
        brushes = [self._brushes[c] for c in codes]
        y = np.arange(len(values), dtype=np.float64)
        # one shared empty pen: the bars are filled rectangles (BarGraphItem
        # then fills each with its brush instead of setting a pen per bar)
        self.bars.setOpts(x0=np.full(len(values), lo), y=y, height=0.8, width=width,
                          brushes=brushes, pens=None, pen=None)
        self.bars_plot.setXRange(lo, hi, padding=0.02)
        label = {"grad norm": "log10 grad norm", "max |g|": "log10 max |g|",
                 "update / weight": "log10 update/weight"}[self.bar_mode]
        self.bars_plot.setLabel("bottom", f"{label}, step {int(m.steps[self.selected_row])}")
