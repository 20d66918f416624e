"""The cgrad-monitor window and its command line.

    cgrad-monitor runs/                 every run in a directory (newest primary)
    cgrad-monitor a.cgrun b.cgrun       primary run + runs to compare
    cgrad-monitor run.cgrun --snapshot out.png [--size 1600x1000]

The window follows live runs (a RunSource per run polls every ~100 ms and
decodes in its own thread), shows status (running / stopped at step N /
finished), the panels of viz.panels, alerts and events lists, and exports
the current view to PNG. ``--snapshot`` renders offscreen and exits.
"""
import argparse
import os
import signal
import sys
import time

from PyQt6 import QtCore, QtGui, QtWidgets, sip

from .alerts import AlertEngine, AlertRules
from .items import EVENT_STYLE, RUN_COLOURS, rgb_hex
from .model import RunModel
from .panels import Dashboard
from .source import RunSource, read_all

REDRAW_MS = 50
DIR_SCAN_MS = 2000   # a directory of runs is rescanned for new run files
DEFAULT_SIZE = (1600, 1000)


def status_text(status, error=None):
    """'running at step N' / 'stopped at step N (...)' / 'finished at step N'."""
    if status is None:
        text = "opening..."
    elif status.last_step < 0:
        text = f"{status.state}, no steps yet"
    elif status.state == "running":
        text = f"running, step {status.last_step} (heartbeat {status.heartbeat_age_s:.1f} s ago)"
    elif status.state == "stopped":
        text = (f"stopped at step {status.last_step} "
                f"(no heartbeat for {status.heartbeat_age_s:.0f} s: the trainer died)")
    else:
        text = f"{status.state} at step {status.last_step}"
    if error:
        text += f" \u2014 read error: {error}"
    return text


class SizeCachingDelegate(QtWidgets.QStyledItemDelegate):
    """The item delegate of the alert and event lists: each item's size hint
    is kept by its text and the option it was measured with.

    A list view lays out all its items again when the data of any one item
    changes (Qt's list mode does so on every dataChanged), measuring every
    word-wrapped text anew; an open alert stretch (dead layer, non-finite)
    is retitled on every refresh, which made each frame O(alerts) text
    layouts. The sizes are the ones Qt measures, so the lists look the same."""

    MAX_SIZES = 8192   # texts remembered; a full cache starts again

    def __init__(self, parent=None):
        super().__init__(parent)
        self._sizes = {}

    def sizeHint(self, option, index):
        key = (index.data(QtCore.Qt.ItemDataRole.DisplayRole), option.rect.width(),
               option.rect.height(), option.font.key(), option.features.value,
               option.decorationSize.width(), option.decorationSize.height())
        size = self._sizes.get(key)
        if size is None:
            if len(self._sizes) >= self.MAX_SIZES:
                self._sizes.clear()
            size = self._sizes[key] = super().sizeHint(option, index)
        return QtCore.QSize(size)


class RunEntry:
    """One opened run: its model, alert engine, source and last status."""

    def __init__(self, path, rules):
        self.path = os.fspath(path)
        self.model = RunModel(path=self.path)
        self.engine = AlertEngine(rules)
        self.source = None
        self.status = None
        self.error = None
        self.opened = False

    def take(self, result):
        """Copies a PollResult in; returns the new alerts."""
        if result.meta is not None:
            self.model.meta = result.meta
            self.opened = True
        start, end = self.model.append(result.chunk)
        self.status = result.status
        self.error = None
        return self.engine.update(self.model, start, end)

    @property
    def label(self):
        return f"{self.model.name} \u2014 {status_text(self.status, self.error)}"


class MainWindow(QtWidgets.QMainWindow):
    """The monitor's window. Like a top-level window of C++ Qt, a shown
    window lives until it is closed, whether or not Python still refers to
    it, and closing it deletes it (WA_DeleteOnClose), from the event loop.

    Left to its Python wrapper, a window lives as long as its reference
    cycles do, and the collector deletes it when it runs: from inside one of
    the window's own handlers, too (a paint, a poll's result), which then
    crash on the deleted objects."""

    _shown = set()      # held from showEvent to closeEvent

    def __init__(self, paths=(), rules=None, follow=True, poll_ms=100):
        super().__init__()
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.rules = rules or AlertRules()
        self.follow = follow
        self.poll_ms = poll_ms
        self.runs = []
        self.primary = None
        self._dirty = False
        self._next_redraw = 0.0
        self.setWindowTitle("cgrad monitor")
        self.dashboard = Dashboard()
        self.dashboard.step_selected.connect(self._on_step_selected)
        self._build_side()
        self._build_actions()
        central = QtWidgets.QSplitter()
        central.addWidget(self.dashboard)
        central.addWidget(self.side)
        central.setStretchFactor(0, 5)
        central.setStretchFactor(1, 1)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel("no run open")
        self.status_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                        QtWidgets.QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.status_label, 1)
        self._redraw = QtCore.QTimer(self)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._tick)
        self._redraw.start()
        self._dirs = []
        self._scan = QtCore.QTimer(self)
        self._scan.setInterval(DIR_SCAN_MS)
        self._scan.timeout.connect(self._scan_dirs)
        self._scan.start()
        self._replay = QtCore.QTimer(self)
        self._replay.setInterval(40)
        self._replay.timeout.connect(self._replay_tick)
        for path in paths:
            self.open_path(path)

    # ------------------------------------------------------------ widgets
    def _build_side(self):
        self.side = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(self.side)
        lay.setContentsMargins(4, 4, 4, 4)
        self.run_title = QtWidgets.QLabel("<b>no run</b>")
        self.run_title.setWordWrap(True)
        lay.addWidget(self.run_title)
        self.run_state = QtWidgets.QLabel("")
        self.run_state.setWordWrap(True)
        lay.addWidget(self.run_state)
        self.step_info = QtWidgets.QLabel("")
        self.step_info.setWordWrap(True)
        lay.addWidget(self.step_info)
        runs_label = QtWidgets.QLabel("<b>Runs</b> (double-click: show; tick: compare)")
        runs_label.setWordWrap(True)
        lay.addWidget(runs_label)
        self.run_list = QtWidgets.QListWidget()
        self.run_list.setMaximumHeight(110)
        self.run_list.setWordWrap(True)
        self.run_list.itemDoubleClicked.connect(lambda item: self.set_primary(self.run_list.row(item)))
        self.run_list.itemChanged.connect(lambda item: self._mark_dirty())
        lay.addWidget(self.run_list)
        self.alert_header = QtWidgets.QLabel("<b>Alerts</b> (0)")
        lay.addWidget(self.alert_header)
        self.alert_list = QtWidgets.QListWidget()
        self.alert_list.itemClicked.connect(self._on_alert_clicked)
        self.alert_list.setWordWrap(True)
        self.alert_list.setItemDelegate(SizeCachingDelegate(self.alert_list))
        lay.addWidget(self.alert_list, 2)
        lay.addWidget(QtWidgets.QLabel("<b>Events</b>"))
        key = [(label, rgb) for label, rgb, _, _ in EVENT_STYLE.values()]
        key.append(("alert", (255, 0, 200)))
        cells = [f"<td><span style='color:{rgb_hex(rgb)}'>&#9632;</span> {label}</td>"
                 for label, rgb in key]
        rows = ["<tr>" + "".join(cells[i:i + 2]) + "</tr>" for i in range(0, len(cells), 2)]
        key_label = QtWidgets.QLabel("<table cellspacing='2'>" + "".join(rows) + "</table>")
        key_label.setWordWrap(True)
        lay.addWidget(key_label)
        self.event_list = QtWidgets.QListWidget()
        self.event_list.itemClicked.connect(self._on_event_clicked)
        self.event_list.setWordWrap(True)
        self.event_list.setItemDelegate(SizeCachingDelegate(self.event_list))
        lay.addWidget(self.event_list, 1)
        self.side.setMinimumWidth(200)
        for label in (self.run_title, self.run_state, self.step_info):
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                QtWidgets.QSizePolicy.Policy.Preferred)

    def _build_actions(self):
        tb = self.addToolBar("view")
        tb.setMovable(False)

        def action(text, slot, shortcut=None, checkable=False):
            a = QtGui.QAction(text, self)
            if shortcut:
                a.setShortcut(QtGui.QKeySequence(shortcut))
            a.setCheckable(checkable)
            a.triggered.connect(slot)
            tb.addAction(a)
            self.addAction(a)
            return a

        action("Open run\u2026", self._open_dialog, "Ctrl+O")
        action("Compare run\u2026", self._compare_dialog, "Ctrl+Shift+O")
        action("Export PNG\u2026", self._export_dialog, "Ctrl+E")
        tb.addSeparator()
        action("Show all", lambda: (self.dashboard.show_all(), self._mark_dirty()), "A")
        self.window_box = QtWidgets.QSpinBox()
        self.window_box.setRange(10, 10_000_000)
        self.window_box.setValue(1000)
        self.window_box.setSuffix(" steps")
        self.window_box.setFocusPolicy(QtCore.Qt.FocusPolicy.ClickFocus)
        action("Recent window", self.show_recent, "R")
        tb.addWidget(self.window_box)
        tb.addSeparator()
        self.replay_action = action("Replay", self.toggle_replay, "P", checkable=True)
        for key, rows in (("Left", -1), ("Right", 1), ("PgUp", -100), ("PgDown", 100)):
            sc = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            sc.activated.connect(lambda rows=rows: self.dashboard.move_selection(rows))
        QtGui.QShortcut(QtGui.QKeySequence("Home"), self).activated.connect(
            lambda: self.dashboard.select_row(0))
        QtGui.QShortcut(QtGui.QKeySequence("End"), self).activated.connect(
            lambda: self.dashboard.select_row(self.dashboard.n_rows() - 1))

    # ------------------------------------------------------------ runs
    def open_path(self, path):
        """A run file, or every run file in a directory. Raises RunFileError
        (a ValueError naming the path) for a path that holds no run."""
        from cgrad.monitor.reader import list_runs
        from cgrad.monitor.schema import RunFileError
        path = os.fspath(path)
        if os.path.isdir(path):
            found = list_runs(path)
            if not found:
                raise RunFileError(f"{path}: no run files (*.cgrun) in this directory")
            # newest last, so it becomes the primary run
            for p in sorted(found, key=os.path.getmtime):
                self.add_run(p)
            self._dirs.append(path)
        elif not os.path.exists(path):
            raise RunFileError(f"{path}: no such run file or directory")
        else:
            self.add_run(path)

    def _scan_dirs(self):
        """Runs started in a watched directory after it was opened."""
        from cgrad.monitor.reader import list_runs
        known = {os.path.abspath(e.path) for e in self.runs}
        for directory in self._dirs:
            try:
                found = list_runs(directory)
            except ValueError:
                continue   # the directory went away; keep what is open
            for p in found:
                if os.path.abspath(p) not in known:
                    self.add_run(p)

    def add_run(self, path, start=True):
        entry = RunEntry(path, self.rules)
        self.runs.append(entry)
        item = QtWidgets.QListWidgetItem(os.path.basename(entry.path))
        item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(QtCore.Qt.CheckState.Checked)
        item.setForeground(QtGui.QColor(*RUN_COLOURS[(len(self.runs) - 1) % len(RUN_COLOURS)]))
        self.run_list.addItem(item)
        if start:
            entry.source = RunSource(entry.path, self, poll_ms=self.poll_ms)
            entry.source.polled.connect(lambda result, e=entry: self._on_polled(e, result))
            entry.source.failed.connect(lambda msg, e=entry: self._on_failed(e, msg))
            entry.source.start()
        self.set_primary(len(self.runs) - 1)
        return entry

    def set_primary(self, index):
        self.primary = self.runs[index]
        for i in range(self.run_list.count()):
            font = self.run_list.item(i).font()
            font.setBold(i == index)
            self.run_list.item(i).setFont(font)
        self.alert_list.clear()
        self.event_list.clear()
        self._alert_rows = 0
        self._alert_ends = []       # end_step of each listed alert, as its text shows it
        self._event_rows = 0
        self.dashboard.show_all()
        self._mark_dirty()

    def compared(self):
        out = []
        for i, entry in enumerate(self.runs):
            item = self.run_list.item(i)
            if entry is not self.primary and item.checkState() == QtCore.Qt.CheckState.Checked:
                out.append(entry.model)
        return out

    def _on_polled(self, entry, result):
        entry.take(result)
        if entry.model.n or result.chunk.events or entry.opened:
            self._mark_dirty()

    def _on_failed(self, entry, message):
        entry.error = message
        self._mark_dirty()

    def _mark_dirty(self):
        self._dirty = True

    # ------------------------------------------------------------ redraw
    def _tick(self):
        # A big run can take tens of ms to redraw: leave the GUI thread idle
        # at least twice that long between redraws so input stays responsive.
        now = time.monotonic()
        if now < self._next_redraw:
            return
        t0 = now
        if self._dirty:
            self._dirty = False
            self.refresh()
        else:
            self.dashboard.refresh_view()   # after a zoom / pan
        self._next_redraw = time.monotonic() + 2 * (time.monotonic() - t0)

    def refresh(self):
        e = self.primary
        if e is None:
            return
        self.dashboard.set_runs(e.model, self.compared(), e.engine.alerts)
        self.dashboard.refresh()
        self._refresh_lists()
        for i, entry in enumerate(self.runs):
            self.run_list.item(i).setText(
                f"{os.path.basename(entry.path)}: {status_text(entry.status, entry.error)}")
        self.run_title.setText(f"<b>{e.model.name}</b><br><small>{e.path}</small>")
        state = status_text(e.status, e.error)
        colour = "#b00000" if (e.error or (e.status and e.status.state in ("stopped", "failed"))) \
            else "#006000"
        self.run_state.setText(f"<span style='color:{colour}'>{state}</span>")
        n_alerts = len(e.engine.alerts)
        self.status_label.setText(
            f"{e.model.name}: {e.model.n} steps, {e.model.n_layers} layers \u2014 {state}"
            + (f" \u2014 {n_alerts} alerts" if n_alerts else ""))
        self.status_label.setStyleSheet("color: #b00000" if n_alerts or e.error else "")

    def _refresh_lists(self):
        e = self.primary
        alerts = e.engine.alerts
        # open stretches (dead layer, non-finite) grow in place: retitle those
        # whose end moved (an alert's text is its steps and a fixed message)
        ends = self._alert_ends
        for i in range(min(self._alert_rows, self.alert_list.count())):
            if alerts[i].end_step != ends[i]:
                ends[i] = alerts[i].end_step
                self.alert_list.item(i).setText(alerts[i].describe())
        ends.extend(a.end_step for a in alerts[len(ends):])
        for a in alerts[self._alert_rows:]:
            item = QtWidgets.QListWidgetItem(a.describe())
            item.setForeground(QtGui.QColor(176, 0, 0))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, a.step)
            self.alert_list.addItem(item)
        self._alert_rows = len(alerts)
        self.alert_header.setText(
            f"<b>Alerts</b> (<span style='color:#b00000'>{len(alerts)}</span>)" if alerts
            else "<b>Alerts</b> (0)")
        events = e.model.events
        for ev in events[self._event_rows:]:
            kind = ev.get("kind", "?")
            item = QtWidgets.QListWidgetItem(f"step {ev.get('step')}: {kind}: {ev.get('message', '')}")
            rgb = EVENT_STYLE.get(kind, EVENT_STYLE["other"])[1]
            item.setForeground(QtGui.QColor(*rgb))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, ev.get("step"))
            self.event_list.addItem(item)
        self._event_rows = len(events)

    def _on_alert_clicked(self, item):
        self.go_to_step(item.data(QtCore.Qt.ItemDataRole.UserRole))

    _on_event_clicked = _on_alert_clicked

    def go_to_step(self, step):
        """Selects ``step`` and centres the view on it (keeping the zoom)."""
        if step is None:
            return
        self.dashboard.select_step(step)
        vb = self.dashboard.loss_plot.getViewBox()
        (x0, x1), _ = vb.viewRange()
        half = (x1 - x0) / 2
        if not x0 <= step <= x1:
            self.dashboard.follow_window = None
            self.dashboard.loss_plot.setXRange(step - half, step + half, padding=0)

    def _on_step_selected(self, step):
        self.step_info.setText(self.describe_step(step))

    def describe_step(self, step):
        """One line on the selected step: loss, grad norms, clipping, lr, skip."""
        m = self.primary.model if self.primary else None
        if m is None or m.n == 0:
            return ""
        row = m.row_of_step(step)
        parts = [f"<b>step {int(m.steps[row])}</b>", f"loss {m.loss[row]:.4g}",
                 f"grad norm {m.grad_norm[row]:.4g}"]
        if m.clipped[row]:
            parts.append(f"clipped to {m.grad_norm_clipped[row]:.4g} "
                         f"(coef {m.clip_coef[row]:.3g})")
        parts.append("lr " + ", ".join(f"{v:.3g}" for v in m.lr[row]))
        if m.nonfinite[row]:
            parts.append(f"<span style='color:#b00000'>{int(m.nonfinite[row])} NaN/Inf</span>")
        if m.skipped[row]:
            parts.append("<span style='color:#b00000'>skipped</span>")
        return " \u00b7 ".join(parts)

    def show_recent(self):
        self.dashboard.show_recent(self.window_box.value())
        self._mark_dirty()

    # ------------------------------------------------------------ replay
    def toggle_replay(self, on):
        """Replays the primary run from its first step (about 500 frames)."""
        if on and self.primary is not None and self.primary.model.n:
            self.dashboard.limit = 1
            self._replay.start()
        else:
            self._replay.stop()
            self.dashboard.limit = None
            self.replay_action.setChecked(False)
        self._mark_dirty()

    def _replay_tick(self):
        n = self.primary.model.n if self.primary else 0
        # the whole run in about 20 s, at least one step a frame
        step = max(1, n // 500)
        self.dashboard.limit = min(n, (self.dashboard.limit or 0) + step)
        self.dashboard.select_row(self.dashboard.limit - 1)
        if self.dashboard.limit >= n:
            self.toggle_replay(False)
        self._mark_dirty()

    # ------------------------------------------------------------ files
    def _open_dialog(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open run", "", "cgrad runs (*.cgrun);;all files (*)")
        if path:
            self._try_open(path)

    def _compare_dialog(self):
        self._open_dialog()
        if len(self.runs) > 1:
            self.set_primary(0)

    def _try_open(self, path):
        try:
            self.open_path(path)
        except ValueError as e:
            QtWidgets.QMessageBox.warning(self, "cgrad monitor", str(e))

    def _export_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export PNG", "monitor.png",
                                                        "PNG images (*.png)")
        if path:
            self.export_png(path)

    def export_png(self, path):
        """Saves the window as it is shown now; returns the QPixmap."""
        self.refresh()
        pixmap = self.grab()
        if not pixmap.save(os.fspath(path), "PNG"):
            raise OSError(f"cannot write PNG to {path!s}")
        return pixmap

    def showEvent(self, event):
        MainWindow._shown.add(self)
        super().showEvent(event)

    def closeEvent(self, event):
        self.stop()
        super().closeEvent(event)
        if event.isAccepted():
            # Qt deletes it now (deleteLater); the wrapper must not as well,
            # at whatever moment the collector frees it
            sip.transferto(self, None)
            MainWindow._shown.discard(self)

    def stop(self):
        self._redraw.stop()
        self._scan.stop()
        self._replay.stop()
        for entry in self.runs:
            if entry.source is not None:
                entry.source.stop()


# ---------------------------------------------------------------- CLI
def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 1600x1000, got {text!r}") from None
    if not (200 <= w <= 10000 and 200 <= h <= 10000):
        raise argparse.ArgumentTypeError(f"--size must be between 200x200 and 10000x10000, got {text!r}")
    return w, h


def build_parser():
    p = argparse.ArgumentParser(
        prog="cgrad-monitor",
        description="Watch cgrad training runs: loss, lr, grad norms, clipping, per-layer gradients.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a run file (*.cgrun) or a directory of runs; several to compare")
    p.add_argument("--snapshot", metavar="OUT.png",
                   help="render the runs headless to a PNG and exit")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH",
                   help="window / snapshot size in pixels (default 1600x1000)")
    p.add_argument("--spike-k", type=float, default=AlertRules.spike_k,
                   help="alert when the grad norm exceeds K x its running median (default %(default)s)")
    p.add_argument("--dead-eps", type=float, default=AlertRules.dead_eps,
                   help="alert when a layer's grad norm stays below EPS (default %(default)s) ...")
    p.add_argument("--dead-steps", type=int, default=AlertRules.dead_steps,
                   help="... for this many steps (default %(default)s)")
    return p


def _quiet_offscreen(mode, context, message):
    # The offscreen platform warns once per window that it cannot pass size
    # hints on; that is expected headless and only noise for a user.
    if "propagateSizeHints" in message:
        return
    sys.stderr.write(message + "\n")


def _app():
    app = QtWidgets.QApplication.instance()
    if app is None:
        if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
            QtCore.qInstallMessageHandler(_quiet_offscreen)
        app = QtWidgets.QApplication([sys.argv[0]])
    return app


def snapshot(paths, out, size=DEFAULT_SIZE, rules=None):
    """Reads the runs fully, renders them and writes ``out``. Returns the
    list of read errors (runs that could be partly read still render).
    Raises RunFileError when no run could be opened at all."""
    from cgrad.monitor.schema import RunFileError
    app = _app()
    win = MainWindow(rules=rules)
    win.stop()   # no timers: everything is drawn once, synchronously
    errors = []
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            from cgrad.monitor.reader import list_runs
            found = list_runs(path)
            if not found:
                raise RunFileError(f"{path}: no run files (*.cgrun) in this directory")
            files.extend(sorted(found, key=os.path.getmtime))
        elif not os.path.exists(path):
            raise RunFileError(f"{path}: no such run file or directory")
        else:
            files.append(path)
    opened = 0
    for path in files:
        results, error = read_all(path)
        entry = win.add_run(path, start=False)
        for result in results:
            entry.take(result)
        entry.error = error
        if error:
            errors.append(error)
        if results:
            opened += 1
    if not opened:
        raise RunFileError("; ".join(errors))
    # the requested size wins over the widgets' minimum sizes
    win.layout().setSizeConstraint(QtWidgets.QLayout.SizeConstraint.SetNoConstraint)
    win.resize(*size)
    win.show()
    for _ in range(3):   # layout, then draw with the final sizes
        app.processEvents()
        win.refresh()
    win.export_png(out)
    win.close()            # deletes it (WA_DeleteOnClose) while the QApplication exists
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    return errors


# Debian/Ubuntu packages of the libraries Qt's X11 plugin links (PyQt6 wheels
# bundle Qt, not these).
XCB_DEBS = ("libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 "
            "libxcb-render-util0 libxcb-shape0 libxcb-sync1 libxcb-xfixes0 libxcb-xkb1 "
            "libxkbcommon-x11-0 libx11-xcb1")


def xcb_problem():
    """Why Qt's X11 platform plugin cannot load here, or None. Qt itself
    aborts the process in that case, so this is asked first."""
    if os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb" or not os.environ.get("DISPLAY") \
            or os.environ.get("WAYLAND_DISPLAY"):
        return None
    import ctypes
    plugin = os.path.join(os.path.dirname(QtCore.__file__), "Qt6", "plugins", "platforms",
                          "libqxcb.so")
    if not os.path.exists(plugin):
        return None
    try:
        ctypes.CDLL(plugin)
    except OSError as e:
        return (f"Qt's X11 platform plugin cannot load ({e}). On Debian/Ubuntu: "
                f"apt-get install {XCB_DEBS}; or render headless with --snapshot OUT.png")
    return None


def check_paths(paths):
    """Raises RunFileError for a path that is missing or holds no readable run."""
    from cgrad.monitor.reader import RunReader, list_runs
    from cgrad.monitor.schema import RunFileError
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            if not list_runs(path):
                raise RunFileError(f"{path}: no run files (*.cgrun) in this directory")
        elif not os.path.exists(path):
            raise RunFileError(f"{path}: no such run file or directory")
        else:
            RunReader(path).close()


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        rules = AlertRules(spike_k=args.spike_k, dead_eps=args.dead_eps, dead_steps=args.dead_steps)
    except ValueError as e:
        print(f"cgrad-monitor: error: {e}", file=sys.stderr)
        return 2
    if args.snapshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        out_dir = os.path.dirname(os.path.abspath(args.snapshot))
        if not os.path.isdir(out_dir):
            print(f"cgrad-monitor: error: {args.snapshot}: directory {out_dir} does not exist",
                  file=sys.stderr)
            return 2
        try:
            errors = snapshot(args.paths, args.snapshot, args.size, rules)
        except (ValueError, OSError) as e:
            print(f"cgrad-monitor: error: {e}", file=sys.stderr)
            return 1
        for error in errors:
            print(f"cgrad-monitor: warning: {error}", file=sys.stderr)
        print(f"cgrad-monitor: wrote {args.snapshot} ({args.size[0]}x{args.size[1]})")
        return 0
    try:
        check_paths(args.paths)   # a clear error now rather than a window later
    except ValueError as e:
        print(f"cgrad-monitor: error: {e}", file=sys.stderr)
        return 2
    if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("QT_QPA_PLATFORM")):
        print("cgrad-monitor: error: no display (DISPLAY / WAYLAND_DISPLAY unset); "
              "use --snapshot OUT.png to render headless", file=sys.stderr)
        return 2
    problem = xcb_problem()
    if problem:
        print(f"cgrad-monitor: error: {problem}", file=sys.stderr)
        return 2
    app = _app()
    win = MainWindow(rules=rules)
    try:
        for path in args.paths:
            win.open_path(path)
    except ValueError as e:
        win.stop()
        print(f"cgrad-monitor: error: {e}", file=sys.stderr)
        return 2
    win.resize(*args.size)
    win.show()
    # Ctrl+C in the terminal closes the window: Python only sees the signal
    # when the interpreter runs, so a timer lets it run now and then.
    signal.signal(signal.SIGINT, lambda *_: sip.isdeleted(win) or win.close())
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    # said from inside the event loop, so that from this line on Ctrl+C
    # (or a SIGINT from a script waiting for it) closes the window
    QtCore.QTimer.singleShot(0, lambda: print(
        f"cgrad-monitor: showing {', '.join(map(str, args.paths))} "
        f"(Ctrl+C or close the window to quit)", flush=True))
    rc = app.exec()
    # Tear the window down while the QApplication still exists (the order
    # the interpreter would pick at exit is not safe for Qt objects).
    wake.stop()
    if not sip.isdeleted(win):      # closed: Qt deletes it (WA_DeleteOnClose)
        win.stop()
        win.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    return rc


if __name__ == "__main__":
    sys.exit(main())
