"""The monitor on a run recorded by the real recorder (cgrad.monitor.Run
watching a cgrad model, AdamW, warmup+cosine and global-norm clipping):
what the window plots is what the file holds."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import sqlite3

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

import cgrad  # noqa: E402
from cgrad import nn, optim  # noqa: E402

monitor = pytest.importorskip("cgrad.monitor")

from cgrad.viz.app import MainWindow  # noqa: E402

N_STEPS = 40


def record(path):
    rng = np.random.default_rng(0)
    x = cgrad.tensor(rng.standard_normal((64, 8)).astype(np.float32))
    y = cgrad.tensor(rng.integers(0, 3, 64))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    sched = optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    with monitor.Run(path, name="recorded") as run:
        run.watch(model, opt, sched)
        for _ in range(N_STEPS):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.2)
            opt.step()
            sched.step()
            run.log_loss(loss)
        return run.path


def test_window_shows_what_the_recorder_wrote(tmp_path, qtbot):
    path = record(tmp_path / "real.cgrun")
    # decoded here from the file's chunks rows (docs/run_format.md, v4),
    # not through RunReader, so the window is checked against the file
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    chunks = con.execute("SELECT step, loss, grad_norm, clipped, lr, n_groups FROM chunks "
                         "ORDER BY chunk_id").fetchall()
    n_layers = con.execute("SELECT COUNT(*) FROM layers").fetchone()[0]
    con.close()
    steps = np.column_stack([np.concatenate([np.frombuffer(c[j], "<i8" if j in (0, 3) else "<f8")
                                             for c in chunks]) for j in range(4)]).astype(np.float64)
    lr0 = np.concatenate([np.frombuffer(c[4], "<f8").reshape(-1, c[5])[:, 0] for c in chunks])
    assert (np.diff(steps[:, 0]) > 0).all()       # one row per step, in order
    assert len(steps) == N_STEPS

    win = MainWindow(poll_ms=20)
    qtbot.addWidget(win)
    win.open_path(path)
    win.show()
    qtbot.waitUntil(lambda: win.primary.model.n == N_STEPS, timeout=10_000)
    qtbot.waitUntil(lambda: not win._dirty, timeout=5000)
    d = win.dashboard
    model = win.primary.model
    assert model.n_layers == n_layers
    x, loss = d.loss_curves[0].getOriginalDataset()
    assert np.array_equal(x, steps[:, 0])
    assert np.allclose(loss, steps[:, 1], equal_nan=True)
    assert np.allclose(d.grad_pre.getOriginalDataset()[1], steps[:, 2], equal_nan=True)
    clipped = steps[steps[:, 3] > 0, 0]
    assert clipped.size > 0                       # max_norm 0.2 bites on this problem
    assert np.array_equal(d.grad_clip_markers.getOriginalDataset()[0], clipped)
    assert (d.grad_post.getOriginalDataset()[1] <= 0.2 * (1 + 1e-6)).all()
    assert np.allclose(d.grad_clip.getOriginalDataset()[1], 0.2)
    assert np.allclose(d.lr_curves[0].getOriginalDataset()[1], lr0)
    assert "finished at step" in win.run_state.text()
    # every layer cell of the heatmap is a finite decade (nothing dead, nothing NaN)
    values, kinds = d.bar_values()
    assert (kinds == 2).all() and np.isfinite(values).all()
    win.stop()
