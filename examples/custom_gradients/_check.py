"""Small helpers shared by the custom-gradient examples: float64 central
differences and a pass/fail report (each example exits 1 on failure)."""
import sys

import numpy as np

import cgrad

from cgrad.autograd import Function, once_differentiable

__all__ = ["Function", "once_differentiable", "numeric_grad", "report", "check", "finish", "t64"]


def t64(a, requires_grad=False):
    return cgrad.tensor(np.asarray(a, dtype=np.float64), dtype=cgrad.float64,
                        requires_grad=requires_grad)


def numeric_grad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*tensors) with respect to each
    float64 array (f runs under no_grad)."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            vals = []
            for s in (1, -1):
                b = [np.array(x, dtype=np.float64) for x in arrays]
                b[k][idx] += s * eps
                with cgrad.no_grad():
                    vals.append(f(*[t64(x) for x in b]).item())
            g[idx] = (vals[0] - vals[1]) / (2 * eps)
        grads.append(g)
    return grads


_failures = []


def report(what, got, expected, atol=1e-6, rtol=1e-5):
    """Prints one check; remembers failures for finish()."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    ok = got.shape == expected.shape and np.allclose(got, expected, atol=atol, rtol=rtol)
    err = np.max(np.abs(got - expected)) if got.shape == expected.shape and got.size else 0.0
    print(f"[{'ok' if ok else 'FAIL'}] {what} (max abs diff {err:.2e})")
    if not ok:
        _failures.append(what)
        print(f"    got      {got.ravel()[:8]}\n    expected {expected.ravel()[:8]}")
    return ok


def check(what, condition):
    print(f"[{'ok' if condition else 'FAIL'}] {what}")
    if not condition:
        _failures.append(what)
    return condition


def finish():
    if _failures:
        print(f"{len(_failures)} check(s) failed: {', '.join(_failures)}")
        sys.exit(1)
    print("all checks passed")
