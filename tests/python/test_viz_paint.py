"""Painting work the monitor leaves out without changing a pixel: Qt's GUI
thread pool (off), word-wrapped list items measured once per text, and
pyqtgraph's clip to view only where the view is narrower than the data."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import sys

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_viz_frames import dashboard, model_with  # noqa: E402,F401  (fixture)


def test_qt_gui_thread_pool_is_switched_off_unless_set():
    import cgrad.viz.panels  # noqa: F401  (sets it on import)
    assert os.environ.get("QT_NO_GUI_THREADPOOL")


def test_list_sizes_are_qts_own_and_measured_once_per_text(qtbot, monkeypatch):
    from PyQt6 import QtWidgets
    from cgrad.viz.app import SizeCachingDelegate
    texts = [f"step {i}: layer blocks.{i}.weight grad norm below 1e-08 for {i % 7 + 50}+ steps"
             for i in range(60)] + ["short", "a " * 80]
    class Plain(QtWidgets.QStyledItemDelegate):   # Qt's delegate, its calls seen from Python
        def sizeHint(self, option, index):
            return super().sizeHint(option, index)

    lists = []
    for delegate in (SizeCachingDelegate, Plain):
        w = QtWidgets.QListWidget()
        qtbot.addWidget(w)
        w.setWordWrap(True)
        w.setItemDelegate(delegate(w))
        w.resize(220, 400)
        w.addItems(texts)
        w.show()
        qtbot.waitExposed(w)
        lists.append(w)
    cached, plain = lists
    measured = []
    real = QtWidgets.QStyledItemDelegate.sizeHint
    monkeypatch.setattr(QtWidgets.QStyledItemDelegate, "sizeHint",
                        lambda self, o, i: measured.append((type(self), i.row())) or real(self, o, i))

    def rows(kind):
        return {row for k, row in measured if k is kind}

    def rects(w):
        w.doItemsLayout()
        return [w.visualItemRect(w.item(i)) for i in range(w.count())]
    assert rects(cached) == rects(plain)                  # the same layout as Qt's own
    measured.clear()
    for w in lists:                                       # an open stretch retitled
        w.item(3).setText(texts[3].replace("5", "6") + " (open)")
    assert rects(cached) == rects(plain)
    assert rows(Plain) == set(range(len(texts)))         # Qt measures every item again
    assert rows(SizeCachingDelegate) == {3}               # the cache: the retitled one
    measured.clear()
    rects(cached)
    assert not rows(SizeCachingDelegate)
    for w in lists:                                       # a new width wraps differently
        w.resize(160, 400)
    qtbot.wait(20)
    assert rects(cached) == rects(plain)


def test_curves_are_clipped_to_the_view_only_when_it_is_narrower_than_the_data(dashboard, qtbot):
    d = dashboard
    d.set_runs(model_with(30_000))
    d.refresh()
    d.grab()
    curves = [d.loss_curves[0], d.lr_curves[0], d.grad_pre, d.grad_post, d.grad_clip]

    def clipped():
        return {item.opts["clipToView"] for item in curves}
    assert clipped() == {False}                           # x autoranges over all the data
    whole = [item.curve.getData()[0].copy() for item in curves]
    assert all(x[0] == 0 and x[-1] == 29_999 for x in whole)
    d.loss_plot.setXRange(10_000, 12_000, padding=0)      # a zoom
    d.refresh_view()
    d.grab()
    assert clipped() == {True}
    for item in curves:                                   # pyqtgraph clips: the view +- a point
        x = item.curve.getData()[0]
        assert x[0] < 10_000 + 50 and x[-1] > 12_000 - 50 and x[0] > 5_000 and x[-1] < 17_000
    assert not d.grad_clip_markers.opts["clipToView"]     # symbols are never clipped
    d.show_all()
    d.refresh()
    d.grab()
    assert clipped() == {False}
    assert all(np.array_equal(item.curve.getData()[0], x) for item, x in zip(curves, whole))
    assert d.loss_plot.ctrl.clipToViewCheck.isChecked()   # the menu still says clip to view


def test_only_alerts_whose_stretch_grew_are_retitled(qtbot, tmp_path, monkeypatch):
    from test_viz_app import open_window
    import viz_fixtures
    path = tmp_path / "run.cgrun"
    viz_fixtures.make_run(path, 200, nonfinite={120: 3})
    win = open_window(qtbot, path)
    try:
        alerts = win.primary.engine.alerts
        texts = lambda: [win.alert_list.item(i).text() for i in range(win.alert_list.count())]  # noqa: E731
        assert texts() == [a.describe() for a in alerts]
        calls = []
        for i in range(win.alert_list.count()):
            item = win.alert_list.item(i)
            monkeypatch.setattr(item, "setText", lambda t, i=i, item=item: calls.append(i) or
                                type(item).setText(item, t))
        win._refresh_lists()
        assert calls == []                                  # nothing moved: nothing retitled
        grown = next(i for i, a in enumerate(alerts) if a.kind == "dead_layer")
        alerts[grown].end_step += 7                         # the open stretch goes on
        win._refresh_lists()
        assert calls == [grown]
        assert texts() == [a.describe() for a in alerts]
    finally:
        win.stop()
