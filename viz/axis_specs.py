"""What an axis draws (pyqtgraph's AxisItem.generateDrawSpecs), made faster
for the monitor's axes, which make it again on every range change of every
linked plot (each live frame, pan and zoom step).

``draw_specs(axis, painter)`` returns what ``pg.AxisItem.generateDrawSpecs``
returns for the same axis, value for value (tests/python/test_viz_axes.py
compares the two): (axis pen, start, end), [(tick pen, p1, p2)] and
[(text rect, flags, text)]. It is the same computation (pyqtgraph 0.14, MIT
licence) without what made it slow: a pyqtgraph Point (a Python __init__)
for every tick end, a text measurement through the painter for every label
each time (kept here by font and text: the same strings come back frame after
frame) and the axis' bounding rect made again for every label.
"""
import math

import numpy as np
from PyQt6 import QtCore, QtGui

_ALIGN_CENTER = QtCore.Qt.AlignmentFlag.AlignCenter
_DONT_CLIP = QtCore.Qt.TextFlag.TextDontClip
_TEXT_ALIGN = {
    "left": QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter,
    "right": QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter,
    "top": QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignBottom,
    "bottom": QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignTop,
}
_text_sizes = {}     # (font key, text) -> (width, height) of the painter's bounding rect
MAX_TEXT_SIZES = 4096


def text_size(painter, text):
    """(width, 0.8 * height) of painter.boundingRect(QRectF(0, 0, 100, 100),
    AlignCenter, text), as AxisItem measures a label."""
    key = (painter.font().key(), text)
    size = _text_sizes.get(key)
    if size is None:
        br = painter.boundingRect(QtCore.QRectF(0, 0, 100, 100), _ALIGN_CENTER, text)
        if len(_text_sizes) >= MAX_TEXT_SIZES:
            _text_sizes.clear()
        size = _text_sizes[key] = (br.width(), br.height() * 0.8)
    return size


def _clip(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


def draw_specs(axis, p):
    """pg.AxisItem.generateDrawSpecs(axis, p), faster (see module doc);
    None where it returns None."""
    style = axis.style
    if style["tickFont"] is not None:
        p.setFont(style["tickFont"])
    bounds = axis.mapRectFromParent(axis.geometry())
    linked = axis.linkedView()
    if linked is None or axis.grid is False:
        tick_bounds = bounds
    else:
        tick_bounds = linked.mapRectToItem(axis, linked.boundingRect())

    orientation = axis.orientation
    if orientation == "left":
        span = [bounds.topRight() + QtCore.QPointF(-1.0, -1.0),
                bounds.bottomRight() + QtCore.QPointF(-1.0, 1.0)]
        tick_start, tick_stop, tick_dir, ax = tick_bounds.right(), bounds.right(), -1, 0
    elif orientation == "right":
        span = [bounds.topLeft() + QtCore.QPointF(1.0, -1.0),
                bounds.bottomLeft() + QtCore.QPointF(1.0, 1.0)]
        tick_start, tick_stop, tick_dir, ax = tick_bounds.left(), bounds.left(), 1, 0
    elif orientation == "top":
        span = [bounds.bottomLeft() + QtCore.QPointF(-1.0, -1.0),
                bounds.bottomRight() + QtCore.QPointF(1.0, -1.0)]
        tick_start, tick_stop, tick_dir, ax = tick_bounds.bottom(), bounds.bottom(), -1, 1
    elif orientation == "bottom":
        span = [bounds.topLeft() + QtCore.QPointF(-1.0, 1.0),
                bounds.topRight() + QtCore.QPointF(1.0, 1.0)]
        tick_start, tick_stop, tick_dir, ax = tick_bounds.top(), bounds.top(), 1, 1
    else:
        raise ValueError("self.orientation must be in {'left', 'right', 'top', 'bottom'}")
    # GraphicsItem.mapToDevice (pyqtgraph 0.14 names the cached one deviceTransform_)
    vt = axis.deviceTransform_() if hasattr(axis, "deviceTransform_") else axis.deviceTransform()
    if vt is None:
        return None
    d = vt.map(span[1]) - vt.map(span[0])
    length_px = math.hypot(d.x(), d.y())
    if length_px == 0:
        return None

    if axis._tickLevels is None:
        tick_levels = axis.tickValues(axis.range[0], axis.range[1], length_px)
        tick_strings = None
    else:
        tick_levels, tick_strings = [], []
        for level in axis._tickLevels:
            tick_levels.append((None, [v for v, _ in level]))
            tick_strings.append([s for _, s in level])

    lo, hi = axis.range
    dif = hi - lo
    if dif == 0:
        x_scale, offset = 1, 0
    elif ax == 0:
        x_scale = -bounds.height() / dif
        offset = lo * x_scale - bounds.height()
    else:
        x_scale = bounds.width() / dif
        offset = lo * x_scale
    x_range = [lo * x_scale - offset, hi * x_scale - offset]
    x_min, x_max = min(x_range), max(x_range)

    tick_positions = []
    tick_specs = []
    base_pen = axis.tickPen()
    solid = base_pen.brush().style() == QtCore.Qt.BrushStyle.SolidPattern
    grid = axis.grid
    for i, (_, ticks) in enumerate(tick_levels):
        positions = []
        tick_positions.append(positions)
        tick_length = style["tickLength"] / ((i * 0.5) + 1.0)
        alpha = style["tickAlpha"]
        if alpha is None:
            alpha = 255 / (i + 1)
            if grid is not False:
                alpha *= grid / 255. * _clip((0.05 * length_px / (len(ticks) + 1)), 0., 1.)
        elif isinstance(alpha, float):
            alpha = min(255, int(round(max(0, int(round(alpha * 255))))))
        elif isinstance(alpha, int):
            if alpha > 255 or alpha < 0:
                raise ValueError("lineAlpha should be [0..255]")
        else:
            raise TypeError("Line Alpha should be of type None, float or int")
        pen = base_pen
        if solid:
            pen = QtGui.QPen(base_pen)
            color = QtGui.QColor(pen.color())
            color.setAlpha(int(alpha))
            pen.setColor(color)
        end = tick_stop if grid is not False else tick_stop + tick_length * tick_dir
        for v in ticks:
            x = (v * x_scale) - offset
            if x < x_min or x > x_max:
                positions.append(None)
                continue
            positions.append(x)
            if ax == 0:
                tick_specs.append((pen, QtCore.QPointF(tick_start, x), QtCore.QPointF(end, x)))
            else:
                tick_specs.append((pen, QtCore.QPointF(x, tick_start), QtCore.QPointF(x, end)))

    stop_at = style["stopAxisAtTick"]
    if stop_at[0] is True:
        lowest = min(map(min, tick_positions))
        if ax == 0:
            span[0].setY(max(span[0].y(), lowest))
        else:
            span[0].setX(max(span[0].x(), lowest))
    if stop_at[1] is True:
        highest = max(map(max, tick_positions))
        if ax == 0:
            span[1].setY(min(span[1].y(), highest))
        else:
            span[1].setX(min(span[1].x(), highest))
    axis_spec = (axis.pen(), span[0], span[1])

    text_offset = style["tickTextOffset"][ax]
    text_size2 = last_text_size2 = 0
    text_rects = []
    text_specs = []
    if not style["showValues"]:
        return axis_spec, tick_specs, text_specs

    br = axis.boundingRect()
    align = _TEXT_ALIGN[orientation] | _DONT_CLIP
    label_offset = max(0, style["tickLength"]) + text_offset
    for i in range(min(len(tick_levels), style["maxTextLevel"] + 1)):
        if tick_strings is None:
            spacing, values = tick_levels[i]
            strings = axis.tickStrings(values, axis.autoSIPrefixScale * axis.scale, spacing)
        else:
            strings = tick_strings[i]
        if len(strings) == 0:
            continue
        strings = [None if tick_positions[i][j] is None else s for j, s in enumerate(strings)]
        sizes = []
        for s in strings:
            if s is None:
                sizes.append(None)
            else:
                sizes.append(text_size(p, s))
                text_rects.append(sizes[-1])
        if text_rects:
            if ax == 0:
                total = np.sum([h for _, h in text_rects])
                text_size2 = np.max([w for w, _ in text_rects])
            else:
                total = np.sum([w for w, _ in text_rects])
                text_size2 = np.max([h for _, h in text_rects])
        else:
            total = text_size2 = 0
        if i > 0:
            fill = float(total) / length_px
            if any(len(text_specs) >= n and fill >= limit for n, limit in style["textFillLimits"]):
                break
        last_text_size2 = text_size2
        for j, s in enumerate(strings):
            if s is None:
                continue
            x = tick_positions[i][j]
            width, height = sizes[j]
            if orientation == "left":
                rect = QtCore.QRectF(tick_stop - label_offset - width, x - (height / 2), width, height)
            elif orientation == "right":
                rect = QtCore.QRectF(tick_stop + label_offset, x - (height / 2), width, height)
            elif orientation == "top":
                rect = QtCore.QRectF(x - width / 2., tick_stop - label_offset - height, width, height)
            else:
                rect = QtCore.QRectF(x - width / 2., tick_stop + label_offset, width, height)
            if br & rect != rect:
                continue
            text_specs.append((rect, align, s))
    axis._updateMaxTextSize(last_text_size2)
    return axis_spec, tick_specs, text_specs
