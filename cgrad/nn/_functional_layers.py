"""Normalization, embedding and recurrent-cell functions of cgrad.nn.functional."""
import numpy as np

from cgrad import _core
from cgrad._core import Function, Tensor
from cgrad._grad_mode import no_grad

__all__ = ["layer_norm", "batch_norm", "embedding", "sparse_linear", "rnn_tanh_cell", "rnn_relu_cell",
           "lstm_cell", "gru_cell"]


def _tensor(name, fn, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name} must be a cgrad.Tensor, got {type(t).__name__}")
    return t


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalizes over the trailing dims given by normalized_shape with the
    biased variance, then scales by weight and shifts by bias."""
    _tensor("input", "layer_norm", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n = len(shape)
    if n == 0 or input.ndim < n or tuple(input.shape[input.ndim - n:]) != shape:
        raise ValueError(f"layer_norm: expected input with trailing shape normalized_shape={list(shape)}, "
                         f"got input of shape {tuple(input.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(_tensor(name, "layer_norm", p).shape) != shape:
            raise ValueError(f"layer_norm: {name} must have shape {shape}, got {tuple(p.shape)}")
    dims = tuple(range(input.ndim - n, input.ndim))
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    var = (centered * centered).mean(dims, keepdim=True)
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization over (N, C) or (N, C, L) (any (N, C, ...)):
    training uses the batch statistics (biased variance) and updates the
    running ones in place, running = (1 - momentum) * running + momentum *
    batch (unbiased variance); eval uses the running statistics."""
    _tensor("input", "batch_norm", input)
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, ...), got shape {tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(_tensor(name, "batch_norm", t).shape) != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for input of shape "
                             f"{tuple(input.shape)}, got {tuple(t.shape)}")
    dims = (0,) + tuple(range(2, input.ndim))
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // c if c else 0
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got "
                             f"input of shape {tuple(input.shape)}")
        mean = input.mean(dims, keepdim=True)
        centered = input - mean
        var = (centered * centered).mean(dims, keepdim=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(mean.detach().reshape(c).to(running_mean.dtype),
                                                         alpha=momentum)
                if running_var is not None:
                    unbiased = var.detach().reshape(c) * (count / (count - 1))
                    running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        out = centered / (var + eps).sqrt()
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are required when training=False")
        out = (input - running_mean.reshape(*bshape)) / (running_var.reshape(*bshape) + eps).sqrt()
    if weight is not None:
        out = out * weight.reshape(*bshape)
    if bias is not None:
        out = out + bias.reshape(*bshape)
    return out


class _ScaleGrad(Function):
    """Identity forward; backward multiplies the gradient by scale."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x

    @staticmethod
    def backward(ctx, g):
        (scale,) = ctx.saved_tensors
        return g * scale, None


def _embedding_renorm_(weight, indices, max_norm, norm_type):
    """Rows of weight used by indices with norm > max_norm are scaled to
    max_norm (in place, not recorded), as PyTorch's embedding_renorm_."""
    rows = np.unique(indices.detach().cpu().numpy().reshape(-1))
    if rows.size == 0:
        return
    with no_grad():
        idx = _core.tensor(rows, dtype=_core.int64, device=weight.device)
        sel = weight.index_select(0, idx)
        a = sel.abs()
        if norm_type == float("inf"):
            norms = a.amax(1)
        else:
            norms = (a ** norm_type).sum(1) ** (1.0 / norm_type)
        scale = _core.where(norms > max_norm, max_norm / (norms + 1e-7), norms * 0 + 1)
        delta = sel * (scale.unsqueeze(1) - 1)
        weight.copy_(weight.index_add(0, idx, delta))


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of weight picked by the int64 indices in input. padding_idx's
    row gets no gradient (its value is still returned); max_norm renormalises
    the used rows in place first; scale_grad_by_freq divides each row's
    gradient by how often it occurs in input. sparse=True gives weight a
    row-sparse gradient (one row per looked-up index, padding rows left
    out, as PyTorch's); its backward refuses create_graph."""
    _tensor("weight", "embedding", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                         f"{tuple(weight.shape)}")
    if not isinstance(input, Tensor):
        input = _core.tensor(input, dtype=_core.int64, device=weight.device)
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"embedding: padding_idx must be within num_embeddings ({num}), got {padding_idx}")
        padding_idx %= num
    if max_norm is not None:
        _embedding_renorm_(weight, input, max_norm, norm_type)
    if sparse:
        out = _core.embedding_sparse(input, weight, padding_idx)
    else:
        out = _core.embedding(input, weight)
    if padding_idx is not None and out.requires_grad and not sparse:
        keep = (input != padding_idx).unsqueeze(-1)
        out = _core.where(keep, out, _core.embedding(input, weight.detach()))
    if scale_grad_by_freq and out.requires_grad:
        flat = input.detach().cpu().numpy().reshape(-1)
        _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        scale = (1.0 / counts[inverse]).reshape(tuple(input.shape) + (1,))
        out = _ScaleGrad.apply(out, _core.tensor(scale, dtype=weight.dtype, device=weight.device))
    return out


def sparse_linear(input, indptr, indices, values, bias, out_features):
    """input (*, in) @ W^T + bias for W (out_features, in) given in CSR form:
    output o sums input[indices[k]] * values[k] over k in
    [indptr[o], indptr[o+1]). Forward and backward cost O(batch * nnz);
    differentiable in input, values and bias (to any order)."""
    _tensor("input", "sparse_linear", input)
    if input.ndim < 1:
        raise ValueError("sparse_linear: input must have at least 1 dim (*, in_features)")
    lead = tuple(input.shape[:-1])
    x2 = input.reshape(-1, input.shape[-1]) if input.ndim != 2 else input
    out = _core.sparse_linear(x2, indptr, indices, values, bias, int(out_features))
    return out.reshape(*lead, int(out_features)) if input.ndim != 2 else out


# ---------------------------------------------------------------- recurrent cells
# Gate layouts follow PyTorch: weight_ih/weight_hh stack the gates along
# dim 0 as (i, f, g, o) for LSTM and (r, z, n) for GRU.
def _proj(x, w, b):
    out = x @ w.t()
    return out if b is None else out + b


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    return (_proj(input, w_ih, b_ih) + _proj(hx, w_hh, b_hh)).tanh()


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = relu(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    return (_proj(input, w_ih, b_ih) + _proj(hx, w_hh, b_hh)).relu()


def _lstm_gates(gates, cx):
    i, f, g, o = gates.chunk(4, -1)
    c = f.sigmoid() * cx + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """hx = (h, c) -> (h', c'): i, f, o = sigmoid, g = tanh,
    c' = f * c + i * g, h' = o * tanh(c')."""
    h, c = hx
    return _lstm_gates(_proj(input, w_ih, b_ih) + _proj(h, w_hh, b_hh), c)


def _gru_gates(gi, gh, hx):
    ir, iz, in_ = gi.chunk(3, -1)
    hr, hz, hn = gh.chunk(3, -1)
    r = (ir + hr).sigmoid()
    z = (iz + hz).sigmoid()
    n = (in_ + r * hn).tanh()
    return n + z * (hx - n)  # (1 - z) * n + z * h


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """r, z = sigmoid, n = tanh(x W_in + b_in + r * (h W_hn + b_hn)),
    h' = (1 - z) * n + z * h."""
    return _gru_gates(_proj(input, w_ih, b_ih), _proj(hx, w_hh, b_hh), hx)
