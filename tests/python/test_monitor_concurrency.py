"""A run file written by another process: a reader polling it meanwhile
never sees half a step and sees new steps within a second; a trainer
killed with SIGKILL leaves a file that opens and holds only whole steps."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from cgrad import monitor
from cgrad.monitor import reader as reader_mod

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TRAINER = os.path.join(HERE, "monitor_trainer.py")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def start_trainer(path, n_steps, sleep_s):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen([sys.executable, TRAINER, str(path), str(n_steps), str(sleep_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
                            text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"trainer did not start: {line!r} {proc.stderr.read()}")
    return proc


def assert_whole_steps(path):
    """integrity_check passes and every committed chunk is whole: each of
    its arrays has exactly n_steps rows (steps x groups for lr, steps x
    layers for the layer statistics), and the steps are 0..n-1 once each."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n_layers = con.execute("SELECT COUNT(*) FROM layers").fetchone()[0]
        n_groups = int(con.execute("SELECT value FROM meta WHERE key='n_groups'").fetchone()[0])
        chunks = con.execute("SELECT first_step, last_step, n_steps, n_groups, n_layers, step, "
                             "length(time), length(loss), length(clipped), length(lr), "
                             "length(layer_grad_norm), length(layer_update_ratio) "
                             "FROM chunks ORDER BY chunk_id").fetchall()
        hb_step = con.execute("SELECT step FROM heartbeat").fetchone()[0]
    finally:
        con.close()
    assert n_layers == 27 and n_groups == 1
    steps = []
    for first, last, k, groups, width, step_blob, *lengths in chunks:
        assert groups == n_groups and width == n_layers
        assert lengths == [8 * k] * 3 + [8 * k * groups] + [8 * k * n_layers] * 2, \
            "a half-written chunk"
        ids = np.frombuffer(step_blob, dtype="<i8")
        assert ids.shape[0] == k and (first, last) == (ids.min(), ids.max())
        steps.extend(ids.tolist())
    assert steps == list(range(len(steps))), "a step missing or written twice"
    assert hb_step == (steps[-1] if steps else -1)
    return len(steps)


def test_sigkill_leaves_whole_steps(tmp_path, monkeypatch):
    rng = random.Random(0)
    for attempt in range(3):
        path = tmp_path / f"k{attempt}.cgrun"
        proc = start_trainer(path, 0, 0.0)
        try:
            with monitor.RunReader(path) as r:
                seen = 0
                deadline = time.time() + 60
                while seen < 30 and time.time() < deadline:
                    seen += r.poll().n_steps
                    time.sleep(0.02)
            assert seen >= 30
            time.sleep(rng.uniform(0.0, 0.3))   # land anywhere in the commit cycle
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        n = assert_whole_steps(path)
        assert n >= seen
        with monitor.RunReader(path) as r:
            d = r.poll()
            assert d.n_steps == n and not np.isnan(d.layer_grad_norm).any()
            assert (d.steps["clipped"][3::7] == 1).all()
            monkeypatch.setattr(reader_mod, "STALE_AFTER_S", 0.3)
            time.sleep(0.35)
            status = r.status()
            assert status.state == "stopped" and status.last_step == n - 1
            monkeypatch.undo()


def test_concurrent_reader_sees_whole_steps_quickly(tmp_path):
    path = tmp_path / "c.cgrun"
    proc = start_trainer(path, 250, 0.004)
    latencies, seen = [], []
    try:
        with monitor.RunReader(path) as r:
            deadline = time.time() + 120
            while time.time() < deadline:
                state = r.status().state
                d = r.poll()
                now = time.time()
                if d.n_steps:
                    assert not np.isnan(d.layer_grad_norm).any(), "a step without all its layers"
                    assert not np.isnan(d.lr).any()
                    assert d.layer_grad_norm.shape[1] == len(r.layers) == 27
                    seen.extend(d.steps["step"].tolist())
                    latencies.extend((now - d.steps["time"]).tolist())
                if state == "finished" and not d:
                    break
                time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    assert seen == list(range(250))
    lat = np.array(latencies)
    assert np.median(lat) < 0.5 and lat.max() < 1.0, (np.median(lat), lat.max())
    assert assert_whole_steps(path) == 250


def test_thread_reader_in_the_writing_process(tmp_path):
    import threading

    from monitor_standin import StandInSGD, batch, loss_of, mlp

    model = mlp((4, 16, 16, 3))
    opt = StandInSGD(model.parameters())
    x, y = batch()
    path = tmp_path / "t.cgrun"
    problems, seen = [], []
    stop = threading.Event()

    def read():
        with monitor.RunReader(path) as r:
            while True:
                done = stop.is_set()  # set after close: a poll after it sees everything
                d = r.poll()
                if d.n_steps and np.isnan(d.layer_grad_norm).any():
                    problems.append(d.steps["step"].tolist())
                seen.extend(d.steps["step"].tolist())
                if done and not d:
                    break
                time.sleep(0.005)

    with monitor.Run(path) as run:
        t = threading.Thread(target=read)
        run.watch(model, opt)
        t.start()
        for _ in range(200):
            opt.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            opt.step()
            run.log_loss(loss)
    stop.set()
    t.join(timeout=30)
    assert not problems and seen == list(range(200))
