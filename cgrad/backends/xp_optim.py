"""Optimizer update, clipping and gradient-statistics kernels of the array
backend (see docs/backend.md, "Optimizers, clipping, statistics").

Each update kernel is the whole fused update of one parameter: the
arithmetic of src_c/optim.c's loop, operation for operation, in the
parameter's dtype with every scalar rounded to it first (as the C kernel
rounds its scalars), so both devices follow one trajectory. On a GPU the
contiguous cases run one RawKernel (cgrad/backends/cuda_kernels.py) doing
the same arithmetic; these array expressions are the reference path.

Results that go back to the host (the update's squared norm, norms,
counts, statistics) are written into a small output tensor the C core
allocated (the last output) and copied back by it."""
import functools
import math

import numpy as np

from cgrad.backends.cuda_kernels import grid_blocks

_F64 = np.float64
# The dtypes every RawKernel of cuda_kernels.py has a source for, and with
# float16 those of HALF_NAMES.
_RAW_DTYPES = (np.float32, np.float64)
_HALF_OK = _RAW_DTYPES + (np.float16,)


def _pnorm(xp, a, p):
    """The p-norm (p > 0 or inf) of the float64 array a >= 0, not empty, as
    clip.c's pnorm: NaN propagates (through max too, as the host loop's
    flag)."""
    if math.isinf(p):
        return xp.max(a)
    if p == 2.0:
        return xp.sqrt(xp.sum(a * a))
    if p == 1.0:
        return xp.sum(a)
    return xp.sum(a ** p) ** (1.0 / p)


def _lerp(s, e, w, w1m):
    """PyTorch's lerp (ATen lerp.h): from the start for a weight below 0.5,
    else from the end (w1m = 1 - w in T)."""
    if w < 0.5:
        return s + w * (e - s)
    return e - (e - s) * w1m


def _quiet(kernel):
    """NumPy warns on inf * 0 and the like; the C kernels (and CuPy) do not,
    and NaN/inf results are part of these kernels' contract."""
    @functools.wraps(kernel)
    def k(self, out, ins, f, i):
        with np.errstate(all="ignore"):
            return kernel(self, out, ins, f, i)
    return k


def _effective_grad(g, p, maximize, weight_decay, T):
    """The gradient the host loops step with: negated to maximize, plus
    coupled weight decay (in the parameter's dtype T)."""
    if maximize:
        g = -g
    if weight_decay != 0.0:
        g = g + T(weight_decay) * p
    return g


def _sgd_kernel_scalars(T, f, mx, nest, init, has_buf):
    """The scalar arguments the SGD RawKernels share (cg_sgd_at's, from
    lr_neg to init), rounded to the parameter's dtype T as the host rounds
    them; f as sgd_update_'s."""
    lr, mom, damp, wd = f
    return (T(-lr), T(wd), T(mom), T(1.0 - damp), np.int32(mx), np.int32(wd != 0.0),
            np.int32(has_buf), np.int32(nest), np.int32(init))


def _adam_kernel_scalars(T, f, mx, dec, ams):
    """The scalar arguments the Adam RawKernels share (cg_adam_at's, from wd
    to small), each rounded to the parameter's dtype T as the host rounds
    them; f as adam_update_'s."""
    _lr, b1, b2, eps, wd, wd_factor, bc2_sqrt, step_size = f
    w1 = T(1.0 - b1)
    coupled, decoupled = wd != 0.0 and not dec, wd != 0.0 and bool(dec)
    return (T(wd), T(wd_factor), w1, T(1) - w1, T(b2), T(1.0 - b2), T(bc2_sqrt), T(eps),
            T(-step_size), np.int32(mx), np.int32(coupled), np.int32(decoupled), np.int32(ams),
            np.int32(w1 < T(0.5)))


def _rmsprop_kernel_scalars(T, f, mx, cen, has_mom):
    """The scalar arguments the RMSprop RawKernels share (cg_rmsprop_at's,
    from lr_neg to small), each rounded to the parameter's dtype T as the
    host rounds them; f as rmsprop_update_'s."""
    lr, alpha, eps, wd, mom = f
    c = T(1.0 - alpha)
    return (T(-lr), T(wd), T(alpha), c, T(1) - c, T(eps), T(mom), np.int32(mx),
            np.int32(wd != 0.0), np.int32(cen), np.int32(has_mom), np.int32(c < T(0.5)))


def _adagrad_kernel_scalars(T, f, mx):
    """The scalar arguments the Adagrad RawKernels share (cg_adagrad_at's,
    from clr_neg to use_wd), rounded to the parameter's dtype T; f as
    adagrad_update_'s."""
    clr, wd, eps = f
    return (T(-clr), T(wd), T(eps), np.int32(mx), np.int32(wd != 0.0))


class OptimKernels:
    # ------------------------------------------------------------ helpers
    def _fusable(self, *arrays, half=False):
        """The RawKernel path applies: the backend has RawKernels (a GPU) and
        the arrays are C-contiguous (the C core passes contiguous optimizer
        operands; a strided gradient in a clipping list takes the array
        path) and float32 or float64, or float16 with half (the kernels
        with a float16 source, cuda_kernels.HALF_NAMES); a float16
        parameter or gradient otherwise takes the array path."""
        ok = _HALF_OK if half else _RAW_DTYPES
        return self.raw_kernels is not None and all(a.dtype in ok and a.flags.c_contiguous
                                                    for a in arrays)

    def _dummy(self):
        d = self.__dict__.get("_dummy_f64")
        if d is None:
            d = self._dummy_f64 = self.xp.zeros(1, dtype=_F64)
        return d

    def _update_norm(self, norm, p, old):
        """norm[0] = sum((p - old)^2), differences taken in double (as the
        host's cg__sum_sq_diff)."""
        xp = self.xp
        d = p.astype(_F64) - old.astype(_F64)
        norm[0] = xp.sum(d * d)

    # ---------------------------------------------------------- updates
    @_quiet
    def k_sgd_update_(self, out, ins, f, i):
        """(param, [momentum_buffer], [norm]; grad) f = (lr, momentum,
        dampening, weight_decay), i = (maximize, nesterov, init_buffer,
        has_buffer, want_norm)."""
        mx, nest, init, has_buf, want = (int(v) for v in i)
        lr, mom, damp, wd = f
        p, g = out[0], ins[0]
        buf = out[1] if has_buf else None
        norm = out[-1] if want else None
        T = p.dtype.type
        if self._fusable(p, g, *(() if buf is None else (buf,))):
            n = p.size
            self.raw_kernels.launch("sgd_update", p.dtype, n, (
                p, g, p if buf is None else buf, norm if want else self._dummy(), np.int64(n))
                + _sgd_kernel_scalars(T, f, mx, nest, init, has_buf) + (np.int32(want),))
            return
        old = p.copy() if want else None
        g = _effective_grad(g, p, mx, wd, T)
        if has_buf:
            b = g if init else buf * T(mom) + T(1.0 - damp) * g
            buf[...] = b
            g = g + T(mom) * b if nest else b
        p[...] = p + T(-lr) * g
        if want:
            self._update_norm(norm, p, old)

    @_quiet
    def k_adam_update_(self, out, ins, f, i):
        """(param, exp_avg, exp_avg_sq, [max_exp_avg_sq], [norm]; grad)
        f = (lr, beta1, beta2, eps, weight_decay, 1 - lr*weight_decay,
        sqrt(1 - beta2^step), lr / (1 - beta1^step)), i = (maximize,
        decoupled_weight_decay, amsgrad, want_norm)."""
        xp = self.xp
        mx, dec, ams, want = (int(v) for v in i)
        _lr, b1, b2, eps, wd, wd_factor, bc2_sqrt, step_size = f
        p, m, v = out[0], out[1], out[2]
        vmax = out[3] if ams else None
        norm = out[-1] if want else None
        g = ins[0]
        T = p.dtype.type
        w1 = T(1.0 - b1)
        w1m = T(1) - w1
        coupled, decoupled = wd != 0.0 and not dec, wd != 0.0 and bool(dec)
        if self._fusable(p, g, m, v, *(() if vmax is None else (vmax,))):
            n = p.size
            self.raw_kernels.launch("adam_update", p.dtype, n, (
                p, g, m, v, p if vmax is None else vmax, norm if want else self._dummy(),
                np.int64(n)) + _adam_kernel_scalars(T, f, mx, dec, ams) + (np.int32(want),))
            return
        old = p.copy() if want else None
        if mx:
            g = -g
        x = p
        if coupled:
            g = g + T(wd) * x
        if decoupled:
            x = x * T(wd_factor)
        mi = _lerp(m, g, w1, w1m)
        vi = v * T(b2) + T(1.0 - b2) * g * g
        m[...] = mi
        v[...] = vi
        vd = vi
        if ams:
            vd = xp.where((vmax != vmax) | (vmax > vi), vmax, vi)  # torch.maximum: NaN wins
            vmax[...] = vd
        denom = xp.sqrt(vd) / T(bc2_sqrt) + T(eps)
        p[...] = x + T(-step_size) * mi / denom
        if want:
            self._update_norm(norm, p, old)

    def k_adam_update_multi_(self, out, ins, f, i):
        """(param_1..k, exp_avg_1..k, exp_avg_sq_1..k, [max_exp_avg_sq_1..k];
        grad_1..k) f as adam_update_, i = (maximize, decoupled_weight_decay,
        amsgrad, 0, k): adam_update_ on each parameter; on a GPU one
        RawKernel per dtype for the contiguous ones (PyTorch's foreach)."""
        mx, dec, ams, _, k = (int(v) for v in i)
        self._multi(out, ins, 4 if ams else 3, k, "adam_update_multi",
                    lambda w, grads: [w[0], grads, w[1], w[2], w[3] if ams else w[0]],
                    lambda T: _adam_kernel_scalars(T, f, mx, dec, ams),
                    lambda ops, g: self.k_adam_update_(ops, [g], f, (mx, dec, ams, 0)))

    def k_sgd_update_multi_(self, out, ins, f, i):
        """(param_1..k, [momentum_buffer_1..k]; grad_1..k) f as sgd_update_,
        i = (maximize, nesterov, init_buffer, has_buffer, 0, k): sgd_update_
        on each parameter; on a GPU one RawKernel per dtype for the
        contiguous ones (PyTorch's foreach)."""
        mx, nest, init, has_buf, _, k = (int(v) for v in i)
        self._multi(out, ins, 2 if has_buf else 1, k, "sgd_update_multi",
                    lambda w, grads: [w[0], grads, w[-1]],
                    lambda T: _sgd_kernel_scalars(T, f, mx, nest, init, has_buf),
                    lambda ops, g: self.k_sgd_update_(ops, [g], f, (mx, nest, init, has_buf, 0)))

    def k_rmsprop_update_multi_(self, out, ins, f, i):
        """(param_1..k, square_avg_1..k, [grad_avg_1..k],
        [momentum_buffer_1..k]; grad_1..k) f as rmsprop_update_, i =
        (maximize, centered, has_momentum, 0, k): rmsprop_update_ on each
        parameter; on a GPU one RawKernel per dtype for the contiguous ones
        (PyTorch's foreach)."""
        mx, cen, has_mom, _, k = (int(v) for v in i)
        self._multi(out, ins, 2 + cen + has_mom, k, "rmsprop_update_multi",
                    lambda w, grads: [w[0], grads, w[1], w[2] if cen else w[0],
                                      w[-1] if has_mom else w[0]],
                    lambda T: _rmsprop_kernel_scalars(T, f, mx, cen, has_mom),
                    lambda ops, g: self.k_rmsprop_update_(ops, [g], f, (mx, cen, has_mom, 0)))

    def k_adagrad_update_multi_(self, out, ins, f, i):
        """(param_1..k, state_sum_1..k; grad_1..k) f as adagrad_update_,
        i = (maximize, 0, k): adagrad_update_ on each parameter; on a GPU
        one RawKernel per dtype for the contiguous ones (PyTorch's
        foreach)."""
        mx, _, k = (int(v) for v in i)
        self._multi(out, ins, 2, k, "adagrad_update_multi",
                    lambda w, grads: [w[0], grads, w[1]],
                    lambda T: _adagrad_kernel_scalars(T, f, mx),
                    lambda ops, g: self.k_adagrad_update_(ops, [g], f, (mx, 0)))

    def _multi(self, out, ins, nw, k, name, lists, scalars, one):
        """A multi-tensor update: out holds nw lists of k written tensors
        (params first), ins the k grads. On a GPU, the contiguous float
        parameters of a dtype with at least two of them run one RawKernel
        name (_multi_launch) over the lists lists(their nw lists, their
        grads) with the scalars scalars(the dtype's scalar type); every
        other parameter (a dtype's only one: the one-parameter kernel reads
        no table) goes to one(its nw tensors, its grad)."""
        groups = [out[j * k:(j + 1) * k] for j in range(nw)]
        rest = []
        by_dtype = {}
        for j in range(k):
            ops = [g[j] for g in groups]
            if self._raw_float(ops[0], ins[j], *ops[1:]) and ops[0].size:
                by_dtype.setdefault(ops[0].dtype, []).append(j)
            else:
                rest.append(j)
        for dt, js in by_dtype.items():
            if len(js) == 1:
                rest.append(js[0])
                continue
            self._multi_launch(name, dt, lists([[g[j] for j in js] for g in groups],
                                               [ins[j] for j in js]), scalars(dt.type))
        for j in rest:
            one([g[j] for g in groups], ins[j])

    def _multi_launch(self, name, dt, lists, scalars):
        """RawKernel name over the concatenated elements of the parameters
        lists[0]: its table holds each list's pointers (list by list), then
        the k + 1 element offsets of the parameters; scalars follow (table,
        k, n)."""
        table, n = self._pointer_table(lists)
        self.raw_kernels.launch(name, dt, n, (table, np.int32(len(lists[0])), np.int64(n))
                                + tuple(scalars))

    def _pointer_table(self, lists, *more):
        """The device table of the multi-tensor kernels: each list's
        pointers (list by list), the k + 1 element offsets of the tensors
        of lists[0] in their concatenation, then the uint64 arrays more;
        and the total element count."""
        offs = np.cumsum([0] + [a.size for a in lists[0]], dtype=np.uint64)
        ptrs = np.array([self._address(a) for lst in lists for a in lst], dtype=np.uint64)
        return self._device_table(np.concatenate((ptrs, offs) + more)), int(offs[-1])

    def _address(self, a):
        """The address of a's first element (CuPy: its device pointer)."""
        return a.data.ptr if self.is_gpu else a.__array_interface__["data"][0]

    def _device_table(self, host):
        """host (uint64) on the device: the last few tables are kept, so a
        step whose pointers repeat (a memory pool hands back the same
        blocks) copies nothing to the device."""
        cache = self.__dict__.setdefault("_tables", {})
        key = host.tobytes()
        t = cache.get(key)
        if t is None:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            t = cache[key] = self.xp.asarray(host)
        return t

    @_quiet
    def k_rmsprop_update_(self, out, ins, f, i):
        """(param, square_avg, [grad_avg], [momentum_buffer], [norm]; grad)
        f = (lr, alpha, eps, weight_decay, momentum), i = (maximize,
        centered, has_momentum, want_norm)."""
        xp = self.xp
        mx, cen, has_mom, want = (int(v) for v in i)
        lr, alpha, eps, wd, mom = f
        p, sq = out[0], out[1]
        k = 2
        ga = buf = None
        if cen:
            ga, k = out[k], k + 1
        if has_mom:
            buf = out[k]
        norm = out[-1] if want else None
        g = ins[0]
        T = p.dtype.type
        extra = tuple(a for a in (ga, buf) if a is not None)
        if self._fusable(p, g, sq, *extra):
            n = p.size
            self.raw_kernels.launch("rmsprop_update", p.dtype, n, (
                p, g, sq, p if ga is None else ga, p if buf is None else buf,
                norm if want else self._dummy(), np.int64(n))
                + _rmsprop_kernel_scalars(T, f, mx, cen, has_mom) + (np.int32(want),))
            return
        c = T(1.0 - alpha)
        c1m = T(1) - c
        old = p.copy() if want else None
        g = _effective_grad(g, p, mx, wd, T)
        si = sq * T(alpha) + c * g * g
        sq[...] = si
        if cen:
            gi = _lerp(ga, g, c, c1m)
            ga[...] = gi
            avg = xp.sqrt(si + T(-1) * gi * gi)
        else:
            avg = xp.sqrt(si)
        avg = avg + T(eps)
        if has_mom:
            b = buf * T(mom) + g / avg
            buf[...] = b
            p[...] = p + T(-lr) * b
        else:
            p[...] = p + T(-lr) * g / avg
        if want:
            self._update_norm(norm, p, old)

    @_quiet
    def k_adagrad_update_(self, out, ins, f, i):
        """(param, state_sum, [norm]; grad) f = (lr / (1 + (step-1) *
        lr_decay), weight_decay, eps), i = (maximize, want_norm)."""
        xp = self.xp
        mx, want = (int(v) for v in i)
        clr, wd, eps = f
        p, s = out[0], out[1]
        norm = out[-1] if want else None
        g = ins[0]
        T = p.dtype.type
        if self._fusable(p, g, s):
            n = p.size
            self.raw_kernels.launch("adagrad_update", p.dtype, n, (
                p, g, s, norm if want else self._dummy(), np.int64(n))
                + _adagrad_kernel_scalars(T, f, mx) + (np.int32(want),))
            return
        old = p.copy() if want else None
        g = _effective_grad(g, p, mx, wd, T)
        si = s + g * g
        s[...] = si
        std = xp.sqrt(si) + T(eps)
        p[...] = p + T(-clr) * g / std
        if want:
            self._update_norm(norm, p, old)

    # --------------------------------------------------------- clipping
    @_quiet
    def k_pnorms(self, out, ins, f, i):
        """(norms float64 [k]; x_1..x_k) f[0] = p (> 0 or inf): each
        tensor's p-norm in double, NaN propagating (clip.c's pnorm)."""
        xp = self.xp
        p = f[0]
        norms = out[0]
        if p == 2.0 and self._multi_fusable(ins):  # on a GPU: 2 launches, where it takes 2 k
            sums = norms[:len(ins)]  # zero-filled by the caller
            self._per_tensor_blocks("sum_sq_multi", ins, (sums,))
            xp.sqrt(sums, out=sums)
            return
        for j, x in enumerate(ins):
            if p == 2.0 and self._fusable(x):
                acc = norms[j:j + 1]  # zero-filled by the core
                self.raw_kernels.launch("sum_sq", x.dtype, x.size, (x, np.int64(x.size), acc))
                xp.sqrt(acc, out=acc)
                continue
            norms[j] = _pnorm(xp, xp.abs(x.astype(_F64)), p)

    @_quiet
    def k_scale_(self, out, ins, f, i):
        """(g_1..g_k;) f[0] = factor: g *= factor rounded to g's dtype."""
        for g in out:
            T = g.dtype.type
            k = T(f[0])
            if self._fusable(g):
                self.raw_kernels.launch("scale", g.dtype, g.size, (g, np.int64(g.size), k))
            else:
                g *= k

    @_quiet
    def k_clip_norm_(self, out, ins, f, i):
        """(g_1..g_k, result float64 [2];) f = (p, max_norm): clip by norm
        with nothing copied back (cg_clip_grad_norm_tensor). The per-tensor
        norms as k_pnorms, result = (total norm, clip_coef) as clip.c's
        total_norm and cg_clip_grad_norm, then every g multiplied by
        clip_coef rounded to its dtype, as k_scale_, the factor read where
        it lies (k may be 0)."""
        xp = self.xp
        p, max_norm = f
        gs, res = out[:-1], out[-1]
        k = len(gs)
        norms = xp.zeros(k + 1, dtype=_F64)  # a last 0 changes no sum or max, and is never empty
        self.k_pnorms((norms,), gs, (p,), ())
        if self.raw_kernels is not None:
            self.raw_kernels.launch("clip_coef", "float64", 1, (norms, np.int32(k), np.float64(p),
                                                           np.float64(max_norm), res))
        else:
            total = _pnorm(xp, norms, p)
            coef = max_norm / (total + 1e-6)
            res[0] = total
            res[1] = xp.where(coef > 1.0, 1.0, coef)  # NaN stays NaN
        if self._multi_fusable(gs):  # with one sum_sq_multi: 5 launches, where it takes 3 k + 2
            self._multi_launch("scale_by_multi", gs[0].dtype, [gs], (res,))
            return
        for g in gs:
            if self._fusable(g):
                self.raw_kernels.launch("scale_by", g.dtype, g.size, (g, np.int64(g.size), res))
            else:
                g *= res[1].astype(g.dtype)

    def _multi_fusable(self, xs, half=False):
        """A multi-tensor RawKernel applies to all of xs: at least two, all
        fusable (_fusable), of one dtype."""
        return (len(xs) > 1 and self._fusable(*xs, half=half)
                and all(x.dtype == xs[0].dtype for x in xs))

    def _per_tensor_blocks(self, name, xs, args, extra=()):
        """RawKernel name (sum_sq_multi, tensor_stats_multi,
        amp_unscale_multi) over xs (_multi_fusable; an empty one gets no
        block, cg_param_of skips it) in one
        launch, (table, k) + args: each tensor gets the blocks
        RawKernels.launch gives one tensor of its size, so each result is
        the one-tensor kernel's bit for bit. The table: the k pointers, the
        k + 1 element offsets, the k + 1 block offsets, then extra."""
        boffs = np.cumsum([0] + [grid_blocks(x.size) for x in xs], dtype=np.uint64)
        table, _ = self._pointer_table([xs], boffs, np.asarray(extra, dtype=np.uint64))
        self.raw_kernels.launch_blocks(name, xs[0].dtype, int(boffs[-1]),
                                       (table, np.int32(len(xs))) + tuple(args))

    @_quiet
    def k_clamp_abs_(self, out, ins, f, i):
        """(g_1..g_k, changed int64 [k];) f[0] = bound: g clamped into
        [-bound, bound] (NaN stays NaN), changed[j] = elements of g_j that
        moved."""
        xp = self.xp
        counts = out[-1]
        for j, g in enumerate(out[:-1]):
            T = g.dtype.type
            hi = T(f[0])
            lo = -hi
            r = xp.where(g < lo, lo, xp.where(g > hi, hi, g)).astype(g.dtype, copy=False)
            counts[j] = xp.sum((r != g) & (g == g))
            g[...] = r

    @_quiet
    def k_agc_(self, out, ins, f, i):
        """(g, clipped int64 [1]; w) f = (clipping, eps), i[0] = units: the
        unit-wise adaptive clipping of clip.c's agc_one on g's first dim
        (or the whole tensor when 1-D), g and w contiguous."""
        xp = self.xp
        g, count = out[0], out[1]
        w = ins[0]
        clipping, eps = f
        units = int(i[0])
        g2 = g.reshape(units, -1)
        w2 = w.reshape(units, -1).astype(_F64)
        gd = g2.astype(_F64)
        wn = xp.sqrt(xp.sum(w2 * w2, axis=1))
        gn = xp.sqrt(xp.sum(gd * gd, axis=1))
        max_norm = clipping * xp.where(wn > eps, wn, eps)
        clip = ~(gn < max_norm)  # NaN norms clip (to NaN), as the host
        k = (max_norm / xp.where(gn > 1e-6, gn, 1e-6)).astype(g.dtype)
        g2[...] = xp.where(clip[:, None], g2 * k[:, None], g2)
        count[0] = xp.sum(clip)

    # ------------------------------------------------------- statistics
    @_quiet
    def k_tensor_stats(self, out, ins, f, i):
        """(stats float64 [k, 3]; x_1..x_k) row j = (sum of squares and max
        |x| over x_j's finite elements, in double; its NaN/inf count)."""
        xp = self.xp
        st = out[0]
        if self._multi_fusable(ins):  # one launch (a monitored step: one per step)
            self._per_tensor_blocks("tensor_stats_multi", ins, (st,))
            return
        for j, x in enumerate(ins):
            if self._fusable(x):
                self.raw_kernels.launch("tensor_stats", x.dtype, x.size, (x, np.int64(x.size), st[j]))
                continue
            d = x.astype(_F64)
            fin = xp.isfinite(d)
            z = xp.where(fin, d, 0.0)
            st[j, 0] = xp.sum(z * z)
            st[j, 1] = xp.max(xp.abs(z))
            st[j, 2] = xp.sum(~fin)

    # ------------------------------------------------- mixed precision
    @_quiet
    def k_amp_unscale_(self, out, ins, f, i):
        """(x_1..x_k, counts int64 [k];) f[0] = inv_scale, i[j] = 1 when
        x_j's NaN/inf elements are counted (into counts[j], before
        scaling): x_j *= inv_scale in place, in float32 for float16 and
        float32 (inv_scale rounded to float32, a float16 result rounded
        once, as PyTorch's opmath), in double for float64 (amp.c)."""
        xp = self.xp
        counts, xs = out[-1], out[:-1]
        if self._multi_fusable(xs, half=True):  # one launch, as PyTorch's foreach unscale
            op = np.float64 if xs[0].dtype == np.float64 else np.float32
            self._per_tensor_blocks("amp_unscale_multi", xs, (op(f[0]), counts),
                                    extra=[int(v) for v in i[:len(xs)]])
            return
        for j, x in enumerate(xs):
            op = np.float64 if x.dtype == np.float64 else np.float32
            k = op(f[0])
            if self._fusable(x, half=True):
                self.raw_kernels.launch("amp_unscale", x.dtype, x.size,
                                        (x, np.int64(x.size), k, counts[j:j + 1], np.int32(i[j])))
                continue
            if i[j]:
                counts[j] = xp.sum(~xp.isfinite(x))
            if x.dtype == op:
                x *= k
            else:
                x[...] = (x.astype(op) * k).astype(x.dtype)
