"""Monitor responsiveness at 200 layers x 100,000 steps, offscreen.

    .venv/bin/python bench/bench_viz.py [--layers 200] [--steps 100000] [--repeat 5]

Synthetic run data (log-normal layer norms, clipping spikes, a dead layer,
a NaN stretch) goes through the same path as a live run after the reader:
decode_delta (worker thread in the app) -> RunModel.append -> AlertEngine
-> Dashboard.refresh -> paint. A frame is timed as refresh + a full repaint
of the window (QWidget.grab), median over --repeat runs; a live update adds
the GUI thread's part of taking 100 new steps in (append + alert rules; the
synthetic steps are made and decoded before the clock starts). Pan and zoom are
timed as the window's timer handles them: Dashboard.refresh_view + repaint.
"""
import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def synthetic_delta(first, n, n_layers, rng, with_layers):
    steps = np.arange(first, first + n)
    norm = rng.lognormal(0.0, 0.3, n)
    norm[steps % 997 == 0] *= 40.0                       # rare spikes
    layer = rng.lognormal(-3.0, 1.0, (n, n_layers)) * (1 + np.arange(n_layers) / n_layers)
    layer[:, 7 % n_layers] = 0.0                          # a dead layer
    nonfinite = np.zeros((n, n_layers))
    bad = (steps >= 50_000) & (steps < 50_003)
    nonfinite[bad, 42 % n_layers] = 4
    cols = {"step": steps, "time": steps * 0.01, "loss": 2.0 * np.exp(-steps / 30_000) + 0.1,
            "grad_norm": norm, "grad_norm_clipped": np.minimum(norm, 5.0),
            "clip_max_norm": np.full(n, 5.0), "clip_coef": np.minimum(1.0, 5.0 / norm),
            "clipped": (norm > 5.0).astype(np.int64), "loss_scale": np.full(n, np.nan),
            "skipped": np.zeros(n, np.int64), "nonfinite": nonfinite.sum(axis=1).astype(np.int64)}
    lr = np.stack([1e-3 * np.cos(steps / 20_000) ** 2, 1e-4 * np.ones(n)], axis=1)
    layers = [{"layer_id": i, "name": f"blocks.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}",
               "kind": "param"} for i in range(n_layers)] if with_layers else []
    return SimpleNamespace(steps=cols, lr=lr, layer_grad_norm=layer, layer_grad_max=layer * 3,
                           layer_nonfinite=nonfinite, layer_update_ratio=layer * 1e-3,
                           layer_weight_norm=np.ones_like(layer), events=[], new_layers=layers)


def timed(fn, repeat):
    """(wall, cpu) medians and (wall, cpu) maxima in ms. The process' CPU
    time is the steadier on a shared machine (others' load does not count)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return (statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3,
            max(wall) * 1e3, max(cpu) * 1e3)


def ms(t):
    return f"{t[0]:8.1f} ms ({t[1]:5.1f} cpu)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", default="1600x1000")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from PyQt6 import QtWidgets
    from cgrad.viz.app import MainWindow
    from cgrad.viz.model import decode_delta

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    rng = np.random.default_rng(0)
    print(f"cgrad monitor benchmark: {args.layers} layers x {args.steps} steps, "
          f"window {width}x{height}, offscreen")

    t0 = time.perf_counter()
    delta = synthetic_delta(0, args.steps, args.layers, rng, with_layers=True)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    chunk = decode_delta(delta, 2)
    t_decode = time.perf_counter() - t0

    win = MainWindow()
    win.stop()
    entry = win.add_run("bench.cgrun", start=False)
    from cgrad.monitor.reader import RunStatus
    t0 = time.perf_counter()
    entry.model.meta = {"name": "bench"}
    start, end = entry.model.append(chunk)
    t_append = time.perf_counter() - t0
    t0 = time.perf_counter()
    entry.engine.update(entry.model, start, end)
    t_alerts = time.perf_counter() - t0
    entry.status = RunStatus("running", args.steps - 1, 0.1)
    win.resize(width, height)
    win.show()
    app.processEvents()
    t0 = time.perf_counter()
    win.refresh()
    win.grab()
    t_first = time.perf_counter() - t0

    def frame():
        win.refresh()
        win.grab()

    d = win.dashboard

    def refresh_view():
        # what the window's timer does after a pan or zoom (older versions
        # of the app only rebuilt the heatmap there)
        if hasattr(d, "refresh_view"):
            d.refresh_view()
        else:
            d._heatmap_dirty = True
            d.refresh_heatmap()
    full = timed(frame, args.repeat)

    def heat_only(keep_pyramid=True):
        # every bin made again (a new zoom level): the bin cache and the drawn
        # key dropped; the max pyramid, made once per run, is kept unless asked
        if hasattr(d, "_heat_bins"):
            if hasattr(d._heat_bins, "pyramid"):
                d._heat_bins.clear(keep_pyramid=keep_pyramid)
            else:
                d._heat_bins.clear()
            d._heat_key = None
        d._heatmap_dirty = True
        d.refresh_heatmap()
    t_heat = timed(heat_only, args.repeat)
    t_pyramid = timed(lambda: heat_only(keep_pyramid=False), args.repeat)

    # new steps are made and decoded before the clock starts: the data are
    # synthetic and the app decodes on its reader thread, not in the frame
    pending = [decode_delta(synthetic_delta(args.steps + 100 * k, 100, args.layers, rng, False), 2)
               for k in range(args.repeat)]

    def live_update():
        s, e = entry.model.append(pending.pop(0))
        entry.engine.update(entry.model, s, e)
        frame()
    live = timed(live_update, args.repeat)
    live_slowest = live[2:]   # e.g. when new steps change the heatmap's bin width

    d.show_recent(1000)
    zoomed = timed(frame, args.repeat)

    def pan():
        (x0, x1), _ = d.loss_plot.getViewBox().viewRange()
        d.follow_window = None
        d.loss_plot.setXRange(x0 - 500, x1 - 500, padding=0)
        refresh_view()
        win.grab()
    panned = timed(pan, args.repeat)

    d.show_all()
    app.processEvents()
    frame()
    zoom_level = [1.0]

    def zoom():
        # zoom into the middle of the run, 1.5x per call (the mouse wheel)
        (x0, x1), _ = d.loss_plot.getViewBox().viewRange()
        mid, half = (x0 + x1) / 2, (x1 - x0) / 3
        d.follow_window = None
        d.loss_plot.setXRange(mid - half, mid + half, padding=0)
        refresh_view()
        win.grab()
    zoomed_in = timed(zoom, args.repeat)
    d.show_all()
    app.processEvents()

    mem = sum(a.nbytes for a in entry.model._layer.values()) / 2**20
    print(f"  synthetic data                 {t_gen * 1e3:8.1f} ms (not part of the app)")
    print(f"  decode (worker thread)         {t_decode * 1e3:8.1f} ms  for all steps at once")
    print(f"  model append                   {t_append * 1e3:8.1f} ms")
    print(f"  alert rules, all steps         {t_alerts * 1e3:8.1f} ms")
    print(f"  first full draw                {t_first * 1e3:8.1f} ms")
    print(f"  frame, whole run in view       {ms(full)}  refresh + repaint, median")
    print(f"  heatmap rebuild (peak bins)    {ms(t_heat)}")
    print(f"  ... and its pyramid, all steps {ms(t_pyramid)}  once per run")
    print(f"  live update: +100 steps+frame  {ms(live)}")
    print(f"  ... the slowest of them        {ms(live_slowest)}")
    print(f"  frame, last 1000 steps         {ms(zoomed)}")
    print(f"  pan 500 steps + heatmap        {ms(panned)}")
    print(f"  zoom in 1.5x from whole run    {ms(zoomed_in)}")
    print(f"  layer buffers                  {mem:8.0f} MiB ({entry.model._cap} rows capacity)")
    win.close()


if __name__ == "__main__":
    main()
