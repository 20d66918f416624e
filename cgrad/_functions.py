"""Function forms of Tensor methods: cgrad.exp(x) == x.exp(), as in PyTorch."""
from cgrad._core import Tensor, empty, full, ones, zeros

__all__ = [
    "exp", "log", "sqrt", "abs", "sign", "round", "floor", "ceil", "neg", "relu", "sigmoid",
    "tanh", "clamp", "clip", "pow", "matmul", "maximum", "minimum", "add", "sub", "mul", "div",
    "sum", "mean", "var", "std", "amax", "amin", "max", "min", "argmax", "argmin", "logsumexp",
    "softmax", "log_softmax", "reshape", "permute", "transpose", "squeeze", "unsqueeze",
    "flatten", "gather", "index_select", "eq", "ne", "lt", "le", "gt", "ge", "zeros_like",
    "ones_like", "full_like", "empty_like", "detach", "clone", "t", "mm", "bmm", "dot",
]


def _t(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"cgrad.{name}: expected a Tensor, got {type(x).__name__}")
    return x


def _method(name):
    def fn(input, *args, **kwargs):
        return getattr(_t(input, name), name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"cgrad.{name}(x, ...) is x.{name}(...)."
    return fn


for _name in ["exp", "log", "sqrt", "abs", "sign", "round", "floor", "ceil", "neg", "relu",
              "sigmoid", "tanh", "clamp", "clip", "pow", "matmul", "maximum", "minimum", "add",
              "sub", "mul", "div", "sum", "mean", "var", "std", "amax", "amin", "max", "min",
              "argmax", "argmin", "logsumexp", "softmax", "log_softmax", "reshape", "permute",
              "transpose", "squeeze", "unsqueeze", "flatten", "gather", "index_select", "eq",
              "ne", "lt", "le", "gt", "ge", "detach", "clone", "t"]:
    globals()[_name] = _method(_name)


def mm(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mm expects 2-D tensors, got {a.ndim}-D and {b.ndim}-D")
    return a @ b


def bmm(a, b):
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"bmm expects 3-D tensors, got {a.ndim}-D and {b.ndim}-D")
    return a @ b


def dot(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"dot expects 1-D tensors, got {a.ndim}-D and {b.ndim}-D")
    return a @ b


def zeros_like(x, dtype=None, requires_grad=False, device=None):
    return zeros(*x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad,
                 device=x.device if device is None else device)


def ones_like(x, dtype=None, requires_grad=False, device=None):
    return ones(*x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad,
                 device=x.device if device is None else device)


def empty_like(x, dtype=None, requires_grad=False, device=None):
    return empty(*x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad,
                 device=x.device if device is None else device)


def full_like(x, fill_value, dtype=None, requires_grad=False, device=None):
    return full(x.shape, fill_value, dtype=dtype or x.dtype, requires_grad=requires_grad,
                device=x.device if device is None else device)
