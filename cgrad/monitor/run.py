"""cgrad.monitor.Run: one training run recorded to one SQLite file.

    with cgrad.monitor.Run("runs/", config={"lr": 1e-3}, name="mlp") as run:
        run.watch(model, optimizer, scheduler)   # nothing else changes
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            run.log_loss(loss)                    # optional

Which step a loss belongs to: run.log(step, loss=...) and
run.log_loss(loss, step=...) say it; step(closure) gives it itself; and
run.log_loss(loss) attaches it to the step that just ran if that step has
no loss yet, otherwise to the next step. So both "log before step()" and
"log after step()" loops work when they log every step.

A step's row is written as soon as it has its loss; a row without one is
held until the next step starts (or HOLD_S passes, or the run closes), so
a loss logged right after step() still lands in it. A loss for a step
already written is applied later with an UPDATE (a reader that already
read that step does not see it).
"""
import argparse
import atexit
import json
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping

from cgrad import _core
from cgrad.monitor.schema import RUN_SUFFIX, RunFileError, create_run_file, open_read_only
from cgrad.monitor.watch import Watcher
from cgrad.monitor.writer import StepRow, Writer

__all__ = ["Run", "HOLD_S"]

HOLD_S = 0.5


def _config_json(config):
    if config is None:
        return "{}"
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"Run: config must be a dict (or argparse.Namespace), got "
                        f"{type(config).__name__}")
    try:
        return json.dumps(dict(config), default=repr, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"Run: config cannot be stored as JSON ({e})") from None


def _is_run_file(path):
    try:
        con, _ = open_read_only(path)
    except RunFileError:
        return False
    con.close()
    return True


def _resolve_path(path, name, overwrite):
    """The file to create: inside an existing directory a new name from
    name and the time; otherwise a .cgrun path whose directory exists."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"Run: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "run").strip("._") or "run"
        stem += "-" + time.strftime("%Y%m%d-%H%M%S")
        candidate = os.path.join(path, stem + RUN_SUFFIX)
        k = 2
        while os.path.exists(candidate):
            candidate = os.path.join(path, f"{stem}-{k}{RUN_SUFFIX}")
            k += 1
        return candidate
    if not path.endswith(RUN_SUFFIX):
        raise RunFileError(f"{path}: neither an existing directory nor a '{RUN_SUFFIX}' file path "
                           f"(a directory must exist; a run file must end in {RUN_SUFFIX})")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise RunFileError(f"{path}: directory {directory!r} does not exist")
    if os.path.lexists(path):
        if os.path.isdir(path) or not _is_run_file(path):
            raise RunFileError(f"{path}: exists and is not a cgrad run file (not overwritten)")
        if not overwrite:
            raise RunFileError(f"{path}: already holds a run; pass overwrite=True to replace it, "
                               f"or a directory to get a new file")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise RunFileError(f"{path}: cannot replace the old run ({e.strerror})") from None
    return path


def _scalar(key, value):
    if isinstance(value, _core.Tensor):
        if value.numel() != 1:
            raise ValueError(f"log: {key} must be a number or a one-element tensor, got a tensor "
                             f"of shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"log: {key} must be a number, got {type(value).__name__} ({value!r:.60})")
    return float(value)


def _check_step(step, who):
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"{who}: step must be an int, got {type(step).__name__} ({step!r})")
    if step < 0:
        raise ValueError(f"{who}: step must be >= 0, got {step}")
    return step


class Run:
    """Run(path, config=None, name=None, *, overwrite=False): records a
    training run to a .cgrun file (docs/run_format.md). path: a .cgrun file
    (its directory must exist; an existing run there is replaced only with
    overwrite=True) or an existing directory (a new file named from name and
    the time is created in it). A context manager: on exit the heartbeat
    says 'finished', or 'failed' when the block raised."""

    def __init__(self, path, config=None, name=None, *, overwrite=False):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Run: name must be a str or None, got {type(name).__name__}")
        config_json = _config_json(config)
        self.path = _resolve_path(path, name, overwrite)
        self.name = name or os.path.basename(self.path)[:-len(RUN_SUFFIX)]
        self.run_id = uuid.uuid4().hex
        meta = {"run_id": self.run_id, "name": self.name, "created": repr(time.time()),
                "config": config_json, "cgrad_version": str(_core.__version__),
                "host": socket.gethostname(), "pid": str(os.getpid()), "n_groups": "0"}
        con = create_run_file(self.path, meta)
        self._lock = threading.Lock()   # guards the held row and the pending losses
        self._open = None               # StepRow finished but waiting for its loss
        self._next_loss = None          # log_loss() for the step about to run
        self._losses = {}               # step -> loss logged ahead of that step
        self._last_step = -1            # last optimizer step that finished
        self._running = None            # step inside its pre/post hooks
        self._watcher = None
        self._closed = False
        self._pid = os.getpid()         # a forked child must not touch the parent's file
        self._writer = Writer(con, self.path, on_tick=self._flush_stale)
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------ basics
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False

    def __repr__(self):
        return f"Run({self.path!r}, name={self.name!r}, step={self._last_step})"

    @property
    def step(self):
        """Index of the last optimizer step that finished (-1 before one)."""
        return self._last_step

    def _check_open(self, who):
        if self._closed:
            raise RuntimeError(f"{who}: the run {self.path!r} is closed")

    def watch(self, model, optimizer, scheduler=None, scaler=None, every=1, *,
              update_ratio_every=1):
        """Records every every-th optimizer.step() of optimizer (and every
        skipped step) from now on, for model's parameters and submodules.
        The update-to-weight ratio of a built-in optimizer is measured in
        its fused update (no extra pass); another optimizer's needs a copy
        of the weights before the step. update_ratio_every=k measures it on
        every k-th recorded step only (0: never; NULL in between). Returns
        self."""
        self._check_open("watch")
        if self._watcher is not None:
            raise RuntimeError(f"watch: run {self.path!r} already watches a "
                               f"{type(self._watcher.optimizer).__name__}; call unwatch() first")
        self._watcher = Watcher(self, model, optimizer, scheduler, scaler, every, update_ratio_every)
        return self

    def unwatch(self):
        """Detaches the hooks (the run stays open)."""
        if self._watcher is not None:
            self._finalize_open()
            self._watcher.remove()
            self._watcher = None

    # ----------------------------------------------------------- logging
    def log_loss(self, loss, step=None):
        """The loss of an optimizer step (see the module docstring for which
        step when step is None)."""
        self._check_open("log_loss")
        value = _scalar("loss", loss)
        if step is not None:
            self._set_loss(_check_step(step, "log_loss"), value)
            return
        if self._watcher is None:
            self._set_loss(self._last_step + 1, value)  # each loss is a step of its own
            return
        with self._lock:
            row = self._open
            if row is not None and row.loss is None:
                row.loss = value
                self._open = None
                self._emit(row)
            elif self._running is not None:
                self._losses[self._running] = value
            else:
                self._next_loss = value

    def log(self, step, **scalars):
        """Named values at step (run.log(100, val_acc=0.93)); 'loss' is the
        step's loss (steps.loss), the others go to the scalars table."""
        self._check_open("log")
        step = _check_step(step, "log")
        values = {k: _scalar(k, v) for k, v in scalars.items()}
        loss = values.pop("loss", None)
        if values:
            self._writer.submit_scalars(step, values.items())
        if loss is not None:
            self._set_loss(step, loss)

    def event(self, kind, message, step=None, value=None):
        """A marker on every plot of the monitor: kind (a short word, e.g.
        'checkpoint'), message, at step (default: the current step)."""
        self._check_open("event")
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"event: kind must be a non-empty str, got {kind!r}")
        if not isinstance(message, str):
            raise TypeError(f"event: message must be a str, got {type(message).__name__}")
        if step is None:
            step = self._running if self._running is not None else max(self._last_step, 0)
        step = _check_step(step, "event")
        if value is not None:
            value = _scalar("value", value)
        self._writer.submit_event(step, kind, message, None, value)

    def flush(self, timeout=10.0):
        """Writes the held row and waits until everything logged so far is
        committed. Returns False if that took longer than timeout."""
        self._check_open("flush")
        self._finalize_open()
        return self._writer.flush(timeout)

    def close(self, failed=False):
        """Writes what is pending and marks the run 'finished' (or 'failed');
        idempotent."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return  # inherited through fork: the SQLite connection and thread are the parent's
        try:
            if self._watcher is not None:
                self._watcher.remove()
            self._finalize_open()
        finally:
            self._writer.close("failed" if failed else "finished")
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self):
        self.close(failed=False)

    # ------------------------------------------------- from the watcher
    def _set_loss(self, step, value):
        with self._lock:
            row = self._open
            if row is not None and row.step == step:
                row.loss = value
                self._open = None
                self._emit(row)
                return
            if self._watcher is None:
                row = StepRow(step)
                row.loss = value
                row.done = True
                self._last_step = max(self._last_step, step)
                self._emit(row)
                return
            if step > self._last_step:
                self._losses[step] = value
                return
        self._writer.submit_loss_update(step, value)

    def _step_starting(self, step):
        with self._lock:
            self._running = step
            row, self._open = self._open, None
            if row is not None:
                self._emit(row)

    def _step_finished(self, row, closure_loss, events=()):
        """row: the recorded step, or None for a step not recorded."""
        with self._lock:
            step = self._running if row is None else row.step
            self._running = None
            if step is not None:
                self._last_step = max(self._last_step, step)
            loss = self._losses.pop(step, None) if step is not None else None
            if closure_loss is not None:
                loss = closure_loss
            elif loss is None:
                loss = self._next_loss
            self._next_loss = None
            if self._losses:
                self._losses = {s: v for s, v in self._losses.items() if s > self._last_step}
            if row is None:
                return
            row.events = list(events)
            row.loss = loss
            row.done = True
            row.time = time.time()
            if loss is None:
                self._open = row
            else:
                self._emit(row)

    def _emit(self, row):
        """Hands a finished row (and its events) to the writer (lock held)."""
        if row.loss is not None and not math.isfinite(row.loss):
            row.events = list(row.events) + [(row.step, "nonfinite", f"loss is {row.loss}", None, None)]
        self._writer.submit_step(row)  # its events travel in the same commit

    def _finalize_open(self):
        with self._lock:
            row, self._open = self._open, None
            if row is not None:
                self._emit(row)

    def _flush_stale(self):
        """Writer thread, each tick: a held row older than HOLD_S goes out
        without its loss, so a slow loop still shows up within a second."""
        with self._lock:
            row = self._open
            if row is not None and time.time() - row.time > HOLD_S:
                self._open = None
                self._emit(row)
