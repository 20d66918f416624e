"""Reading run files incrementally (docs/run_format.md, "Reader API").

    with RunReader("runs/demo.cgrun") as r:
        delta = r.poll()            # everything committed so far
        ...
        delta = r.poll()            # only what was committed since
        r.status()                  # RunStatus('running', 1234, 0.08)

Each poll reads in one read transaction, so a step it returns comes with
all its lr and layer rows. A reader never writes to the file.
"""
import dataclasses
import json
import os
import sqlite3
import threading
import time
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from cgrad.monitor.schema import (LAYER_FIELDS, RUN_SUFFIX, STEP_FLOAT_COLUMNS, STEP_INT_COLUMNS,
                                  RunFileError, open_read_only)

__all__ = ["RunReader", "RunStatus", "RunDelta", "list_runs", "STALE_AFTER_S"]

# A 'running' heartbeat older than this means the trainer died.
STALE_AFTER_S = 5.0

_INT_STEP_COLUMNS = STEP_INT_COLUMNS
_TEXT_STEP_COLUMNS = ("skip_reason",)
_LAYER_FIELDS = LAYER_FIELDS
# RunDelta.steps keys, in the version-1..3 steps table's column order
_STEP_COLUMNS = ("step", "time", "loss", "grad_norm", "grad_norm_clipped", "clip_max_norm",
                 "clip_coef", "clipped", "loss_scale", "skipped", "skip_reason", "nonfinite")
# what a version-4 poll selects from chunks, in this order
_CHUNK_SELECT = (("first_step", "chunk_id", "n_steps", "n_groups", "n_layers", "step")
                 + STEP_FLOAT_COLUMNS + STEP_INT_COLUMNS[1:] + ("skip_reason", "lr")
                 + tuple(f"layer_{f}" for f in LAYER_FIELDS))
_NEW_CHUNKS = "SELECT chunk_id, first_step FROM chunks WHERE last_step > ?"
_CHUNK_ROW = f"SELECT {', '.join(_CHUNK_SELECT)} FROM chunks WHERE chunk_id = ?"


class RunStatus(NamedTuple):
    state: str              # 'running' | 'finished' | 'failed' | 'stopped'
    last_step: int          # last committed step, -1 before the first
    heartbeat_age_s: float  # seconds since the writer's last commit


@dataclasses.dataclass
class RunDelta:
    """What was committed since the previous poll. Row i of every
    (n_new_steps, ...) array is the step steps['step'][i]; layer columns
    follow RunReader.layers (the width after this poll)."""
    steps: Dict[str, np.ndarray]        # column name -> (n_new_steps,)
    lr: np.ndarray                      # (n_new_steps, n_groups) float64, NaN: no row
    layer_grad_norm: np.ndarray         # (n_new_steps, n_layers) float64, NaN: no row
    layer_grad_max: np.ndarray
    layer_nonfinite: np.ndarray         # float64 so that NaN can mark a missing row
    layer_update_ratio: np.ndarray
    layer_weight_norm: np.ndarray
    scalars: Dict[str, Tuple[np.ndarray, np.ndarray]]  # name -> (steps int64, values float64)
    events: List[dict]
    new_layers: List[dict]
    has_more: bool = False              # poll(max_steps) stopped early; poll again

    @property
    def n_steps(self):
        return int(self.steps["step"].shape[0])

    def __bool__(self):
        return bool(self.n_steps or self.scalars or self.events or self.new_layers)


def _float_array(values):
    """float64 array from a sequence that may hold None (-> NaN)."""
    return np.array(values, dtype=np.float64) if len(values) else np.empty(0, np.float64)


class RunReader:
    """Read-only view of one run file. poll() returns what is new since the
    last poll; status() says whether the trainer is alive. One reader per
    thread (calls on one reader are serialised by a lock)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._con, self.meta = open_read_only(self.path)
        self._con.execute("PRAGMA busy_timeout = 1000")
        self._lock = threading.Lock()
        self.layers = []
        self._layer_col = {}    # layer_id -> column
        self.n_groups = int(self.meta.get("n_groups", 0) or 0)
        self._version = int(self.meta.get("schema_version", 1))
        self.last_step = -1
        self._last_event = 0
        self._last_scalar = 0

    # ------------------------------------------------------------ basics
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __repr__(self):
        return f"RunReader({self.path!r}, last_step={self.last_step})"

    def _check_open(self):
        if self._con is None:
            raise RuntimeError(f"RunReader({self.path!r}) is closed")

    def _fail(self, exc):
        return RunFileError(f"{self.path}: cannot read the run file ({exc})")

    def status(self):
        """RunStatus from the heartbeat row: 'running' while the writer
        committed within STALE_AFTER_S, 'stopped' when a 'running' run went
        silent (the trainer died at last_step)."""
        with self._lock:
            self._check_open()
            try:
                row = self._con.execute("SELECT time, step, state FROM heartbeat WHERE id = 1").fetchone()
            except sqlite3.Error as e:
                raise self._fail(e) from None
        if row is None:
            raise RunFileError(f"{self.path}: run file has no heartbeat row")
        hb_time, step, state = row
        age = max(0.0, time.time() - float(hb_time))
        if state == "running" and age >= STALE_AFTER_S:
            state = "stopped"
        return RunStatus(state, int(step), age)

    # ------------------------------------------------------------ polling
    def poll(self, max_steps=None):
        """RunDelta of the steps (and events, scalars, layers) committed
        since the last poll; empty arrays when nothing is new. max_steps
        bounds the steps returned (oldest first; has_more says the rest
        waits for the next poll) so a long finished run loads in pieces."""
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"poll: max_steps must be a positive int or None, got {max_steps!r}")
        with self._lock:
            self._check_open()
            con = self._con
            try:
                con.execute("BEGIN")
                try:
                    return self._read_delta(con, max_steps)
                finally:
                    con.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    return self._empty_delta()  # a checkpoint held the file: next poll
                raise self._fail(e) from None
            except sqlite3.Error as e:
                raise self._fail(e) from None

    def _empty_delta(self):
        n_layers = len(self.layers)
        return RunDelta(steps=self._steps_dict([], []), lr=np.empty((0, self.n_groups)),
                        **{f"layer_{f}": np.empty((0, n_layers)) for f in _LAYER_FIELDS},
                        scalars={}, events=[], new_layers=[])

    def _read_delta(self, con, max_steps):
        new_layers = self._read_layers(con)
        lo = self.last_step
        if self._version >= 4:
            steps, lr, layer, has_more = self._read_chunks(con, lo, max_steps)
        else:
            steps, lr, layer, has_more = self._read_step_rows(con, lo, max_steps)
        scalars = self._read_scalars(con)
        events = self._read_events(con)
        if steps["step"].shape[0]:
            self.last_step = int(steps["step"][-1])
        return RunDelta(steps=steps, lr=lr, scalars=scalars, events=events,
                        new_layers=new_layers, has_more=has_more,
                        **{f"layer_{f}": layer[i] for i, f in enumerate(_LAYER_FIELDS)})

    # ------------------------------------------------- version 4: chunks
    def _read_chunks(self, con, lo, max_steps):
        """Version 4: the chunks rows holding a step after lo (indexed on
        last_step), lowest first_step first; with max_steps the reading
        stops once no further chunk can hold one of the max_steps lowest
        new steps. A step held by two chunks (a repeated step index) takes
        the later chunk's row, as the OR REPLACE of the older layouts did."""
        # the new chunks' ids through the last_step index, then their rows one
        # by one in step order: a max_steps page reads only what it returns
        heads = sorted(con.execute(_NEW_CHUNKS, (lo,)).fetchall(), key=lambda h: (h[1], h[0]))
        chunks, n_new, kth = [], 0, None
        for chunk_id, first_step in heads:
            if kth is not None and first_step > kth:
                break
            c = self._decode_chunk(con.execute(_CHUNK_ROW, (chunk_id,)).fetchone())
            chunks.append(c)
            n_new += int((c["step"] > lo).sum())
            if max_steps and n_new >= max_steps:
                new = np.unique(np.concatenate([x["step"] for x in chunks]))
                new = new[new > lo]
                if new.shape[0] >= max_steps:
                    kth = int(new[max_steps - 1])
        if not chunks:
            n_layers = len(self.layers)
            return (self._steps_dict(_STEP_COLUMNS, []), np.empty((0, self.n_groups)),
                    [np.empty((0, n_layers)) for _ in _LAYER_FIELDS], False)
        step_all = np.concatenate([c["step"] for c in chunks])
        chunk_of = np.concatenate([np.full(c["k"], j) for j, c in enumerate(chunks)])
        row_of = np.concatenate([np.arange(c["k"]) for c in chunks])
        ids = np.array([c["chunk_id"] for c in chunks], dtype=np.int64)[chunk_of]
        order = np.lexsort((row_of, ids, step_all))      # by step, then write order
        order = order[step_all[order] > lo]
        s = step_all[order]
        last = np.ones(s.shape[0], dtype=bool)
        last[:-1] = s[1:] != s[:-1]
        win = order[last]                                # each new step's newest row
        if max_steps:
            win = win[:max_steps]
        n = win.shape[0]
        step_ids = step_all[win]
        steps = {"step": step_ids}
        for name in STEP_FLOAT_COLUMNS + STEP_INT_COLUMNS[1:]:
            steps[name] = np.concatenate([c[name] for c in chunks])[win]
        steps["skip_reason"] = self._chunk_reasons(chunks, step_all, win)
        steps = {name: steps[name] for name in _STEP_COLUMNS}
        self.n_groups = max([self.n_groups] + [c["g"] for c in chunks])
        lr = np.full((n, self.n_groups), np.nan)
        n_layers = len(self.layers)
        layer = [np.full((n, n_layers), np.nan) for _ in _LAYER_FIELDS]
        lookup = self._column_lookup() if self._layer_col else None
        pos_of = np.full(step_all.shape[0], -1, dtype=np.int64)
        pos_of[win] = np.arange(n)
        offset = 0
        for c in chunks:
            pos = pos_of[offset:offset + c["k"]]
            offset += c["k"]
            rows = np.nonzero(pos >= 0)[0]
            if not rows.size:
                continue
            lr[pos[rows], :c["g"]] = c["lr"][rows]
            if c["layers"] is not None and lookup is not None:
                for i, block in enumerate(c["layers"]):
                    self._place(layer[i], pos[rows], block[rows], lookup)
        if n:
            self._apply_late_losses(con, lo, step_ids, ids[win], steps["loss"])
        has_more = bool(max_steps and n and con.execute(
            "SELECT 1 FROM chunks WHERE last_step > ? LIMIT 1", (int(step_ids[-1]),)).fetchone())
        return steps, lr, layer, has_more

    def _decode_chunk(self, row):
        """One chunks row as arrays, sizes checked (a corrupt row is a
        RunFileError, never a reshape traceback)."""
        first_step, chunk_id, k, g, n, step_blob, *rest = row
        nf, ni = len(STEP_FLOAT_COLUMNS), len(STEP_INT_COLUMNS) - 1
        fblobs, iblobs = rest[:nf], rest[nf:nf + ni]
        reasons, lr_blob, layer_blobs = rest[nf + ni], rest[nf + ni + 1], rest[nf + ni + 2:]

        def arr(blob, dtype, size, what):
            if not isinstance(blob, bytes) or len(blob) != 8 * size:
                raise RunFileError(f"{self.path}: chunks row {chunk_id} holds a {what} array of "
                                   f"the wrong size ({None if blob is None else len(blob)} bytes, "
                                   f"expected {8 * size})")
            return np.frombuffer(blob, dtype=dtype)

        if not all(type(v) is int for v in (k, g, n)) or k < 1 or g < 0 or n < 0:
            raise RunFileError(f"{self.path}: chunks row {chunk_id} has n_steps={k}, n_groups={g}, "
                               f"n_layers={n}")
        c = {"chunk_id": chunk_id, "k": k, "g": g, "step": arr(step_blob, "<i8", k, "step")}
        for name, b in zip(STEP_FLOAT_COLUMNS, fblobs):
            c[name] = arr(b, "<f8", k, name)
        for name, b in zip(STEP_INT_COLUMNS[1:], iblobs):
            c[name] = arr(b, "<i8", k, name)
        c["lr"] = arr(lr_blob, "<f8", k * g, "lr").reshape(k, g)
        try:
            c["reasons"] = {int(key): v for key, v in json.loads(reasons).items()} if reasons else {}
        except (ValueError, TypeError, AttributeError):
            raise RunFileError(f"{self.path}: chunks row {chunk_id} has an invalid skip_reason "
                               f"{reasons!r}") from None
        c["layers"] = None
        if n and all(b is not None for b in layer_blobs):
            c["layers"] = [arr(b, "<i8" if f == "nonfinite" else "<f8", k * n, f"layer_{f}")
                           .reshape(k, n) for f, b in zip(_LAYER_FIELDS, layer_blobs)]
        return c

    @staticmethod
    def _chunk_reasons(chunks, step_all, win):
        """skip_reason of the chosen rows: a chunk's reasons are keyed by step."""
        out = np.full(win.shape[0], None, dtype=object)
        if not any(c["reasons"] for c in chunks):
            return out
        reason_of = np.full(step_all.shape[0], None, dtype=object)
        offset = 0
        for c in chunks:
            if c["reasons"]:
                for j, st in enumerate(c["step"].tolist()):
                    reason_of[offset + j] = c["reasons"].get(st)
            offset += c["k"]
        out[:] = reason_of[win]
        return out

    def _apply_late_losses(self, con, lo, step_ids, chunk_ids, loss):
        """A late_losses row sets the loss of its step's row when that row
        comes from a chunk written before it (chunk_id <= its chunk_id)."""
        for step, value, upto in con.execute(
                "SELECT step, loss, chunk_id FROM late_losses WHERE step > ? AND step <= ? "
                "ORDER BY update_id", (lo, int(step_ids[-1]))):
            j = int(np.searchsorted(step_ids, step))
            if j < step_ids.shape[0] and step_ids[j] == step and chunk_ids[j] <= upto:
                loss[j] = np.nan if value is None else value

    # ----------------------------------------- versions 1-3: step rows
    def _read_step_rows(self, con, lo, max_steps):
        cur = con.execute("SELECT * FROM steps WHERE step > ? ORDER BY step" +
                          (" LIMIT ?" if max_steps else ""),
                          (lo, max_steps) if max_steps else (lo,))
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        steps = self._steps_dict(columns, rows)
        step_ids = steps["step"]
        n = step_ids.shape[0]
        has_more = bool(max_steps and n == max_steps and con.execute(
            "SELECT 1 FROM steps WHERE step > ? LIMIT 1", (int(step_ids[-1]),)).fetchone())
        hi = int(step_ids[-1]) if n else lo
        lr = self._read_lr(con, lo, hi, step_ids)
        layer = self._read_layer_stats(con, lo, hi, step_ids)
        return steps, lr, layer, has_more

    def _read_layers(self, con):
        last = self.layers[-1]["layer_id"] if self.layers else -1
        new = []
        for layer_id, name, kind, shape, numel in con.execute(
                "SELECT layer_id, name, kind, shape, numel FROM layers WHERE layer_id > ? "
                "ORDER BY layer_id", (last,)):
            try:
                shape = json.loads(shape)
            except ValueError:
                shape = []
            d = {"layer_id": int(layer_id), "name": name, "kind": kind, "shape": shape,
                 "numel": int(numel)}
            self._layer_col[d["layer_id"]] = len(self.layers)
            self.layers.append(d)
            new.append(d)
        return new

    @staticmethod
    def _steps_dict(columns, rows):
        out = {}
        cols = list(zip(*rows)) if rows else [()] * len(columns)
        for name, values in zip(columns, cols):
            if name in _INT_STEP_COLUMNS:
                out[name] = np.array([0 if v is None else v for v in values], dtype=np.int64)
            elif name in _TEXT_STEP_COLUMNS:
                out[name] = np.array(values, dtype=object)
            else:
                try:
                    out[name] = _float_array(values)
                except (TypeError, ValueError):  # a column a newer writer added
                    out[name] = np.array(values, dtype=object)
        out.setdefault("step", np.empty(0, np.int64))
        return out

    def _read_lr(self, con, lo, hi, step_ids):
        rows = con.execute("SELECT step, grp, lr FROM lr WHERE step > ? AND step <= ? "
                           "ORDER BY step, grp", (lo, hi)).fetchall() if step_ids.size else []
        if rows:
            a = np.array(rows, dtype=np.float64)
            self.n_groups = max(self.n_groups, int(a[:, 1].max()) + 1)
        out = np.full((step_ids.shape[0], self.n_groups), np.nan)
        if rows:
            out[np.searchsorted(step_ids, a[:, 0].astype(np.int64)), a[:, 1].astype(np.int64)] = a[:, 2]
        return out

    def _column_lookup(self):
        """layer_id -> column of the layer arrays (-1: unknown)."""
        lookup = np.full(max(self._layer_col) + 1, -1, dtype=np.int64)
        lookup[list(self._layer_col)] = list(self._layer_col.values())
        return lookup

    def _read_layer_stats(self, con, lo, hi, step_ids):
        n, n_layers = step_ids.shape[0], len(self.layers)
        out = [np.full((n, n_layers), np.nan) for _ in _LAYER_FIELDS]
        if not n or not n_layers:
            return out
        if self._version == 3:
            self._read_layer_chunks(con, lo, hi, step_ids, out)
        elif self._version == 2:
            self._read_layer_blobs(con, lo, hi, step_ids, out)
        else:
            self._read_layer_rows(con, lo, hi, step_ids, out)
        return out

    def _read_layer_chunks(self, con, lo, hi, step_ids, out):
        """Version 3: one row per commit, each field a little-endian
        (n_steps x n_layers) array whose rows are the steps of its step
        array (a chunk may reach past hi: only the asked steps are taken;
        a later chunk holding a step again wins)."""
        rows = con.execute("SELECT n_steps, n_layers, step, grad_norm, grad_max, nonfinite, "
                           "weight_norm, update_ratio FROM layer_chunks WHERE last_step > ? AND "
                           "first_step <= ? ORDER BY chunk_id", (lo, hi)).fetchall()
        if not rows:
            return
        lookup = self._column_lookup()
        for n_steps, n_layers, steps_blob, *blobs in rows:
            steps = np.frombuffer(steps_blob, dtype="<i8")
            if steps.shape[0] != n_steps or any(len(b) != 8 * n_steps * n_layers for b in blobs):
                raise RunFileError(f"{self.path}: a layer_chunks row holds arrays of the wrong size")
            r = np.searchsorted(step_ids, steps)
            keep = (r < step_ids.shape[0])
            keep[keep] = step_ids[r[keep]] == steps[keep]
            if not keep.any():
                continue
            sel = np.nonzero(keep)[0]
            for i, f in enumerate(_LAYER_FIELDS):
                block = np.frombuffer(blobs[i], dtype="<i8" if f == "nonfinite" else "<f8")
                block = block.reshape(n_steps, n_layers)[sel]
                self._place(out[i], r[sel], block, lookup)

    def _read_layer_blobs(self, con, lo, hi, step_ids, out):
        """Version 2: one row per step, each field a little-endian array in
        layer_id order (element i is layer i)."""
        rows = con.execute("SELECT step, grad_norm, grad_max, nonfinite, weight_norm, update_ratio "
                           "FROM layer_stats_v2 WHERE step > ? AND step <= ? ORDER BY step",
                           (lo, hi)).fetchall()
        if not rows:
            return
        r = np.searchsorted(step_ids, np.array([row[0] for row in rows], dtype=np.int64))
        lookup = self._column_lookup()
        for i, f in enumerate(_LAYER_FIELDS):
            dtype = "<i8" if f == "nonfinite" else "<f8"
            blobs = [row[1 + i] for row in rows]
            widths = {len(b) for b in blobs if b is not None}
            if len(widths) == 1 and None not in blobs:  # the usual case: one array for all rows
                k = widths.pop() // 8
                block = np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(rows), k)
                self._place(out[i], r, block, lookup)
                continue
            for j, b in enumerate(blobs):
                if b:
                    a = np.frombuffer(b[: len(b) // 8 * 8], dtype=dtype)
                    self._place(out[i], r[j:j + 1], a.reshape(1, -1), lookup)

    @staticmethod
    def _place(dst, rows, block, lookup):
        """dst[rows, column of layer id c] = block[:, c] for the known ids."""
        k = min(block.shape[1], lookup.shape[0])
        cols = lookup[:k]
        keep = np.nonzero(cols >= 0)[0]
        if keep.size:
            dst[np.ix_(rows, cols[keep])] = block[:, keep]

    def _read_layer_rows(self, con, lo, hi, step_ids, out):
        """Version 1: one row per (step, layer)."""
        rows = con.execute("SELECT step, layer_id, grad_norm, grad_max, nonfinite, weight_norm, "
                           "update_ratio FROM layer_stats WHERE step > ? AND step <= ?",
                           (lo, hi)).fetchall()
        if not rows:
            return
        a = np.array(rows, dtype=np.float64)
        r = np.searchsorted(step_ids, a[:, 0].astype(np.int64))
        ids = a[:, 1].astype(np.int64)
        lookup = self._column_lookup()
        known = ids < lookup.shape[0]
        c = np.where(known, lookup[np.minimum(ids, lookup.shape[0] - 1)], -1)
        keep = c >= 0
        for i in range(len(_LAYER_FIELDS)):
            out[i][r[keep], c[keep]] = a[keep, 2 + i]

    def _read_scalars(self, con):
        rows = con.execute("SELECT scalar_id, step, name, value FROM scalars WHERE scalar_id > ? "
                           "ORDER BY scalar_id", (self._last_scalar,)).fetchall()
        if not rows:
            return {}
        self._last_scalar = int(rows[-1][0])
        grouped = {}
        for _, step, name, value in rows:
            grouped.setdefault(name, ([], []))
            grouped[name][0].append(step)
            grouped[name][1].append(value)
        return {name: (np.array(s, dtype=np.int64), _float_array(v)) for name, (s, v) in grouped.items()}

    def _read_events(self, con):
        cur = con.execute("SELECT * FROM events WHERE event_id > ? ORDER BY event_id",
                          (self._last_event,))
        columns = [d[0] for d in cur.description]
        events = [dict(zip(columns, row)) for row in cur.fetchall()]
        if events:
            self._last_event = int(events[-1]["event_id"])
        return events


def list_runs(directory):
    """Sorted paths of the run files (*.cgrun holding an SQLite header) in
    directory."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise RunFileError(f"{directory}: no such directory")
    found = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(RUN_SUFFIX) or not entry.is_file():
            continue
        try:
            with open(entry.path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    continue
        except OSError:
            continue
        found.append(entry.path)
    return sorted(found)
