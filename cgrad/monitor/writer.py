"""The background writer: the only code that touches a run's SQLite file
after creation.

The training thread calls the submit_* methods, which append a small tuple
to a list under a lock held for a few instructions: no SQLite call and no
I/O on the training thread. The writer thread swaps the list out every
COMMIT_INTERVAL_S and writes it in one transaction, so a commit (and a
reader's snapshot, and what survives a SIGKILL) always holds whole steps;
it updates the heartbeat at each commit, and at least every
HEARTBEAT_IDLE_S when training sends nothing (a slow step must not look
like a dead trainer).

Back-pressure: the training thread never blocks. When the pending
per-layer rows pass MAX_PENDING_LAYER_ROWS (the writer fell behind: a slow
disk, a starved thread), the per-layer detail of the oldest pending steps
is dropped (their steps/lr rows stay) and a 'dropped' event says which.
A write error (disk full) stops writing: the error is kept, the training
thread is warned once, and the data is discarded instead of piling up.
"""
import sqlite3
import threading
import time
import warnings

__all__ = ["Writer", "StepRow", "COMMIT_INTERVAL_S", "MAX_PENDING_LAYER_ROWS"]

COMMIT_INTERVAL_S = 0.15
HEARTBEAT_IDLE_S = 1.0
MAX_PENDING_LAYER_ROWS = 250_000


class StepRow:
    """One recorded optimizer step: the steps row, lr per group, and the
    per-layer rows (layer_id, grad_norm, grad_max, nonfinite, weight_norm,
    update_ratio), or None once dropped."""

    __slots__ = ("step", "time", "loss", "grad_norm", "grad_norm_clipped", "clip_max_norm",
                 "clip_coef", "clipped", "loss_scale", "skipped", "skip_reason", "nonfinite",
                 "lrs", "layers", "events", "done")

    def __init__(self, step):
        self.step = step
        self.time = time.time()
        self.loss = None
        self.grad_norm = self.grad_norm_clipped = self.clip_max_norm = self.clip_coef = None
        self.clipped = False
        self.loss_scale = None
        self.skipped = False
        self.skip_reason = None
        self.nonfinite = 0
        self.lrs = []
        self.layers = None
        self.events = ()    # (step, kind, message, layer_id, value), written with the row
        self.done = False   # the optimizer finished this step (post-hook ran)

    def steps_tuple(self):
        return (self.step, self.time, _real(self.loss), _real(self.grad_norm),
                _real(self.grad_norm_clipped), _real(self.clip_max_norm), _real(self.clip_coef),
                int(bool(self.clipped)), _real(self.loss_scale), int(bool(self.skipped)),
                self.skip_reason, int(self.nonfinite))


def _real(x):
    """None stays NULL; NaN also becomes NULL (SQLite has no NaN), which a
    reader turns back into NaN."""
    if x is None:
        return None
    x = float(x)
    return None if x != x else x


class Writer:
    """Owns the connection from creation to close; see the module docstring."""

    def __init__(self, con, path, on_tick=None):
        self.path = path
        self._con = con
        self._on_tick = on_tick  # called on the writer thread before each commit
        self._lock = threading.Lock()
        self._pending = []
        self._pending_layer_rows = 0
        self._stop = threading.Event()
        self._flushed = threading.Condition(threading.Lock())
        self._flush_seq = 0      # submissions up to this serial number ...
        self._written_seq = 0    # ... are committed up to this one
        self._final_state = "finished"
        self.last_step = -1
        self.error = None
        self._warned = False
        self._last_commit = time.time()
        self._thread = threading.Thread(target=self._run, name=f"cgrad-monitor-writer",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------- training thread
    def _submit(self, item, layer_rows=0):
        if self.error is not None:
            if not self._warned:
                self._warned = True
                warnings.warn(f"cgrad.monitor: writing {self.path} failed ({self.error}); "
                              f"further telemetry of this run is discarded", RuntimeWarning,
                              stacklevel=3)
            return
        with self._lock:
            self._pending.append(item)
            self._pending_layer_rows += layer_rows
            if self._pending_layer_rows > MAX_PENDING_LAYER_ROWS:
                self._drop_oldest_detail()

    def _drop_oldest_detail(self):
        """Strips the layer rows of the oldest pending steps until half the
        bound is left (lock held)."""
        target = MAX_PENDING_LAYER_ROWS // 2
        first = last = None
        n = 0
        for kind, payload in self._pending:
            if self._pending_layer_rows <= target:
                break
            if kind == "step" and payload.layers:
                self._pending_layer_rows -= len(payload.layers)
                payload.layers = None
                first = payload.step if first is None else first
                last = payload.step
                n += 1
        if n:
            self._pending.append(("event", (last, time.time(), "dropped",
                                            f"per-layer detail of {n} step(s) {first}..{last} dropped: "
                                            f"the writer fell behind", None, float(n))))

    def submit_step(self, row):
        self._submit(("step", row), len(row.layers) if row.layers else 0)

    def submit_layers(self, rows):
        """rows: (layer_id, name, kind, shape_json, numel)."""
        self._submit(("layers", rows))

    def submit_event(self, step, kind, message, layer_id=None, value=None):
        self._submit(("event", (int(step), time.time(), kind, message, layer_id, _real(value))))

    def submit_scalars(self, step, items):
        self._submit(("scalars", [(int(step), k, _real(v)) for k, v in items]))

    def submit_loss_update(self, step, loss):
        """A loss that arrived after its step was written."""
        self._submit(("loss", (_real(loss), int(step))))

    def submit_meta(self, items):
        self._submit(("meta", list(items)))

    def flush(self, timeout=10.0):
        """Blocks until everything submitted so far is committed (tests,
        checkpoints). Returns False on timeout."""
        with self._lock:
            self._pending.append(("flush", None))
            self._flush_seq += 1
            want = self._flush_seq
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self._written_seq < want and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(min(left, COMMIT_INTERVAL_S))
        return self._written_seq >= want

    def close(self, state="finished"):
        """Final commit with heartbeat state ('finished' or 'failed'), then
        the connection is closed."""
        self._final_state = state
        self._stop.set()
        self._thread.join()
        if self._con is not None:
            try:
                self._con.close()
            except sqlite3.Error:
                pass
            self._con = None

    # ----------------------------------------------------- writer thread
    def _run(self):
        stopping = False
        while not stopping:
            stopping = self._stop.wait(COMMIT_INTERVAL_S)
            if self._on_tick is not None and not stopping:
                try:
                    self._on_tick()
                except Exception:  # noqa: BLE001 - a hook bug must not kill the writer
                    pass
            with self._lock:
                batch, self._pending = self._pending, []
                self._pending_layer_rows = 0
            now = time.time()
            if batch or stopping or now - self._last_commit >= HEARTBEAT_IDLE_S:
                state = self._final_state if stopping else "running"
                self._commit(batch, state, now)

    def _commit(self, batch, state, now):
        flushes = sum(1 for kind, _ in batch if kind == "flush")
        if self.error is None:
            try:
                self._write(batch, state, now)
            except sqlite3.Error as e:
                self.error = e
                try:
                    self._con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        self._last_commit = now
        if flushes:
            with self._flushed:
                self._written_seq += flushes
                self._flushed.notify_all()

    def _write(self, batch, state, now):
        con = self._con
        steps, lrs, layer_rows, events, scalars = [], [], [], [], []
        con.execute("BEGIN IMMEDIATE")
        for kind, payload in batch:
            if kind == "step":
                steps.append(payload.steps_tuple())
                lrs.extend((payload.step, g, lr) for g, lr in enumerate(payload.lrs) if lr is not None)
                events.extend((st, payload.time, kind_, msg, lid, _real(val))
                              for st, kind_, msg, lid, val in payload.events)
                if payload.layers:
                    s = payload.step
                    layer_rows.extend((s,) + r for r in payload.layers)
                self.last_step = max(self.last_step, payload.step)
            elif kind == "event":
                events.append(payload)
            elif kind == "scalars":
                scalars.extend(payload)
            elif kind == "layers":
                con.executemany("INSERT OR IGNORE INTO layers (layer_id, name, kind, shape, numel) "
                                "VALUES (?, ?, ?, ?, ?)", payload)
            elif kind == "loss":
                con.execute("UPDATE steps SET loss = ? WHERE step = ?", payload)
            elif kind == "meta":
                con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", payload)
        if steps:
            # OR REPLACE: a step index seen twice (a second optimizer step
            # numbered the same, a resumed counter) keeps the latest values.
            con.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", steps)
        if lrs:
            con.executemany("INSERT OR REPLACE INTO lr (step, grp, lr) VALUES (?, ?, ?)", lrs)
        if layer_rows:
            con.executemany("INSERT OR REPLACE INTO layer_stats (step, layer_id, grad_norm, grad_max, "
                            "nonfinite, weight_norm, update_ratio) VALUES (?,?,?,?,?,?,?)", layer_rows)
        if scalars:
            con.executemany("INSERT INTO scalars (step, name, value) VALUES (?, ?, ?)", scalars)
        if events:
            con.executemany("INSERT INTO events (step, time, kind, message, layer_id, value) "
                            "VALUES (?, ?, ?, ?, ?, ?)", events)
        con.execute("UPDATE heartbeat SET time = ?, step = ?, state = ? WHERE id = 1",
                    (now, self.last_step, state))
        con.execute("COMMIT")
