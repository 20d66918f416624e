"""Checks shared by the built-in optimizers: their hyper-parameters
(PyTorch's messages: the name of the setting and the offending value), and
every parameter's gradient and state before a step moves any (check_step)."""
import math
import numbers

from cgrad import _core
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


def check_step(opt, who, state_keys, sparse_ok=False, dense_ok=True, layout_key=None):
    """Checks every parameter's gradient and state, in every group, before
    a step moves any: a step that raises has updated nothing and made no
    state. (PyTorch checks one group's gradients before it updates that
    group, so a bad gradient in a later group leaves the earlier groups
    moved, and finds a state of the wrong shape only when it updates.)

    state_keys: the state tensors the update reads, which must have their
    parameter's shape (they do, until the parameter's data is replaced with
    another shape; a subclass's own state entries are its business).
    sparse_ok / dense_ok: whether row-sparse / dense gradients are taken.
    layout_key(group): the state key of a buffer that keeps the layout of
    the gradients it was made from (SGD's momentum buffer), or None.
    The loop over the parameters is _core._step_problem (C speed: it runs
    at every step)."""
    state = opt.state
    for group in opt.param_groups:
        params = group["params"]
        key = layout_key(group) if layout_key is not None else None
        found = _core._step_problem(params, state, state_keys, sparse_ok, dense_ok, key)
        if found is not None:
            i, what, k = found
            raise _step_error(who, params[i], what, k, state.get(params[i]))


def _step_error(who, p, what, key, state):
    """The exception for _core._step_problem's finding about parameter p."""
    if what == "dtype":
        return TypeError(f"{who}: parameter of dtype {p.dtype} cannot be optimized")
    if what == "half":
        return TypeError(f"{who}: a float16 parameter is updated on a device only; on the cpu "
                         "float16 is a storage type (move the parameter to 'cuda', convert it "
                         "with .float(), or keep float32 master weights with "
                         "cgrad.amp.MasterWeights)")
    if what == "contiguous":
        return ValueError(f"{who}: a parameter of shape {tuple(p.shape)} is not contiguous; the "
                          "fused update needs contiguous parameters "
                          "(p.data = p.data.contiguous())")
    if what == "sparse":
        return RuntimeError(_NO_SPARSE.get(who, f"{who} does not support sparse gradients"))
    if what == "dense":
        return RuntimeError(f"{who} does not support dense gradients, please consider Adam "
                            "instead")
    if what == "shape":
        return RuntimeError(f"{who}: optimizer state {key!r} has shape {tuple(state[key].shape)} "
                            f"but its parameter has shape {tuple(p.shape)} (was the parameter's "
                            "data replaced with another shape?)")
    grad_sparse = p.grad.is_sparse
    return RuntimeError(f"{who}: this parameter's {key.replace('_', ' ')} is "
                        f"{'dense' if grad_sparse else 'row-sparse'} but its gradient is "
                        f"{'row-sparse' if grad_sparse else 'dense'}; keep one gradient layout "
                        "per parameter")


def grad_of(p):
    """p's gradient (checked by check_step) as a contiguous tensor, or None;
    a row-sparse gradient as it is."""
    g = p.grad
    if g is None or g.is_sparse or g.is_contiguous():
        return g
    return g.contiguous()
