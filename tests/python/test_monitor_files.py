"""Run files: creation and naming, bad input (each a RunFileError naming
the path), heartbeat states, and the reader's incremental poll()."""
import os
import sqlite3
import time

import numpy as np
import pytest

from cgrad import monitor
from cgrad.monitor import reader as reader_mod
from cgrad.monitor import schema
from cgrad.monitor.schema import RunFileError
from monitor_standin import StandInSGD, batch, mlp, train_steps


# ---------------------------------------------------------------- creating
def test_directory_gets_a_new_named_file(tmp_path):
    with monitor.Run(tmp_path, name="my run/1", config={"lr": 0.1, "obj": object}) as a:
        pass
    with monitor.Run(tmp_path, name="my run/1") as b:
        pass
    assert os.path.dirname(a.path) == str(tmp_path) and a.path != b.path
    assert os.path.basename(a.path).startswith("my_run_1-") and a.path.endswith(".cgrun")
    assert monitor.list_runs(tmp_path) == sorted([a.path, b.path])
    with monitor.RunReader(a.path) as r:
        assert r.meta["name"] == "my run/1" and r.meta["format"] == "cgrad-run"
        assert r.meta["schema_version"] == schema.SCHEMA_VERSION
        assert r.meta["config"]["lr"] == 0.1 and "object" in r.meta["config"]["obj"]
        assert r.meta["pid"] == os.getpid() and len(r.meta["run_id"]) == 32
    con = sqlite3.connect(a.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_existing_run_needs_overwrite(tmp_path):
    path = tmp_path / "r.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=1.0)
    with pytest.raises(RunFileError, match=r"r\.cgrun: already holds a run; pass overwrite=True"):
        monitor.Run(path)
    with monitor.Run(path, overwrite=True) as run:
        run.log(0, loss=2.0)
    with monitor.RunReader(path) as r:
        assert r.poll().steps["loss"].tolist() == [2.0]


def test_bad_locations(tmp_path):
    missing = tmp_path / "nope" / "r.cgrun"
    with pytest.raises(RunFileError, match=r"nope.*does not exist"):
        monitor.Run(missing)
    with pytest.raises(RunFileError, match=r"nope: neither an existing directory nor a '.cgrun'"):
        monitor.Run(tmp_path / "nope")
    other = tmp_path / "notes.cgrun"
    other.write_text("my notes")
    with pytest.raises(RunFileError, match=r"notes\.cgrun: exists and is not a cgrad run file"):
        monitor.Run(other, overwrite=True)
    assert other.read_text() == "my notes"
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        monitor.Run(3)
    assert issubclass(RunFileError, ValueError)


def test_read_only_location(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/cgrad-test.cgrun"   # root ignores permissions; /proc takes no new files
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "r.cgrun"
    with pytest.raises(RunFileError, match=r"cgrad-test\.cgrun|r\.cgrun") as e:
        monitor.Run(target)
    assert "cannot create a run file here" in str(e.value)


# ---------------------------------------------------------------- reading
def test_reader_bad_files(tmp_path):
    with pytest.raises(RunFileError, match=r"gone\.cgrun: no such run file"):
        monitor.RunReader(tmp_path / "gone.cgrun")
    with pytest.raises(RunFileError, match="is a directory"):
        monitor.RunReader(tmp_path)
    text = tmp_path / "t.cgrun"
    text.write_bytes(b"hello, not sqlite" * 100)
    with pytest.raises(RunFileError, match=r"t\.cgrun: not a cgrad run file or corrupt"):
        monitor.RunReader(text)
    plain = tmp_path / "plain.db"
    con = sqlite3.connect(plain)
    con.execute("CREATE TABLE x (a)")
    con.commit()
    con.close()
    with pytest.raises(RunFileError, match=r"plain\.db: not a cgrad run file \(no meta table\)"):
        monitor.RunReader(plain)
    con = sqlite3.connect(plain)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    con.commit()
    con.close()
    with pytest.raises(RunFileError, match="meta format is 'something-else'"):
        monitor.RunReader(plain)
    with pytest.raises(RunFileError, match="no such directory"):
        monitor.list_runs(tmp_path / "nodir")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.cgrun"
    with monitor.Run(path):
        pass
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(RunFileError, match=r"new\.cgrun: run file has schema version 99.*needs a newer cgrad"):
        monitor.RunReader(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "big.cgrun"
    model = mlp((4, 64, 64, 3))
    opt = StandInSGD(model.parameters())
    x, y = batch()
    with monitor.Run(path) as run:
        run.watch(model, opt)
        train_steps(model, opt, run, 40, x, y)
    size = os.path.getsize(path)
    assert size > 16384
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(RunFileError, match=r"big\.cgrun"):
        with monitor.RunReader(path) as r:
            r.poll()


# ---------------------------------------------------------------- heartbeat
def test_heartbeat_states(tmp_path, monkeypatch):
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "h.cgrun"
    with monitor.Run(path) as run:
        r = monitor.RunReader(path)
        s = r.status()
        assert s.state == "running" and s.last_step == -1 and s.heartbeat_age_s < 5
        run.watch(model, opt)
        train_steps(model, opt, run, 3, x, y)
        assert run.flush()
        assert r.status()[:2] == ("running", 2)
        time.sleep(1.4)                      # idle: the heartbeat keeps beating
        assert r.status().heartbeat_age_s < 1.2
        monkeypatch.setattr(reader_mod.time, "time", lambda: 1e12)
        assert r.status().state == "stopped"     # as if the writer went silent
        monkeypatch.undo()
    assert r.status()[:2] == ("finished", 2)
    r.close()
    with pytest.raises(ZeroDivisionError):
        with monitor.Run(tmp_path / "f.cgrun") as run:
            run.log(0, loss=1.0)
            1 / 0
    with monitor.RunReader(tmp_path / "f.cgrun") as r:
        assert r.status()[:2] == ("failed", 0)
        assert r.poll().steps["loss"].tolist() == [1.0]


# ---------------------------------------------------------------- poll
def test_poll_is_incremental(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "p.cgrun"
    with monitor.Run(path) as run:
        r = monitor.RunReader(path)
        empty = r.poll()
        assert not empty and empty.n_steps == 0 and empty.layer_grad_norm.shape == (0, 0)
        run.watch(model, opt)
        train_steps(model, opt, run, 3, x, y)
        run.event("a", "first")
        run.log(1, acc=0.5)
        run.flush()
        d1 = r.poll()
        assert d1.steps["step"].tolist() == [0, 1, 2]
        assert [l["name"] for l in d1.new_layers][:2] == ["0.weight", "0.bias"]
        assert d1.layer_grad_norm.shape == (3, 6) and d1.lr.shape == (3, 1)
        assert [e["message"] for e in d1.events] == ["first"] and d1.scalars["acc"][0].tolist() == [1]
        d2 = r.poll()
        assert not d2 and d2.n_steps == 0 and d2.layer_grad_norm.shape == (0, 6)
        assert d2.events == [] and d2.scalars == {} and d2.new_layers == []
        train_steps(model, opt, run, 2, x, y)
        run.log(0, acc=0.25)                     # a scalar for an old step still arrives
        run.event("b", "second")
        run.flush()
        d3 = r.poll()
        assert d3.steps["step"].tolist() == [3, 4] and d3.new_layers == []
        assert [e["message"] for e in d3.events] == ["second"]
        assert d3.scalars["acc"][0].tolist() == [0] and d3.scalars["acc"][1].tolist() == [0.25]
        assert not np.isnan(d3.layer_grad_norm).any()
        r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.poll()


def test_poll_max_steps_pages_through(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "p.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        train_steps(model, opt, run, 7, x, y)
    with monitor.RunReader(path) as whole:
        full = whole.poll()
    with monitor.RunReader(path) as r:
        parts = []
        while True:
            d = r.poll(max_steps=3)
            parts.append(d)
            if not d.has_more:
                break
        assert [p.n_steps for p in parts] == [3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([p.layer_grad_norm for p in parts]),
                                      full.layer_grad_norm)
        np.testing.assert_array_equal(np.concatenate([p.steps["loss"] for p in parts]),
                                      full.steps["loss"])
        with pytest.raises(ValueError, match="max_steps must be a positive int or None, got 0"):
            r.poll(max_steps=0)


def test_reader_of_a_read_only_copy(tmp_path):
    # a finished run copied to a directory nobody may write (no -shm can be made)
    path = tmp_path / "c.cgrun"
    with monitor.Run(path) as run:
        run.log(0, loss=3.0)
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "c.cgrun").write_bytes(path.read_bytes())
    ro.chmod(0o555)
    try:
        with monitor.RunReader(ro / "c.cgrun") as r:
            assert r.poll().steps["loss"].tolist() == [3.0]
            assert r.status().state == "finished"
    finally:
        ro.chmod(0o755)
    assert sorted(os.listdir(ro)) == ["c.cgrun"] or os.geteuid() == 0


# ------------------------------------------------------ format versions
def test_v4_chunks_and_v3_v2_v1_files_read_alike(tmp_path):
    """A commit's steps are one chunks row of little-endian arrays (steps
    columns, steps x groups lr, steps x layers statistics); the same run
    rewritten in the version-3 layout (steps and lr rows, one layer_chunks
    row per commit), version 2 (one layer_stats_v2 row per step) and
    version 1 (one layer_stats row per step and layer) reads back to the
    same RunDelta."""
    model = mlp((4, 6, 3))
    opt = StandInSGD(model.parameters(), lr=0.1)
    x, y = batch()
    v4 = tmp_path / "v4.cgrun"
    with monitor.Run(v4) as run:
        run.watch(model, opt, update_ratio_every=2)
        train_steps(model, opt, run, 2, x, y)
        run.flush()                       # two commits: two chunks
        train_steps(model, opt, run, 2, x, y)
    con = sqlite3.connect(v4)
    n_layers = con.execute("SELECT COUNT(*) FROM layers").fetchone()[0]
    chunks = con.execute("SELECT first_step, last_step, n_steps, n_groups, n_layers, step, loss, "
                         "clipped, lr, layer_grad_norm, layer_update_ratio FROM chunks "
                         "ORDER BY chunk_id").fetchall()
    assert [c[:5] for c in chunks] == [(0, 1, 2, 1, n_layers), (2, 3, 2, 1, n_layers)]
    assert np.frombuffer(chunks[1][5], "<i8").tolist() == [2, 3]
    assert np.isfinite(np.frombuffer(chunks[0][6], "<f8")).all()        # losses logged
    assert np.frombuffer(chunks[0][7], "<i8").tolist() == [0, 0]
    assert np.frombuffer(chunks[0][8], "<f8").tolist() == [0.1, 0.1]
    assert all(len(c[9]) == 8 * 2 * n_layers for c in chunks)
    ratio = np.frombuffer(chunks[0][10], "<f8").reshape(2, n_layers)
    assert not np.isnan(ratio[0]).any() and np.isnan(ratio[1]).all()  # every 2nd step only
    with monitor.RunReader(v4) as r:
        assert r.meta["schema_version"] == 4
        d4 = r.poll()
    np.testing.assert_array_equal(np.frombuffer(chunks[1][9], "<f8").reshape(2, n_layers),
                                  d4.layer_grad_norm[2:])
    assert d4.steps["step"].tolist() == [0, 1, 2, 3] and np.isfinite(d4.steps["loss"]).all()

    def rewrite(version, ddl_marker, rows_of):
        path = tmp_path / f"v{version}.cgrun"
        con.execute("VACUUM INTO ?", (str(path),))
        c = sqlite3.connect(path)
        ddl = {1: schema.DDL_V1, 2: schema.DDL_V2, 3: schema.DDL_V3}[version]
        for marker in ("TABLE steps (", "TABLE lr (", ddl_marker):
            c.execute(next(stmt for stmt in ddl.split(";") if marker in stmt))
        st = d4.steps
        for row, step in enumerate(st["step"].tolist()):
            c.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      [None if isinstance(v, float) and np.isnan(v) else v for v in
                       (step, float(st["time"][row]), float(st["loss"][row]),
                        float(st["grad_norm"][row]), float(st["grad_norm_clipped"][row]),
                        float(st["clip_max_norm"][row]), float(st["clip_coef"][row]),
                        int(st["clipped"][row]), float(st["loss_scale"][row]),
                        int(st["skipped"][row]), st["skip_reason"][row], int(st["nonfinite"][row]))])
            c.execute("INSERT INTO lr VALUES (?, 0, ?)", (step, float(d4.lr[row, 0])))
        rows_of(c)
        c.execute("DROP TABLE chunks")
        c.execute("DROP TABLE late_losses")
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        c.commit()
        c.close()
        with monitor.RunReader(path) as r:
            assert r.meta["schema_version"] == version
            return r.poll()

    def v3_rows(c):
        for first in (0, 2):
            sl = slice(first, first + 2)
            c.execute("INSERT INTO layer_chunks (first_step, last_step, n_steps, n_layers, step, "
                      "grad_norm, grad_max, nonfinite, weight_norm, update_ratio) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (first, first + 1, 2, n_layers, d4.steps["step"][sl].astype("<i8").tobytes(),
                       d4.layer_grad_norm[sl].tobytes(), d4.layer_grad_max[sl].tobytes(),
                       d4.layer_nonfinite[sl].astype("<i8").tobytes(),
                       d4.layer_weight_norm[sl].tobytes(), d4.layer_update_ratio[sl].tobytes()))

    def v2_rows(c):
        for row, step in enumerate(d4.steps["step"].tolist()):
            ratio = d4.layer_update_ratio[row]
            c.execute("INSERT INTO layer_stats_v2 VALUES (?,?,?,?,?,?)",
                      (step, d4.layer_grad_norm[row].tobytes(), d4.layer_grad_max[row].tobytes(),
                       d4.layer_nonfinite[row].astype("<i8").tobytes(),
                       d4.layer_weight_norm[row].tobytes(),
                       None if np.isnan(ratio).all() else ratio.tobytes()))

    def v1_rows(c):
        for row, step in enumerate(d4.steps["step"].tolist()):
            for lid in range(n_layers):
                ratio = d4.layer_update_ratio[row, lid]
                c.execute("INSERT INTO layer_stats VALUES (?,?,?,?,?,?,?)",
                          (step, lid, d4.layer_grad_norm[row, lid], d4.layer_grad_max[row, lid],
                           int(d4.layer_nonfinite[row, lid]), d4.layer_weight_norm[row, lid],
                           None if np.isnan(ratio) else ratio))

    d3 = rewrite(3, "TABLE layer_chunks (", v3_rows)
    d2 = rewrite(2, "TABLE layer_stats_v2 (", v2_rows)
    d1 = rewrite(1, "TABLE layer_stats (", v1_rows)
    con.close()
    for d in (d3, d2, d1):
        assert list(d.steps) == list(d4.steps)
        for name, col in d4.steps.items():
            assert d.steps[name].dtype == col.dtype, name
            if col.dtype == object:
                assert d.steps[name].tolist() == col.tolist()
            else:
                np.testing.assert_array_equal(d.steps[name], col)
        np.testing.assert_array_equal(d.lr, d4.lr)
        for f in ("grad_norm", "grad_max", "nonfinite", "weight_norm", "update_ratio"):
            np.testing.assert_array_equal(getattr(d, f"layer_{f}"), getattr(d4, f"layer_{f}"))
    assert np.isnan(d4.layer_update_ratio[1]).all() and not np.isnan(d4.layer_update_ratio[2]).any()
