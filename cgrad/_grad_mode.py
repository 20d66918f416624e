"""Grad-mode context managers (thread-local, as in PyTorch)."""
import functools

from cgrad._core import _set_grad_enabled


class _GradMode:
    """Base: a context manager and a decorator."""

    _mode = True

    def __enter__(self):
        self._prev = _set_grad_enabled(self._mode)
        return self

    def __exit__(self, *exc):
        _set_grad_enabled(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Ops inside record nothing on the tape."""

    _mode = False


class enable_grad(_GradMode):
    """Re-enables recording inside a no_grad block."""

    _mode = True


class set_grad_enabled(_GradMode):
    """set_grad_enabled(False) as a context manager or a plain call."""

    def __init__(self, mode):
        self._mode = bool(mode)
        self._prev = _set_grad_enabled(self._mode)

    def __enter__(self):
        return self

    def __call__(self, fn):
        mode = self._mode
        _set_grad_enabled(self._prev)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapper
