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
slow step must not look like a dead trainer). A chunk is written as one
row of the chunks table (schema version 4) holding each column of its
steps as an array, so a commit costs a few NumPy copies and a handful of
statements whatever its step count: nothing is done per step with the GIL
held (a row bound per step costs microseconds of GIL, and the training
thread waits for the GIL the writer holds).

Back-pressure: the training thread never blocks. A ring that fills up
before the writer claimed it spills its slots into the list as a chunk;
when the pending per-layer values pass MAX_PENDING_LAYER_ROWS (the writer
fell behind: a slow disk, a starved thread), the per-layer detail of the
oldest pending chunks is dropped (their step columns and lr stay) and a
'dropped' event says which. A write error (disk full) stops writing: the
error is kept, the training thread is warned once, and the data is
discarded instead of piling up.
"""
import json
import sqlite3
import sys
import threading
import time
import warnings

import numpy as np

from cgrad.monitor.schema import LAYER_FIELDS, STEP_FLOAT_COLUMNS, STEP_INT_COLUMNS

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


def _num(x):
    """float(x), NaN for None (an array element)."""
    return float("nan") if x is None else float(x)


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
        self._last_chunk_id = 0  # the newest chunks row written (late losses name it)
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
        rows, events, scalars = [], [], []
        con.execute("BEGIN IMMEDIATE")
        for kind, payload in batch:
            if kind == "step":
                rows.append(payload)
            elif kind == "chunk":
                self._insert_chunk(con, _ring_columns(payload, events))
            elif kind == "event":
                events.append(payload)
            elif kind == "scalars":
                scalars.extend(payload)
            elif kind == "layers":
                con.executemany("INSERT OR IGNORE INTO layers (layer_id, name, kind, shape, numel) "
                                "VALUES (?, ?, ?, ?, ?)", payload)
            elif kind == "loss":
                # applies to the step's row in the chunks written so far, not
                # to a later chunk that holds the step index again
                con.execute("INSERT INTO late_losses (step, loss, chunk_id) VALUES (?, ?, ?)",
                            (payload[1], payload[0], self._last_chunk_id))
            elif kind == "meta":
                con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", payload)
        if rows:
            self._insert_chunk(con, _row_columns(rows, events))
        if scalars:
            con.executemany("INSERT INTO scalars (step, name, value) VALUES (?, ?, ?)", scalars)
        if events:
            con.executemany("INSERT INTO events (step, time, kind, message, layer_id, value) "
                            "VALUES (?, ?, ?, ?, ?, ?)", events)
        con.execute("UPDATE heartbeat SET time = ?, step = ?, state = ? WHERE id = 1",
                    (now, self.last_step, state))
        con.execute("COMMIT")

    def _insert_chunk(self, con, columns):
        """One chunks row (columns: the values in _CHUNK_COLUMNS order)."""
        cur = con.execute(_INSERT_CHUNK, columns)
        self._last_chunk_id = cur.lastrowid
        self.last_step = max(self.last_step, columns[1])


# the chunks table's columns as the writer fills them (docs/run_format.md)
_CHUNK_COLUMNS = (("first_step", "last_step", "n_steps", "n_groups", "n_layers", "step")
                  + STEP_FLOAT_COLUMNS + STEP_INT_COLUMNS[1:] + ("skip_reason", "lr")
                  + tuple(f"layer_{f}" for f in LAYER_FIELDS))
_INSERT_CHUNK = (f"INSERT INTO chunks ({', '.join(_CHUNK_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_CHUNK_COLUMNS))})")


def _reasons_json(reasons):
    return json.dumps({str(int(s)): str(r) for s, r in reasons.items()}) if reasons else None


def _ring_columns(chunk, events):
    """The chunks row of ring slots (see _monitor.pxi claim): one array per
    column, so the cost is a few copies per commit whatever its step count;
    its events (and a 'nonfinite' event per non-finite loss) go to events."""
    f, iv, lr = chunk["f"], chunk["i"], chunk["lr"]
    step_ids = np.ascontiguousarray(iv[:, 0])
    k = step_ids.shape[0]
    fcols = np.ascontiguousarray(f.T)    # (7, k): one row per float column
    icols = np.ascontiguousarray(iv[:, 1:4].T)
    layer = (None,) * len(LAYER_FIELDS)
    n_layers = 0
    if chunk["raw"] is not None:
        lm = chunk["layer_map"]
        has = (iv[:, 4] & 1).astype(bool)
        layer = tuple(_blob(np.ascontiguousarray(a))
                      for a in lm.arrays(chunk["raw"], chunk["upd"], has))
        n_layers = lm.n_layers
    bad_loss = np.nonzero((iv[:, 4] & 2).astype(bool) & ~np.isfinite(f[:, 1]))[0]
    for j in bad_loss.tolist():
        events.append((int(step_ids[j]), float(f[j, 0]), "nonfinite", f"loss is {float(f[j, 1])}",
                       None, None))
    if chunk["events"]:
        ev = chunk["events"]
        order = np.argsort(step_ids, kind="stable")
        at = np.searchsorted(step_ids[order], np.array([e[0] for e in ev], dtype=np.int64))
        at = np.minimum(at, k - 1)
        times = f[order[at], 0].tolist()  # an event's time: its step's (else a near one's)
        events.extend((st, t, kind_, msg, lid, _real(val))
                      for (st, kind_, msg, lid, val), t in zip(ev, times))
    return ((int(step_ids.min()), int(step_ids.max()), k, lr.shape[1], n_layers, _blob(step_ids))
            + tuple(_blob(c) for c in fcols) + tuple(_blob(c) for c in icols)
            + (_reasons_json(chunk["reasons"]), _blob(np.ascontiguousarray(lr))) + layer)


def _row_columns(rows, events):
    """The chunks row of StepRows (steps without a ring: no per-layer
    statistics); their events go to events."""
    k = len(rows)
    step_ids = np.array([r.step for r in rows], dtype=np.int64)
    floats = np.array([[r.time, _num(r.loss), _num(r.grad_norm), _num(r.grad_norm_clipped),
                        _num(r.clip_max_norm), _num(r.clip_coef), _num(r.loss_scale)]
                       for r in rows], dtype=np.float64).T.copy()
    ints = np.array([[int(bool(r.clipped)), int(bool(r.skipped)), int(r.nonfinite)] for r in rows],
                    dtype=np.int64).T.copy()
    n_groups = max(len(r.lrs) for r in rows)
    lr = np.full((k, n_groups), np.nan)
    for j, r in enumerate(rows):
        lr[j, :len(r.lrs)] = [_num(x) for x in r.lrs]
        events.extend((st, r.time, kind_, msg, lid, _real(val))
                      for st, kind_, msg, lid, val in r.events)
    reasons = {r.step: r.skip_reason for r in rows if r.skip_reason is not None}
    return ((int(step_ids.min()), int(step_ids.max()), k, n_groups, 0, _blob(step_ids))
            + tuple(_blob(c) for c in floats) + tuple(_blob(c) for c in ints)
            + (_reasons_json(reasons), _blob(lr)) + (None,) * len(LAYER_FIELDS))
