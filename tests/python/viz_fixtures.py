"""Run files for the monitor-app tests, written straight with sqlite3 to the
schema of docs/run_format.md (so the app's tests do not depend on the
recorder), plus a ``live`` command that writes a run slowly from another
process:  python tests/python/viz_fixtures.py live PATH N_STEPS [SECONDS]
"""
import json
import math
import sqlite3
import sys
import time

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), time REAL NOT NULL,
    step INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE layers (layer_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL, shape TEXT NOT NULL, numel INTEGER NOT NULL);
CREATE TABLE steps (step INTEGER PRIMARY KEY, time REAL NOT NULL, loss REAL,
    grad_norm REAL, grad_norm_clipped REAL, clip_max_norm REAL, clip_coef REAL,
    clipped INTEGER NOT NULL, loss_scale REAL, skipped INTEGER NOT NULL,
    skip_reason TEXT, nonfinite INTEGER NOT NULL);
CREATE TABLE lr (step INTEGER NOT NULL, grp INTEGER NOT NULL, lr REAL NOT NULL,
    PRIMARY KEY (step, grp)) WITHOUT ROWID;
CREATE TABLE layer_stats (step INTEGER NOT NULL, layer_id INTEGER NOT NULL,
    grad_norm REAL NOT NULL, grad_max REAL NOT NULL, nonfinite INTEGER NOT NULL,
    weight_norm REAL NOT NULL, update_ratio REAL, PRIMARY KEY (step, layer_id)) WITHOUT ROWID;
CREATE TABLE scalars (step INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (step, name)) WITHOUT ROWID;
CREATE TABLE events (event_id INTEGER PRIMARY KEY, step INTEGER NOT NULL, time REAL NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, layer_id INTEGER, value REAL);
"""

try:  # the recorder's DDL of the version-1 layout this fixture writes (still read)
    from cgrad.monitor.schema import DDL_V1 as SCHEMA  # noqa: F811
except ImportError:
    pass

CLIP = 1.0


class FixtureRun:
    """A run file being written: schema, meta and layers on creation, then
    whole steps per ``commit``. The synthetic training is deterministic:

    - loss decays, lr warms up for 20 steps then follows a cosine, with a
      warm restart (and an lr_change event) at ``restart_at``;
    - global norm 0.5 with a spike of 8.0 every 25th step (clipped at 1.0);
    - layer ``zero_layer`` has a zero gradient at every step (dead layer);
    - ``nonfinite`` = {step: layer} puts Inf elements into that cell.
    """

    def __init__(self, path, n_layers=6, n_groups=2, name="fixture", zero_layer=2,
                 nonfinite=None, restart_at=None, total_steps=200):
        self.path = str(path)
        self.n_layers = n_layers
        self.n_groups = n_groups
        self.zero_layer = zero_layer
        self.nonfinite = dict(nonfinite or {})
        self.restart_at = restart_at
        self.total_steps = total_steps
        self.next_step = 0
        self.con = sqlite3.connect(self.path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.executescript(SCHEMA)
        meta = {"format": "cgrad-run", "schema_version": "1", "run_id": "0" * 32,
                "name": name, "created": str(time.time()),
                "config": json.dumps({"lr": 1e-3, "clip": CLIP}),
                "cgrad_version": "0.1.0", "host": "test", "pid": "0",
                "n_groups": str(n_groups)}
        with self.con:
            self.con.execute("BEGIN")
            self.con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            self.con.executemany(
                "INSERT INTO layers VALUES (?, ?, 'param', ?, ?)",
                [(i, self.layer_name(i), json.dumps([4, 4]), 16) for i in range(n_layers)])
            self.con.execute("INSERT INTO heartbeat VALUES (1, ?, -1, 'running')", (time.time(),))

    @staticmethod
    def layer_name(i):
        return f"net.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}"

    def lr_of(self, step, group):
        base = 1e-3 * (0.1 if group else 1.0)
        if step < 20:
            return base * (step + 1) / 20
        start = 20 if self.restart_at is None or step < self.restart_at else self.restart_at
        t = (step - start) / max(self.total_steps - start, 1)
        return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def grad_norm_of(self, step):
        return 8.0 if step % 25 == 24 else 0.5

    def commit(self, n, state="running"):
        """Write n whole steps and the heartbeat in one transaction."""
        now = time.time()
        with self.con:
            self.con.execute("BEGIN")
            for _ in range(n):
                s = self.next_step
                norm = self.grad_norm_of(s)
                clipped = norm > CLIP
                coef = CLIP / norm if clipped else 1.0
                bad_layer = self.nonfinite.get(s)
                self.con.execute(
                    "INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (s, now, 2.0 * math.exp(-s / 50) + 0.1, norm, min(norm, CLIP), CLIP,
                     coef, int(clipped), None, 0, None, 0 if bad_layer is None else 3))
                self.con.executemany("INSERT INTO lr VALUES (?,?,?)",
                                     [(s, g, self.lr_of(s, g)) for g in range(self.n_groups)])
                rows = []
                for i in range(self.n_layers):
                    g = 0.0 if i == self.zero_layer else norm / self.n_layers * (1 + i)
                    nf = 3 if bad_layer == i else 0
                    if nf:
                        g = math.inf
                    rows.append((s, i, g, g if nf == 0 else 1.0, nf, 1.0, 1e-3))
                self.con.executemany("INSERT INTO layer_stats VALUES (?,?,?,?,?,?,?)", rows)
                self.con.execute("INSERT INTO scalars (step, name, value) VALUES (?, 'acc', ?)", (s, s / 1000))
                if bad_layer is not None:
                    self.event(s, "nonfinite", f"non-finite gradient in {self.layer_name(bad_layer)}",
                               layer_id=bad_layer)
                if self.restart_at is not None and s == self.restart_at:
                    self.event(s, "lr_change", "lr 1e-05 -> 0.001 (restart)", value=1e-3)
                self.next_step += 1
            self.con.execute("UPDATE heartbeat SET time=?, step=?, state=? WHERE id=1",
                             (now, self.next_step - 1, state))

    def event(self, step, kind, message, layer_id=None, value=None):
        self.con.execute("INSERT INTO events (step, time, kind, message, layer_id, value) "
                         "VALUES (?,?,?,?,?,?)", (step, time.time(), kind, message, layer_id, value))

    def finish(self, state="finished"):
        with self.con:
            self.con.execute("UPDATE heartbeat SET time=?, state=? WHERE id=1", (time.time(), state))

    def close(self):
        self.con.close()


def make_run(path, n_steps=200, state="finished", **kw):
    """A complete run file; returns its FixtureRun (closed)."""
    kw.setdefault("total_steps", n_steps)
    run = FixtureRun(path, **kw)
    for _ in range(0, n_steps, 50):
        run.commit(min(50, n_steps - run.next_step))
    if state != "running":
        run.finish(state)
    run.close()
    return run


def live(path, n_steps, seconds):
    """Write n_steps over about ``seconds``, committing small batches."""
    run = FixtureRun(path, total_steps=n_steps, nonfinite={n_steps - 5: 1})
    batches = max(1, n_steps // 5)
    for _ in range(batches):
        run.commit(min(5, n_steps - run.next_step))
        time.sleep(seconds / batches)
    run.finish()
    run.close()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "live":
        live(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 3.0)
    else:
        sys.exit("usage: viz_fixtures.py live PATH N_STEPS [SECONDS]")
