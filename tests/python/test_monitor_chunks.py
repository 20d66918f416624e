"""Schema version 4: a commit is one chunks row whatever its step count;
late losses, repeated step indices, paging with max_steps and corrupt rows
read the way docs/run_format.md says."""
import sqlite3
import threading

import numpy as np
import pytest

from cgrad import monitor
from cgrad.monitor import schema
from cgrad.monitor.schema import RunFileError
from monitor_standin import StandInSGD, batch, mlp, train_steps


def read(path, **kw):
    with monitor.RunReader(path) as r:
        return r.poll(**kw)


def test_a_commit_is_a_handful_of_statements_whatever_its_steps(tmp_path):
    """The writer's SQL per commit does not grow with the steps it holds:
    one chunks INSERT for 1 step and for 300 (no row bound per step)."""
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "n.cgrun"
    counts = {}
    with monitor.Run(path) as run:
        run.watch(model, opt)
        run.flush()
        w = run._writer
        w.remove_source(run._watcher._source)   # claim by hand: one chunk of exactly n steps
        for n in (1, 300):
            train_steps(model, opt, run, n, x, y)
            chunk = run._watcher._claim(force=True)
            assert chunk["i"].shape[0] == n
            statements = []
            w._con.set_trace_callback(statements.append)
            w._write([("chunk", chunk)], "running", 0.0)
            w._con.set_trace_callback(None)
            counts[n] = statements
        w.add_source(run._watcher._source)
    assert len(counts[1]) == len(counts[300]) == 4, counts[300]
    assert sum("INSERT INTO chunks" in s for s in counts[300]) == 1
    d = read(path)
    assert d.steps["step"].tolist() == list(range(301))
    assert not np.isnan(d.layer_grad_norm).any() and not np.isnan(d.steps["loss"]).any()


def test_poll_uses_the_last_step_index(tmp_path):
    """A poll of a long run reads only the chunks holding new steps: the
    query goes through the last_step index, not a scan of the table."""
    path = tmp_path / "q.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=1.0)
    from cgrad.monitor.reader import _CHUNK_ROW, _NEW_CHUNKS
    con = sqlite3.connect(path)
    plans = [" ".join(str(r) for r in con.execute("EXPLAIN QUERY PLAN " + q, (10,)))
             for q in (_NEW_CHUNKS, _CHUNK_ROW)]
    con.close()
    assert "USING INDEX chunks_last_step" in plans[0] and "SCAN" not in plans[0], plans
    assert "INTEGER PRIMARY KEY" in plans[1] and "SCAN" not in plans[1], plans


def test_late_loss_and_repeated_step_index(tmp_path):
    """A late loss applies to the row written before it; a step written
    again later (a repeated index) takes the newer row, which a late loss
    written before that row does not touch."""
    path = tmp_path / "l.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=float("nan"))     # a NaN loss: stored NaN, plus a nonfinite event
        run.log(1, loss=1.0)
        run.log(2, loss=2.0)
        run.flush()
        w = run._writer
        w.submit_loss_update(1, 10.0)     # late: applies to step 1's row
        w.submit_loss_update(2, 20.0)     # late, but step 2 is written again below
        run.flush()
        with monitor.RunReader(path) as early:
            d = early.poll(max_steps=2)
            assert d.steps["step"].tolist() == [0, 1] and d.has_more
            assert d.steps["loss"][1] == 10.0
            run.log(2, loss=3.0)          # the newer row of step 2
            run.log(3, loss=4.0)
            run.flush()
            d = early.poll()
            assert d.steps["step"].tolist() == [2, 3] and not d.has_more
            assert d.steps["loss"].tolist() == [3.0, 4.0]
            w.submit_loss_update(3, 40.0)  # after the reader read step 3: it keeps 4.0
            run.flush()
            assert not early.poll()
    d = read(path)
    assert d.steps["step"].tolist() == [0, 1, 2, 3]
    assert np.isnan(d.steps["loss"][0]) and d.steps["loss"][1:].tolist() == [10.0, 3.0, 40.0]
    assert [e["kind"] for e in d.events] == ["nonfinite"] and d.events[0]["step"] == 0
    assert d.lr.shape == (4, 0)          # no optimizer: no groups


def test_max_steps_pages_in_step_order_across_chunks(tmp_path):
    """Chunks written out of step order (lower steps in a later commit)
    still page oldest step first, and the pages add up to one full poll."""
    path = tmp_path / "p.cgrun"
    with monitor.Run(path) as run:
        for block in ((10, 11, 12), (0, 1, 2), (5, 13)):
            for s in block:
                run.log(s, loss=float(s))
            run.flush()
    full = read(path)
    assert full.steps["step"].tolist() == [0, 1, 2, 5, 10, 11, 12, 13]
    pages = []
    with monitor.RunReader(path) as r:
        while True:
            d = r.poll(max_steps=3)
            pages.append(d.steps["step"].tolist())
            np.testing.assert_array_equal(d.steps["loss"], d.steps["step"].astype(float))
            if not d.has_more:
                break
    assert pages == [[0, 1, 2], [5, 10, 11], [12, 13]]


def test_detail_dropped_reads_as_nan_and_steps_stay(tmp_path):
    """A chunks row without per-layer arrays (the writer dropped them) has
    n_layers 0 and NULL layer columns; its steps read with NaN layers."""
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "d.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        run.flush()
        w = run._writer
        w.remove_source(run._watcher._source)
        train_steps(model, opt, run, 3, x, y)
        chunk = run._watcher._claim(force=True)
        chunk["raw"] = None
        w.submit_chunk(chunk)
        run.flush()
        w.add_source(run._watcher._source)
        train_steps(model, opt, run, 2, x, y)
    con = sqlite3.connect(path)
    rows = con.execute("SELECT n_steps, n_layers, layer_grad_norm IS NULL FROM chunks "
                       "ORDER BY chunk_id").fetchall()
    con.close()
    assert rows[0] == (3, 0, 1) and rows[1][1] > 0 and rows[1][2] == 0
    d = read(path)
    assert d.steps["step"].tolist() == list(range(5)) and not np.isnan(d.lr).any()
    assert np.isnan(d.layer_grad_norm[:3]).all() and not np.isnan(d.layer_grad_norm[3:]).any()


def corrupt(path, sql):
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize("sql, what", [
    ("UPDATE chunks SET lr = x'00'", "lr array of the wrong size"),
    ("UPDATE chunks SET loss = x''", "loss array of the wrong size"),
    ("UPDATE chunks SET skip_reason = '[1'", "invalid skip_reason"),
    ("UPDATE chunks SET n_steps = 0", "n_steps=0"),
])
def test_corrupt_chunk_rows_are_a_clear_error(tmp_path, sql, what):
    path = tmp_path / "c.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=1.0)
    corrupt(path, sql)
    with pytest.raises(RunFileError, match=what) as e:
        read(path)
    assert "c.cgrun" in str(e.value)


def test_a_v4_file_needs_its_tables(tmp_path):
    path = tmp_path / "t.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=1.0)
    corrupt(path, "DROP TABLE late_losses")
    with pytest.raises(RunFileError, match="missing tables.*late_losses"):
        read(path)


def test_ddl_matches_what_the_writer_fills(tmp_path):
    """Every chunks column the reader selects exists in the DDL, and a v4
    file holds no per-step table."""
    path = tmp_path / "s.cgrun"
    with monitor.Run(path):
        pass
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    cols = [r[1] for r in con.execute("PRAGMA table_info(chunks)")]
    con.close()
    assert tables == {"meta", "heartbeat", "layers", "scalars", "events", "chunks", "late_losses"}
    from cgrad.monitor.reader import _CHUNK_SELECT
    from cgrad.monitor.writer import _CHUNK_COLUMNS
    assert set(_CHUNK_SELECT) <= set(cols) and set(_CHUNK_COLUMNS) <= set(cols)
    assert schema.SCHEMA_VERSION == 4


def test_reader_in_a_thread_while_chunks_land(tmp_path):
    """A poll never returns half a chunk: each delta's steps come with
    their lr and every layer, and together they are every step once."""
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "r.cgrun"
    seen, bad = [], []
    stop = threading.Event()
    with monitor.Run(path) as run:
        run.watch(model, opt)
        run.flush()

        def poll():
            with monitor.RunReader(path) as r:
                while True:
                    done = stop.is_set()
                    d = r.poll(max_steps=7)
                    if d.n_steps and (np.isnan(d.layer_grad_norm).any() or np.isnan(d.lr).any()):
                        bad.append(d.steps["step"].tolist())
                    seen.extend(d.steps["step"].tolist())
                    if done and not d:
                        return

        t = threading.Thread(target=poll)
        t.start()
        for i in range(120):
            train_steps(model, opt, run, 1, x, y)
            if i % 17 == 0:
                run.flush()
    stop.set()
    t.join(30)
    assert not bad and seen == list(range(120))
