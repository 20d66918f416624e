"""The background writer: the only code that touches a run's SQLite file
after creation.

The training thread calls the submit_* methods, which append a small tuple
to a list under a lock held for a few instructions: no SQLite call and no
I/O on the training thread. Recorded steps do not even go through that
list: a watcher registers a source (add_source), a callable the writer
calls at each commit to claim the ring slots finished since the last one
as one chunk of arrays (cgrad/_monitor.pxi). The writer thread swaps the
list out and claims the sources every COMMIT_INTERVAL_S and writes it all
in one transaction, so a commit (and a reader's snapshot, and what survives
a SIGKILL) always holds whole steps; it updates the heartbeat at each
commit, and at least every HEARTBEAT_IDLE_S when training sends nothing (a
slow step must not look like a dead trainer). Per commit the work is a
few NumPy calls and executemany over the chunk's columns: no Python object
per step is built before the rows SQLite binds.

Back-pressure: the training thread never blocks. A ring that fills up
before the writer claimed it spills its slots into the list as a chunk;
when the pending per-layer values pass MAX_PENDING_LAYER_ROWS (the writer
fell behind: a slow disk, a starved thread), the per-layer detail of the
oldest pending chunks is dropped (their steps/lr rows stay) and a 'dropped'
event says which. A write error (disk full) stops writing: the error is
kept, the training thread is warned once, and the data is discarded
instead of piling up.
"""
import sqlite3
import sys
import threading
import time
import warnings

import numpy as np

__all__ = ["Writer", "StepRow", "COMMIT_INTERVAL_S", "MAX_PENDING_LAYER_ROWS"]

COMMIT_INTERVAL_S = 0.15
HEARTBEAT_IDLE_S = 1.0
MAX_PENDING_LAYER_ROWS = 250_000


def _blob(a):
    """Little-endian bytes of a float64 / int64 array (None stays NULL)."""
    if a is None:
        return None
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes()


class StepRow:
    """One step row that did not come from a watcher's ring (a loss logged
    with no optimizer watched): the steps row and lr per group."""

    __slots__ = ("step", "time", "loss", "grad_norm", "grad_norm_clipped", "clip_max_norm",
                 "clip_coef", "clipped", "loss_scale", "skipped", "skip_reason", "nonfinite",
                 "lrs", "events", "done")

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
        self._sources = []
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
    def warn_failed(self, stacklevel=3):
        """Once per run, on the training thread: writing failed."""
        if self.error is not None and not self._warned:
            self._warned = True
            warnings.warn(f"cgrad.monitor: writing {self.path} failed ({self.error}); "
                          f"further telemetry of this run is discarded", RuntimeWarning,
                          stacklevel=stacklevel + 1)

    def _submit(self, item, layer_rows=0):
        if self.error is not None:
            self.warn_failed(stacklevel=4)
            return
        with self._lock:
            self._pending.append(item)
            self._pending_layer_rows += layer_rows
            if self._pending_layer_rows > MAX_PENDING_LAYER_ROWS:
                self._drop_oldest_detail()

    def _drop_oldest_detail(self):
        """Strips the per-layer statistics of the oldest pending chunks
        until half the bound is left (lock held)."""
        target = MAX_PENDING_LAYER_ROWS // 2
        first = last = None
        n = 0
        for kind, payload in self._pending:
            if self._pending_layer_rows <= target:
                break
            if kind == "chunk" and payload["raw"] is not None:
                steps = payload["i"][:, 0]
                self._pending_layer_rows -= steps.shape[0] * payload["layer_map"].n_layers
                payload["raw"] = None
                first = int(steps[0]) if first is None else first
                last = int(steps[-1])
                n += steps.shape[0]
        if n:
            self._pending.append(("event", (last, time.time(), "dropped",
                                            f"per-layer detail of {n} step(s) {first}..{last} dropped: "
                                            f"the writer fell behind", None, float(n))))

    def submit_step(self, row):
        self._submit(("step", row))

    def submit_chunk(self, chunk):
        """A chunk claimed from a ring (see _monitor.pxi claim) outside the
        writer's own claims: a full ring, an unwatch."""
        self._submit(("chunk", chunk), chunk["i"].shape[0] * chunk["layer_map"].n_layers)

    def add_source(self, source):
        """source(force) -> chunk or None, called on the writer thread at
        every commit (force: flush or close, take even a row waiting for
        its loss)."""
        with self._lock:
            self._sources = self._sources + [source]

    def remove_source(self, source):
        with self._lock:
            self._sources = [s for s in self._sources if s is not source]

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
                sources = self._sources
            force = stopping or any(kind == "flush" for kind, _ in batch)
            for source in sources:
                try:
                    chunk = source(force)
                except Exception as e:  # noqa: BLE001 - a bad chunk must not kill the writer
                    warnings.warn(f"cgrad.monitor: claiming steps failed ({e!r})", RuntimeWarning)
                    chunk = None
                if chunk is not None:
                    batch.append(("chunk", chunk))
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
                for source in self._sources:  # the watchers warn on the training thread
                    notify = getattr(source, "writer_failed", None)
                    if notify is not None:
                        notify()
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
        steps, lrs, events, scalars = [], [], [], []
        con.execute("BEGIN IMMEDIATE")
        for kind, payload in batch:
            if kind == "step":
                steps.append(payload.steps_tuple())
                lrs.extend((payload.step, g, lr) for g, lr in enumerate(payload.lrs) if lr is not None)
                events.extend((st, payload.time, kind_, msg, lid, _real(val))
                              for st, kind_, msg, lid, val in payload.events)
                self.last_step = max(self.last_step, payload.step)
            elif kind == "chunk":
                self._write_chunk(con, payload, events)
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
        if scalars:
            con.executemany("INSERT INTO scalars (step, name, value) VALUES (?, ?, ?)", scalars)
        if events:
            con.executemany("INSERT INTO events (step, time, kind, message, layer_id, value) "
                            "VALUES (?, ?, ?, ?, ?, ?)", events)
        con.execute("UPDATE heartbeat SET time = ?, step = ?, state = ? WHERE id = 1",
                    (now, self.last_step, state))
        con.execute("COMMIT")

    def _write_chunk(self, con, chunk, events):
        """One chunk of ring slots: its steps and lr rows (column-wise, so
        the only per-step objects are the tuples SQLite binds; a NaN binds
        as NULL), one layer_chunks row of (steps x layers) arrays, and its
        events."""
        f, iv, lr = chunk["f"], chunk["i"], chunk["lr"]
        step_ids = iv[:, 0]
        k = step_ids.shape[0]
        steps = step_ids.tolist()
        reasons = chunk["reasons"]
        skip = [reasons.get(s) for s in steps] if reasons else [None] * k
        cols = [f[:, j].tolist() for j in range(7)]
        con.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        zip(steps, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5],
                            iv[:, 1].tolist(), cols[6], iv[:, 2].tolist(), skip, iv[:, 3].tolist()))
        for g in range(lr.shape[1]):
            col = lr[:, g]
            if np.isnan(col).any():
                keep = ~np.isnan(col)
                con.executemany("INSERT OR REPLACE INTO lr (step, grp, lr) VALUES (?, ?, ?)",
                                zip(step_ids[keep].tolist(), [g] * int(keep.sum()), col[keep].tolist()))
            else:
                con.executemany("INSERT OR REPLACE INTO lr (step, grp, lr) VALUES (?, ?, ?)",
                                zip(steps, [g] * k, col.tolist()))
        if chunk["raw"] is not None:
            lm = chunk["layer_map"]
            has = (iv[:, 4] & 1).astype(bool)
            arrays = lm.arrays(chunk["raw"], chunk["upd"], has)
            con.execute("INSERT INTO layer_chunks (first_step, last_step, n_steps, n_layers, step, "
                        "grad_norm, grad_max, nonfinite, weight_norm, update_ratio) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (int(step_ids.min()), int(step_ids.max()), k, lm.n_layers, _blob(step_ids))
                        + tuple(_blob(np.ascontiguousarray(a)) for a in arrays))
        times = cols[0]
        bad_loss = np.nonzero((iv[:, 4] & 2).astype(bool) & ~np.isfinite(f[:, 1]))[0]
        for j in bad_loss.tolist():
            events.append((steps[j], times[j], "nonfinite", f"loss is {float(f[j, 1])}", None, None))
        if chunk["events"]:
            where = {s: j for j, s in enumerate(steps)}
            events.extend((st, times[where.get(st, k - 1)], kind_, msg, lid, _real(val))
                          for st, kind_, msg, lid, val in chunk["events"])
        self.last_step = max(self.last_step, int(step_ids.max()))
