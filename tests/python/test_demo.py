"""make demo's script end to end (few epochs): it trains, records a run
file with every step, and renders the monitor's snapshot headless."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")


def test_demo_trains_records_and_renders(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--epochs", "4",
                          "--runs", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "agrees with float64 finite differences" in out.stdout
    assert "freeze" in out.stdout
    acc = float(out.stdout.split("test accuracy ")[-1].split(";")[0])
    assert acc > 0.9
    from cgrad.monitor.reader import RunReader

    with RunReader(tmp_path / "demo.cgrun") as r:
        delta = r.poll()
        assert r.status().state == "finished"
        assert delta.n_steps == 4 * 22  # every optimizer step of 4 epochs
    png = tmp_path / "demo.png"
    assert png.exists() and png.stat().st_size > 20_000
    from PyQt6.QtGui import QImage

    img = QImage(str(png))
    assert (img.width(), img.height()) == (1600, 1000)
