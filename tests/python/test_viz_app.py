"""The monitor window (pytest-qt, offscreen): opening a recorded run, what the
panels draw (plotted arrays and grabbed pixels), following a run another
process writes, a truncated file, comparing runs, selection and alerts."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from PyQt6 import QtCore  # noqa: E402

from cgrad.viz import downsample as ds  # noqa: E402
from cgrad.viz.app import MainWindow, status_text  # noqa: E402
from cgrad.viz.items import NONFINITE_RGB, ZERO_RGB  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import viz_fixtures  # noqa: E402

N_STEPS = 200
NAN_STEP, NAN_LAYER = 120, 3
ZERO_LAYER = 2   # FixtureRun's dead layer


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "recorded.cgrun"
    viz_fixtures.make_run(path, N_STEPS, nonfinite={NAN_STEP: NAN_LAYER}, restart_at=150)
    return path


def open_window(qtbot, *paths, size=(1400, 900), steps=N_STEPS):
    win = MainWindow(poll_ms=20)
    qtbot.addWidget(win)
    for p in paths:
        win.open_path(p)
    win.resize(*size)
    win.show()
    qtbot.waitUntil(lambda: all(e.model.n >= steps for e in win.runs), timeout=10_000)
    qtbot.waitUntil(lambda: not win._dirty, timeout=5_000)   # drawn once more
    return win


@pytest.fixture
def window(qtbot, run_file):
    return open_window(qtbot, run_file)     # qtbot closes it, which stops and deletes it


def pixel(win, plot, x, y):
    """RGB of the grabbed window at view coordinates (x, y) of ``plot``."""
    scene_pt = plot.getViewBox().mapViewToScene(QtCore.QPointF(x, y))
    canvas = win.dashboard.canvas
    pt = canvas.mapTo(win, canvas.mapFromScene(scene_pt))
    image = win.grab().toImage()
    colour = image.pixelColor(pt.x(), pt.y())
    return colour.red(), colour.green(), colour.blue()


def close_to(rgb, want, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(rgb, want))


# ------------------------------------------------------------------ opening
def test_opens_a_recorded_run_and_plots_its_data(window):
    d = window.dashboard
    model = window.primary.model
    assert model.n == N_STEPS and model.n_layers == 6
    x, y = d.loss_curves[0].getOriginalDataset()
    assert np.array_equal(x, np.arange(N_STEPS))
    assert np.allclose(y, 2.0 * np.exp(-np.arange(N_STEPS) / 50) + 0.1)
    # lr per group: warmup to step 19, a warm restart at 150
    lr0 = d.lr_curves[0].getOriginalDataset()[1]
    assert lr0[0] == pytest.approx(1e-3 / 20) and lr0[19] == pytest.approx(1e-3)
    assert lr0[150] > 5 * lr0[149]
    assert len(d.lr_curves) == 2
    assert d.lr_curves[1].getOriginalDataset()[1][19] == pytest.approx(1e-4)
    assert "finished at step 199" in window.run_state.text()
    assert "finished at step 199" in window.status_label.text()


def test_status_text_says_running_stopped_finished():
    from cgrad.monitor.reader import RunStatus
    assert status_text(RunStatus("running", 12, 0.2)).startswith("running, step 12")
    assert status_text(RunStatus("stopped", 40, 30.0)).startswith("stopped at step 40")
    assert status_text(RunStatus("finished", 99, 1.0)) == "finished at step 99"


def test_clip_markers_threshold_and_events_are_the_data(window):
    d = window.dashboard
    clipped = np.array([s for s in range(N_STEPS) if s % 25 == 24])
    mx, my = d.grad_clip_markers.getOriginalDataset()
    assert np.array_equal(mx, clipped)
    assert np.allclose(my, 8.0)
    assert np.allclose(d.grad_clip.getOriginalDataset()[1], viz_fixtures.CLIP)
    assert np.allclose(d.grad_post.getOriginalDataset()[1], 0.5 * (np.arange(N_STEPS) % 25 != 24)
                       + 1.0 * (np.arange(N_STEPS) % 25 == 24))
    lines = {(p, kind): item for p, kind, item in d.event_lines}
    for plot in d.step_plots:     # every plot carries the markers
        assert np.array_equal(lines[(plot, "clip")].steps, clipped)
        assert list(lines[(plot, "nonfinite")].steps) == [NAN_STEP]
        assert list(lines[(plot, "lr_change")].steps) == [150]


def test_heatmap_cells_codes_and_pixels(window, qtbot):
    d = window.dashboard
    d.loss_plot.setXRange(100, 140, padding=0)     # zoom in: one bin per step
    qtbot.waitUntil(lambda: d.heat_codes.shape[0] <= 60, timeout=3000)
    codes = d.heat_codes
    start = int(round(d.heat_image.mapRectToParent(d.heat_image.boundingRect()).left() + 0.5))
    col = NAN_STEP - start
    assert codes[col, NAN_LAYER] == ds.CODE_NONFINITE
    assert (codes[:, ZERO_LAYER] == ds.CODE_ZERO).all()
    assert np.count_nonzero(codes == ds.CODE_NONFINITE) == 1
    # the picture, with the event lines hidden so that only cells show
    for _, _, item in d.event_lines:
        item.setVisible(False)
    for item in d.alert_lines + d.select_lines + d.dead_rects:
        item.setVisible(False)
    assert close_to(pixel(window, d.heat_plot, NAN_STEP, NAN_LAYER), NONFINITE_RGB)
    assert close_to(pixel(window, d.heat_plot, 110, ZERO_LAYER), ZERO_RGB, tol=10)
    neighbour = pixel(window, d.heat_plot, NAN_STEP + 3, NAN_LAYER)
    assert not close_to(neighbour, NONFINITE_RGB) and not close_to(neighbour, ZERO_RGB, 10)
    # a clipped step (grad norm 8 instead of 0.5) is a brighter column
    lut = d._lut
    hot, cold = codes[124 - start, 0], codes[123 - start, 0]
    assert hot > cold
    assert close_to(pixel(window, d.heat_plot, 124, 0), tuple(lut[hot][:3]), tol=12)


def test_bars_show_the_selected_step_by_slider_click_and_keys(window, qtbot):
    d = window.dashboard
    d.slider.setValue(NAN_STEP)
    values, kinds = d.bar_values()
    assert list(kinds) == [2, 2, 1, 3, 2, 2]          # zero layer, then the Inf one
    assert values[0] == pytest.approx(np.log10(0.5 / 6))
    assert "step 120" in d.bars_plot.getAxis("bottom").labelText
    info = window.step_info.text()
    assert "step 120" in info and "3 NaN/Inf" in info and "lr 0.000" in info
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Right)
    assert d.selected_row == NAN_STEP + 1
    d.slider.setValue(124)                           # a clipped step
    assert "clipped to 1 (coef 0.125)" in window.step_info.text()
    # click on the heatmap at step 60
    vb = d.heat_plot.getViewBox()
    scene_pt = vb.mapViewToScene(QtCore.QPointF(60, 1))
    view_pt = d.canvas.mapFromScene(scene_pt)
    qtbot.mouseClick(d.canvas.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=view_pt)
    qtbot.waitUntil(lambda: d.selected_row == 60, timeout=2000)
    assert d.select_lines[0].value() == 60


def test_alerts_listed_and_highlighted(window):
    engine = window.primary.engine
    kinds = {a.kind for a in engine.alerts}
    assert kinds == {"spike", "dead_layer", "nonfinite"}
    assert window.alert_list.count() == len(engine.alerts)
    texts = [window.alert_list.item(i).text() for i in range(window.alert_list.count())]
    assert any("net.1.weight" in t and "below" in t for t in texts)
    assert any(t.startswith(f"step {NAN_STEP}: non-finite") for t in texts)
    d = window.dashboard
    assert set(d.alert_lines[0].steps) == {a.step for a in engine.alerts}
    assert len(d.dead_rects) == 1
    spikes = d.grad_spike_markers.getData()[0]
    assert set(spikes) == {a.step for a in engine.alerts if a.kind == "spike"}
    # clicking an alert selects its step
    row = next(i for i, t in enumerate(texts) if "non-finite" in t)
    window._on_alert_clicked(window.alert_list.item(row))
    assert d.selected_row == NAN_STEP


def test_peak_downsampling_keeps_a_spike_visible(tmp_path, qtbot):
    path = tmp_path / "long.cgrun"
    viz_fixtures.make_run(path, 5000, n_layers=2)
    win = open_window(qtbot, path, size=(900, 700), steps=5000)
    d = win.dashboard
    for p in d.step_plots[:3]:
        # the panels downsample (viz.downsample.peak_line), not pyqtgraph
        assert not p.ctrl.autoDownsampleCheck.isChecked()
        assert p.ctrl.clipToViewCheck.isChecked()
    shown_x, shown_y = d.grad_pre.getData()      # what is drawn at this zoom
    assert len(shown_x) < 5000                    # it did downsample
    assert shown_y.max() == pytest.approx(8.0)    # and the one-step spikes stay
    assert shown_x[-1] == 4999                    # up to the newest step
    win.stop()


def test_recent_window_and_show_all(window, qtbot):
    window.window_box.setValue(50)
    window.show_recent()
    qtbot.waitUntil(lambda: not window._dirty, timeout=2000)
    (x0, x1), _ = window.dashboard.loss_plot.getViewBox().viewRange()
    assert x0 == pytest.approx(149, abs=2) and x1 == pytest.approx(199, abs=2)
    window.dashboard.show_all()
    qtbot.waitUntil(lambda: window.dashboard.loss_plot.getViewBox().viewRange()[0][0] < 10,
                    timeout=2000)


def test_replay_reveals_the_run_from_the_start(window, qtbot):
    window.replay_action.setChecked(True)
    window.toggle_replay(True)
    assert window.dashboard.limit == 1
    qtbot.waitUntil(lambda: window.dashboard.limit is not None and window.dashboard.limit > 20,
                    timeout=5000)
    window._replay.stop()              # hold the frame still to look at it
    window.refresh()
    x, _ = window.dashboard.loss_curves[0].getOriginalDataset()
    assert len(x) == window.dashboard.n_rows() < N_STEPS
    assert window.dashboard.selected_row == len(x) - 1
    window._replay.start()
    qtbot.waitUntil(lambda: window.dashboard.limit is None, timeout=20_000)
    assert not window.replay_action.isChecked()


def test_export_png(window, tmp_path):
    out = tmp_path / "view.png"
    pixmap = window.export_png(out)
    assert out.stat().st_size > 10_000
    assert (pixmap.width(), pixmap.height()) == (window.width(), window.height())


# ------------------------------------------------------------------ compare
def test_compare_runs_overlays_loss_and_grad_norm(tmp_path, qtbot):
    a, b = tmp_path / "a.cgrun", tmp_path / "b.cgrun"
    viz_fixtures.make_run(a, 120, name="first")
    viz_fixtures.make_run(b, 80, name="second")
    win = open_window(qtbot, a, b, steps=80)
    d = win.dashboard
    assert win.primary.model.name == "second"
    assert len(d.loss_curves) == 2
    assert len(d.loss_curves[1].getOriginalDataset()[0]) == 120
    assert len(d.grad_compare_curves[0].getOriginalDataset()[0]) == 120
    # untick the other run: it leaves the plots
    win.run_list.item(0).setCheckState(QtCore.Qt.CheckState.Unchecked)
    qtbot.waitUntil(lambda: d.loss_curves[1].getOriginalDataset()[0] is None
                    or len(d.loss_curves[1].getOriginalDataset()[0]) == 0, timeout=2000)
    win.set_primary(0)
    qtbot.waitUntil(lambda: len(d.loss_curves[0].getOriginalDataset()[0]) == 120, timeout=2000)
    win.stop()


def test_a_directory_opens_every_run(tmp_path, qtbot):
    for name in ("x", "y"):
        viz_fixtures.make_run(tmp_path / f"{name}.cgrun", 30)
    (tmp_path / "notes.txt").write_text("not a run")
    win = open_window(qtbot, tmp_path, steps=30)
    assert len(win.runs) == 2
    # a run started later in the same directory joins (and becomes primary)
    viz_fixtures.make_run(tmp_path / "z.cgrun", 10, name="late")
    qtbot.waitUntil(lambda: len(win.runs) == 3 and win.primary.model.n == 10, timeout=10_000)
    assert win.primary.model.name == "late"
    win.stop()


def test_bad_paths_raise_clear_errors(tmp_path, qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    with pytest.raises(ValueError, match="no such run file"):
        win.open_path(tmp_path / "missing.cgrun")
    with pytest.raises(ValueError, match="no run files"):
        win.open_path(tmp_path)
    win.stop()


# ------------------------------------------------------------------ live
def test_follows_a_run_written_by_another_process(tmp_path, qtbot):
    path = tmp_path / "live.cgrun"
    writer = subprocess.Popen([sys.executable, os.path.join(HERE, "viz_fixtures.py"), "live",
                               str(path), "60", "3"])
    try:
        qtbot.waitUntil(path.exists, timeout=10_000)
        qtbot.wait(200)   # schema committed
        win = MainWindow(poll_ms=50)
        qtbot.addWidget(win)
        win.open_path(path)
        win.show()
        seen = []

        def grew():
            n = win.primary.model.n
            if not seen or seen[-1] != n:
                seen.append(n)
            return n == 60

        qtbot.waitUntil(grew, timeout=20_000)
        assert writer.wait(10) == 0
        assert len([n for n in seen if 0 < n < 60]) >= 2, seen     # new steps appeared
        qtbot.waitUntil(lambda: win.primary.status is not None
                        and win.primary.status.state == "finished", timeout=5000)
        qtbot.waitUntil(lambda: "finished at step 59" in win.run_state.text(), timeout=2000)
        x, _ = win.dashboard.loss_curves[0].getOriginalDataset()
        assert len(x) == 60
        assert [a.step for a in win.primary.engine.alerts if a.kind == "nonfinite"] == [55]
        win.stop()
    finally:
        writer.kill()
        writer.wait()


def test_a_silent_running_run_reads_stopped(tmp_path, qtbot):
    path = tmp_path / "dead.cgrun"
    run = viz_fixtures.make_run(path, 40, state="running")
    import sqlite3
    con = sqlite3.connect(path)
    con.execute("UPDATE heartbeat SET time = time - 60")
    con.commit()
    con.close()
    win = open_window(qtbot, path, steps=40)
    assert "stopped at step 39" in win.run_state.text()
    del run
    win.stop()


# ------------------------------------------------------------------ truncated
def test_survives_a_file_truncated_mid_write(tmp_path, qtbot, run_file):
    broken = tmp_path / "broken.cgrun"
    shutil.copy(run_file, broken)
    size = broken.stat().st_size
    with open(broken, "r+b") as f:
        f.truncate(size // 3)
    win = MainWindow(poll_ms=20)
    qtbot.addWidget(win)
    win.open_path(broken)
    win.show()
    qtbot.waitUntil(lambda: win.primary.error is not None or win.primary.model.n > 0,
                    timeout=5000)
    qtbot.wait(300)
    assert win.isVisible()
    win.refresh()
    if win.primary.error:
        assert str(broken) in win.primary.error
        assert "read error" in win.run_state.text()
    win.stop()


def test_survives_truncation_while_following(tmp_path, qtbot):
    path = tmp_path / "cut.cgrun"
    run = viz_fixtures.FixtureRun(path, total_steps=400)
    run.commit(100)
    run.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    win = MainWindow(poll_ms=20)
    qtbot.addWidget(win)
    win.open_path(path)
    win.show()
    qtbot.waitUntil(lambda: win.primary.model.n == 100, timeout=5000)
    run.commit(100)
    run.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    run.close()
    with open(path, "r+b") as f:      # the disk filled up mid-write
        f.truncate(path.stat().st_size // 2)
    qtbot.waitUntil(lambda: win.primary.error is not None, timeout=10_000)
    qtbot.waitUntil(lambda: "read error" in win.run_state.text(), timeout=2000)
    assert win.primary.model.n >= 100          # what was read stays on screen
    assert len(win.dashboard.loss_curves[0].getOriginalDataset()[0]) >= 100
    win.stop()
