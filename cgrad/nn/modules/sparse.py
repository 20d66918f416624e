"""Embedding and SparseLinear (a linear layer with a fixed CSR connectivity)."""
import numbers

import numpy as np

from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn import init
from cgrad.nn.modules._utils import check_size, factory_device, factory_dtype
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter
from cgrad._grad_mode import no_grad

__all__ = ["Embedding", "SparseLinear"]


class Embedding(Module):
    """A lookup table of num_embeddings vectors of size embedding_dim,
    initialised N(0, 1) (the padding_idx row zero, and it gets no gradient).
    With sparse=True the weight's gradient is row-sparse (weight.grad.is_sparse:
    indices() / values() of the looked-up rows), for SGD and SparseAdam."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
                 dtype=None):
        super().__init__()
        dt = factory_dtype("Embedding", device, dtype)
        dev = factory_device("Embedding", device)
        self.num_embeddings = check_size("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_size("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
                raise TypeError(f"Embedding: padding_idx must be an int or None, got {padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings "
                                 f"({num_embeddings}), got {padding_idx}")
            if padding_idx < 0:
                padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(_core.empty(num_embeddings, embedding_dim, dtype=dt, device=dev),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight must have shape ({num_embeddings}, {embedding_dim}), "
                                 f"got {tuple(_weight.shape)}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self):
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx].fill_(0)

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        if embeddings.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape "
                             f"{tuple(embeddings.shape)}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.sparse:
            s += ", sparse=True"
        return s


def _mask_array(mask, in_features, out_features):
    arr = mask.detach().cpu().numpy() if isinstance(mask, _core.Tensor) else np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"SparseLinear: mask must be a bool array, got dtype {arr.dtype}")
    if arr.shape != (out_features, in_features):
        raise ValueError(f"SparseLinear: mask must have shape (out_features, in_features) = "
                         f"({out_features}, {in_features}), got {arr.shape}")
    return arr


class SparseLinear(Module):
    """A linear layer y = x W^T + b whose weight W (out_features, in_features)
    has a fixed connectivity mask, stored in CSR: forward and backward cost
    scales with the number of connections nnz, not in * out.

    mask: a bool array (out_features, in_features) (NumPy or Tensor), or
    density (the probability that each connection exists) with seed for a
    reproducible random mask (NumPy's default_rng(seed)).

    Parameters: weight (nnz,), the connections' weights in CSR order (row by
    row, columns increasing), and bias (out_features,). Buffers: indptr
    (out_features + 1,) and indices (nnz,), int64. Initialisation follows
    nn.Linear (kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) for weight and bias) with fan_in the number of inputs
    actually connected to each output (at least 1), so each unit's output
    scale matches a dense Linear's. dense_weight() gives W with zeros off
    the mask. device= puts parameters and buffers there (the random draws
    of the mask and the init are made on the host, so a seed gives the same
    layer on every device)."""

    def __init__(self, in_features, out_features, mask=None, bias=True, *, density=None,
                 seed=None, device=None, dtype=None):
        super().__init__()
        dt = factory_dtype("SparseLinear", device, dtype)
        dev = factory_device("SparseLinear", device)
        self.in_features = check_size("SparseLinear", "in_features", in_features)
        self.out_features = check_size("SparseLinear", "out_features", out_features)
        if (mask is None) == (density is None):
            raise ValueError("SparseLinear: pass exactly one of mask= (bool array) or density= "
                             f"(got mask={'given' if mask is not None else None}, density={density!r})")
        if mask is not None:
            m = _mask_array(mask, self.in_features, self.out_features)
        else:
            if isinstance(density, bool) or not isinstance(density, numbers.Real) or \
                    not 0.0 < float(density) <= 1.0:
                raise ValueError(f"SparseLinear: density must be a number in (0, 1], got {density!r}")
            rng = np.random.default_rng(seed)
            m = rng.random((self.out_features, self.in_features)) < float(density)
        rows, cols = np.nonzero(m)  # row-major: CSR order
        counts = np.bincount(rows, minlength=self.out_features)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.register_buffer("indptr", _core.tensor(indptr, dtype=_core.int64, device=dev))
        self.register_buffer("indices", _core.tensor(cols.astype(np.int64), dtype=_core.int64,
                                                     device=dev))
        self.nnz = int(cols.size)
        self.weight = Parameter(_core.empty(self.nnz, dtype=dt, device=dev))
        self.bias = Parameter(_core.empty(self.out_features, dtype=dt, device=dev)) if bias else None
        self.reset_parameters()

    def fan_in(self):
        """Connections into each output unit (NumPy int64, (out_features,))."""
        return np.diff(self.indptr.cpu().numpy())

    def reset_parameters(self):
        fan = np.maximum(self.fan_in(), 1).astype(np.float64)
        bound = 1.0 / np.sqrt(fan)
        with no_grad():
            if self.nnz:
                per_conn = np.repeat(bound, self.fan_in())
                u = init.uniform_(_core.empty(self.nnz, dtype=self.weight.dtype), -1.0, 1.0)
                self.weight.copy_(u * _core.tensor(per_conn, dtype=self.weight.dtype))
            if self.bias is not None:
                u = init.uniform_(_core.empty(self.out_features, dtype=self.bias.dtype), -1.0, 1.0)
                self.bias.copy_(u * _core.tensor(bound, dtype=self.bias.dtype))

    def dense_weight(self):
        """W (out_features, in_features) as a dense tensor (zeros off the mask),
        detached."""
        w = np.zeros((self.out_features, self.in_features), dtype=self.weight.dtype.name)
        rows = np.repeat(np.arange(self.out_features), self.fan_in())
        w[rows, self.indices.cpu().numpy()] = self.weight.detach().cpu().numpy()
        return _core.tensor(w, dtype=self.weight.dtype, device=self.weight.device)

    def forward(self, input):
        if not isinstance(input, _core.Tensor):
            raise TypeError(f"SparseLinear: input must be a cgrad.Tensor, got {type(input).__name__}")
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: expected input with last dimension in_features="
                             f"{self.in_features}, got input of shape {tuple(input.shape)}")
        return F.sparse_linear(input, self.indptr, self.indices, self.weight, self.bias,
                               self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.nnz}, bias={self.bias is not None}")
