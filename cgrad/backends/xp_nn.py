"""Indexing, embedding, convolution and pooling kernels of the array backend
(docs/backend.md, "Indexing, embedding, dropout, convolution and pooling").
Dropout needs none: the C core draws its mask on the host and multiplies
with the "mul" kernel.

The C core has made every check before a kernel runs, index bounds
included, and allocated the outputs with the host op's shapes; the kernels
only compute. They follow the C kernels of src_c/ops_index.c and
src_c/ops_conv.c: max pooling takes the first maximum of a window and the
last NaN, average pooling divides by PyTorch's divisor, repeated indices
accumulate. Loops run over kernel offsets or dims, never over elements."""
import numpy as np


class NNKernels:
    # ----------------------------------------------------------- helpers
    def _add_at(self, a, index, values):
        """a[index] += values, repeated indices accumulating (numpy.add.at;
        on CuPy ``cupy.add.at``, or ``cupyx.scatter_add`` before CuPy 13)."""
        xp = self.xp
        if self.is_gpu and a.dtype == np.int64:
            # CUDA's atomicAdd has no signed 64-bit form; unsigned words add
            # to the same bits (and wrap, as the C kernels do).
            a, values = a.view(xp.uint64), values.astype(xp.uint64)
        try:
            xp.add.at(a, index, values)
        except (AttributeError, NotImplementedError):  # CuPy before ufunc.at
            import cupyx
            cupyx.scatter_add(a, index, values)

    def _wrapped(self, idx, size):
        """A 1-D index with negative entries wrapped (the C core has checked
        the range); idx may be a NumPy scalar (a 0-d host index)."""
        xp = self.xp
        idx = xp.asarray(idx).reshape(-1)
        return xp.where(idx < 0, idx + size, idx)

    # ---------------------------------------------------------- indexing
    def k_index_select(self, out, ins, f, i):
        a, idx = ins
        d = i[0]
        out[0][...] = self.xp.take(a, self._wrapped(idx, a.shape[d]), axis=d)

    def k_index_add(self, out, ins, f, i):
        a, idx, src = ins
        d = i[0]
        o = out[0]
        o[...] = a
        self._add_at(o, (slice(None),) * d + (self._wrapped(idx, a.shape[d]),), src)

    def k_gather(self, out, ins, f, i):
        a, idx = ins
        d, o = i[0], out[0]
        if o.ndim == 0:
            o[...] = a  # the only valid index is 0
            return
        # index may be smaller than a in the other dims: those parts of a are unused
        part = tuple(slice(None) if k == d else slice(0, idx.shape[k]) for k in range(o.ndim))
        o[...] = self.xp.take_along_axis(a[part], idx, axis=d)

    def k_scatter_add(self, out, ins, f, i):
        xp = self.xp
        a, idx, src = ins
        d, o = i[0], out[0]
        o[...] = a
        if o.ndim == 0:
            o += src
            return
        nd = o.ndim
        where = tuple(idx if k == d else
                      xp.arange(idx.shape[k]).reshape(tuple(-1 if j == k else 1 for j in range(nd)))
                      for k in range(nd))
        self._add_at(o, where, src[tuple(slice(0, n) for n in idx.shape)])

    # ------------------------------------------------------------- nll_loss
    def _nll_targets(self, t, weight, ignore, outer, inner, C):
        """The target as (outer, inner) with ignored entries at class 0,
        whether each counts, its weight in double (0 when ignored), and
        which are out of [0, C): the C core checked the bounds (or knew
        them from the upload), but memory shared outside cgrad may have
        changed since. Those read nothing (class 0, not counted) and weigh
        NaN, as in the RawKernels."""
        xp = self.xp
        t2 = t.reshape(outer, inner)
        keep = t2 != ignore
        bad = keep & ((t2 < 0) | (t2 >= C))
        keep &= ~bad
        safe = xp.where(keep, t2, 0)
        wt = xp.ones(t2.shape, dtype=np.float64) if weight is None else weight[safe].astype(np.float64)
        return safe, keep, xp.where(bad, np.nan, xp.where(keep, wt, 0.0)), bad

    def _nll_at(self, outer, inner):
        xp = self.xp
        return xp.arange(outer)[:, None], xp.arange(inner)[None, :]

    def k_nll_loss(self, out, ins, f, i):
        """(loss, total_weight; input, target[, weight]) i = (ignore_index,
        reduction 0 none / 1 mean / 2 sum, class dim): src_c/ops_loss.c's
        loop: each term w * x rounded to the dtype, summed in double. On a
        GPU two RawKernels (the pass over the targets, then the result)."""
        xp = self.xp
        ignore, reduction, cdim = (int(v) for v in i)
        r, tw = out
        x, t = ins[0], ins[1]
        C = x.shape[cdim]
        outer = x.shape[0] if cdim else 1
        inner = int(np.prod(x.shape[2:]))  # 1 for (N, C) and (C,)
        w = ins[2] if len(ins) > 2 else None
        n = outer * inner
        if self._raw_float(x, t, w, r):
            acc = xp.zeros(2, dtype=np.float64)
            self.raw_kernels.launch("nll_loss", x.dtype, n, (
                x, t, x if w is None else w, r if reduction == 0 else x, acc, np.int64(n),
                np.int64(C), np.int64(inner), np.int64(ignore), np.int32(w is not None),
                np.int32(reduction == 0)))
            self.raw_kernels.launch("nll_finish", x.dtype, 1, (acc, r, tw, np.int32(reduction)))
            return
        safe, keep, wt, bad = self._nll_targets(t, w, ignore, outer, inner, C)
        o_at, i_at = self._nll_at(outer, inner)
        picked = x.reshape(outer, C, inner)[o_at, safe, i_at].astype(np.float64)
        term = (wt * picked).astype(x.dtype)
        ws = xp.sum(wt)
        tw[...] = ws
        counted = keep | bad  # a target out of bounds counts NaN
        if reduction == 0:
            r[...] = xp.where(counted, -term, 0).astype(r.dtype).reshape(r.shape)
            return
        ls = xp.sum(xp.where(counted, term.astype(np.float64), 0.0))
        with np.errstate(all="ignore"):  # 'mean' of no counted target is NaN, as on the host
            r[...] = -ls / ws if reduction == 1 else -ls

    def k_nll_loss_backward(self, out, ins, f, i):
        """(grad_input, zero-filled; g, target, total_weight[, weight]) i as
        nll_loss: -w[t] * g (/ total_weight for 'mean') at each target; on
        a GPU one RawKernel."""
        xp = self.xp
        ignore, reduction, cdim = (int(v) for v in i)
        r = out[0]
        g, t, tw = ins[0], ins[1], ins[2]
        C = r.shape[cdim]
        outer = r.shape[0] if cdim else 1
        inner = int(np.prod(r.shape[2:]))
        w = ins[3] if len(ins) > 3 else None
        if self._raw_float(g, t, w, r, tw):
            n = outer * inner
            self.raw_kernels.launch("nll_loss_backward", r.dtype, n, (
                g, t, tw if w is None else w, tw, r, np.int64(n), np.int64(C), np.int64(inner),
                np.int64(ignore), np.int32(w is not None), np.int32(reduction != 0),
                np.int32(reduction == 1)))
            return
        safe, keep, wt, _ = self._nll_targets(t, w, ignore, outer, inner, C)
        g64 = g.astype(np.float64)
        v = -(wt * (g64 if reduction else g64.reshape(outer, inner)))
        if reduction == 1:
            with np.errstate(all="ignore"):
                v = v / tw.astype(np.float64)
        o_at, i_at = self._nll_at(outer, inner)
        r.reshape(outer, C, inner)[o_at, safe, i_at] = xp.where(keep, v, 0.0).astype(r.dtype)

    def k_count_nonzero(self, out, ins, f, i):
        out[0][...] = self.xp.count_nonzero(ins[0])

    def k_nonzero_flat(self, out, ins, f, i):
        out[0][...] = self.xp.flatnonzero(ins[0])

    def k_embedding(self, out, ins, f, i):
        weight, flat = ins
        out[0][...] = self.xp.take(weight, flat, axis=0).reshape(out[0].shape)

    # ------------------------------------------------------- convolution
    # i = (stride h, w, padding h, w, dilation h, w, groups)
    def _im2col(self, x, kh, kw, Ho, Wo, i):
        """x (N, C, H, W) -> cols (N, groups, C/groups*kh*kw, Ho*Wo): the
        windows are a strided view of the padded image, copied once by the
        reshape (a 1x1 kernel with stride 1 and no padding is the image)."""
        xp = self.xp
        sh, sw, ph, pw, dh, dw, G = i
        N, C = x.shape[:2]
        K, L = C // G * kh * kw, Ho * Wo
        if kh == kw == sh == sw == 1 and ph == pw == 0:
            return x.reshape(N, G, K, L)
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else xp.ascontiguousarray(x)
        bN, bC, bH, bW = xpad.strides
        win = xp.lib.stride_tricks.as_strided(
            xpad, shape=(N, C, kh, kw, Ho, Wo), strides=(bN, bC, bH * dh, bW * dw, bH * sh, bW * sw))
        return win.reshape(N, G, K, L)

    def k_conv2d(self, out, ins, f, i):
        x, w = ins[0], ins[1]
        o = out[0]
        N, O, Ho, Wo = o.shape
        G = i[6]
        kh, kw = w.shape[2:]
        cols = self._im2col(x, kh, kw, Ho, Wo, i)                     # (N, G, K, L)
        y = self.xp.matmul(w.reshape(G, O // G, -1), cols)           # (N, G, O/G, L)
        y = y.reshape(N, O, Ho, Wo)
        if len(ins) > 2:
            y += ins[2].reshape(1, O, 1, 1)
        o[...] = y

    def k_conv2d_input_backward(self, out, ins, f, i):
        """dx = col2im(W^T @ gy): the transposed convolution."""
        xp = self.xp
        gy, w = ins
        dx = out[0]
        N, C, H, W = dx.shape
        O, _, kh, kw = w.shape
        Ho, Wo = gy.shape[2:]
        sh, sw, ph, pw, dh, dw, G = i
        wt = w.reshape(G, O // G, -1).transpose(0, 2, 1)                  # (G, K, O/G)
        cols = xp.matmul(wt, gy.reshape(N, G, O // G, Ho * Wo))           # (N, G, K, L)
        if kh == kw == sh == sw == 1 and ph == pw == 0:
            dx[...] = cols.reshape(dx.shape)
            return
        cols = cols.reshape(N, C, kh, kw, Ho, Wo)
        acc = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
        for ki in range(kh):  # one strided add per kernel offset: no two
            for kj in range(kw):  # outputs of one offset meet in the image
                h0, w0 = ki * dh, kj * dw
                acc[:, :, h0:h0 + sh * (Ho - 1) + 1:sh, w0:w0 + sw * (Wo - 1) + 1:sw] += cols[:, :, ki, kj]
        dx[...] = acc[:, :, ph:ph + H, pw:pw + W]

    def k_conv2d_weight_backward(self, out, ins, f, i):
        """dw[g] = sum over images of gy_g @ cols_g^T, as one batched GEMM
        over the groups."""
        xp = self.xp
        x, gy = ins
        dw = out[0]
        O, _, kh, kw = dw.shape
        N, _, Ho, Wo = gy.shape
        G = i[6]
        cols = self._im2col(x, kh, kw, Ho, Wo, i)                         # (N, G, K, L)
        K, L = cols.shape[2], Ho * Wo
        a = gy.reshape(N, G, O // G, L).transpose(1, 2, 0, 3).reshape(G, O // G, N * L)
        b = cols.transpose(1, 0, 3, 2).reshape(G, N * L, K)
        dw[...] = xp.matmul(a, b).reshape(dw.shape)

    # ----------------------------------------------------------- pooling
    # i = (kernel h, w, stride h, w, padding h, w, count_include_pad)
    def _pool_positions(self, H, W, Ho, Wo, i):
        """Input row and column of every window element, clipped into the
        image, and whether it lies in the image; all (Ho, Wo, kh*kw)."""
        xp = self.xp
        kh, kw, sh, sw, ph, pw = i[:6]
        ih = (xp.arange(Ho) * sh - ph).reshape(Ho, 1, 1, 1) + xp.arange(kh).reshape(1, 1, kh, 1)
        iw = (xp.arange(Wo) * sw - pw).reshape(1, Wo, 1, 1) + xp.arange(kw).reshape(1, 1, 1, kw)
        valid = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        shape = (Ho, Wo, kh * kw)
        valid = xp.broadcast_to(valid, (Ho, Wo, kh, kw)).reshape(shape)
        ih = xp.broadcast_to(xp.clip(ih, 0, H - 1), (Ho, Wo, kh, kw)).reshape(shape)
        iw = xp.broadcast_to(xp.clip(iw, 0, W - 1), (Ho, Wo, kh, kw)).reshape(shape)
        return ih, iw, valid

    def k_max_pool2d(self, out, ins, f, i):
        """y, idx: each window's first maximum (the last NaN where it has
        one) and its position in the H*W plane, as the C kernel."""
        xp = self.xp
        x = ins[0]
        y, idx = out
        H, W = x.shape[-2:]
        Ho, Wo = y.shape[-2:]
        x3 = x.reshape(-1, H, W)
        ih, iw, valid = self._pool_positions(H, W, Ho, Wo, i)
        v = x3[:, ih, iw]                                   # (P, Ho, Wo, K)
        nan = (v != v) & valid
        vm = xp.where(valid & ~nan, v, v.dtype.type(-np.inf))
        best = vm.max(axis=-1)
        # argmax over 0/1 bytes: the first true element, whatever the namespace's bool rules
        first = xp.argmax(((vm == best[..., None]) & valid).astype(xp.uint8), axis=-1)
        K = v.shape[-1]
        last_nan = (K - 1) - xp.argmax(nan[..., ::-1].astype(xp.uint8), axis=-1)
        k = xp.where(nan.any(axis=-1), last_nan, first)[..., None]
        pos = xp.broadcast_to(ih * W + iw, v.shape)
        y[...] = xp.take_along_axis(v, k, axis=-1).reshape(y.shape)
        idx[...] = xp.take_along_axis(pos, k, axis=-1).reshape(idx.shape)

    def k_max_pool2d_gather(self, out, ins, f, i):
        h, idx = ins
        y = out[0]
        H, W = h.shape[-2:]
        h2 = h.reshape(-1, H * W)
        y[...] = self.xp.take_along_axis(h2, idx.reshape(h2.shape[0], -1), axis=1).reshape(y.shape)

    def k_max_pool2d_backward(self, out, ins, f, i):
        xp = self.xp
        gy, idx = ins
        dx = out[0]
        H, W = dx.shape[-2:]
        P = dx.size // (H * W)
        acc = xp.zeros((P, H * W), dtype=dx.dtype)
        self._add_at(acc, (xp.arange(P).reshape(P, 1), idx.reshape(P, -1)), gy.reshape(P, -1))
        dx[...] = acc.reshape(dx.shape)

    def _avg_divisor(self, H, W, Ho, Wo, i, dtype):
        """PyTorch's divisor per output (Ho, Wo): the window clipped to the
        padded input when padding counts, else to the input."""
        xp = self.xp
        kh, kw, sh, sw, ph, pw, cip = i
        h0 = xp.arange(Ho) * sh - ph
        w0 = xp.arange(Wo) * sw - pw
        h1 = xp.minimum(h0 + kh, H + ph)
        w1 = xp.minimum(w0 + kw, W + pw)
        if not cip:
            h0, w0 = xp.maximum(h0, 0), xp.maximum(w0, 0)
            h1, w1 = xp.minimum(h1, H), xp.minimum(w1, W)
        return ((h1 - h0).reshape(Ho, 1) * (w1 - w0).reshape(1, Wo)).astype(dtype)

    def k_avg_pool2d(self, out, ins, f, i):
        xp = self.xp
        x = ins[0]
        y = out[0]
        H, W = x.shape[-2:]
        Ho, Wo = y.shape[-2:]
        kh, kw, sh, sw, ph, pw = i[:6]
        xpad = xp.pad(x.reshape(-1, H, W), ((0, 0), (ph, ph), (pw, pw)))
        acc = xp.zeros((xpad.shape[0], Ho, Wo), dtype=y.dtype)
        # window elements in the C kernel's order (padding adds zeros)
        for ki in range(kh):
            for kj in range(kw):
                acc += xpad[:, ki:ki + sh * (Ho - 1) + 1:sh, kj:kj + sw * (Wo - 1) + 1:sw]
        y[...] = (acc / self._avg_divisor(H, W, Ho, Wo, i, y.dtype)).reshape(y.shape)

    def k_avg_pool2d_backward(self, out, ins, f, i):
        xp = self.xp
        gy = ins[0]
        dx = out[0]
        H, W = dx.shape[-2:]
        Ho, Wo = gy.shape[-2:]
        kh, kw, sh, sw, ph, pw = i[:6]
        v = gy.reshape(-1, Ho, Wo) / self._avg_divisor(H, W, Ho, Wo, i, dx.dtype)
        acc = xp.zeros((v.shape[0], H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
        for ki in range(kh):
            for kj in range(kw):
                acc[:, ki:ki + sh * (Ho - 1) + 1:sh, kj:kj + sw * (Wo - 1) + 1:sw] += v
        dx[...] = acc[:, ph:ph + H, pw:pw + W].reshape(dx.shape)
