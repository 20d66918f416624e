"""Per-layer statistics from per-parameter ones, for many steps at once.

The training thread only records, per step, the raw (parameters x 8) block
that one cg_tensor_stats_many call filled (gradient sum_sq, max_abs,
nonfinite, numel, then the same for the weights) and the squared update
norms, into a ring slot (cgrad/_monitor.pxi); the writer thread turns a
whole commit's chunk of slots into the stored per-layer arrays here, with
one matrix product for the sums of all layers (parameters, then modules as
the sums of their members) and one max per module, so the per-step cost on
the training thread does not grow with the number of layers.
"""
import math

import numpy as np

__all__ = ["LayerMap"]


class LayerMap:
    """How layers are made of parameters: n_params parameters (layers
    0..n-1), then one layer per module (the list of its member indices)."""

    def __init__(self, n_params, modules):
        self.n_params = n_params
        self.modules = [np.asarray(m, dtype=np.int64) for m in modules]
        self.n_layers = n_params + len(self.modules)
        a = np.zeros((self.n_layers, n_params))
        a[np.arange(n_params), np.arange(n_params)] = 1.0
        for k, members in enumerate(self.modules):
            a[n_params + k, members] = 1.0
        self.agg = a  # (layers x parameters), 0/1

    def nonfinite(self, stats):
        """Non-finite gradient counts per layer of one step's (n, 8) block
        (the events need them on the training thread, only when some
        gradient is non-finite)."""
        return (self.agg @ stats[:, 2]).astype(np.int64)

    def arrays(self, stats, upd, has_upd):
        """stats: (k, n, 8) blocks of k steps; upd: (k, n) squared update
        norms (NaN: not measured for that parameter); has_upd: (k,) bool,
        False for a step with no ratio measured. Returns the per-layer
        (grad_norm, grad_max, nonfinite int64, weight_norm, update_ratio)
        arrays of shape (k, n_layers); update_ratio rows of steps without
        one are NaN."""
        a = self.agg
        k, n = stats.shape[0], self.n_params
        # one BLAS product for all k steps: (layers x n) @ (n x k*8)
        m = (a @ stats.transpose(1, 0, 2).reshape(n, k * 8)).reshape(self.n_layers, k, 8) \
            .transpose(1, 0, 2)                    # (k, layers, 8): sums and counts
        gmax = np.empty((k, self.n_layers))
        gmax[:, :n] = stats[:, :, 1]
        for j, members in enumerate(self.modules):
            gmax[:, n + j] = stats[:, members, 1].max(axis=1) if members.size else 0.0
        bad = m[:, :, 2].astype(np.int64)
        wss, wbad = m[:, :, 4], m[:, :, 6]
        grad_norm = np.sqrt(m[:, :, 0])
        weight_norm = np.sqrt(wss)
        weight_norm[wbad > 0] = math.inf
        finite = np.isfinite(upd)
        uu = np.where(finite, upd, 0.0) @ a.T
        missing = (~finite).astype(np.float64) @ a.T > 0  # a member not measured
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.sqrt(uu / wss)
        ratio[missing | (wss == 0) | (wbad > 0) | ~has_upd[:, None]] = np.nan
        return grad_norm, gmax, bad, weight_norm, ratio
