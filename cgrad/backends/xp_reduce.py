"""Reduction, softmax, matmul and linear kernels of the array backend (see
docs/backend.md, "Reductions and matmul").

The C core (src_c/ops_reduce.c, src_c/ops_matmul.c) keeps the dim parsing,
output shapes, dtype checks and the empty-reduction identities; a kernel
here sees R > 0 elements per output. The reduced dims arrive as the int
parameters (ascending input dims); the output is contiguous with the
reduced dims either kept as 1 or dropped, so each kernel writes through a
keepdims-shaped view of it.

Semantics follow the C kernels: max / min / logsumexp / softmax propagate
NaN, argmax / argmin return the first extremum and the first NaN (a NaN
counts as the extremum), integer sums wrap."""
import numpy as np


def _quiet():
    """Division by a zero var denominator, log(0) in logsumexp: inf / NaN as
    in C, without NumPy's warnings (a no-op for CuPy, which never warns)."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


class ReduceKernels:
    @staticmethod
    def _input(ins, i):
        """(a, reduced axes); a 0-d input (no axes: the identity) as a
        1-element row, so no kernel relies on axis=() support."""
        a = ins[0]
        if a.ndim == 0:
            return a.reshape(1), (0,)
        return a, tuple(int(d) for d in i)

    @staticmethod
    def _kview(out, a, axes):
        """out (contiguous) viewed with a's shape, the reduced axes set to 1."""
        kshape = tuple(1 if d in axes else s for d, s in enumerate(a.shape))
        return out.reshape(kshape)

    def k_sum(self, out, ins, f, i):
        a, axes = self._input(ins, i)
        self.xp.sum(a, axis=axes, dtype=out[0].dtype, keepdims=True, out=self._kview(out[0], a, axes))

    def k_mean(self, out, ins, f, i):
        a, axes = self._input(ins, i)
        self.xp.mean(a, axis=axes, dtype=out[0].dtype, keepdims=True, out=self._kview(out[0], a, axes))

    def k_var(self, out, ins, f, i):
        """Two passes (mean, then squared deviations), divided by
        max(0, R - correction) with correction = f[0]."""
        xp = self.xp
        a, axes = self._input(ins, i)
        r = 1
        for d in axes:
            r *= a.shape[d]
        t = out[0].dtype.type
        kv = self._kview(out[0], a, axes)
        with _quiet():
            dev = a - xp.mean(a, axis=axes, keepdims=True)
            xp.sum(dev * dev, axis=axes, keepdims=True, out=kv)
            xp.true_divide(kv, t(max(0.0, r - f[0])), out=kv)

    def k_amax(self, out, ins, f, i):
        a, axes = self._input(ins, i)
        self.xp.amax(a, axis=axes, keepdims=True, out=self._kview(out[0], a, axes))

    def k_amin(self, out, ins, f, i):
        a, axes = self._input(ins, i)
        self.xp.amin(a, axis=axes, keepdims=True, out=self._kview(out[0], a, axes))

    def _arg(self, out, a, axes, pick):
        """Row-major position over the reduced axes of the first extremum,
        or of the first NaN when a row has one (both devices agree whatever
        the namespace's own NaN rule)."""
        xp = self.xp
        kept = [d for d in range(a.ndim) if d not in axes]
        rows = xp.transpose(a, kept + list(axes)).reshape(tuple(a.shape[d] for d in kept) + (-1,))
        idx = pick(rows, axis=-1)
        if a.dtype.kind == "f":
            nan = xp.isnan(rows)
            idx = xp.where(nan.any(axis=-1), xp.argmax(nan.view(xp.uint8), axis=-1), idx)
        out[0][...] = idx.reshape(out[0].shape)

    def k_argmax(self, out, ins, f, i):
        self._arg(out, *self._input(ins, i), self.xp.argmax)

    def k_argmin(self, out, ins, f, i):
        self._arg(out, *self._input(ins, i), self.xp.argmin)

    def k_logsumexp(self, out, ins, f, i):
        """m + log(sum(exp(a - m))), m the max; m itself where it is not
        finite (all -inf, any +inf, NaN), as the C kernel."""
        xp = self.xp
        a, axes = self._input(ins, i)
        m = xp.amax(a, axis=axes, keepdims=True)
        fin = xp.isfinite(m)
        ms = xp.where(fin, m, m.dtype.type(0))
        with _quiet():
            s = xp.sum(xp.exp(a - ms), axis=axes, keepdims=True)
            kv = self._kview(out[0], a, axes)
            kv[...] = xp.where(fin, ms + xp.log(s), m)

    def _rows(self, dim, *arrays):
        """(rows, D) when a softmax along dim runs over the contiguous rows
        of these operands with a RawKernel (a GPU; dim last but for size-1
        dims), else None."""
        a = arrays[0]
        if not self._raw_float(*arrays) or any(n != 1 for n in a.shape[dim + 1:]):
            return None
        return a.size // a.shape[dim], a.shape[dim]

    def _softmax(self, out, a, dim, log_out):
        xp = self.xp
        y = out[0]
        if a.ndim == 0:  # a 0-d tensor is its own softmax dim (C: D = 1)
            a, y, dim = a.reshape(1), y.reshape(1), 0
        rows = self._rows(dim, a, y)
        if rows is not None:  # one warp per row, one launch
            self.raw_kernels.launch_rows("softmax_rows", a.dtype, rows[0], (
                a, y, np.int64(rows[0]), np.int64(rows[1]), np.int32(log_out)))
            return
        z = a - xp.amax(a, axis=dim, keepdims=True)
        xp.exp(z, out=y)
        s = xp.sum(y, axis=dim, keepdims=True)
        if log_out:
            xp.subtract(z, xp.log(s), out=y)
        else:
            xp.multiply(y, xp.reciprocal(s), out=y)

    def k_softmax(self, out, ins, f, i):
        with _quiet():
            self._softmax(out, ins[0], int(i[0]), False)

    def k_log_softmax(self, out, ins, f, i):
        with _quiet():
            self._softmax(out, ins[0], int(i[0]), True)

    def _softmax_backward(self, out, g, y, dim, log_out):
        xp = self.xp
        r = out[0]
        if y.ndim == 0:
            g, y, r, dim = g.reshape(1), y.reshape(1), r.reshape(1), 0
        rows = self._rows(dim, y, g, r)
        if rows is not None:
            self.raw_kernels.launch_rows("softmax_backward_rows", y.dtype, rows[0], (
                g, y, r, np.int64(rows[0]), np.int64(rows[1]), np.int32(log_out)))
            return
        if log_out:  # g - exp(y) * sum(g)
            s = xp.sum(g, axis=dim, keepdims=True)
            xp.exp(y, out=r)
            r *= s
            xp.subtract(g, r, out=r)
        else:  # y * (g - sum(g * y))
            xp.multiply(g, y, out=r)
            s = xp.sum(r, axis=dim, keepdims=True)
            xp.subtract(g, s, out=r)
            r *= y

    def k_softmax_backward(self, out, ins, f, i):
        with _quiet():
            self._softmax_backward(out, ins[0], ins[1], int(i[0]), False)

    def k_log_softmax_backward(self, out, ins, f, i):
        with _quiet():
            self._softmax_backward(out, ins[0], ins[1], int(i[0]), True)

    def k_matmul(self, out, ins, f, i):
        """NumPy matmul semantics (1-D operands, broadcast batch dims), as
        cg_matmul: cuBLAS on CuPy."""
        a, b = ins
        if out[0].ndim:
            self.xp.matmul(a, b, out=out[0])
        else:
            out[0][...] = self.xp.matmul(a, b)

    def k_linear(self, out, ins, f, i):
        """cg_linear: x @ w.T (+ b): the product written into out (cuBLAS
        on CuPy, w.T a transposed operand, not a copy), the bias added in
        place."""
        x, w = ins[0], ins[1]
        self.xp.matmul(x, w.T, out=out[0])
        if len(ins) == 3:
            out[0] += ins[2]
