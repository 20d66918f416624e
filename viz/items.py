"""Colours and the graphics items the panels share.

``EventLines`` draws thousands of event steps as vertical lines in one item:
only the steps inside the view are painted, merged to one line per device
pixel column, spanning the view's height (or a strip at its bottom), so the
cost does not depend on how many events a run holds and log axes don't
matter.
"""
import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, sip

from . import axis_specs
from . import downsample as ds

# Heatmap colours: viridis for the finite decades; zero and non-finite get
# colours viridis never uses, missing cells are transparent.
ZERO_RGB = (170, 170, 170)
NONFINITE_RGB = (230, 0, 0)
SELECT_RGB = (20, 20, 20)

# Runs overlaid for comparison, first = the primary run.
# (No orange, red or green: clip markers, NaN and post-clip use them.)
RUN_COLOURS = [(31, 119, 180), (148, 103, 189), (140, 86, 75), (23, 190, 207),
               (188, 189, 34), (227, 119, 194), (127, 127, 127), (0, 0, 128)]
GROUP_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189),
                 (255, 127, 14), (23, 190, 207)]

# Event kinds -> (label, colour, pen style, fraction of the view height).
EVENT_STYLE = {
    "clip": ("clipped step", (255, 140, 0), QtCore.Qt.PenStyle.SolidLine, 0.06),
    "lr_change": ("lr change", (31, 119, 180), QtCore.Qt.PenStyle.DashLine, 1.0),
    "precision": ("precision switch", (148, 0, 211), QtCore.Qt.PenStyle.DashDotLine, 1.0),
    "loss_scale": ("loss-scale change", (0, 150, 80), QtCore.Qt.PenStyle.DotLine, 1.0),
    "skipped": ("skipped step", (110, 110, 110), QtCore.Qt.PenStyle.SolidLine, 1.0),
    "nonfinite": ("NaN / Inf", (230, 0, 0), QtCore.Qt.PenStyle.SolidLine, 1.0),
    "anomaly": ("anomaly", (200, 0, 90), QtCore.Qt.PenStyle.DotLine, 1.0),
    "other": ("other event", (60, 60, 60), QtCore.Qt.PenStyle.DotLine, 1.0),
}
ALERT_RGBA = (255, 0, 200, 200)


def rgb_hex(rgb):
    return "#%02x%02x%02x" % tuple(rgb[:3])


def line_array(x0, y0, x1, y1):
    """The lines (x0, y0)-(x1, y1) as one sip array of QLineF for
    QPainter.drawLines, filled from NumPy: no Python object per line."""
    x0 = np.asarray(x0, dtype=np.float64)
    lines = sip.array(QtCore.QLineF, x0.size)
    if x0.size:
        view = np.frombuffer(sip.voidptr(lines, x0.size * 32), np.float64).reshape(x0.size, 4)
        view[:, 0], view[:, 1], view[:, 2], view[:, 3] = x0, y0, x1, y1
    return lines


def heatmap_lut():
    """256 x 4 uint8 lookup table for the codes of viz.downsample."""
    lut = np.zeros((256, 4), np.uint8)
    cmap = pg.colormap.get("viridis")
    lut[ds.CODE_FIRST:ds.CODE_LAST + 1] = cmap.getLookupTable(
        0.0, 1.0, ds.N_FINITE_CODES, alpha=True)
    lut[ds.CODE_ZERO] = ZERO_RGB + (255,)
    lut[ds.CODE_NONFINITE] = NONFINITE_RGB + (255,)
    lut[ds.CODE_MISSING] = (0, 0, 0, 0)
    return lut


class EventLines(pg.GraphicsObject):
    """Vertical lines at given steps across a ViewBox (see module doc)."""

    def __init__(self, rgb, style=QtCore.Qt.PenStyle.SolidLine, width=1.0, span=1.0, alpha=220,
                 from_top=False):
        super().__init__()
        self._x = np.zeros(0)
        self._span = float(span)
        self._from_top = bool(from_top)
        pen = pg.mkPen(color=tuple(rgb[:3]) + (alpha,), width=width)
        pen.setStyle(style)
        pen.setCosmetic(True)
        self._pen = pen
        self._lines_key, self._lines = None, None   # the lines last painted
        self.setZValue(5)
        self._set_empty(True)

    def _set_empty(self, empty):
        # most kinds never occur in a run: Qt then skips the item when it
        # paints (no boundingRect / paint calls into Python every frame)
        self.setFlag(self.GraphicsItemFlag.ItemHasNoContents, empty)

    def setSteps(self, steps):
        x = np.unique(np.asarray(steps, dtype=np.float64))
        if x.shape == self._x.shape and np.array_equal(x, self._x):
            return
        self._x = x
        self._set_empty(x.size == 0)
        self.prepareGeometryChange()
        self.update()

    @property
    def steps(self):
        return self._x

    def dataBounds(self, axis, frac=1.0, orthoRange=None):
        return None   # markers never drive autorange

    def viewRangeChanged(self):
        self.prepareGeometryChange()
        self.update()

    def boundingRect(self):
        vb = self.getViewBox()
        if vb is None or not hasattr(vb, "viewRect"):
            return QtCore.QRectF()
        return vb.viewRect()

    def visible_steps(self):
        """Steps painted at the current zoom: one per device pixel column."""
        if self._x.size == 0:      # most kinds never occur: skip the view lookups
            return np.zeros(0)
        rect = self.boundingRect()
        if rect.isNull():
            return np.zeros(0)
        i0 = int(np.searchsorted(self._x, rect.left(), "left"))
        i1 = int(np.searchsorted(self._x, rect.right(), "right"))
        xs = self._x[i0:i1]
        px = self.pixelWidth() or 1.0
        if xs.size > 1 and px > 0:
            _, first = np.unique(np.floor(xs / px), return_index=True)
            xs = xs[first]
        return xs

    def paint(self, painter, *args):
        xs = self.visible_steps()
        if xs.size == 0:
            return
        rect = self.boundingRect()
        bottom, top = rect.top(), rect.bottom()   # ViewBox y grows upward
        if self.getViewBox().yInverted():
            bottom, top = top, bottom
        if self._from_top:
            bottom, top = top, bottom
        y0 = bottom
        y1 = bottom + (top - bottom) * self._span
        key = (y0, y1, xs.tobytes())
        if key != self._lines_key:     # a repaint of the same view draws the same array
            self._lines_key, self._lines = key, line_array(xs, y0, xs, y1)
        painter.setPen(self._pen)
        painter.drawLines(self._lines)


class QuietAxis(pg.AxisItem):
    """An AxisItem that sets its label again only when the label changes,
    shares its ticks with axes of the same range and length, and makes its
    draw specs (viz.axis_specs, faster than pyqtgraph's) only when what they
    are made from changed.

    With auto SI prefixes on, every range change (each live frame, pan and
    zoom step, on every linked plot) re-sets the label's rich text and
    re-measures the axis although the text is the same; only the tick
    picture has to be made again then. A new label text (the bars' step)
    or a repaint asks for the picture again with the same range and size:
    the specs of the last picture are those."""

    # ticks by everything AxisItem.tickValues reads: the four x-linked step
    # axes ask for the same ticks after every range change
    _ticks_memo = {}

    def tickValues(self, minVal, maxVal, size):
        key = (minVal, maxVal, size, self.scale, self.logMode, self._tickDensity,
               self.style["maxTickLevel"], repr(self._tickSpacing))
        ticks = QuietAxis._ticks_memo.get(key)
        if ticks is None:
            ticks = super().tickValues(minVal, maxVal, size)
            if len(QuietAxis._ticks_memo) >= 64:
                QuietAxis._ticks_memo.clear()
            QuietAxis._ticks_memo[key] = ticks
        return [(spacing, list(values)) for spacing, values in ticks]

    _specs_memo = (None, None)     # (key, specs) of the last generateDrawSpecs

    def _specs_key(self, p):
        """Everything draw_specs reads, or None without a device mapping."""
        vt = self.deviceTransform_() if hasattr(self, "deviceTransform_") else self.deviceTransform()
        if vt is None:
            return None
        view = self.linkedView()
        linked = None if view is None or self.grid is False else \
            view.mapRectToItem(self, view.boundingRect()).getRect()
        pen, tick_pen = self.pen(), self.tickPen()
        levels = None if self._tickLevels is None else \
            tuple(tuple(level) for level in self._tickLevels)
        return (tuple(self.range), self.geometry().getRect(), linked,
                self.boundingRect().getRect(),
                (vt.m11(), vt.m12(), vt.m21(), vt.m22(), vt.dx(), vt.dy()),
                self.grid, self.scale, self.autoSIPrefixScale, self.logMode,
                self._tickDensity, repr(self._tickSpacing), levels, repr(sorted(self.style.items())),
                p.font().key(), (pen.color().rgba(), pen.widthF(), pen.style()),
                (tick_pen.color().rgba(), tick_pen.widthF(), tick_pen.style(),
                 tick_pen.brush().style()))

    def generateDrawSpecs(self, p):
        if self.style["tickFont"] is not None:
            p.setFont(self.style["tickFont"])
        key = self._specs_key(p)
        if key is not None and key == self._specs_memo[0]:
            return self._specs_memo[1]
        specs = axis_specs.draw_specs(self, p)
        self._specs_memo = (key, specs)
        return specs

    def _updateLabel(self):
        html = self.labelString()
        if html == getattr(self, "_label_html", None):
            self.picture = None
            self.update()
            return
        self._label_html = html
        super()._updateLabel()


class GridAxis(QuietAxis):
    """An axis whose grid lines a GridLines item paints, opaque and under
    the data.

    pyqtgraph draws grid lines with translucent pens on top of the data;
    Qt's raster engine blends those pixel by pixel, which was the largest
    single cost of a repaint (~8 ms of ~30). On an opaque background a line
    of colour c and alpha a looks like an opaque line of a*c + (1-a)*bg; the
    lines go under the curves (they only differed where a line crossed a
    curve, which now stays unshaded) and both axes' lines are painted
    together, lightest first, so that a crossing keeps the darker line.
    """

    def __init__(self, orientation, **kwargs):
        super().__init__(orientation, **kwargs)
        self._opaque_pens = {}
        self.grid_specs = []     # [(opaque pen, p1, p2)] in this axis' coordinates

    # (base specs, background, what this returned for them, its grid_specs)
    _grid_memo = (None, None, None, None)

    def generateDrawSpecs(self, p):
        specs = super().generateDrawSpecs(p)
        bg = pg.mkColor(pg.getConfigOption("background"))
        memo = self._grid_memo
        if specs is not None and specs is memo[0] and bg.rgba() == memo[1]:
            self.grid_specs = memo[3]     # the same list: GridLines keeps its mapped lines
            return memo[2]
        out = self._grid_specs(specs, bg)
        self._grid_memo = (specs, bg.rgba(), out, self.grid_specs)
        return out

    def _grid_specs(self, specs, bg):
        if specs is None or self.grid is False or bg.alpha() < 255:
            self.grid_specs = []
            return specs
        axis_spec, tick_specs, text_specs = specs
        # with the grid on, every tick spec is a grid line across the view
        opaque = {}      # the ticks of a level share one pen: look each up once
        self.grid_specs = [(opaque.get(id(pen)) or opaque.setdefault(id(pen), self._opaque(pen, bg)),
                            p1, p2) for pen, p1, p2 in tick_specs]
        return axis_spec, [], text_specs

    def _opaque(self, pen, bg):
        c = pen.color()
        key = (c.rgba(), bg.rgba(), pen.widthF())
        out = self._opaque_pens.get(key)
        if out is None:
            a = c.alphaF()
            out = QtGui.QPen(pen)
            out.setColor(QtGui.QColor(*(int(round(a * v + (1 - a) * b)) for v, b in
                                        ((c.red(), bg.red()), (c.green(), bg.green()),
                                         (c.blue(), bg.blue())))))
            self._opaque_pens[key] = out
        return out


_SCALE_ONLY = (QtGui.QTransform.TransformationType.TxNone,
               QtGui.QTransform.TransformationType.TxTranslate,
               QtGui.QTransform.TransformationType.TxScale)


class GridLines(pg.GraphicsObject):
    """Paints the grid of a PlotItem's GridAxis items (see GridAxis).

    z order in the PlotItem: axes (-200, they compute the lines when they
    paint), these lines (-150), then the ViewBox and the data (-100)."""

    def __init__(self, plot, axes):
        super().__init__(plot)
        self._plot = plot
        self._axes = list(axes)
        self._mapped_cache = {}
        self._drawn = ([], [])     # (the _mapped dicts, [(pen, QLineF array)]) last painted
        for axis in self._axes:
            axis.setZValue(-200)
        self.setZValue(-150)

    def boundingRect(self):
        return self._plot.vb.mapRectToItem(self, self._plot.vb.boundingRect())

    def _mapped(self, axis):
        """The axis' grid lines in this item's coordinates by pen colour,
        {rgba: (lightness, pen, (n, 4) x1 y1 x2 y2)}; kept while the axis
        keeps its lines (it makes new ones on a range change) and its place."""
        to_here, _ = axis.itemTransform(self)
        place = (to_here.m11(), to_here.m22(), to_here.dx(), to_here.dy())
        cached = self._mapped_cache.get(id(axis))
        if cached is not None and cached[0] is axis.grid_specs and cached[1] == place:
            return cached[2]
        by_colour = {}
        for pen, p1, p2 in axis.grid_specs:
            entry = by_colour.setdefault(pen.color().rgba(), (pen.color().lightness(), pen, []))
            entry[2].append((p1.x(), p1.y(), p2.x(), p2.y()))
        out = {}
        for rgba, (light, pen, ends) in by_colour.items():
            ends = np.array(ends, dtype=np.float64)
            if to_here.type() in _SCALE_ONLY:
                # what QTransform.map computes for a scale + translation
                ends = ends * [place[0], place[1], place[0], place[1]] + \
                    [place[2], place[3], place[2], place[3]]
            else:
                ends = np.array([[m.x1(), m.y1(), m.x2(), m.y2()] for m in
                                 (to_here.map(QtCore.QLineF(*e)) for e in ends)])
            out[rgba] = (light, pen, ends)
        self._mapped_cache[id(axis)] = (axis.grid_specs, place, out)
        return out

    def paint(self, painter, *args):
        groups = {}        # pen colour -> (lightness, pen, [(n, 4) line ends])
        mapped = []
        for axis in self._axes:
            if not axis.isVisible() or not axis.grid_specs:
                continue
            lines = self._mapped(axis)
            mapped.append(lines)
            for rgba, (light, pen, ends) in lines.items():
                groups.setdefault(rgba, (light, pen, []))[2].append(ends)
        if not groups:
            return
        # the same lines as the last paint: draw the same arrays
        if len(mapped) != len(self._drawn[0]) or any(a is not b for a, b in zip(mapped, self._drawn[0])):
            # lightest first: where lines cross, the darker one stays on top
            order = sorted(groups.values(), key=lambda g: -g[0])
            self._drawn = (mapped, [(pen, line_array(*np.concatenate(ends).T))
                                    for _, pen, ends in order])
        painter.setRenderHint(painter.RenderHint.Antialiasing, False)
        painter.setClipRect(self.boundingRect())
        for pen, lines in self._drawn[1]:
            painter.setPen(pen)
            painter.drawLines(lines)


def html_key(entries):
    """Colour legend in one line of rich text: [(label, rgb), ...]."""
    return "&nbsp;&nbsp;".join(
        f"<span style='color:{rgb_hex(rgb)}'>&#9632;</span>&nbsp;{label}" for label, rgb in entries)


def qcolor(rgb, alpha=255):
    return QtGui.QColor(*rgb[:3], alpha)
