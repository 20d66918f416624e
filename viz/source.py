"""Reading a run file for the window: a QObject that polls on a ~100 ms
QTimer and a worker thread that reads and decodes (RunReader.poll + log10
of every layer cell); results come back to the GUI thread as signals, where
the window copies them into its RunModel. Widgets are never touched here.

``read_all`` is the synchronous form used by ``--snapshot``.
"""
import atexit
import functools
import itertools
import os
import time

from PyQt6 import QtCore

from cgrad.monitor.reader import RunReader

from .model import decode_delta

POLL_MS = 100
# A long finished run is read in pieces so the first steps show at once.
# (5000 steps x 200 layers is ~50 ms of copying on the GUI thread per piece.)
MAX_STEPS_PER_POLL = 5000
# After a read error: wait this long (doubling up to the max) before retrying.
RETRY_MS = 500
RETRY_MAX_MS = 8000


class PollResult:
    """What one poll found, decoded (built in the worker thread)."""

    def __init__(self, chunk, status, meta=None, n_groups=0, has_more=False):
        self.chunk = chunk          # viz.model.Chunk (layers added: chunk.new_layers)
        self.status = status        # RunStatus
        self.meta = meta            # set on the first poll after opening
        self.n_groups = n_groups
        self.has_more = has_more


class _Worker(QtCore.QObject):
    """Lives in the worker thread; owns the RunReader (one per thread)."""

    polled = QtCore.pyqtSignal(object)     # PollResult
    failed = QtCore.pyqtSignal(str)

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._reader = None

    @QtCore.pyqtSlot()
    def poll(self):
        try:
            fresh = self._reader is None
            if fresh:
                self._reader = RunReader(self.path)
            reader = self._reader
            delta = reader.poll(max_steps=MAX_STEPS_PER_POLL)
            status = reader.status()
            chunk = decode_delta(delta, reader.n_groups)
            self.polled.emit(PollResult(
                chunk, status, meta=dict(reader.meta) if fresh else None,
                n_groups=reader.n_groups, has_more=delta.has_more))
        except Exception as e:  # noqa: BLE001 - any failure is shown, never raised in Qt
            # RunFileError names the path; anything else gets it added. The
            # reader is kept (it knows what it already read) unless the file
            # could not even be opened.
            msg = str(e)
            if self.path not in msg:
                msg = f"{self.path}: {type(e).__name__}: {msg}"
            self.failed.emit(msg)

    @QtCore.pyqtSlot()
    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None


# The reader threads not yet ended, with their workers (a poll may be
# running in one), by a key of their own. Qt aborts the process when a
# running QThread is destroyed, so a thread's wrapper must not go with its
# RunSource's: a RunSource whose
# window was dropped unclosed is collected, or deleted with the window,
# without stop(). Its destruction then quits the thread (a connection in
# C++, which the collector does not clear); the thread's end drops it here.
_live = {}
_keys = itertools.count()


def _forget(key):
    entry = _live.pop(key, None)
    if entry is not None:
        entry[0].wait(5000)   # finished is emitted just before the thread ends


@atexit.register
def _end_all():
    for thread, _worker in list(_live.values()):
        thread.quit()
        thread.wait(5000)
    _live.clear()


class RunSource(QtCore.QObject):
    """Follows one run file. Signals arrive on the thread that created it."""

    polled = QtCore.pyqtSignal(object)     # PollResult
    failed = QtCore.pyqtSignal(str)        # message naming the path
    _request = QtCore.pyqtSignal()
    _request_close = QtCore.pyqtSignal()

    def __init__(self, path, parent=None, poll_ms=POLL_MS):
        super().__init__(parent)
        self.path = os.fspath(path)
        self.poll_ms = poll_ms
        self.last_error = None
        self._busy = False
        self._retry_ms = 0
        self._next_poll_at = 0.0
        self._thread = QtCore.QThread()
        self._thread.setObjectName(f"cgrad-monitor reader {os.path.basename(self.path)}")
        self._worker = _Worker(self.path)
        self._worker.moveToThread(self._thread)
        self._request.connect(self._worker.poll)
        self._request_close.connect(self._worker.close)
        self._worker.polled.connect(self._on_polled)
        self._worker.failed.connect(self._on_failed)
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._tick)
        self._key = next(_keys)
        _live[self._key] = (self._thread, self._worker)
        self.destroyed.connect(self._thread.quit)
        self._thread.finished.connect(functools.partial(_forget, self._key))
        self._thread.start()

    def start(self):
        self._tick()
        self._timer.start()

    def _tick(self):
        if self._busy or time.monotonic() < self._next_poll_at:
            return
        self._busy = True
        self._request.emit()

    def _on_polled(self, result):
        self._busy = False
        self._retry_ms = 0
        self.last_error = None
        self.polled.emit(result)
        if result.has_more:  # the rest of a long run: read on without waiting
            self._tick()

    def _on_failed(self, message):
        self._busy = False
        self._retry_ms = min(RETRY_MAX_MS, max(RETRY_MS, self._retry_ms * 2))
        self._next_poll_at = time.monotonic() + self._retry_ms / 1000
        self.last_error = message
        self.failed.emit(message)

    def stop(self):
        """Stops polling and the worker thread (waits for a poll in flight)."""
        self._timer.stop()
        if self._thread.isRunning():
            self._request_close.emit()
            self._thread.quit()
            self._thread.wait(5000)
        if not self._thread.isRunning():
            _live.pop(self._key, None)


def read_all(path):
    """Reads a whole run file in this thread: (PollResult list, error or None)."""
    results = []
    try:
        with RunReader(path) as reader:
            first = True
            while True:
                delta = reader.poll(max_steps=MAX_STEPS_PER_POLL)
                status = reader.status()
                results.append(PollResult(
                    decode_delta(delta, reader.n_groups), status,
                    meta=dict(reader.meta) if first else None,
                    n_groups=reader.n_groups, has_more=delta.has_more))
                first = False
                if not delta.has_more:
                    return results, None
    except Exception as e:  # noqa: BLE001 - reported by the caller
        msg = str(e)
        if os.fspath(path) not in msg:
            msg = f"{path}: {type(e).__name__}: {msg}"
        return results, msg
