"""Elementwise kernels of the array backend: unary and binary maps,
comparisons, where, tensor-scalar ops, fused activation backwards and the
in-place updates (names ending in ``_``: the output is also read).

Each ``k_<name>(out, ins, f, i)`` gets the output arrays (written in place),
the inputs (arrays, or NumPy scalars for 0-d host tensors), the float and
int parameters. The formulas follow the C kernels in src_c/ops_unary.c and
src_c/ops_binary.c so the two devices agree (NaN handling included)."""
import numpy as np

_SQRT1_2 = 0.70710678118654752440
_SQRT_2_PI = 0.79788456080286535588
_INV_SQRT_2PI = 0.39894228040143267794
_GELU_C = 0.044715


class ElementwiseKernels:
    def _register_kernels(self):
        for n, u in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("eq", "equal"),
                     ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
                     ("gt", "greater"), ("ge", "greater_equal")):
            self.kernels[n] = self._ufunc2(u)
        for n, u in (("neg", "negative"), ("abs", "absolute"), ("exp", "exp"), ("log", "log"),
                     ("sqrt", "sqrt"), ("round", "rint"), ("floor", "floor"), ("ceil", "ceil"),
                     ("tanh", "tanh")):
            self.kernels[n] = self._ufunc1(u)

    def _ufunc1(self, uname):
        u = getattr(self.xp, uname)

        def k(out, ins, f, i):
            u(ins[0], out=out[0])
        return k

    def _ufunc2(self, uname):
        u = getattr(self.xp, uname)

        def k(out, ins, f, i):
            u(ins[0], ins[1], out=out[0])
        return k

    def k_copy(self, out, ins, f, i):
        out[0][...] = ins[0]

    def k_div(self, out, ins, f, i):
        self.xp.true_divide(ins[0], ins[1], out=out[0])

    def k_pow(self, out, ins, f, i):
        xp = self.xp
        a, b = ins
        if out[0].dtype.kind == "i":  # integer powers: negative exponents as the C kernel
            b_arr = xp.asarray(b)
            neg = b_arr < 0
            pos = xp.power(a, xp.where(neg, 0, b_arr))
            a_arr = xp.asarray(a)
            negv = xp.where(a_arr == 1, 1, xp.where(a_arr == -1, xp.where(b_arr % 2 == 1, -1, 1), 0))
            out[0][...] = xp.where(neg, negv, pos)
        else:
            xp.power(a, b, out=out[0])

    def k_minimum(self, out, ins, f, i):
        self.xp.minimum(ins[0], ins[1], out=out[0])

    def k_maximum(self, out, ins, f, i):
        self.xp.maximum(ins[0], ins[1], out=out[0])

    def _weight(self, out, a, b, sel):
        xp = self.xp
        one = sel | (a != a)
        out[...] = xp.where(one, 1.0, xp.where(a == b, 0.5, 0.0))

    def k_maximum_weight(self, out, ins, f, i):
        self._weight(out[0], ins[0], ins[1], ins[0] > ins[1])

    def k_minimum_weight(self, out, ins, f, i):
        self._weight(out[0], ins[0], ins[1], ins[0] < ins[1])

    def k_where(self, out, ins, f, i):
        out[0][...] = self.xp.where(ins[0], ins[1], ins[2])

    def k_add_scalar(self, out, ins, f, i):
        self.xp.add(ins[0], out[0].dtype.type(f[0]), out=out[0])

    def k_mul_scalar(self, out, ins, f, i):
        self.xp.multiply(ins[0], out[0].dtype.type(f[0]), out=out[0])

    def k_pow_scalar(self, out, ins, f, i):
        xp, p = self.xp, f[0]
        if out[0].dtype.kind == "i":
            xp.power(ins[0], np.int64(p), out=out[0])
        elif p == 2.0:
            xp.multiply(ins[0], ins[0], out=out[0])
        elif p == 0.5:
            xp.sqrt(ins[0], out=out[0])
        elif p == 0.0:
            out[0][...] = 1
        else:
            xp.power(ins[0], out[0].dtype.type(p), out=out[0])

    def k_sign(self, out, ins, f, i):
        xp = self.xp
        a = ins[0]
        out[0][...] = (a > 0).astype(out[0].dtype) - (a < 0).astype(out[0].dtype)

    def k_relu(self, out, ins, f, i):
        a, o = ins[0], out[0]
        if self._raw_float(a, o):  # one pass on a GPU (cuda_kernels.py)
            self.raw_kernels.launch("relu", a.dtype, a.size, (a, o, np.int64(a.size)))
            return
        o[...] = self.xp.where(a < 0, 0, a)

    def k_leaky_relu(self, out, ins, f, i):
        a = ins[0]
        c = a.dtype.type(f[0])
        out[0][...] = self.xp.where(a > 0, a, a * c)

    def k_elu(self, out, ins, f, i):
        a = ins[0]
        c = a.dtype.type(f[0])
        out[0][...] = self.xp.where(a > 0, a, c * self.xp.expm1(a))

    def k_gelu(self, out, ins, f, i):
        xp, v = self.xp, ins[0]
        t = v.dtype.type
        if f[0]:
            out[0][...] = t(0.5) * v * (t(1) + xp.tanh(t(_SQRT_2_PI) * (v + t(_GELU_C) * v * v * v)))
        else:
            out[0][...] = t(0.5) * v * (t(1) + self.special.erf(v * t(_SQRT1_2)))

    def k_sigmoid(self, out, ins, f, i):
        xp, v = self.xp, ins[0]
        t = v.dtype.type
        e = xp.exp(-xp.abs(v))
        r = t(1) / (t(1) + e)
        out[0][...] = xp.where(v < 0, e * r, r)

    def k_softplus(self, out, ins, f, i):
        xp, v = self.xp, ins[0]
        t = v.dtype.type
        beta, th = t(f[0]), t(f[1])
        z = beta * v
        soft = (xp.maximum(z, t(0)) + xp.log1p(xp.exp(-xp.abs(z)))) / beta
        out[0][...] = xp.where(z > th, v, soft)

    def k_clamp(self, out, ins, f, i):
        xp, v = self.xp, ins[0]
        lo, hi = f[0], f[1]
        if v.dtype.kind == "i":
            lo = np.iinfo(np.int64).min if lo <= -9.2e18 else int(lo)
            hi = np.iinfo(np.int64).max if hi >= 9.2e18 else int(hi)
        t = v.dtype.type
        lo_, hi_ = t(lo), t(hi)
        m = xp.where(v < lo_, lo_, v)
        out[0][...] = xp.where(m > hi_, hi_, m)

    # fused backward maps: (g, v) -> out
    def k_sigmoid_backward(self, out, ins, f, i):
        g, v = ins
        out[0][...] = g * ((1 - v) * v)

    def k_tanh_backward(self, out, ins, f, i):
        g, v = ins
        out[0][...] = g * (1 - v * v)

    def k_gelu_backward(self, out, ins, f, i):
        xp = self.xp
        g, v = ins
        t = out[0].dtype.type
        if f[3]:
            th = xp.tanh(t(_SQRT_2_PI) * (v + t(_GELU_C) * v * v * v))
            d = t(0.5) * (t(1) + th) + t(0.5) * v * (t(1) - th * th) * t(_SQRT_2_PI) * (
                t(1) + t(3 * _GELU_C) * v * v)
        else:
            d = t(0.5) * (t(1) + self.special.erf(v * t(_SQRT1_2))) + v * t(_INV_SQRT_2PI) * xp.exp(
                t(-0.5) * v * v)
        out[0][...] = g * d

    def k_threshold_backward(self, out, ins, f, i):
        g, v = ins
        t = out[0].dtype.type
        lo, hi, outside, lo_open = t(f[0]), t(f[1]), t(f[2]), f[3]
        o = out[0]
        if self._raw_float(o, g, v):
            self.raw_kernels.launch("threshold_backward", o.dtype, o.size, (
                g, v, o, np.int64(o.size), lo, hi, outside, np.int32(bool(lo_open))))
            return
        inside = ((v > lo) if lo_open else (v >= lo)) & (v <= hi)
        out[0][...] = self.xp.where(inside, g, g * outside)

    # ----------------------------------------------------------- in place
    def k_add_(self, out, ins, f, i):
        a, b = out[0], ins[0]
        if f[0] == 1.0:
            a += b
        else:
            a += b * a.dtype.type(f[0])

    def k_mul_(self, out, ins, f, i):
        out[0][...] *= ins[0]

    def k_add_scalar_(self, out, ins, f, i):
        out[0][...] += out[0].dtype.type(f[0])

    def k_mul_scalar_(self, out, ins, f, i):
        out[0][...] *= out[0].dtype.type(f[0])

    def k_fill_(self, out, ins, f, i):
        out[0][...] = f[0]

    def k_copy_(self, out, ins, f, i):
        out[0][...] = ins[0]

