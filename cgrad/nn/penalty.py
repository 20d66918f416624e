"""L1 / L2 penalties over a module's parameters, added to a loss:

    loss = criterion(model(x), y) + l2_penalty(model, weight=1e-4, exclude_bias=True)

Conventions (the PyTorch idiom `sum(p.pow(2).sum() for p in model.parameters())`):

    l1_penalty = weight * sum_p sum |p|
    l2_penalty = weight * sum_p sum p^2          (no 1/2)

so d l2_penalty / dp = 2 * weight * p, and l2_penalty(m, weight=wd / 2) has
the gradient wd * p that an optimizer's (coupled) weight_decay=wd adds.
Both are ordinary differentiable expressions (create_graph works)."""
import math
import numbers

from cgrad import _core
from cgrad._core import Tensor

__all__ = ["l1_penalty", "l2_penalty"]


def _params(params_or_module, exclude_bias, fn):
    """Tensors from a Module (its parameters()), one tensor, or an iterable of
    tensors or of (name, tensor) pairs (named_parameters())."""
    if isinstance(params_or_module, Tensor):
        items = [params_or_module]
    elif hasattr(params_or_module, "parameters") and callable(params_or_module.parameters):
        items = list(params_or_module.parameters())
    else:
        try:
            items = list(params_or_module)
        except TypeError:
            raise TypeError(f"{fn}: expected a Module, a Tensor or an iterable of Tensors, "
                            f"got {type(params_or_module).__name__}") from None
    out = []
    for i, p in enumerate(items):
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Tensor):
            p = p[1]
        if not isinstance(p, Tensor):
            raise TypeError(f"{fn}: parameter {i} is a {type(p).__name__}, not a Tensor")
        if not p.is_floating_point():
            raise TypeError(f"{fn}: parameter {i} has dtype {p.dtype!r}; penalties need floating tensors")
        # biases and normalisation scales are the 1-D (and 0-d) parameters
        if exclude_bias and p.ndim <= 1:
            continue
        out.append(p)
    return out


def _check_weight(weight, fn):
    if not (isinstance(weight, numbers.Real) and not isinstance(weight, bool) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"{fn}: weight must be a finite number >= 0, got {weight!r}")


def _penalty(terms, weight):
    if not terms:
        return _core.tensor(0.0)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total if weight == 1 else total * float(weight)


def l1_penalty(params_or_module, weight=1.0, exclude_bias=False):
    """weight * sum |p| over the parameters (0-d tensor; 0.0 when there are
    none). exclude_bias=True skips every 1-D parameter (biases, norm scales)."""
    _check_weight(weight, "l1_penalty")
    ps = _params(params_or_module, exclude_bias, "l1_penalty")
    return _penalty([p.abs().sum() for p in ps], weight)


def l2_penalty(params_or_module, weight=1.0, exclude_bias=False):
    """weight * sum p^2 over the parameters (no 1/2; see the module docstring).
    exclude_bias=True skips every 1-D parameter (biases, norm scales)."""
    _check_weight(weight, "l2_penalty")
    ps = _params(params_or_module, exclude_bias, "l2_penalty")
    return _penalty([(p * p).sum() for p in ps], weight)
