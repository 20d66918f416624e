"""The monitor's windows and reader threads outlive a dropped Python
reference safely: a shown window stays until it is closed (as a top-level
window does in C++ Qt), and a window collected or deleted unclosed ends its
reader threads instead of destroying them running (which aborts).

Each case runs in a child interpreter, so that what it guards against (a
window deleted from inside its own paint handler by the collector, Qt's
abort on a running QThread) fails the test instead of ending the run."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PRELUDE = f"""
import gc, os, sys, weakref
os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, {HERE!r})
from PyQt6 import QtCore, QtWidgets
app = QtWidgets.QApplication([])
import viz_fixtures
from cgrad.viz import source
from cgrad.viz.app import MainWindow
path = sys.argv[1]
viz_fixtures.make_run(path, 200, nonfinite={{120: 3}}, restart_at=150)

def pump(n):
    for _ in range(n):
        app.processEvents()

def reading_window():
    # an unshown window reading the run, and its reader thread
    win = MainWindow(poll_ms=20)
    win.open_path(path)
    pump(20)
    return win, win.runs[0].source._thread
"""


def run_child(tmp_path, body):
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script,
                           str(tmp_path / "run.cgrun")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.split()


def test_a_dropped_shown_window_stays_until_closed(tmp_path):
    # the collector runs every few allocations, so also inside paint handlers
    out = run_child(tmp_path, """
        win = MainWindow(poll_ms=20)
        win.open_path(path)
        win.resize(1000, 700)
        win.show()
        pump(20)
        ref = weakref.ref(win)
        del win
        gc.set_threshold(5, 1, 1)
        for _ in range(30):
            ref().dashboard.canvas.viewport().update()
            pump(2)
        gc.collect()
        print(ref() is not None, ref().primary.model.n)
        ref().close()            # deletes it (WA_DeleteOnClose), from the event loop
        gc.collect()     # frees the wrapper, which no longer owns the window
        def windows():
            return sum(isinstance(w, QtWidgets.QMainWindow) for w in app.topLevelWidgets())
        print(ref() is None, windows())
        app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        print(windows(), len(source._live))
    """)
    assert out == ["True", "200", "True", "1", "0", "0"]


def test_an_unshown_window_collected_with_its_reader_running(tmp_path):
    out = run_child(tmp_path, """
        win, thread = reading_window()
        print(thread.isRunning())
        ref = weakref.ref(win)
        del win
        gc.collect()
        thread.wait(5000)    # its destruction quit the thread
        pump(5)
        print(ref() is None, thread.isRunning(), len(source._live))
    """)
    assert out == ["True", "True", "False", "0"]


def test_a_window_deleted_unclosed_ends_its_reader(tmp_path):
    out = run_child(tmp_path, """
        win, thread = reading_window()
        win.deleteLater()
        app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        thread.wait(5000)
        pump(5)
        print(thread.isRunning(), len(source._live))
        del win
        gc.collect()
    """)
    assert out == ["False", "0"]
