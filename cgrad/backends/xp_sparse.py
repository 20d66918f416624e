"""Row-sparse kernels of the array backend (see docs/backend.md, "Sparse").

A row-sparse tensor on a device keeps its two parts there: ``indices``
(int64, (nnz,)) and ``values`` ((nnz, *row_shape)); the C core
(src_c/sparse.c, src_c/ops_index.c, src_c/optim_sparse.c,
src_c/ops_sparse_linear.c) keeps every check, sizes every output (a count
that decides a size comes back to the host as one small result) and hands
the parts to these kernels. Coalescing is a sort (``unique``) plus a
segment sum (``add.at``); the updates are the host loops' arithmetic in
the parameter's dtype, scalars rounded to it first, on the rows the
gradient holds (which coalescing made unique, so plain fancy-index
assignment writes each row once). No loop runs over elements or rows."""
from cgrad.backends.xp_optim import _quiet


def _rows(a, n):
    """a as an (n, row) matrix (a view: the parts are contiguous)."""
    return a.reshape(n, -1)


class SparseKernels:
    # ------------------------------------------------------ sparse tensors
    def k_sparse_nunique(self, out, ins, f, i):
        idx = ins[0]
        out[0][...] = self.xp.unique(idx).size if idx.size else 0

    def k_sparse_is_coalesced(self, out, ins, f, i):
        idx = ins[0]
        out[0][...] = 1 if idx.size < 2 else self.xp.all(idx[1:] > idx[:-1])  # no sync of its own

    def k_sparse_coalesce(self, out, ins, f, i):
        """Sorted unique indices; each row the sum of its duplicates in the
        order they appear, starting from the first one itself (as the C loop
        copies the first row then adds the others: -0.0 stays -0.0)."""
        xp = self.xp
        oi, ov = out
        idx, val = ins
        n, u = idx.size, oi.size
        if n == 0:
            return
        uniq, first, inv = xp.unique(idx, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        oi[...] = uniq
        v, o = _rows(val, n), _rows(ov, u)
        o[...] = v[first]
        rest = xp.ones(n, dtype=bool)
        rest[first] = False
        rest = xp.flatnonzero(rest)  # ascending: duplicates added in order of appearance
        if rest.size:
            self._add_at(o, inv[rest], v[rest])

    def k_sparse_add_into_(self, out, ins, f, i):
        """dense[indices[k]] += values[k], repeated rows accumulating."""
        dense = out[0]
        idx, val = ins
        if idx.size:
            self._add_at(dense, idx, val)

    def k_sparse_count_ne(self, out, ins, f, i):
        out[0][...] = self.xp.count_nonzero(ins[0] != i[0])

    def k_embedding_sparse_grad(self, out, ins, f, i):
        """The rows of g whose index is not padding_idx (i[0]; -1: none),
        in order, with their indices."""
        xp = self.xp
        oi, ov = out
        flat, g = ins
        if i[0] < 0:
            oi[...] = flat
            ov[...] = g
            return
        keep = xp.flatnonzero(flat != i[0])
        oi[...] = flat[keep]
        ov[...] = g[keep]

    # ---------------------------------------------------------- optimizers
    @_quiet
    def k_sgd_sparse_update_(self, out, ins, f, i):
        """torch.optim.SGD on coalesced gradient rows (gi, gv) with the
        row-sparse momentum buffer (bi, bv, when given): the new buffer's
        rows (the sorted union) go to the prefix of ui / uv and their count
        to u[0]."""
        xp = self.xp
        p, ui, uv, u_out = out
        gi, gv = ins[0], ins[1]
        lr, mom, damp, wd = f[0], f[1], f[2], f[3]
        maximize, nesterov = i[0], i[1]
        T = p.dtype.type
        pr = _rows(p, p.shape[0])
        g = _rows(gv, gi.size)
        if maximize:
            g = -g
        if wd != 0.0:
            g = g + T(wd) * pr[gi]
        lr_neg, m, damp1 = T(-lr), T(mom), T(1.0 - damp)
        if mom == 0.0:
            if gi.size:
                pr[gi] = pr[gi] + lr_neg * g
            u_out[0] = 0
            return
        if len(ins) < 4:  # the first step: the buffer takes the gradient
            buf = g
            upd = g + m * buf if nesterov else buf
            if gi.size:
                pr[gi] = pr[gi] + lr_neg * upd
                ui[:gi.size] = gi
                _rows(uv, ui.size)[:gi.size] = buf
            u_out[0] = gi.size
            return
        bi, bv = ins[2], _rows(ins[3], ins[2].size)
        rows = xp.unique(xp.concatenate([gi, bi]))
        u = rows.size
        if u == 0:
            u_out[0] = 0
            return
        R = pr.shape[1]
        pg, pb = xp.searchsorted(rows, gi), xp.searchsorted(rows, bi)
        hg, hb = xp.zeros(u, dtype=bool), xp.zeros(u, dtype=bool)
        hg[pg] = True
        hb[pb] = True
        G, B = xp.zeros((u, R), dtype=p.dtype), xp.zeros((u, R), dtype=p.dtype)
        G[pg] = g
        B[pb] = bv
        hg, hb = hg[:, None], hb[:, None]
        # the three cases of the C merge, each with its own arithmetic
        buf = xp.where(hg & hb, B * m + damp1 * G, xp.where(hb, B * m, damp1 * G))
        upd = G + m * buf if nesterov else buf  # G is 0 on buffer-only rows, as g in C
        pr[rows] = pr[rows] + lr_neg * upd
        ui[:u] = rows
        _rows(uv, ui.size)[:u] = buf
        u_out[0] = u

    @_quiet
    def k_sparse_adam_update_(self, out, ins, f, i):
        """SparseAdam on the coalesced gradient rows: f = step_size, beta1,
        beta2, eps; i[0] = maximize."""
        xp = self.xp
        p, m, v = out
        gi, gv = ins
        if gi.size == 0:
            return
        T = p.dtype.type
        step_size, b1, b2, eps = f[0], f[1], f[2], f[3]
        pr, mr, vr = (_rows(t, p.shape[0]) for t in (p, m, v))
        g = _rows(gv, gi.size)
        if i[0]:
            g = -g
        omb1, omb2, e, neg_step = T(1.0 - b1), T(1.0 - b2), T(eps), T(-step_size)
        m_old, v_old = mr[gi], vr[gi]
        u1 = (g - m_old) * omb1
        mr[gi] = m_old + u1
        u2 = (g * g - v_old) * omb2
        vr[gi] = v_old + u2
        denom = xp.sqrt(u2 + v_old) + e
        pr[gi] = pr[gi] + neg_step * ((u1 + m_old) / denom)

    @_quiet
    def k_adagrad_sparse_update_(self, out, ins, f, i):
        """Adagrad's sparse branch on the coalesced gradient rows: f = clr
        (the decayed lr), weight_decay, eps; i[0] = maximize."""
        xp = self.xp
        p, s = out
        gi, gv = ins
        if gi.size == 0:
            return
        T = p.dtype.type
        clr, wd, eps = f[0], f[1], f[2]
        pr, sr = _rows(p, p.shape[0]), _rows(s, p.shape[0])
        g = _rows(gv, gi.size)
        if i[0]:
            g = -g
        if wd != 0.0:
            g = g + T(wd) * pr[gi]
        new = sr[gi] + g * g
        sr[gi] = new
        pr[gi] = pr[gi] + T(-clr) * (g / (xp.sqrt(new) + T(eps)))

    # ------------------------------------------------------- CSR products
    def _csr_rows(self, indptr, nnz):
        """The output row of every connection (CSR row ids)."""
        xp = self.xp
        return xp.searchsorted(indptr, xp.arange(nnz, dtype=indptr.dtype), side="right") - 1

    def k_csr_a(self, out, ins, f, i):
        """y[n, o] = sum over row o's connections k of x[n, col k] v[k],
        added in CSR order (add.at), as the C loop."""
        xp = self.xp
        x, v, indptr, col = ins
        y = out[0]
        row = self._csr_rows(indptr, col.size)
        yT = xp.zeros((y.shape[1], y.shape[0]), dtype=y.dtype)
        self._add_at(yT, row, (x[:, col] * v).T)
        y[...] = yT.T

    def k_csr_at(self, out, ins, f, i):
        """z[n, i] = sum over the connections k into column i of g[n, row k] v[k]."""
        xp = self.xp
        g, v, indptr, col = ins
        z = out[0]
        row = self._csr_rows(indptr, col.size)
        zT = xp.zeros((z.shape[1], z.shape[0]), dtype=z.dtype)
        self._add_at(zT, col, (g[:, row] * v).T)
        z[...] = zT.T

    def k_csr_s(self, out, ins, f, i):
        """s[k] = sum_n g[n, row k] x[n, col k] (the values' gradient)."""
        g, x, indptr, col = ins
        row = self._csr_rows(indptr, col.size)
        out[0][...] = (g[:, row] * x[:, col]).sum(axis=0)

