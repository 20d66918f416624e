"""`cgrad-monitor PATH --snapshot out.png [--size WxH]`: headless render in a
separate process, the PNG it writes, and clear errors for bad input."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import select
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")

from PyQt6 import QtGui  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import viz_fixtures  # noqa: E402


def monitor(*args, timeout=120):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)   # --snapshot must pick offscreen itself
    return subprocess.run([sys.executable, "-m", "cgrad.viz.app", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def image_array(path):
    image = QtGui.QImage(str(path))
    assert not image.isNull(), f"{path} is not a readable PNG"
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return arr[:, :image.width(), [2, 1, 0]].copy()   # memory order is B, G, R, A


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "run.cgrun"
    viz_fixtures.make_run(path, 300, nonfinite={150: 1}, restart_at=200)
    return path


@pytest.mark.parametrize("size", [(1024, 700), (640, 480)])
def test_snapshot_writes_a_non_blank_png_of_the_requested_size(run_file, tmp_path, size):
    out = tmp_path / "snap.png"
    r = monitor(run_file, "--snapshot", out, "--size", f"{size[0]}x{size[1]}")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert str(out) in r.stdout
    rgb = image_array(out)
    assert rgb.shape[:2] == (size[1], size[0])
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 50                                  # curves, heatmap, text
    white = np.all(rgb > 245, axis=2).mean()
    assert 0.2 < white < 0.95                                 # not blank, not a solid block
    # the heatmap's non-finite cell is in the picture (pure red pixels)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 40) & (rgb[..., 2] < 40)
    assert red.sum() > 20


def test_snapshot_of_a_directory_and_default_size(run_file, tmp_path):
    out = tmp_path / "dir.png"
    r = monitor(run_file.parent, "--snapshot", out)
    assert r.returncode == 0, r.stderr
    assert image_array(out).shape[:2] == (1000, 1600)


@pytest.mark.parametrize("case", ["missing", "not_a_run", "truncated", "empty_dir", "bad_out"])
def test_snapshot_bad_input_exits_non_zero_with_a_clear_message(run_file, tmp_path, case):
    out = tmp_path / "x.png"
    if case == "missing":
        path, expect = tmp_path / "nope.cgrun", "no such run file"
    elif case == "not_a_run":
        path = tmp_path / "text.cgrun"
        path.write_text("hello")
        expect = "not a cgrad run file"
    elif case == "truncated":
        path = tmp_path / "cut.cgrun"
        shutil.copy(run_file, path)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)
        expect = "cut.cgrun"
    elif case == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
        expect = "no run files"
    else:
        path, expect = run_file, "does not exist"
        out = tmp_path / "no" / "such" / "dir" / "x.png"
    r = monitor(path, "--snapshot", out)
    assert r.returncode != 0
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_bad_size_is_a_usage_error(run_file, tmp_path):
    r = monitor(run_file, "--snapshot", tmp_path / "x.png", "--size", "wide")
    assert r.returncode == 2
    assert "--size must look like 1600x1000, got 'wide'" in r.stderr


def test_without_a_display_it_says_to_use_snapshot(run_file):
    r = monitor(run_file)
    assert r.returncode == 2
    assert "--snapshot" in r.stderr and "no display" in r.stderr


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "cgrad-monitor")
    if not os.path.exists(script):
        pytest.skip("cgrad not installed with its console scripts in this environment")
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--snapshot" in r.stdout


def test_interactive_bad_paths_exit_before_any_window(tmp_path):
    (tmp_path / "junk.cgrun").write_text("junk")
    for path, expect in ((tmp_path / "nope.cgrun", "no such run file"),
                         (tmp_path / "junk.cgrun", "not a cgrad run file"),
                         (tmp_path / "empty_dir_does_not_exist", "no such run file")):
        r = monitor(path)
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr


def test_interactive_window_runs_until_ctrl_c(run_file):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen([sys.executable, "-m", "cgrad.viz.app", str(run_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # the app says when its event loop runs (however slow the start)
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the monitor never said it was showing the window"
        line = proc.stdout.readline()
        assert line.startswith("cgrad-monitor: showing ") and str(run_file) in line, line
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)            # it keeps showing the window
        proc.send_signal(signal.SIGINT)     # Ctrl+C closes it cleanly
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err
