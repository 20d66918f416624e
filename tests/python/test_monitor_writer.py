"""The per-tensor statistics (both backends) and the writer's behaviour
when it falls behind or cannot write."""
import math
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import cgrad
from cgrad import monitor
from cgrad.monitor import stats, watch, writer
from monitor_standin import StandInSGD, batch, loss_of, mlp


def reference(a):
    a = np.asarray(a, dtype=np.float64).ravel()
    fin = a[np.isfinite(a)]
    return (float(np.sum(fin ** 2)), float(np.abs(fin).max()) if fin.size else 0.0,
            int(a.size - fin.size), int(a.size))


CASES = {
    "normal": np.random.default_rng(0).standard_normal((37, 129)),
    "inf_nan": np.array([1.0, -np.inf, 2.5, np.nan, -3.0]),
    "all_bad": np.array([np.nan, np.inf]),
    "zeros": np.zeros((4, 4)),
    "empty": np.zeros((0, 3)),
    "big": np.full(70000, 1e20),  # float32 squares overflow; float64 ones do not
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["grad_stats", "many"])
def test_stats_match_numpy(name, dtype, backend):
    a = CASES[name].astype(dtype)

    def many(t):  # the tensor between a None and another tensor: its own row
        s, m, b, n = stats.many_stats([None, t, cgrad.ones(3)])[1]
        return s, m, int(b), int(n)

    fn = {"grad_stats": stats.grad_stats, "many": many}[backend]
    got = fn(cgrad.from_numpy(a))
    want = reference(a)
    assert got[2:] == want[2:]
    np.testing.assert_allclose(got[:2], want[:2], rtol=2e-6)


def test_stats_of_a_strided_view():
    base = cgrad.from_numpy(np.arange(24, dtype=np.float32).reshape(4, 6))
    view = base.t()
    got = stats.grad_stats(view)
    np.testing.assert_allclose(got[0], float(np.sum(np.arange(24.0) ** 2)))
    assert got[1:] == (23.0, 0, 24)


def test_many_stats_rows_and_errors():
    ts = [cgrad.from_numpy(np.array([3.0, -4.0])), None,
          cgrad.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3)).t()]
    got = stats.many_stats(ts)
    np.testing.assert_array_equal(got, [[25.0, 4.0, 0, 2], [0, 0, 0, 0], [55.0, 5.0, 0, 6]])
    assert stats.many_stats([]).shape == (0, 4)
    with pytest.raises(TypeError, match="entry 1 must be a cgrad.Tensor or None, got int"):
        stats.many_stats([ts[0], 3])
    with pytest.raises(TypeError, match="tensor 0: float32 or float64 needed, got int64"):
        stats.many_stats([cgrad.tensor([1, 2])])
    with pytest.raises(ValueError, match=r"out must have shape \(1, 4\), got \(2, 4\)"):
        cgrad._core._tensor_stats_many([ts[0]], np.empty((2, 4)))


def test_combine():
    parts = [(4.0, 2.0, 0, 3), (9.0, 3.0, 2, 5)]
    assert stats.combine(parts) == (13.0, 3.0, 2, 8)


def test_writer_behind_drops_oldest_detail_without_blocking(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MAX_PENDING_LAYER_ROWS", 60)
    # a ring of 4 slots: a stalled writer makes it spill a chunk every 4 steps
    monkeypatch.setattr(watch, "ring_capacity", lambda n_params, n_groups: 4)
    model = mlp()                       # 6 layer rows per step
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "w.cgrun"
    gate = threading.Event()
    with monitor.Run(path) as run:
        run.watch(model, opt)
        run.flush()
        stalled = threading.Event()

        def stall():
            stalled.set()
            gate.wait(30)

        run._writer._on_tick = stall     # the writer thread stops at its next tick
        stalled.wait(5)
        for _ in range(30):              # 180 rows pending: more than the bound
            opt.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            opt.step()
            run.log_loss(loss)
        gate.set()
    with monitor.RunReader(path) as r:
        d = r.poll()
    assert d.steps["step"].tolist() == list(range(30))
    assert not np.isnan(d.steps["loss"]).any() and not np.isnan(d.lr).any()
    has_detail = ~np.isnan(d.layer_grad_norm).any(axis=1)
    assert not has_detail[0] and has_detail[-1]
    first_kept = int(np.argmax(has_detail))
    assert has_detail[first_kept:].all()         # the oldest went first
    dropped = [e for e in d.events if e["kind"] == "dropped"]
    assert dropped and sum(e["value"] for e in dropped) == first_kept
    assert "writer fell behind" in dropped[0]["message"]


def test_write_error_warns_once_and_training_goes_on(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "e.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        run.log(0, a=1.0)
        run.flush()
        run._writer._con.execute("PRAGMA query_only = ON")   # every write now fails
        run.log(1, a=2.0)
        run.flush()
        assert run._writer.error is not None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                opt.zero_grad()
                loss = loss_of(model, x, y)
                loss.backward()
                opt.step()
                run.log_loss(loss)
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1 and "e.cgrun" in msgs[0] and "discarded" in msgs[0]
    with monitor.RunReader(path) as r:
        d = r.poll()
        assert d.scalars["a"][1].tolist() == [1.0]
        assert d.n_steps == 0 and r.status().last_step == -1   # discarded, not half-written
        assert r.status().state != "finished"                  # the final commit failed too
    assert math.isfinite(float(loss.item()))


def test_bench_monitor_runs_and_reports_every_case():
    """bench/bench_monitor.py --quick (the overhead benchmark of issue 5;
    a benchmark, so only that it runs and prints each case, mode and piece,
    not its numbers)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, os.path.join(root, "bench", "bench_monitor.py"),
                           "--quick"], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for mode in ("stats pass us", "every=1 us", "every=1 no ratio us", "every=10 us"):
        assert mode in out, out
    rows = [line.split() for line in out.splitlines()]
    cases = [r for r in rows if r[:3] in (["64-128-10", "64", "sgd"], ["64-128-10", "64", "adam"],
                                          ["784-512-256-10", "128", "sgd"])]
    assert len(cases) == 3, out
    assert sum(1 for line in out.splitlines() if line.startswith("  p10 of single steps")) == 3
    pieces = [r for r in rows if r[:2] in (["64-128-10", "sgd"], ["64-128-10", "adam"],
                                           ["784-512-256-10", "sgd"])]
    assert len(pieces) == 3 and all(len(r) == 12 and r[8] == "|" for r in pieces), out
