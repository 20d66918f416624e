"""Hooks that see every tape entry's gradient (debugging).

    with cgrad.autograd.observe_backward(print):
        loss.backward()        # EntryGradient(op='mul', seq=12, ...) per entry

    with cgrad.autograd.record_gradient_stats() as stats:
        loss.backward()
    print(stats.table())       # op, shape, L2 norm, max |g|, non-finite count

The observer runs for each entry before its backward, with the gradients
flowing into the entry's outputs (read-only: to change a gradient, use
Tensor.register_hook or override_backward). Under detect_anomaly the
record also says where the op was created. Nothing is paid when no observer
is active."""
import math

import numpy as np

from cgrad import _core

__all__ = ["observe_backward", "record_gradient_stats", "EntryGradient", "GradientStats"]

EntryGradient = _core.EntryGradient


class observe_backward:
    """Context manager: fn(entry: EntryGradient) for every tape entry a
    backward on this thread runs inside the block. An exception raised by fn
    aborts that backward and propagates."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"observe_backward: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._handle = None

    def __enter__(self):
        self._handle = _core._entry_hook_push(self.fn)
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            _core._entry_hook_pop(self._handle)
            self._handle = None
        return False


class GradientStats:
    """Per-entry gradient statistics collected by record_gradient_stats:
    ``rows`` is a list of dicts (op, seq, output, shape, norm, max_abs,
    mean_abs, nonfinite, location), in the order backward ran them."""

    def __init__(self):
        self.rows = []

    def __call__(self, entry):
        for k, g in enumerate(entry.grad_outputs):
            a = g.numpy().astype(np.float64, copy=False)
            finite = np.isfinite(a)
            fa = np.abs(a[finite])
            self.rows.append({
                "op": entry.op, "seq": entry.seq, "output": k, "shape": tuple(g.shape),
                "norm": float(math.sqrt(float((fa * fa).sum()))) if fa.size else 0.0,
                "max_abs": float(fa.max()) if fa.size else 0.0,
                "mean_abs": float(fa.mean()) if fa.size else 0.0,
                "nonfinite": int(a.size - finite.sum()),
                "location": entry.location,
            })

    def by_op(self):
        """{op name: list of rows}."""
        out = {}
        for r in self.rows:
            out.setdefault(r["op"], []).append(r)
        return out

    def table(self):
        """The rows as aligned text, one line per entry output."""
        lines = [f"{'seq':>6} {'op':<24} {'shape':<16} {'norm':>12} {'max|g|':>12} {'nonfinite':>9}"]
        for r in self.rows:
            lines.append(f"{r['seq']:>6} {r['op']:<24} {str(r['shape']):<16} {r['norm']:>12.5g} "
                         f"{r['max_abs']:>12.5g} {r['nonfinite']:>9}")
        return "\n".join(lines)


class record_gradient_stats(observe_backward):
    """Context manager yielding a GradientStats filled by every backward run
    inside the block."""

    def __init__(self):
        super().__init__(GradientStats())

    def __enter__(self):
        super().__enter__()
        return self.fn
