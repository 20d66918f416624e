"""cgrad.autograd.detect_anomaly: find the first op that made a NaN or Inf.

    with cgrad.autograd.detect_anomaly():
        loss = model(x).log().mean()   # RuntimeWarning: op 'log' (created at
        loss.backward()                # train.py:12) produced nan ...

While active, every op recorded on this thread checks its outputs once (a
finite flag per tape entry) and remembers the file and line that created it
(the first frame outside cgrad). The first op whose forward produced NaN/Inf
gives a RuntimeWarning (an error under ``warnings.simplefilter("error")``) and
is kept in ``anomaly_report()``; a backward in which an op computes a
non-finite gradient raises RuntimeError naming the op, the input and where
the op was created. Unlike PyTorch, no traceback is captured per op, so it is
cheap enough to leave on (bench/bench_core.py measures it).
"""
from cgrad import _core

__all__ = ["detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled", "anomaly_report"]

set_detect_anomaly = _core.set_detect_anomaly
is_anomaly_enabled = _core.is_anomaly_enabled
anomaly_report = _core.anomaly_report


class detect_anomaly:
    """Context manager (and decorator) that turns anomaly mode on for this
    thread and restores the previous setting on exit. check_nan=False makes
    it a no-op, as in PyTorch."""

    def __init__(self, check_nan=True):
        self.check_nan = bool(check_nan)
        self._prev = None

    def __enter__(self):
        self._prev = _core.set_detect_anomaly(self.check_nan) if self.check_nan else None
        return self

    def __exit__(self, *exc):
        if self._prev is not None:
            _core.set_detect_anomaly(self._prev)
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        return wrapper
