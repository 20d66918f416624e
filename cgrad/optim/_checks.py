"""Hyper-parameter checks shared by the built-in optimizers (PyTorch's
messages: the name of the setting and the offending value)."""
import math
import numbers

from cgrad._core import Tensor


def number(group, key):
    """group[key] as a float; TypeError naming the key otherwise."""
    v = group[key]
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, Tensor)):
        raise TypeError(f"{key} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if math.isnan(v):
        raise ValueError(f"Invalid {key} value: {v}")
    return v


def non_negative(group, key, label=None):
    v = number(group, key)
    if not v >= 0.0:
        raise ValueError(f"Invalid {label or key} value: {v}")
    return v


def learning_rate(group):
    v = number(group, "lr")
    if not v >= 0.0:
        raise ValueError(f"Invalid learning rate: {v}")
    return v


def betas(group):
    b = group["betas"]
    try:
        b1, b2 = b
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of numbers, got {b!r}") from None
    for i, v in enumerate((b1, b2)):
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, Tensor)) or \
                not 0.0 <= float(v) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {v}")
    return float(b1), float(b2)


# PyTorch's messages for optimizers without sparse support (AdamW's says Adam).
_NO_SPARSE = {
    "Adam": "Adam does not support sparse gradients, please consider SparseAdam instead",
    "AdamW": "Adam does not support sparse gradients, please consider SparseAdam instead",
    "RMSprop": "RMSprop does not support sparse gradients",
}


def grad_of(p, who, sparse_ok=False):
    """p's gradient as a contiguous tensor of p's dtype, or None. A row-sparse
    gradient is returned as it is when sparse_ok, else RuntimeError."""
    g = p.grad
    if g is None:
        return None
    if not p.is_floating_point():
        raise TypeError(f"{who}: parameter of dtype {p.dtype} cannot be optimized")
    if g.is_sparse:
        if not sparse_ok:
            raise RuntimeError(_NO_SPARSE.get(who, f"{who} does not support sparse gradients"))
        return g
    if not g.is_contiguous():
        g = g.contiguous()
    return g
