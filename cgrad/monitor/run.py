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

A recorded step lives in the watcher's ring (cgrad/_monitor.pxi) until the
writer claims it; the last one waits there for its loss until a loss
arrives, HOLD_S passes, or the run flushes or closes, so a loss logged
right after step() still lands in its row. A loss for a step already
written is applied later as a late_losses row (a reader that already read
that step does not see it).
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


_scalar = _core._log_number  # a number, or a one-element tensor, as a float


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
        self._lock = threading.Lock()   # guards _last_step of unwatched losses
        self._last_step = -1            # last step of a loss logged with nothing watched
        self._watcher = None
        self._ring = None               # the watcher's _MonitorRing
        self._closed = False
        self._pid = os.getpid()         # a forked child must not touch the parent's file
        self._writer = Writer(con, self.path)
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
        ring = self._ring
        return max(self._last_step, ring.last_step) if ring is not None else self._last_step

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
        self._ring = self._watcher.ring
        return self

    def unwatch(self):
        """Detaches the hooks (the run stays open)."""
        if self._watcher is not None:
            ring = self._ring
            self._watcher.remove()
            self._last_step = max(self._last_step, ring.last_step)
            self._watcher = self._ring = None

    # ----------------------------------------------------------- logging
    def log_loss(self, loss, step=None):
        """The loss of an optimizer step (see the module docstring for which
        step when step is None)."""
        ring = self._ring
        if step is None and ring is not None and not self._closed:
            late = ring.log_loss(loss)  # the every-step path: one call, the value read in C
            if late is not None:
                self._writer.submit_loss_update(*late)
            return
        self._check_open("log_loss")
        value = _scalar("loss", loss)
        if step is not None:
            self._set_loss(_check_step(step, "log_loss"), value)
            return
        self._set_loss(self._last_step + 1, value)  # nothing watched: each loss is a step of its own

    def log(self, step, **scalars):
        """Named values at step (run.log(100, val_acc=0.93)); 'loss' is the
        step's loss (its chunks row's loss), the others go to the scalars table."""
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
            ring = self._ring
            step = ring.running if ring is not None and ring.running >= 0 else max(self.step, 0)
        step = _check_step(step, "event")
        if value is not None:
            value = _scalar("value", value)
        self._writer.submit_event(step, kind, message, None, value)

    def flush(self, timeout=10.0):
        """Writes the held row and waits until everything logged so far is
        committed. Returns False if that took longer than timeout."""
        self._check_open("flush")
        return self._writer.flush(timeout)  # the writer's claim takes the waiting row too

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
                self._watcher.remove()  # the ring's last slots go to the writer
        finally:
            self._writer.close("failed" if failed else "finished")
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self):
        self.close(failed=False)

    # ------------------------------------------------------------ losses
    def _set_loss(self, step, value):
        ring = self._ring
        if ring is not None:
            late = ring.set_loss(step, value)
            if late is not None:
                self._writer.submit_loss_update(step, value)
            return
        with self._lock:
            row = StepRow(step)
            row.loss = value
            row.done = True
            self._last_step = max(self._last_step, step)
            self._emit(row)

    def _emit(self, row):
        """Hands a finished row (and its events) to the writer."""
        if row.loss is not None and not math.isfinite(row.loss):
            row.events = list(row.events) + [(row.step, "nonfinite", f"loss is {row.loss}", None, None)]
        self._writer.submit_step(row)  # its events travel in the same commit
